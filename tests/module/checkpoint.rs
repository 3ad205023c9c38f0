//! `--checkpoint` and `--vae-file` in sd.wasm under wasmtime: a template at /models, the
//! single-file checkpoints of fixtures/tiny-checkpoint at /ckpt, against diffusers'
//! `from_single_file` pictures (scripts/make_checkpoint_fixtures.py).

use crate::common::*;
use std::path::{Path, PathBuf};

const TOLERANCE: u8 = 2;

fn fixture() -> PathBuf {
    repo().join("fixtures/tiny-checkpoint")
}

fn run(out: &Path, args: &[&str]) -> Run {
    let base = ["--prompt", "a lighthouse at dusk, oil painting", "--seed", "42", "--steps", "12"];
    let args: Vec<&str> = base.iter().chain(["--negative-prompt", "blurry", "--quiet"].iter()).chain(args).copied().collect();
    let dirs = [(&fixture().join("template"), "/models"), (&fixture(), "/ckpt"), (&out.to_path_buf(), "/outputs")];
    let dirs: Vec<(&Path, &str)> = dirs.iter().map(|(p, g)| (p.as_path(), *g)).collect();
    run_wasm_dirs(&dirs, &args, 4 << 30, &[])
}

#[test]
fn checkpoints_and_a_vae_file_match_diffusers_from_single_file() {
    let out = scratch("wasm-checkpoint-fp32");
    let r = run(&out, &["--checkpoint", "/ckpt/tiny-fp32-ema.safetensors"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pictures = pngs(&out);
    assert_eq!(pictures.len(), 1);
    let (name, bytes) = pictures.iter().next().unwrap();
    let ours = sd_wasm::codecs::png::decode_rgb(bytes).unwrap();
    let diff = max_pixel_diff(&ours, &read_png(&fixture().join("fp32-stored-fp16.png")));
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
    let text = sd_wasm::codecs::png::read_parameters(bytes).unwrap().unwrap();
    assert!(text.contains("Model: tiny-fp32-ema") && text.contains("Model hash: a24fe06b66"), "{name}: {text}");

    let out = scratch("wasm-checkpoint-fp16");
    let r = run(&out, &["--checkpoint", "/ckpt/tiny-fp16-novae.safetensors", "--vae-file", "/ckpt/tiny-vae.safetensors"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ours = sd_wasm::codecs::png::decode_rgb(pngs(&out).values().next().unwrap()).unwrap();
    let diff = max_pixel_diff(&ours, &read_png(&fixture().join("fp16.png")));
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
}

#[test]
fn a_checkpoint_without_its_vae_or_template_is_a_usage_error_before_any_work() {
    let out = scratch("wasm-checkpoint-novae");
    let r = run(&out, &["--checkpoint", "/ckpt/tiny-fp16-novae.safetensors"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--vae-file"), "{}", r.stderr);
    assert!(files_in(&out).is_empty());
    let r = run(&out, &["--vae-file", "/ckpt/tiny-vae.safetensors"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("give the checkpoint (--checkpoint) too"), "{}", r.stderr);
    let r = run_wasm_dirs(
        &[(&tiny_model(), "/models"), (&fixture(), "/ckpt"), (&out, "/outputs")],
        &["--prompt", "x", "--checkpoint", "/ckpt/tiny-fp32-ema.safetensors"],
        4 << 30,
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("template"), "{}", r.stderr);
}
