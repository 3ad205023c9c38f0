//! Image-to-image and inpainting from sd.wasm under wasmtime against diffusers'
//! StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline (fixtures/tiny-img2img,
//! made by scripts/make_img2img_fixtures.py on the tiny model): a regular and a 9-channel
//! UNet, an 8-channel (mean, log-variance) and a 4-channel (latent) VAE encoder, batches.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const TOLERANCE: u8 = 2;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(img2img_dir().join("cases.json")).expect("fixtures/tiny-img2img/cases.json");
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

fn case(name: &str) -> Value {
    cases().into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no fixture case {name}"))
}

/// The tiny model, or a copy with the case's 9-channel UNet or 4-channel encoder in place.
fn model_for(case: &Value) -> PathBuf {
    let (unet, encoder) = (case["unet"].as_str().unwrap(), case["encoder"].as_str().unwrap());
    if unet == "regular" && encoder == "parameters" {
        return tiny_model();
    }
    let dir = tiny_model_copy(&format!("{unet}-{encoder}-{}", case["name"].as_str().unwrap()));
    let replace = |sub: &str, from: &str| {
        std::fs::remove_dir_all(dir.join(sub)).unwrap();
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for f in files_in(&img2img_dir().join(from)) {
            std::fs::copy(&f, dir.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    };
    if unet == "inpaint" {
        replace("unet", "unet-inpaint");
    }
    if encoder == "latent_sample" {
        replace("vae_encoder", "vae_encoder_latent_sample");
    }
    dir
}

/// The case's command line; inputs are read from /inputs (fixtures/tiny-img2img).
fn case_args(case: &Value, overrides: &Value) -> Vec<String> {
    let mut a = case["args"].clone();
    for (k, v) in overrides.as_object().into_iter().flatten() {
        a[k] = v.clone();
    }
    let mut v: Vec<String> = vec![
        "--prompt".into(),
        a["prompt"].as_str().unwrap().into(),
        "--negative-prompt".into(),
        a["negative_prompt"].as_str().unwrap().into(),
        "--seed".into(),
        case["seeds"][0].to_string(),
        "--steps".into(),
        a["steps"].to_string(),
        "--guidance-scale".into(),
        a["guidance_scale"].to_string(),
        "--scheduler".into(),
        a["scheduler"].as_str().unwrap().into(),
        "--strength".into(),
        a["strength"].to_string(),
        "--init-image".into(),
        format!("/inputs/{}", a["init_image"].as_str().unwrap()),
    ];
    if let Some(mask) = a["mask"].as_str() {
        v.extend(["--mask".into(), format!("/inputs/{mask}")]);
    }
    if !a["eta"].is_null() {
        v.extend(["--eta".into(), a["eta"].to_string()]);
    }
    let n = case["seeds"].as_array().unwrap().len();
    if n > 1 {
        v.extend(["--num-images".into(), n.to_string()]);
    }
    v
}

/// Runs sd.wasm with the model at /models, fixtures/tiny-img2img at /inputs.
fn run(model: &Path, out: &Path, args: &[String]) -> Run {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    run_wasm_dirs(&[(model, "/models"), (out, "/outputs"), (&img2img_dir(), "/inputs")], &argv, 4 << 30, &[])
}

fn pngs(dir: &Path) -> Vec<PathBuf> {
    files_in(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect()
}

/// Our pictures for a case (sorted by seed) and the run's stderr.
fn ours(case: &Value, overrides: &Value, extra: &[&str], tag: &str) -> (Vec<sd_wasm::codecs::png::RgbImage>, String) {
    let model = model_for(case);
    let out = scratch(&format!("img2img-{}-{tag}", case["name"].as_str().unwrap()));
    let mut args = case_args(case, overrides);
    args.extend(extra.iter().map(|s| s.to_string()));
    let r = run(&model, &out, &args);
    assert_eq!(r.code, 0, "{}: {}", case["name"], r.stderr);
    let mut found: Vec<(u64, PathBuf)> = pngs(&out)
        .into_iter()
        .map(|p| {
            let params = sd_wasm::codecs::png::read_parameters(&std::fs::read(&p).unwrap()).unwrap().unwrap();
            let seed = params.split("Seed: ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
            (seed, p)
        })
        .collect();
    found.sort();
    let seeds: Vec<u64> = found.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = case["seeds"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(seeds, want, "each PNG records its own seed");
    let images = found.iter().map(|(_, p)| read_png(p)).collect();
    std::fs::remove_dir_all(&out).ok();
    if model != tiny_model() {
        std::fs::remove_dir_all(&model).ok();
    }
    (images, r.stderr)
}

fn check_case(name: &str) {
    let c = case(name);
    let (images, _) = ours(&c, &Value::Null, &[], "parity");
    for (img, png) in images.iter().zip(c["pngs"].as_array().unwrap()) {
        let theirs = read_png(&img2img_dir().join(png.as_str().unwrap()));
        let diff = max_pixel_diff(img, &theirs);
        assert!(diff <= TOLERANCE, "{name} ({png}): max pixel difference {diff}/255 > {TOLERANCE}/255");
    }
}

parity_cases! {
    img2img_pndm => "img2img-pndm-0.75",
    img2img_euler_ancestral => "img2img-euler-a-0.5",
    img2img_ddim_eta => "img2img-ddim-eta-0.5-0.6",
    img2img_dpm_full_strength => "img2img-dpm++2m-1.0",
    img2img_four_channel_encoder => "img2img-latent-encoder-euler-0.6",
    img2img_two_seeds => "img2img-batch-euler-a-0.5",
    inpaint_regular_unet => "inpaint-pndm-0.75",
    inpaint_regular_unet_full_strength => "inpaint-euler-1.0",
    inpaint_resized_mask => "inpaint-mask32-lms-0.8",
    inpaint_nine_channel_unet => "inpaint9-pndm-1.0",
    inpaint_nine_channel_unet_strength => "inpaint9-euler-a-0.6",
}

/// The random tiny model must be able to show a wrong strength or mask: ours matches
/// diffusers' variant, and the variant is far from the case's picture.
#[test]
fn wrong_strength_or_mask_moves_the_picture_far_beyond_tolerance() {
    let sens: Value = serde_json::from_str(&std::fs::read_to_string(img2img_dir().join("sensitivity.json")).unwrap()).unwrap();
    let threshold = sens["threshold"].as_u64().unwrap() as u8;
    assert!(threshold >= 10 * TOLERANCE);
    for v in sens["variants"].as_array().unwrap() {
        let c = case(v["case"].as_str().unwrap());
        let tag = v["variant"].as_str().unwrap();
        let (images, _) = ours(&c, &v["override"], &[], tag);
        let theirs = read_png(&img2img_dir().join(v["png"].as_str().unwrap()));
        let parity = max_pixel_diff(&images[0], &theirs);
        assert!(parity <= TOLERANCE, "{} {tag}: {parity}/255 from diffusers' variant", c["name"]);
        let base = read_png(&img2img_dir().join(c["pngs"][0].as_str().unwrap()));
        let moved = max_pixel_diff(&images[0], &base);
        assert!(moved > threshold, "{} {tag}: moved only {moved}/255 (want > {threshold})", c["name"]);
    }
}

/// --batch-size only changes how many pictures share a UNet call, never a picture.
#[test]
fn batch_size_does_not_change_the_pictures() {
    let c = case("img2img-batch-euler-a-0.5");
    let (one_at_a_time, _) = ours(&c, &Value::Null, &["--batch-size", "1"], "b1");
    let (together, _) = ours(&c, &Value::Null, &["--batch-size", "2"], "b2");
    for (a, b) in one_at_a_time.iter().zip(&together) {
        assert!(max_pixel_diff(a, b) <= 1, "batch 2 differs from batch 1 by {}", max_pixel_diff(a, b));
    }
    // Three pictures in batches of two: the last batch is smaller (the UNet is re-pinned).
    let (three, _) = ours(&json_with_seeds(&c, &[42, 43, 44]), &Value::Null, &["--batch-size", "2"], "b2of3");
    assert_eq!(three.len(), 3);
    assert!(max_pixel_diff(&three[0], &one_at_a_time[0]) <= 1);
    assert!(max_pixel_diff(&three[1], &one_at_a_time[1]) <= 1);
    assert!(max_pixel_diff(&three[2], &three[0]) > 20, "seed 44 drew the same picture as seed 42");
}

fn json_with_seeds(c: &Value, seeds: &[u64]) -> Value {
    let mut c = c.clone();
    c["seeds"] = serde_json::json!(seeds);
    c
}

#[test]
fn mask_of_another_size_is_resized_and_said_so() {
    let c = case("inpaint-mask32-lms-0.8");
    let (_, stderr) = ours(&c, &Value::Null, &[], "said");
    assert!(stderr.contains("--mask is 32x32") && stderr.contains("resized to 16x16"), "{stderr}");
}

/// A 16-bit, grayscale+alpha or RGBA version of the init picture: converted (and said so),
/// and the 16-bit one (each sample v·257) is the 8-bit picture exactly.
#[test]
fn sixteen_bit_gray_and_rgba_init_images_are_converted() {
    let c = case("img2img-pndm-0.75");
    let init = read_png(&img2img_dir().join("init.png"));
    let dir = scratch("odd-pngs");
    let write = |name: &str, color: png::ColorType, depth: png::BitDepth, data: Vec<u8>| {
        let mut bytes = Vec::new();
        {
            let mut e = png::Encoder::new(&mut bytes, init.width, init.height);
            e.set_color(color);
            e.set_depth(depth);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&data).unwrap();
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    write("rgb16.png", png::ColorType::Rgb, png::BitDepth::Sixteen, init.pixels.iter().flat_map(|&v| [v, v]).collect());
    write("rgba.png", png::ColorType::Rgba, png::BitDepth::Eight, init.pixels.chunks(3).flat_map(|p| [p[0], p[1], p[2], 128]).collect());
    write("gray-alpha.png", png::ColorType::GrayscaleAlpha, png::BitDepth::Eight, init.pixels.chunks(3).flat_map(|p| [p[1], 255]).collect());
    let base = read_png(&img2img_dir().join(c["pngs"][0].as_str().unwrap()));
    for (file, note) in [("rgb16.png", "16-bit"), ("rgba.png", "alpha channel ignored"), ("gray-alpha.png", "")] {
        let out = scratch(&format!("odd-{file}"));
        let mut args = case_args(&c, &Value::Null);
        let at = args.iter().position(|a| a == "--init-image").unwrap();
        args[at + 1] = format!("/odd/{file}");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_wasm_dirs(&[(&tiny_model(), "/models"), (&out, "/outputs"), (&dir, "/odd")], &argv, 4 << 30, &[]);
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        assert!(r.stderr.contains(note), "{file}: no note {note:?}: {}", r.stderr);
        let got = read_png(&pngs(&out)[0]);
        if file != "gray-alpha.png" {
            assert!(max_pixel_diff(&got, &base) <= TOLERANCE, "{file}: not the 8-bit RGB picture");
        }
        std::fs::remove_dir_all(&out).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_init_images_masks_and_strengths_fail_clearly() {
    let dir = scratch("bad-inputs");
    std::fs::write(dir.join("photo.jpg"), [0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F']).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let mut truncated = std::fs::read(img2img_dir().join("init.png")).unwrap();
    truncated.truncate(60);
    std::fs::write(dir.join("truncated.png"), truncated).unwrap();
    let base = ["--prompt", "a lighthouse", "--seed", "1", "--steps", "4"];
    let nine = model_for(&case("inpaint9-pndm-1.0"));
    let tiny = tiny_model();
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (vec!["--init-image", "/bad/photo.jpg"], &tiny, "is a JPEG; only PNG"),
        (vec!["--init-image", "/bad/notes.txt"], &tiny, "not a PNG"),
        (vec!["--init-image", "/bad/truncated.png"], &tiny, "--init-image /bad/truncated.png"),
        (vec!["--init-image", "/bad/missing.png"], &tiny, "cannot read it"),
        (vec!["--init-image", "/inputs/init.png", "--mask", "/bad/photo.jpg"], &tiny, "--mask /bad/photo.jpg: the file is a JPEG"),
        (vec!["--init-image", "/inputs/init.png", "--strength", "0"], &tiny, "--strength must be in (0, 1]"),
        (vec!["--init-image", "/inputs/init.png", "--strength", "1.5"], &tiny, "--strength must be in (0, 1]"),
        (vec!["--init-image", "/inputs/init.png", "--strength", "nan"], &tiny, "--strength must be in (0, 1]"),
        (vec!["--init-image", "/inputs/init.png", "--strength", "0.05"], &tiny, "runs no step"),
        (vec!["--mask", "/inputs/mask.png"], &tiny, "--mask needs --init-image"),
        (vec!["--strength", "0.5"], &tiny, "--strength 0.5 needs --init-image"),
        (vec!["--num-images", "0"], &tiny, "--num-images must be between"),
        (vec!["--batch-size", "0"], &tiny, "--batch-size must be at least 1"),
        (vec!["--beta-schedule", "cosine"], &tiny, "--beta-schedule \"cosine\" is not known"),
        (vec!["--beta-start", "0.02", "--beta-end", "0.01"], &tiny, "larger than --beta-end"),
        (vec![], &nine, "inpainting UNet (9 input channels): give --init-image and --mask"),
        (vec!["--init-image", "/inputs/init.png"], &nine, "inpainting UNet"),
    ];
    for (extra, model, message) in cases {
        let out = scratch("bad-out");
        let mut argv: Vec<&str> = base.to_vec();
        argv.extend(&extra);
        let r = run_wasm_dirs(&[(model, "/models"), (&out, "/outputs"), (&dir, "/bad"), (&img2img_dir(), "/inputs")], &argv, 4 << 30, &[]);
        assert_eq!(r.code, 2, "{extra:?}: exit {} (want 2): {}", r.code, r.stderr);
        assert!(r.stderr.contains(message), "{extra:?}: stderr lacks {message:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{}", r.stderr);
        assert!(files_in(&out).is_empty(), "{extra:?} left files behind");
        std::fs::remove_dir_all(&out).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&nine).ok();
}
