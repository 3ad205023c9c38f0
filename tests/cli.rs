//! Command-line behaviour of sd.wasm beyond pixels: seeds, output naming, determinism.

mod common;
use common::*;

const ARGS: &[&str] = &["--prompt", "a red cube", "--steps", "3", "--scheduler", "euler", "--quiet"];

#[test]
fn a_missing_seed_is_chosen_printed_recorded_and_reproducible() {
    let out = scratch("clock-seed");
    let run = run_wasm(&tiny_model(), &out, ARGS);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run.stderr.lines().find(|l| l.starts_with("seed: ")).expect("the chosen seed is printed");
    let seed: u64 = line["seed: ".len()..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(seed < 1 << 32);
    let png = files_in(&out).into_iter().find(|p| p.extension().unwrap() == "png").unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["seed"], seed);

    let again = scratch("clock-seed-again");
    let seed_text = seed.to_string();
    let args: Vec<&str> = ARGS.iter().copied().chain(["--seed", &seed_text]).collect();
    let run = run_wasm(&tiny_model(), &again, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let png2 = files_in(&again).into_iter().find(|p| p.extension().unwrap() == "png").unwrap();
    assert_eq!(png.file_name(), png2.file_name(), "the name depends only on the parameters");
    assert_eq!(std::fs::read(&png).unwrap(), std::fs::read(&png2).unwrap(), "same seed, same bytes");
}

#[test]
fn explicit_output_file_gets_a_sidecar_beside_it() {
    let out = scratch("explicit-output");
    let args: Vec<&str> = ARGS.iter().copied().chain(["--seed", "7", "--output", "/outputs/pic.png"]).collect();
    let run = run_wasm(&tiny_model(), &out, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let names: Vec<String> =
        files_in(&out).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["pic.json", "pic.png"]);
    assert_eq!(run.stdout.trim(), "/outputs/pic.png");
    let params = sd_wasm::io::png::read_parameters(&std::fs::read(out.join("pic.png")).unwrap()).unwrap().unwrap();
    assert!(params.contains("Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 16x16"), "{params}");
}

#[test]
fn progress_lines_and_summary_on_stderr() {
    let out = scratch("progress");
    let run = run_wasm(&tiny_model(), &out, &["--prompt", "x", "--seed", "1", "--steps", "4", "--scheduler", "ddim"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let steps: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 4, "{}", run.stderr);
    assert!(steps[3].starts_with("step 4/4") && steps[0].contains("ETA"), "{}", run.stderr);
    let done = run.stderr.lines().find(|l| l.starts_with("done: ")).expect("summary line");
    for part in ["text encoder", "UNet", "VAE", "s/step", "total"] {
        assert!(done.contains(part), "summary lacks {part}: {done}");
    }
}

#[test]
fn an_over_long_prompt_is_truncated_with_a_warning() {
    let out = scratch("long-prompt");
    let prompt = "a very detailed painting of a lighthouse on a rocky cliff ".repeat(8) + "with zebras";
    let run = run_wasm(&tiny_model(), &out, &["--prompt", &prompt, "--seed", "1", "--steps", "2", "--quiet"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = run.stderr.lines().find(|l| l.starts_with("warning: ")).expect("a truncation warning");
    assert!(warning.contains("77") && warning.contains("zebras"), "{warning}");
    let png = files_in(&out).into_iter().find(|p| p.extension().unwrap() == "png").unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["warnings"].as_array().unwrap().len(), 1);
}
