//! Bad input to sd.wasm: one clear line on stderr, the documented exit code, no output file,
//! and never a trap or a panic.

use crate::common::*;
use std::path::Path;

const USAGE: i32 = 2;
const MODEL: i32 = 3;
const RUNTIME: i32 = 4;
const OUTPUT: i32 = 5;

const BASE: &[&str] = &["--prompt", "a red cube", "--seed", "1", "--steps", "2", "--quiet"];

/// Runs sd.wasm and checks the failure contract; returns stderr for message checks.
fn fails(name: &str, models: &Path, extra: &[&str], code: i32) -> String {
    fails_with_memory(name, models, extra, code, 4 << 30)
}

fn fails_with_memory(name: &str, models: &Path, extra: &[&str], code: i32, max_memory: u64) -> String {
    let out = scratch(&format!("out-{name}"));
    let args: Vec<&str> = BASE.iter().chain(extra).copied().collect();
    let run = run_wasm_with_memory(models, &out, &args, max_memory);
    assert_eq!(run.code, code, "{name}: exit code {} (want {code}); stderr:\n{}", run.code, run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{name}: want exactly one error line, stderr:\n{}", run.stderr);
    for bad in ["panicked", "wasm trap", "wasm backtrace", "RUST_BACKTRACE", "unreachable"] {
        assert!(!run.stderr.contains(bad), "{name}: {bad} in stderr:\n{}", run.stderr);
    }
    assert!(files_in(&out).is_empty(), "{name}: left files behind: {:?}", files_in(&out));
    std::fs::remove_dir_all(&out).ok();
    errors[0].to_string()
}

#[test]
fn missing_model_dir() {
    let e = fails("no-model-dir", &tiny_model(), &["--models", "/nowhere"], MODEL);
    assert!(e.contains("/nowhere") && e.contains("--dir"), "{e}");
}

#[test]
fn missing_unet_file() {
    let m = tiny_model_copy("no-unet");
    std::fs::remove_file(m.join("unet/model.onnx")).unwrap();
    let e = fails("no-unet", &m, &[], MODEL);
    assert!(e.contains("unet/model.onnx") && e.contains("missing"), "{e}");
}

#[test]
fn truncated_onnx() {
    let m = tiny_model_copy("truncated");
    let path = m.join("text_encoder/model.onnx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let e = fails("truncated", &m, &[], MODEL);
    assert!(e.contains("text_encoder/model.onnx"), "{e}");
}

#[test]
fn truncated_external_data() {
    let m = tiny_model_copy("truncated-data");
    let data = unet_weights_file(&m);
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails("truncated-data", &m, &[], MODEL);
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn corrupt_onnx() {
    let m = tiny_model_copy("corrupt");
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(m.join("vae_decoder/model.onnx"), garbage).unwrap();
    let e = fails("corrupt", &m, &[], MODEL);
    assert!(e.contains("vae_decoder/model.onnx"), "{e}");
}

#[test]
fn network_with_wrong_inputs() {
    let m = tiny_model_copy("wrong-net");
    std::fs::copy(m.join("vae_decoder/model.onnx"), m.join("unet/model.onnx")).unwrap();
    let e = fails("wrong-net", &m, &[], MODEL);
    assert!(e.contains("unet/model.onnx") && e.contains("sample"), "{e}");
}

#[test]
fn broken_scheduler_config() {
    let m = tiny_model_copy("bad-sched-config");
    std::fs::write(m.join("scheduler/scheduler_config.json"), "{ not json").unwrap();
    let e = fails("bad-sched-config", &m, &[], MODEL);
    assert!(e.contains("scheduler_config.json"), "{e}");
}

#[test]
fn size_not_multiple_of_8() {
    let e = fails("width-100", &tiny_model(), &["--width", "100"], USAGE);
    assert!(e.contains("--width") && e.contains("multiple of 8"), "{e}");
}

#[test]
fn size_too_large() {
    let e = fails("height-huge", &tiny_model(), &["--height", "8192"], USAGE);
    assert!(e.contains("--height"), "{e}");
}

#[test]
fn steps_zero_and_absurd() {
    for steps in ["0", "100000", "-3", "many"] {
        let e = fails(&format!("steps-{steps}"), &tiny_model(), &["--steps", steps], USAGE);
        assert!(e.contains("--steps"), "{e}");
    }
}

#[test]
fn unknown_scheduler() {
    let e = fails("sched", &tiny_model(), &["--scheduler", "heun"], USAGE);
    assert!(e.contains("heun") && e.contains("euler-a"), "{e}");
}

#[test]
fn unreadable_latents() {
    let e = fails("latents-missing", &tiny_model(), &["--latents", "/models/none.npy"], USAGE);
    assert!(e.contains("--latents"), "{e}");
    let m = tiny_model_copy("latents-garbage");
    std::fs::write(m.join("junk.npy"), b"this is not numpy").unwrap();
    let e = fails("latents-garbage", &m, &["--latents", "/models/junk.npy"], USAGE);
    assert!(e.contains("--latents"), "{e}");
}

#[test]
fn latents_of_wrong_shape() {
    let m = tiny_model_copy("latents-shape");
    let wrong = ndarray::ArrayD::<f32>::zeros(vec![1, 4, 3, 3]);
    std::fs::write(m.join("wrong.npy"), sd_wasm::codecs::npy::write_npy(&wrong)).unwrap();
    let e = fails("latents-shape", &m, &["--latents", "/models/wrong.npy"], USAGE);
    assert!(e.contains("shape"), "{e}");
}

#[test]
fn output_dir_missing() {
    let e = fails("out-missing", &tiny_model(), &["--output", "/outputs/no/such/dir/x.png"], OUTPUT);
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn output_not_writable() {
    // /models is a directory that exists but the file cannot be created in a read-only place:
    // a path inside a missing preopen is the portable way to get a failing create.
    let e = fails("out-unwritable", &tiny_model(), &["--output", "/x.png"], OUTPUT);
    assert!(e.contains("/x.png"), "{e}");
}

#[test]
fn missing_prompt_and_unknown_flag() {
    let out = scratch("usage");
    let run = run_wasm(&tiny_model(), &out, &["--seed", "1"]);
    assert_eq!(run.code, USAGE);
    assert!(run.stderr.contains("--prompt is required"), "{}", run.stderr);
    let run = run_wasm(&tiny_model(), &out, &["--prompt", "x", "--frobnicate"]);
    assert_eq!(run.code, USAGE);
    assert!(run.stderr.contains("--frobnicate"), "{}", run.stderr);
    assert!(files_in(&out).is_empty());
}

#[test]
fn help_and_version() {
    let out = scratch("help");
    let run = run_wasm(&tiny_model(), &out, &["--help"]);
    assert_eq!(run.code, 0);
    for flag in ["--prompt", "--negative-prompt", "--steps", "--guidance-scale", "--seed", "--rng", "--width", "--height", "--scheduler", "--latents", "--models", "--output"] {
        assert!(run.stdout.contains(flag), "--help does not mention {flag}");
    }
    let run = run_wasm(&tiny_model(), &out, &["--version"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("sd.wasm "), "{}", run.stdout);
}

/// Too little memory (Bacalhau's default job memory is 512 MB; here the tiny model's text
/// encoder is given less than it needs) is said before loading, with the flag that fixes it.
#[test]
fn too_little_memory_is_said_before_loading() {
    let e = fails_with_memory("little-memory", &tiny_model(), &[], RUNTIME, 48 << 20);
    assert!(e.contains("needs about") && e.contains("--memory 4GiB") && e.contains("max-memory-size"), "{e}");
}

#[test]
fn taesd_asked_for_but_missing() {
    let e = fails("no-taesd", &tiny_model(), &["--vae", "taesd"], MODEL);
    assert!(e.contains("vae_decoder_taesd") && e.contains("convert.py"), "{e}");
}

#[test]
fn unknown_vae_and_zero_preview_interval() {
    let e = fails("bad-vae", &tiny_model(), &["--vae", "huge"], USAGE);
    assert!(e.contains("--vae"), "{e}");
    let e = fails("zero-preview", &tiny_model(), &["--preview-every", "0"], USAGE);
    assert!(e.contains("--preview-every"), "{e}");
}

/// Rewrites one key of a JSON config in a model dir copy.
fn set_config(model: &Path, file: &str, key: &str, value: serde_json::Value) {
    let path = model.join(file);
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&path, config.to_string()).unwrap();
}

#[test]
fn lcm_unet_without_the_lcm_scheduler() {
    let lcm = repo().join("fixtures/tiny-lcm");
    let e = fails("lcm-euler", &lcm, &["--scheduler", "euler"], USAGE);
    assert!(e.contains("time_cond_proj_dim 256") && e.contains("--scheduler lcm"), "{e}");
    let m = model_copy(&lcm, "lcm-euler-config");
    set_config(&m, "scheduler/scheduler_config.json", "_class_name", "EulerDiscreteScheduler".into());
    let e = fails("lcm-euler-config", &m, &[], MODEL);
    assert!(e.contains("declares EulerDiscreteScheduler") && e.contains("--scheduler lcm"), "{e}");
}

#[test]
fn lcm_unet_config_and_network_disagree() {
    let m = model_copy(&repo().join("fixtures/tiny-lcm"), "lcm-no-dim");
    set_config(&m, "unet/config.json", "time_cond_proj_dim", serde_json::Value::Null);
    let e = fails("lcm-no-dim", &m, &[], MODEL);
    assert!(e.contains("timestep_cond") && e.contains("time_cond_proj_dim"), "{e}");
    let m = tiny_model_copy("not-lcm-network");
    set_config(&m, "unet/config.json", "time_cond_proj_dim", 256.into());
    let e = fails("not-lcm-network", &m, &["--scheduler", "lcm"], MODEL);
    assert!(e.contains("timestep_cond"), "{e}");
}
