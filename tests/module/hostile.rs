//! Hostile input (issue 16) against the shipped module, on every engine a user runs it on:
//! wasmtime, and wasi-runner (Bacalhau's engine and write-once output mount) at Bacalhau's
//! default 512 MB and at 4 GiB. Each case must end with its class's exit code, exactly one
//! `error:` line naming the cause, no trap, no file left in the output dir, and the file that
//! was already there unchanged.

use crate::common::*;
use std::path::{Path, PathBuf};

const USAGE: i32 = 2;
const MODEL: i32 = 3;
const RUNTIME: i32 = 4;
const OUTPUT: i32 = 5;

const BASE: &[&str] = &["--prompt", "a red cube", "--seed", "1", "--steps", "2", "--quiet"];

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Wasmtime,
    Wazero512M,
    Wazero4G,
}

const ENGINES: [Engine; 3] = [Engine::Wasmtime, Engine::Wazero512M, Engine::Wazero4G];

fn run_on(engine: Engine, models: &Path, out: &Path, args: &[&str]) -> Run {
    match engine {
        Engine::Wasmtime => run_wasm(models, out, args),
        Engine::Wazero512M => wasi_runner(models, out, None, args),
        Engine::Wazero4G => wasi_runner(models, out, Some("4GiB"), args),
    }
}

/// Runs one case on `engines` and checks the failure contract; `cause` must be in the error line.
fn hostile(name: &str, models: &Path, extra: &[&str], code: i32, cause: &[&str], engines: &[Engine]) {
    for (i, &engine) in engines.iter().enumerate() {
        let out = scratch(&format!("hostile-{name}-{i}"));
        std::fs::write(out.join("precious.png"), b"kept as it was").unwrap();
        // --prompts replaces BASE's --prompt.
        let base = if extra.contains(&"--prompts") { &[][..] } else { BASE };
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let run = run_on(engine, models, &out, &args);
        let on = ["wasmtime", "wasi-runner 512 MB", "wasi-runner 4 GiB"][engine as usize];
        assert_eq!(run.code, code, "{name} on {on}: exit {} (want {code}); stderr:\n{}", run.code, run.stderr);
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{name} on {on}: want one error line, stderr:\n{}", run.stderr);
        for word in cause {
            assert!(errors[0].contains(word), "{name} on {on}: {word:?} not in {:?}", errors[0]);
        }
        for bad in
            ["panicked", "wasm trap", "wasm backtrace", "unreachable", "internal failure", "memory allocation of"]
        {
            assert!(!run.stderr.contains(bad), "{name} on {on}: {bad} in stderr:\n{}", run.stderr);
        }
        assert_eq!(files_in(&out), [out.join("precious.png")], "{name} on {on}: files left");
        assert_eq!(std::fs::read(out.join("precious.png")).unwrap(), b"kept as it was", "{name} on {on}");
        std::fs::remove_dir_all(&out).ok();
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// A PNG header for a `w`×`h` 8-bit gray picture with a token of data: refused from its header.
fn gray_png_header(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.write_header().unwrap().write_image_data(&[0]).unwrap();
    // IHDR's width and height sit at bytes 16..24; its CRC (29..33) is recomputed below.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn model_with(name: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let m = tiny_model_copy(name);
    std::fs::write(m.join(file), bytes).unwrap();
    m
}

#[test]
fn nan_in_latents() {
    let mut latents = ndarray::ArrayD::<f32>::zeros(vec![1, 4, 8, 8]);
    latents[[0, 1, 2, 3]] = f32::NAN;
    let m = model_with("nan-latents", "nan.npy", &sd_wasm::codecs::npy::write_npy(&latents));
    hostile("nan-latents", &m, &["--latents", "/models/nan.npy"], USAGE, &["--latents", "finite"], &ENGINES);
}

#[test]
fn absurd_betas_and_trained_betas() {
    let m = tiny_model_copy("absurd-betas");
    edit_json(&m.join("scheduler/scheduler_config.json"), |c| {
        c["beta_start"] = 5.0.into();
        c["beta_end"] = (-3.0).into();
    });
    hostile("absurd-betas", &m, &[], MODEL, &["beta"], &ENGINES);
    let m = tiny_model_copy("trained-betas");
    edit_json(&m.join("scheduler/scheduler_config.json"), |c| {
        let n = c["num_train_timesteps"].as_u64().unwrap_or(1000) as usize;
        c["trained_betas"] = serde_json::json!(vec![2.0; n]);
    });
    hostile("trained-betas", &m, &[], MODEL, &["beta"], &ENGINES);
}

#[test]
fn vae_scaling_factor_zero_and_too_many_blocks() {
    let m = tiny_model_copy("scaling-zero");
    edit_json(&m.join("vae_decoder/config.json"), |c| c["scaling_factor"] = 0.into());
    hostile("scaling-zero", &m, &[], MODEL, &["scaling_factor"], &ENGINES);
    let m = tiny_model_copy("blocks-33");
    edit_json(&m.join("vae_decoder/config.json"), |c| c["block_out_channels"] = serde_json::json!(vec![8; 33]));
    hostile("blocks-33", &m, &["--width", "16", "--height", "16"], MODEL, &["block_out_channels"], &ENGINES);
}

#[test]
fn unet_sample_size_beyond_the_size_limit() {
    // The default picture (sample_size × the VAE's factor) past 2048 or past u32 (a fuzzer's find).
    for (name, sample_size) in [("sample-size", 5000u64), ("sample-size-huge", 4_444_444_444_444_444_444)] {
        let m = tiny_model_copy(name);
        edit_json(&m.join("unet/config.json"), |c| c["sample_size"] = serde_json::json!([sample_size]));
        hostile(name, &m, &[], USAGE, &["sample_size", "--width", "--height"], &ENGINES);
    }
}

#[test]
fn empty_merges() {
    let m = model_with("empty-merges", "tokenizer/merges.txt", b"");
    hostile("empty-merges", &m, &[], MODEL, &["merges"], &ENGINES);
}

#[test]
fn huge_gray_init_picture() {
    let m = model_with("huge-init", "huge.png", &gray_png_header(20000, 20000));
    hostile("huge-init", &m, &["--init-image", "/models/huge.png"], USAGE, &["--init-image", "20000x20000"], &ENGINES);
}

#[test]
fn init_picture_larger_than_the_largest_side() {
    let image = sd_wasm::codecs::png::RgbImage { width: 4032, height: 3024, pixels: vec![90; 4032 * 3024 * 3] };
    let m = model_with("photo-init", "photo.png", &sd_wasm::codecs::png::encode_png(&image, "").unwrap());
    hostile(
        "photo-init",
        &m,
        &["--init-image", "/models/photo.png"],
        USAGE,
        &["--init-image", "2048", "--width"],
        &ENGINES,
    );
}

#[test]
fn a_broken_decoder_fails_before_any_preview() {
    let m = model_with("broken-vae", "vae_decoder/model.onnx", b"\x08\x07garbage that is no ONNX graph");
    hostile("broken-vae", &m, &["--preview-every", "1"], MODEL, &["vae_decoder/model.onnx"], &ENGINES);
}

#[test]
fn out_of_range_numbers_in_a_prompt_file() {
    for (name, line) in [
        ("steps", r#"{"prompt": "x", "steps": 4294967298}"#),
        ("width", r#"{"prompt": "x", "width": 4294967312}"#),
        ("seed", r#"{"prompt": "x", "seed": 18446744073709551616}"#),
    ] {
        let m = model_with(&format!("prompts-{name}"), "prompts.txt", line.as_bytes());
        let args = ["--prompts", "/models/prompts.txt", "--seed", "1", "--steps", "2", "--quiet"];
        for engine in ENGINES {
            let out = scratch(&format!("hostile-prompts-{name}"));
            let run = run_on(engine, &m, &out, &args);
            assert_eq!(run.code, USAGE, "{name}: {}", run.stderr);
            assert!(run.stderr.contains(name), "{name}: {}", run.stderr);
            assert!(files_in(&out).is_empty());
        }
    }
}

#[test]
fn output_names_that_would_lose_data() {
    let m = tiny_model();
    for (name, output) in
        [("json", "/outputs/pic.json"), ("slash", "/outputs/sub/"), ("existing", "/outputs/precious.png")]
    {
        hostile(&format!("output-{name}"), &m, &["--output", output], OUTPUT, &["--output"], &ENGINES);
    }
    let m = model_with("prompts-file-output", "prompts.txt", b"one\ntwo\n");
    let args = ["--prompts", "/models/prompts.txt", "--seed", "1", "--steps", "2", "--output", "/outputs/result"];
    hostile("prompts-to-a-file", &m, &args, OUTPUT, &["--output", "directory"], &ENGINES);
}

#[cfg(unix)]
#[test]
fn a_planted_symbolic_link_is_not_written_through() {
    let victim_dir = scratch("hostile-victim");
    let victim = victim_dir.join("victim.txt");
    std::fs::write(&victim, b"untouched").unwrap();
    for engine in ENGINES {
        let out = scratch("hostile-symlink");
        std::os::unix::fs::symlink(&victim, out.join("link.png")).unwrap();
        let run = run_on(engine, &tiny_model(), &out, &[BASE, &["--output", "/outputs/link.png"]].concat());
        assert_eq!(run.code, OUTPUT, "{}", run.stderr);
        assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(files_in(&out), [out.join("link.png")]);
    }
}

#[cfg(unix)]
#[test]
fn a_link_out_of_the_mount_is_not_called_missing() {
    let m = tiny_model_copy("escaping-link");
    let elsewhere = scratch("hostile-elsewhere");
    std::fs::rename(m.join("unet/model.onnx"), elsewhere.join("model.onnx")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("model.onnx"), m.join("unet/model.onnx")).unwrap();
    // wazero follows host links (the file is read); wasmtime refuses to leave the mount.
    hostile("escaping-link", &m, &[], MODEL, &["unet/model.onnx", "symbolic link"], &[Engine::Wasmtime]);
}

#[test]
fn params_from_names_the_pictures_own_text() {
    let m = tiny_model_copy("params-from-bad");
    let text = "a cat\nSteps: 4294967298, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 16x16";
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
    encoder.add_text_chunk("parameters".into(), text.into()).unwrap();
    encoder.set_color(png::ColorType::Rgb);
    encoder.write_header().unwrap().write_image_data(&[0, 0, 0]).unwrap();
    std::fs::write(m.join("from.png"), bytes).unwrap();
    let extra = ["--params-from", "/models/from.png"];
    hostile("params-from", &m, &extra, USAGE, &["Steps: 4294967298", "Steps"], &ENGINES);
}

/// Bacalhau's smallest jobs: the one-line message, not a trap, under any memory.
#[test]
fn very_little_memory() {
    for memory in ["12MiB", "24MiB", "31MiB"] {
        let out = scratch("hostile-memory");
        let run = wasi_runner(&tiny_model(), &out, Some(memory), BASE);
        assert_eq!(run.code, RUNTIME, "{memory}: {}", run.stderr);
        assert!(run.stderr.contains("--memory 4GiB"), "{memory}: {}", run.stderr);
        assert!(!run.stderr.contains("unreachable"), "{memory}: {}", run.stderr);
        assert!(files_in(&out).is_empty());
    }
}
