//! sd.wasm under wasi-runner: wazero v1.12.0 with Bacalhau v1.9.3's contract (argv[0] "",
//! page-limited memory with 512 MB by default, read-only inputs, write-once outputs, exit
//! code from proc_exit). The picture must be byte-identical to wasmtime's.

use crate::common::*;
use std::path::Path;
use std::process::Command;

const ARGS: &[&str] = &["--prompt", "a red cube", "--seed", "1", "--steps", "2", "--quiet"];

#[test]
fn same_picture_as_wasmtime_with_bacalhaus_default_memory() {
    let (ours, theirs) = (scratch("runner-wazero"), scratch("runner-wasmtime"));
    let run = wasi_runner(&tiny_model(), &ours, None, ARGS);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.trim().starts_with("/outputs/sd-1-"), "stdout: {}", run.stdout);
    let reference = run_wasm(&tiny_model(), &theirs, ARGS);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let names = |d: &Path| files_in(d).iter().map(|p| p.file_name().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs));
    for name in names(&ours) {
        if Path::new(&name).extension().is_some_and(|e| e == "png") {
            assert!(std::fs::read(ours.join(&name)).unwrap() == std::fs::read(theirs.join(&name)).unwrap(), "{name:?} differs");
        }
    }
}

#[test]
fn outputs_are_write_once() {
    let out = scratch("runner-write-once");
    assert_eq!(wasi_runner(&tiny_model(), &out, Some("4GiB"), ARGS).code, 0);
    let before = files_in(&out).iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>();
    let again = wasi_runner(&tiny_model(), &out, Some("4GiB"), ARGS);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(again.stderr.contains("error: cannot write /outputs/sd-1-"), "{}", again.stderr);
    let after = files_in(&out).iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>();
    assert!(before == after, "the first run's files changed");
}

#[test]
fn missing_model_and_too_little_memory_end_with_our_message() {
    let out = scratch("runner-bad");
    let run = wasi_runner(&tiny_model(), &out, None, &[ARGS, &["--models", "/nowhere"]].concat());
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.lines().any(|l| l.starts_with("error: model dir /nowhere")), "{}", run.stderr);
    let run = wasi_runner(&tiny_model(), &out, Some("40MiB"), ARGS);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("--memory 4GiB"), "{}", run.stderr);
    assert!(files_in(&out).is_empty());
}

/// Runs a module with no mounts and returns its exit code.
fn wasi_runner_exit_code(module: &Path) -> i32 {
    let runner = std::env::var("WASI_RUNNER").expect("WASI_RUNNER is not set: run the tests with scripts/test.sh");
    let out = Command::new(runner).arg(module).output().expect("running wasi-runner");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    out.status.code().expect("exit code")
}

/// The engine bug behind Bacalhau's black pictures, in the engine Bacalhau runs: an f32 `select`
/// in a loop picks a stale register when its condition is false (wazero#2534). The module exits
/// with the number of wrong picks. tools/wasm-ship's rewrite (if/else instead of select, what
/// scripts/build-wasm.sh applies to sd.wasm) makes it right.
#[test]
fn float_select_miscompile_is_reproduced_and_wasm_ship_avoids_it() {
    let source = repo().join("tests/data/wazero-float-select.wasm");
    assert_eq!(wasi_runner_exit_code(&source), 5, "wazero v1.12.0 no longer miscompiles the float select: is the runner still on Bacalhau's wazero?");
    let (shipped, report) = wasm_ship::ship(&std::fs::read(&source).unwrap(), "repro", wasm_ship::sd_wasm_unroll()).unwrap();
    assert_eq!(report.float_selects, 1);
    let fixed = scratch("runner-float-select").join("fixed.wasm");
    std::fs::write(&fixed, shipped).unwrap();
    assert_eq!(wasi_runner_exit_code(&fixed), 0);
}

/// Schedulers whose step arithmetic differs from the default's (ancestral noise, multistep
/// history, LMS coefficients): same bytes under Bacalhau's engine as under wasmtime.
#[test]
fn other_schedulers_same_picture_as_wasmtime() {
    for scheduler in ["euler-a", "dpm++2m-karras", "lms", "ddim"] {
        let (ours, theirs) = (scratch(&format!("runner-{scheduler}")), scratch(&format!("runner-{scheduler}-wasmtime")));
        let args = [ARGS, &["--scheduler", scheduler]].concat();
        let run = wasi_runner(&tiny_model(), &ours, None, &args);
        assert_eq!(run.code, 0, "{scheduler}: {}", run.stderr);
        let reference = run_wasm(&tiny_model(), &theirs, &args);
        assert_eq!(reference.code, 0, "{scheduler}: {}", reference.stderr);
        let (a, b) = (pngs(&ours), pngs(&theirs));
        assert_eq!(a.len(), 1, "{scheduler}");
        assert!(a == b, "{scheduler}: the picture under wazero differs from wasmtime's");
    }
}

/// tests/data/NAME.wasm's bytes and a scratch dir, after checking that the module as written
/// exits with `code` under Bacalhau's engine (the checksum its rewrites must keep).
fn fixture_module(name: &str, code: i32) -> (Vec<u8>, std::path::PathBuf) {
    let source = std::fs::read(repo().join(format!("tests/data/{name}.wasm"))).unwrap();
    let dir = scratch(&format!("runner-{name}"));
    let raw = dir.join("raw.wasm");
    std::fs::write(&raw, &source).unwrap();
    assert_eq!(wasi_runner_exit_code(&raw), code, "{name} as written");
    (source, dir)
}

/// tools/wasm-ship's loop unrolling keeps meaning: loops that exit at the top, at the bottom,
/// through a br_table, a return, and a branch to a label outside the loop, unrolled 1× to 8×,
/// give the same checksum (the exit code, computed independently: 86) under Bacalhau's engine.
#[test]
fn unrolled_loops_compute_the_same() {
    let (source, dir) = fixture_module("unroll-loops", 86);
    for factor in [2, 3, 8] {
        let unroll = wasm_ship::Unroll { factor, marked_factor: factor, marked_passes: &[], max_body_bytes: 600, functions: &["loops"], callees: &[] };
        let (shipped, report) = wasm_ship::ship(&source, "unroll", unroll).unwrap();
        assert_eq!(report.loops_unrolled, 2, "factor {factor}");
        let module = dir.join(format!("unrolled-{factor}.wasm"));
        std::fs::write(&module, shipped).unwrap();
        assert_eq!(wasi_runner_exit_code(&module), 86, "unrolled {factor}x");
    }
}

/// tools/wasm-ship's load rewrite in marked functions (constant adds folded into offsets,
/// `v128.load32_splat` as `f32.load` + `f32x4.splat`) keeps meaning: the same checksum
/// (computed independently: 21) under Bacalhau's engine, and the rewrite happened.
#[test]
fn rewritten_loads_compute_the_same() {
    let (report, code) = shipped_fixture("wazero-addressing", 21);
    // Three loads of the marked function's body rewritten (the fourth adds a negative
    // constant and stays), before its loop is copied.
    assert_eq!(report.loads_rewritten, 3);
    assert_eq!(code, 21);
}

/// tools/wasm-ship's whole passes (tools/wasm-ship/src/passes.rs) keep meaning: a marked loop
/// that walks two pointers and reads a fixed base, run for counts that take passes of 128, of
/// 32 and the remainder in every mix, exits with the same checksum (computed independently by
/// tests/data/wazero-passes.py: 67) under Bacalhau's engine, and the loop did become passes.
/// The kernel hashes its loads in step order: a rewrite that swaps a pass's copies in pairs, or
/// advances the pointers one step short per pass, exits with 102 or 26 instead (tried).
#[test]
fn whole_passes_compute_the_same() {
    let (report, code) = shipped_fixture("wazero-passes", 67);
    assert_eq!(report.loops_in_passes, 1);
    assert_eq!(code, 67);
}

/// tests/data/NAME.wasm (checked to exit with `code` as written) shipped as sd.wasm is: what
/// the rewrite reports, and the exit code of the shipped module under Bacalhau's engine.
fn shipped_fixture(name: &str, code: i32) -> (wasm_ship::Report, i32) {
    let (source, dir) = fixture_module(name, code);
    let (shipped, report) = wasm_ship::ship(&source, name, wasm_ship::sd_wasm_unroll()).unwrap();
    let module = dir.join("shipped.wasm");
    std::fs::write(&module, shipped).unwrap();
    (report, wasi_runner_exit_code(&module))
}

/// Image-to-image (8-channel VAE encoder, sampled latents) and inpainting with the regular UNet:
/// same bytes under Bacalhau's engine as under wasmtime.
#[test]
fn image_to_image_and_inpainting_same_picture_as_wasmtime() {
    let inputs = repo().join("fixtures/tiny-img2img");
    let base = ["--prompt", "a lighthouse at dusk", "--seed", "42", "--steps", "6", "--init-image", "/inputs/init.png"];
    for (name, extra) in [("img2img", &["--strength", "0.75"][..]), ("inpaint", &["--strength", "0.75", "--mask", "/inputs/mask.png"][..])] {
        let args = [&base[..], extra].concat();
        let (ours, theirs) = (scratch(&format!("runner-{name}")), scratch(&format!("runner-{name}-wasmtime")));
        let run = wasi_runner_with_inputs(&[(&tiny_model(), "/models"), (&inputs, "/inputs")], &ours, None, &args);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let reference = run_wasm_dirs(&[(&tiny_model(), "/models"), (&theirs, "/outputs"), (&inputs, "/inputs")], &args, 4 << 30, &[]);
        assert_eq!(reference.code, 0, "{name}: {}", reference.stderr);
        let (a, b) = (pngs(&ours), pngs(&theirs));
        assert_eq!(a.len(), 1, "{name}");
        assert!(a == b, "{name}: the picture under wazero differs from wasmtime's");
    }
}

/// A single-file checkpoint given as an input (`-i ckpt:/ckpt`), the template as the model:
/// same bytes under Bacalhau's engine as under wasmtime.
#[test]
fn a_checkpoint_input_same_picture_as_wasmtime() {
    let fixture = repo().join("fixtures/tiny-checkpoint");
    let args = [ARGS, &["--checkpoint", "/ckpt/tiny-fp32-ema.safetensors"]].concat();
    let (ours, theirs) = (scratch("runner-checkpoint"), scratch("runner-checkpoint-wasmtime"));
    let inputs = [(fixture.join("template"), "/models"), (fixture.clone(), "/ckpt")];
    let inputs: Vec<(&Path, &str)> = inputs.iter().map(|(p, g)| (p.as_path(), *g)).collect();
    let run = wasi_runner_with_inputs(&inputs, &ours, None, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reference = run_wasm_dirs(&[&inputs[..], &[(&theirs, "/outputs")]].concat(), &args, 4 << 30, &[]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let (a, b) = (pngs(&ours), pngs(&theirs));
    assert_eq!(a.len(), 1);
    assert!(a == b, "the picture under wazero differs from wasmtime's");
}
