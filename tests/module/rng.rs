//! `--rng cuda` end to end in sd.wasm under wasmtime: the initial latents are the noise of the
//! independent reference (scripts/make_rng_cuda_cases.py; no GPU is here, so torch.randn on
//! CUDA is checked through that implementation of the published algorithm), the picture is far
//! from torch's, and `--params-from` picks the generator Automatic1111 used: no RNG field (its
//! default GPU noise) or "RNG: NV" → cuda, "RNG: CPU" → torch.

use crate::common::*;
use std::path::Path;

/// The tiny fixture's initial noise for seed 42 ([1, 4, 8, 8]), from the Python reference.
fn reference_latents() -> std::path::PathBuf {
    repo().join("tests/data/rng_cuda_seed42_1x4x8x8.npy")
}

const BASE: &[&str] =
    &["--prompt", "a lighthouse at dusk", "--seed", "42", "--steps", "4", "--width", "16", "--height", "16"];

/// Runs with the tiny model at /models, `out` at /outputs, tests/data at /data; returns the PNG.
fn run(out: &Path, extra: &[&str], name: &str) -> (Run, std::path::PathBuf) {
    let output = format!("/outputs/{name}.png");
    let args: Vec<&str> = BASE.iter().copied().chain(extra.iter().copied()).chain(["--output", &output]).collect();
    let data = repo().join("tests/data");
    let r = run_wasm_dirs(&[(&tiny_model(), "/models"), (out, "/outputs"), (&data, "/data")], &args, 4 << 30, &[]);
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    (r, out.join(format!("{name}.png")))
}

/// `--verbose`'s "initial latents: mean … std … min … max …" numbers.
fn initial_stats(stderr: &str) -> [f64; 4] {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("initial latents: "))
        .unwrap_or_else(|| panic!("no initial latents line:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| words[words.iter().position(|w| *w == key).unwrap() + 1].parse::<f64>().unwrap();
    [at("mean"), at("std"), at("min"), at("max")]
}

fn params(path: &Path) -> String {
    sd_wasm::codecs::png::read_parameters(&std::fs::read(path).unwrap()).unwrap().expect("parameters chunk")
}

/// DDIM (eta 0) draws only the initial noise, times init_noise_sigma 1: `--rng cuda` must give
/// the picture of `--latents` holding the reference's noise, and torch's noise one far away.
#[test]
fn cuda_noise_is_the_reference_noise_end_to_end() {
    let out = scratch("rng-cuda-reference");
    let ddim = ["--scheduler", "ddim", "--verbose"];
    let (cuda_run, cuda) = run(&out, &[&ddim[..], &["--rng", "cuda"][..]].concat(), "cuda");
    let (_, given) = run(&out, &[&ddim[..], &["--latents", "/data/rng_cuda_seed42_1x4x8x8.npy"][..]].concat(), "given");
    let (torch_run, torch) = run(&out, &ddim, "torch");

    // The noise itself: --verbose's summary of the initial latents against the reference's.
    let reference = sd_wasm::codecs::npy::read_npy(&std::fs::read(reference_latents()).unwrap()).unwrap();
    let values: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64).sqrt();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ours = initial_stats(&cuda_run.stderr);
    for (name, (a, b)) in ["mean", "std", "min", "max"].iter().zip(ours.iter().zip([mean, std, min, max])) {
        // Printed with 4 decimals; std may be the sample or the population one (256 values).
        assert!((a - b).abs() <= 2.5e-3, "initial latents {name}: sd.wasm {a}, reference {b}");
    }
    let theirs = initial_stats(&torch_run.stderr);
    assert!(
        (theirs[2] - min).abs() > 0.05 || (theirs[3] - max).abs() > 0.05,
        "torch's noise has the reference's range: {theirs:?}"
    );

    // The picture: identical to the reference noise given as --latents, far from torch's.
    let (cuda, given, torch) = (read_png(&cuda), read_png(&given), read_png(&torch));
    let same = max_pixel_diff(&cuda, &given);
    let moved = max_pixel_diff(&cuda, &torch);
    eprintln!("--rng cuda vs the reference noise as --latents: {same}/255; vs --rng torch: {moved}/255");
    assert!(same <= 1, "--rng cuda vs --latents <reference noise>: {same}/255");
    assert!(moved > 40, "torch's noise moved the picture only {moved}/255");
    std::fs::remove_dir_all(&out).ok();
}

/// An Automatic1111 PNG without an RNG field was made with its GPU noise: --params-from runs
/// it with cuda (per-step noise too: Euler a), "RNG: CPU" with torch; what we record ("RNG: NV")
/// reads back as cuda, so our own picture repeats byte for byte.
#[test]
fn params_from_picks_automatic1111s_generator() {
    let out = scratch("rng-params-from");
    let head = "a lighthouse at dusk\nNegative prompt: blurry\nSteps: 5, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 16x16, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly";
    for (file, text) in
        [("gpu.png", format!("{head}, Version: v1.9.4")), ("cpu.png", format!("{head}, RNG: CPU, Version: v1.9.4"))]
    {
        write_parameters_png(&out.join(file), &text);
    }
    let from = |file: &str, name: &str| {
        let output = format!("/outputs/{name}.png");
        let input = format!("/outputs/{file}");
        let r = run_wasm(&tiny_model(), &out, &["--params-from", &input, "--output", &output, "--quiet"]);
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        out.join(format!("{name}.png"))
    };
    let explicit = |rng: &str, name: &str| {
        let output = format!("/outputs/{name}.png");
        let r = run_wasm(
            &tiny_model(),
            &out,
            &[
                "--prompt",
                "a lighthouse at dusk",
                "--negative-prompt",
                "blurry",
                "--steps",
                "5",
                "--scheduler",
                "euler-a",
                "--guidance-scale",
                "7",
                "--seed",
                "1234",
                "--width",
                "16",
                "--height",
                "16",
                "--rng",
                rng,
                "--output",
                &output,
                "--quiet",
            ],
        );
        assert_eq!(r.code, 0, "--rng {rng}: {}", r.stderr);
        out.join(format!("{name}.png"))
    };
    let (gpu, cpu) = (from("gpu.png", "from-gpu"), from("cpu.png", "from-cpu"));
    let (cuda, torch) = (explicit("cuda", "cuda"), explicit("torch", "torch"));
    assert!(params(&gpu).contains("RNG: NV"), "{}", params(&gpu));
    assert!(params(&cpu).contains("RNG: CPU"), "{}", params(&cpu));
    assert_eq!(std::fs::read(&gpu).unwrap(), std::fs::read(&cuda).unwrap(), "no RNG field must run as --rng cuda");
    assert_eq!(std::fs::read(&cpu).unwrap(), std::fs::read(&torch).unwrap(), "RNG: CPU must run as --rng torch");
    let moved = max_pixel_diff(&read_png(&cuda), &read_png(&torch));
    eprintln!("Euler a, cuda vs torch: {moved}/255");
    assert!(moved > 40, "the generator moved the picture only {moved}/255");

    // Our own pictures repeat: "RNG: NV" and "RNG: CPU" read back as what made them.
    let again_cuda = from("cuda.png", "again-cuda");
    let again_torch = from("torch.png", "again-torch");
    assert_eq!(std::fs::read(&again_cuda).unwrap(), std::fs::read(&cuda).unwrap());
    assert_eq!(std::fs::read(&again_torch).unwrap(), std::fs::read(&torch).unwrap());
    std::fs::remove_dir_all(&out).ok();
}

/// `--prompts` lines take the key too.
#[test]
fn a_prompt_line_chooses_its_generator() {
    let out = scratch("rng-prompts");
    std::fs::write(
        out.join("lines.jsonl"),
        "{\"prompt\": \"a lighthouse at dusk\", \"seed\": 42, \"rng\": \"cuda\", \"steps\": 4, \"scheduler\": \"ddim\"}\n",
    )
    .unwrap();
    let r = run_wasm(&tiny_model(), &out, &["--prompts", "/outputs/lines.jsonl", "--output", "/outputs", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let png = files_in(&out).into_iter().find(|p| p.extension().is_some_and(|e| e == "png")).expect("a PNG");
    assert!(params(&png).contains("RNG: NV"), "{}", params(&png));
    let (_, single) = run(&out, &["--scheduler", "ddim", "--rng", "cuda"], "single");
    assert_eq!(max_pixel_diff(&read_png(&png), &read_png(&single)), 0);
    std::fs::remove_dir_all(&out).ok();
}
