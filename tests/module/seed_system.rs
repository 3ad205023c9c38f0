//! The command lines of the system sd.wasm replaces (bes-dev/stable_diffusion.openvino's
//! `demo.py`, as packaged for Bacalhau), run unchanged under wasmtime: its README's examples
//! and every flag it has. The working directory is a scratch dir mapped as the module's "/"
//! (so `./data/input.png` and `output.png` resolve there), the tiny model at /models (our
//! default for --model).

use crate::common::*;
use std::path::Path;

fn run_in(work: &Path, args: &[&str]) -> Run {
    run_wasm_dirs(&[(work, "/"), (&tiny_model(), "/models")], args, 4 << 30, &[])
}

fn pngs(dir: &Path) -> Vec<std::path::PathBuf> {
    files_in(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect()
}

fn params(path: &Path) -> String {
    sd_wasm::codecs::png::read_parameters(&std::fs::read(path).unwrap()).unwrap().expect("parameters chunk")
}

/// The README's four examples, word for word.
#[test]
fn readme_examples_run_unchanged() {
    let work = scratch("seed-readme");
    std::fs::create_dir_all(work.join("data")).unwrap();
    std::fs::copy(img2img_dir().join("init.png"), work.join("data/input.png")).unwrap();
    std::fs::copy(img2img_dir().join("mask.png"), work.join("data/mask.png")).unwrap();

    // Example Text-To-Image. (demo.py names its picture output.png; ours is
    // sd-<seed>-<hash>.png when --output is not given.)
    let r = run_in(&work, &["--prompt", "Street-art painting of Emilia Clarke in style of Banksy, photorealism"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = pngs(&work);
    assert_eq!(first.len(), 1, "{first:?}");
    std::fs::rename(&first[0], work.join("output.png")).unwrap();
    let original = params(&work.join("output.png"));
    assert!(original.starts_with("Street-art painting of Emilia Clarke"), "{original}");

    // Repeat a previous image generation with identical seed and parameters but more steps.
    let r = run_in(&work, &["--params-from", "output.png", "--output", "new-output.png", "--num-inference-steps", "64"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let repeated = params(&work.join("new-output.png"));
    let seed = |p: &str| p.split("Seed: ").nth(1).unwrap().split(',').next().unwrap().to_string();
    assert_eq!(seed(&repeated), seed(&original), "{repeated}");
    assert!(repeated.contains("Steps: 64"), "{repeated}");
    assert!(repeated.starts_with("Street-art painting of Emilia Clarke in style of Banksy, photorealism\n"), "{repeated}");

    // Example Image-To-Image.
    let r = run_in(&work, &["--prompt", "Photo of Emilia Clarke with a bright red hair", "--init-image", "./data/input.png", "--strength", "0.5"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Example Inpainting.
    let r = run_in(&work, &[
        "--prompt", "Photo of Emilia Clarke with a bright red hair", "--init-image", "./data/input.png", "--mask", "./data/mask.png",
        "--strength", "0.5",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let made: Vec<String> = pngs(&work).iter().map(|p| params(p)).collect();
    assert_eq!(made.iter().filter(|p| p.contains("Denoising strength: 0.5") && p.contains("Init image: given")).count(), 2, "{made:?}");
    assert_eq!(made.iter().filter(|p| p.contains("Mask: given")).count(), 1, "{made:?}");
    std::fs::remove_dir_all(&work).ok();
}

/// Every demo.py flag at its documented default is accepted, and gives the picture our own
/// flags give (the betas are the tiny model's own; the tokenizer is the model dir's).
#[test]
fn every_flag_of_the_seed_system_is_accepted() {
    let work = scratch("seed-flags");
    let theirs = [
        "--model", "/models", "--seed", "7", "--beta-start", "0.00085", "--beta-end", "0.012", "--beta-schedule", "scaled_linear",
        "--num-inference-steps", "8", "--guidance-scale", "7.5", "--eta", "0.0", "--tokenizer", "openai/clip-vit-large-patch14",
        "--prompt", "Street-art painting of Emilia Clarke in style of Banksy, photorealism", "--output", "theirs.png",
    ];
    let r = run_in(&work, &theirs);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ours = [
        "--models", "/models", "--seed", "7", "--steps", "8", "--prompt", "Street-art painting of Emilia Clarke in style of Banksy, photorealism",
        "--output", "ours.png",
    ];
    let r = run_in(&work, &ours);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (a, b) = (read_png(&work.join("theirs.png")), read_png(&work.join("ours.png")));
    assert_eq!(max_pixel_diff(&a, &b), 0, "the seed system's defaults changed the picture");

    // The beta flags do override the scheduler config.
    let mut linear = theirs.to_vec();
    let at = linear.iter().position(|a| *a == "scaled_linear").unwrap();
    linear[at] = "linear";
    *linear.last_mut().unwrap() = "linear.png";
    let r = run_in(&work, &linear);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let moved = max_pixel_diff(&read_png(&work.join("linear.png")), &b);
    assert!(moved > 20, "--beta-schedule linear moved the picture only {moved}/255");
    assert!(params(&work.join("linear.png")).contains("Beta schedule: linear"));
    std::fs::remove_dir_all(&work).ok();
}

/// --params-from reads Automatic1111's `parameters` text as well as ours. Without an "RNG"
/// field the picture was made with Automatic1111's default GPU noise: `--rng cuda`.
#[test]
fn params_from_reads_automatic1111_pngs() {
    let work = scratch("seed-a1111");
    let text = "a lighthouse at dusk, oil painting\nNegative prompt: blurry\nSteps: 6, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 16x16, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: \"x: 1, y: 2\", Version: v1.9.4";
    write_parameters_png(&work.join("a1111.png"), text);
    let r = run_in(&work, &["--params-from", "a1111.png", "--output", "from-a1111.png"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("not used: Model hash") || r.stderr.contains("not used: Lora hashes"), "{}", r.stderr);
    let r = run_in(&work, &[
        "--prompt", "a lighthouse at dusk, oil painting", "--negative-prompt", "blurry", "--steps", "6", "--scheduler", "euler-a",
        "--guidance-scale", "7", "--seed", "1234", "--width", "16", "--height", "16", "--rng", "cuda", "--output", "explicit.png",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(work.join("from-a1111.png")).unwrap(), std::fs::read(work.join("explicit.png")).unwrap());

    // Not a PNG, or a PNG without parameters: one clear line, exit 2.
    write_parameters_png(&work.join("plain.png"), "");
    std::fs::write(work.join("photo.jpg"), [0xff, 0xd8, 0xff, 0xe0]).unwrap();
    for (file, message) in [("plain.png", "no `Steps: …` line"), ("photo.jpg", "is a JPEG"), ("missing.png", "cannot read it")] {
        let r = run_in(&work, &["--params-from", file]);
        assert_eq!(r.code, 2, "{file}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{file}: {}", r.stderr);
    }
    std::fs::remove_dir_all(&work).ok();
}
