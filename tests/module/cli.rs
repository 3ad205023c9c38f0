//! Command-line behaviour of sd.wasm beyond pixels: seeds, output naming, determinism.

use crate::common::*;

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
    let params = sd_wasm::codecs::png::read_parameters(&std::fs::read(out.join("pic.png")).unwrap()).unwrap().unwrap();
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

/// Nothing is cut: a prompt beyond 77 tokens is encoded in chunks (as Automatic1111 does), so
/// no warning, and its last words still change the picture.
#[test]
fn an_over_long_prompt_is_encoded_whole() {
    let prompt = "a very detailed painting of a lighthouse on a rocky cliff ".repeat(8);
    let mut pictures = Vec::new();
    for (name, ending) in [("long-zebras", "with zebras"), ("long-boats", "with boats")] {
        let out = scratch(name);
        let prompt = format!("{prompt}{ending}");
        let run = run_wasm(&tiny_model(), &out, &["--prompt", &prompt, "--seed", "1", "--steps", "2", "--quiet"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stderr.contains("warning: "), "{}", run.stderr);
        let png = files_in(&out).into_iter().find(|p| p.extension().unwrap() == "png").unwrap();
        let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
        assert_eq!(sidecar["warnings"].as_array().map_or(0, Vec::len), 0, "{sidecar}");
        pictures.push(read_png(&png));
    }
    assert!(max_pixel_diff(&pictures[0], &pictures[1]) > 2, "the words after token 75 were ignored");
}

/// `--bench NETWORK` (what scripts/bench.py runs; `--bench-unet` is `--bench unet`) prints one
/// JSON line with load, warm-up and run times and the peak linear memory, for each network; an unknown
/// network is a usage error naming the others.
#[test]
fn bench_prints_one_json_line_per_network() {
    let out = scratch("bench");
    let turbo = repo().join("fixtures/tiny-sd-turbo");
    let cases: [(&[&str], &std::path::Path, &str); 5] = [
        (&["--bench-unet"], &tiny_model(), "unet"),
        (&["--bench", "unet"], &tiny_model(), "unet"),
        (&["--bench", "vae-decoder"], &tiny_model(), "vae-decoder"),
        (&["--bench", "taesd-decoder"], &turbo, "taesd-decoder"),
        (&["--bench", "text-encoder"], &tiny_model(), "text-encoder"),
    ];
    let mut peaks = Vec::new();
    for (flags, models, network) in cases {
        let args = [flags, &["--models", "/models", "--latent", "8", "--runs", "2"]].concat();
        let run = run_wasm(models, &out, &args);
        assert_eq!(run.code, 0, "{network}: {}", run.stderr);
        let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
        assert_eq!(line["network"], network);
        assert_eq!(line["latent"], 8);
        assert_eq!(line["runs_s"].as_array().unwrap().len(), 2);
        assert!(line["warmup_s"].as_f64().unwrap() > 0.0);
        assert!(line["load_s"].as_f64().unwrap() > 0.0);
        let peak = line["peak_memory_bytes"].as_u64().unwrap();
        assert!(peak > (1 << 20) && peak < (1 << 30), "{network}: peak linear memory {peak}");
        peaks.push(peak);
    }
    // Each network loads its own graph: the decoders' and the encoder's memory is not the UNet's.
    assert!(peaks[2] != peaks[0] && peaks[4] != peaks[0], "{peaks:?}");
    let run = run_wasm(&tiny_model(), &out, &["--bench", "vae", "--models", "/models"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("unet, vae-decoder, taesd-decoder, text-encoder"), "{}", run.stderr);
}

/// `--preview-every K` writes a latent preview after every K-th step (not after the last),
/// beside the picture, each file once.
#[test]
fn previews_are_written_beside_the_picture() {
    let out = scratch("previews");
    let run = run_wasm(
        &tiny_model(),
        &out,
        &["--prompt", "a red cube", "--seed", "3", "--steps", "5", "--preview-every", "2", "--output", "/outputs/cube.png"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let names: Vec<String> =
        files_in(&out).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["cube-step-002.png", "cube-step-004.png", "cube.json", "cube.png"]);
    let preview = read_png(&out.join("cube-step-004.png"));
    assert_eq!((preview.width, preview.height), (8, 8), "one pixel per latent");
}

/// `--verbose` summarizes each intermediate tensor, so a run that goes wrong shows where
/// (this is how a wazero compiler bug was traced to the scheduler's arithmetic).
#[test]
fn verbose_summarizes_intermediate_tensors() {
    let out = scratch("verbose");
    let run = run_wasm(&tiny_model(), &out, &["--prompt", "a red cube", "--seed", "1", "--steps", "2", "--verbose", "--quiet"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for name in ["text embeddings", "initial latents", "UNet output, step 1", "UNet output, step 3", "decoded image"] {
        let line = run.stderr.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} line:\n{}", run.stderr));
        assert!(line.ends_with("non-finite 0"), "{line}");
    }
    // PNDM's initial latents are torch.randn: mean ~0, std ~1.
    let latents = run.stderr.lines().find(|l| l.starts_with("initial latents")).unwrap();
    assert!(latents.contains("std 1.0387"), "{latents}");
}

/// `--threads`: the module is single-threaded (wasmtime 47+ has no wasi-threads, wazero no
/// threads), so it takes 1 and refuses more as a usage error that says why, before any work.
#[test]
fn the_module_runs_one_thread_and_says_why_not_more() {
    let out = scratch("threads-wasm");
    let run = run_wasm(&tiny_model(), &out, &[ARGS, &["--seed", "1", "--threads", "1", "--output", "/outputs/one.png"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(out.join("one.png").exists());
    let run = run_wasm(&tiny_model(), &out, &[ARGS, &["--seed", "1", "--threads", "2", "--output", "/outputs/two.png"]].concat());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("single-threaded") && run.stderr.contains("wasi-threads"), "{}", run.stderr);
    assert!(!out.join("two.png").exists());
    let run = run_wasm(&tiny_model(), &out, &["--bench-unet", "--models", "/models", "--latent", "8", "--runs", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    assert_eq!(line["threads"], 1);
}
