//! The model families beyond SD 1.x, in the form scripts/convert.py writes them (fp16 weights
//! at rest, fused MultiHeadAttention, scalar timestep), under wasmtime against diffusers'
//! pictures from the same torch modules (fixtures/tiny-*/, scripts/make_family_fixtures.py):
//! SD 2.x v-prediction with its OpenCLIP-style text encoder and "!" padding; SD-Turbo with
//! trailing timesteps, one step, guidance 0, and TAESD as the decoder.

use crate::common::*;
use serde_json::Value;

const TOLERANCE: u8 = 2;

fn family_dir(family: &str) -> std::path::PathBuf {
    repo().join("fixtures").join(format!("tiny-{family}"))
}

fn expected(family: &str, file: &str) -> Value {
    let path = family_dir(family).join("expected").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn check_family(family: &str) {
    let cases = expected(family, "cases.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let out = scratch(&format!("family-{name}"));
        let args = case_flags(&case["args"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_wasm(&family_dir(family), &out, &argv);
        assert_eq!(run.code, 0, "{family} case {name} failed:\n{}", run.stderr);
        let png = files_in(&out).into_iter().find(|p| p.extension().is_some_and(|e| e == "png")).expect("a PNG");
        let theirs = read_png(&family_dir(family).join("expected").join(case["png"].as_str().unwrap()));
        let diff = max_pixel_diff(&read_png(&png), &theirs);
        assert!(diff <= TOLERANCE, "{family} case {name}: max pixel difference {diff}/255 > {TOLERANCE}/255");
        if case["args"]["guidance_scale"].as_f64() == Some(0.0) {
            // Guidance 0 (SD-Turbo) must skip the unconditional pass: one UNet call per step.
            let sidecar: Value = serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
            assert_eq!(sidecar["timings_seconds"]["unet_evaluations"], case["args"]["steps"], "{name}");
        }
        std::fs::remove_dir_all(&out).ok();
    }
}

/// The fixtures are strong enough that the properties under test show: a wrong prediction
/// type, pad token, word or guidance moves diffusers' own picture far past the tolerance.
fn check_sensitivity(family: &str) {
    let recorded = expected(family, "sensitivity.json");
    for (case, moves) in recorded.as_object().unwrap() {
        for key in ["changed_word", "pad_token", "prediction_type", "guidance"] {
            let moved = moves[key].as_u64().unwrap_or_else(|| panic!("{case}: {key} not recorded"));
            assert!(moved >= 5 * TOLERANCE as u64, "{family}/{case}: {key} moves the picture only {moved}/255");
        }
    }
}

#[test]
fn sd21_v_prediction_matches_diffusers() {
    check_sensitivity("sd21");
    check_family("sd21");
}

#[test]
fn sd_turbo_trailing_guidance_0_and_taesd_match_diffusers() {
    check_sensitivity("sd-turbo");
    check_family("sd-turbo");
}
