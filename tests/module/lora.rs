//! `--lora` and `<lora:NAME:W>` in sd.wasm under wasmtime against diffusers' pictures with the
//! same kohya-format LoRAs fused (fixtures/tiny-lora, scripts/make_lora_fixtures.py), the
//! LoRA folder mounted at /loras beside /models (the default `--lora-dir`).

use crate::common::*;
use std::path::{Path, PathBuf};

const TOLERANCE: u8 = 2;

fn lora_dir() -> PathBuf {
    repo().join("fixtures/tiny-lora")
}

/// sd.wasm with the tiny model at /models, `loras` at /loras, `out` at /outputs.
fn run(loras: &Path, out: &Path, args: &[&str]) -> Run {
    let base = ["--seed", "42", "--steps", "12", "--negative-prompt", "blurry", "--quiet"];
    let args: Vec<&str> = base.iter().chain(args).copied().collect();
    run_wasm_dirs(&[(&tiny_model(), "/models"), (loras, "/loras"), (out, "/outputs")], &args, 4 << 30, &[])
}

fn only_png(dir: &Path) -> PathBuf {
    let pngs: Vec<PathBuf> = files_in(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    pngs[0].clone()
}

#[test]
fn lora_flag_and_prompt_tag_match_diffusers_fuse_lora() {
    let theirs = read_png(&lora_dir().join("style-0.8.png"));
    let flagged = scratch("wasm-lora-flag");
    let r = run(
        &lora_dir(),
        &flagged,
        &["--prompt", "a lighthouse at dusk, oil painting", "--lora", "/loras/style.safetensors:0.8"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let png = only_png(&flagged);
    let diff = max_pixel_diff(&read_png(&png), &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");

    // Without the LoRA the picture is far from it: the fixture has power.
    let plain = scratch("wasm-lora-none");
    let r = run(&lora_dir(), &plain, &["--prompt", "a lighthouse at dusk, oil painting"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let without = max_pixel_diff(&read_png(&only_png(&plain)), &theirs);
    assert!(without > 40, "without the LoRA the picture moves only {without}/255");

    // Automatic1111's tag, found in /loras (beside /models), makes the same picture.
    let tagged = scratch("wasm-lora-tag");
    let r = run(&lora_dir(), &tagged, &["--prompt", "a lighthouse at dusk, oil painting <lora:style:0.8>"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_png(&only_png(&tagged)).pixels, read_png(&png).pixels);

    // --params-from reads the record back: the tag, then the file from /loras.
    let again = scratch("wasm-lora-again");
    std::fs::copy(&png, again.join("first.png")).unwrap();
    let r = run(&lora_dir(), &again, &["--params-from", "/outputs/first.png", "--output", "/outputs/second.png"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_png(&again.join("second.png")).pixels, read_png(&png).pixels);
    let text = sd_wasm::codecs::png::read_parameters(&std::fs::read(&png).unwrap()).unwrap().unwrap();
    assert!(
        text.starts_with("a lighthouse at dusk, oil painting <lora:style:0.8>\n")
            && text.contains("Lora hashes: \"style: "),
        "{text}"
    );
}

/// A `--prompts` job whose lines tag a LoRA: each tagged line is the tagged single run's
/// picture (the file opened once for the job), the untagged line is not.
#[test]
fn prompt_file_lines_load_their_tagged_loras() {
    let single = scratch("wasm-lora-single");
    let r = run(&lora_dir(), &single, &["--prompt", "a lighthouse at dusk, oil painting <lora:style:0.8>"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tagged = read_png(&only_png(&single)).pixels;

    let inputs = scratch("wasm-lora-prompts-in");
    let lines = [
        r#"{"prompt": "a lighthouse at dusk, oil painting <lora:style:0.8>", "seed": 42}"#,
        r#"{"prompt": "a lighthouse at dusk, oil painting", "seed": 42}"#,
        r#"{"prompt": "a lighthouse at dusk, oil painting <lora:style:0.80>", "seed": 42}"#,
    ];
    std::fs::write(inputs.join("prompts.jsonl"), lines.join("\n")).unwrap();
    let out = scratch("wasm-lora-prompts-out");
    let base = ["--steps", "12", "--negative-prompt", "blurry", "--quiet", "--prompts", "/inputs/prompts.jsonl"];
    let dirs = [(&tiny_model(), "/models"), (&lora_dir(), "/loras"), (&inputs, "/inputs"), (&out, "/outputs")];
    let r = run_wasm_dirs(&dirs.map(|(p, m)| (p.as_path(), m)), &base, 4 << 30, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pictures: Vec<(String, Vec<u8>)> = files_in(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            let text = sd_wasm::codecs::png::read_parameters(&std::fs::read(&p).unwrap()).unwrap().unwrap();
            (text.lines().next().unwrap().to_string(), read_png(&p).pixels)
        })
        .collect();
    assert_eq!(pictures.len(), 3, "{:?}", pictures.iter().map(|(prompt, _)| prompt).collect::<Vec<_>>());
    for (prompt, pixels) in &pictures {
        assert_eq!(pixels == &tagged, prompt.contains("<lora:style:"), "{prompt}");
    }
}

#[test]
fn lora_errors_exit_by_class_and_write_nothing() {
    let out = scratch("wasm-lora-errors");
    let bad = scratch("wasm-lora-bad-files");
    std::fs::write(bad.join("broken.safetensors"), b"not a safetensors file at all").unwrap();
    let r = run(&bad, &out, &["--prompt", "x", "--lora", "/loras/broken.safetensors"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("broken.safetensors") && !r.stderr.contains("panicked"), "{}", r.stderr);
    let r = run(&bad, &out, &["--prompt", "x <lora:absent:1>"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("/loras/absent.safetensors"), "{}", r.stderr);
    assert!(files_in(&out).is_empty());
}
