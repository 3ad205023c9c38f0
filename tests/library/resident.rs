//! Natively the weights' per-run handling (fp16 widening, packing for the GEMM) is done once at
//! load (src/models/resident.rs): the same ops on the same values, so the same bits. The
//! choice is process-wide (`SD_WASM_WEIGHTS`), so each side runs the native `sd` in its own
//! process.

use crate::common::*;
use std::process::Command;

fn sd(weights: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sd"));
    // The SD-Turbo fixture keeps its UNet's weights in fp16, as the converter writes them
    // (the plain tiny fixture's are f32, with nothing to fold).
    cmd.env("SD_WASM_WEIGHTS", weights).arg("--models").arg(repo().join("fixtures/tiny-sd-turbo")).args(args);
    cmd.output().expect("running the native sd")
}

/// The bench line's count of weights fed to the UNet on every run.
fn weights_per_run(weights: &str) -> u64 {
    let run = sd(weights, &["--bench", "unet", "--latent", "8", "--runs", "1", "--threads", "1"]);
    assert!(run.status.success(), "{weights}: {}", String::from_utf8_lossy(&run.stderr));
    let line: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    line["weights_per_run"].as_u64().unwrap_or_else(|| panic!("no weights_per_run in {line}"))
}

#[test]
fn weights_packed_at_load_give_the_same_png_as_weights_widened_per_run() {
    // Folding really happens (else the PNGs below would be equal trivially): the tiny UNet's
    // fp16 weights are fed per run at rest and none are when packed at load.
    assert!(weights_per_run("at-rest") > 50);  // 83 fp16 weights
    assert_eq!(weights_per_run("packed"), 0);
    let dir = scratch("resident");
    let mut pngs = Vec::new();
    for weights in ["at-rest", "packed"] {
        let path = dir.join(format!("{weights}.png"));
        let run = sd(weights, &[
            "--output", path.to_str().unwrap(), "--prompt", "a lighthouse at dusk", "--seed", "7", "--steps", "2",
            "--guidance-scale", "3", "--width", "64", "--height", "64", "--quiet", "--threads", "1",
        ]);
        assert!(run.status.success(), "{weights}: {}", String::from_utf8_lossy(&run.stderr));
        pngs.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(read_png(&dir.join("packed.png")).width, 64);
    assert!(pngs[0] == pngs[1], "weights packed at load: a different PNG than weights widened per run");
}
