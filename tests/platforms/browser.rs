//! The browser page (web/, built by scripts/build-web.sh) in a real headless chromium, driven
//! by tests/browser/driver.mjs (playwright-core): the PNG it makes must be byte-identical to
//! sd.wasm's under wasmtime; Cancel stops within one step and the next run still matches;
//! a reload takes every model file from the cache; a partial cached file is fetched again; a
//! broken model URL, a bad size and a size too large for wasm32 end as plain-words errors in
//! the page. Single-file checkpoints (picked, fetched, cached whole or in part, with a VAE file) make the CLI's
//! --checkpoint pictures (one too large for the Cache API of a private window, kept in memory
//! instead); image-to-image with a mask painted by the mouse, two pictures, a
//! LoRA named in the prompt and TAESD make the CLI's pictures with the same inputs; Cancel
//! stops a network load.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `scripts/web-manifest.py` over `dir` (with `--chunk-bytes`, when given).
pub fn web_manifest(dir: &Path, chunk_bytes: Option<u64>) {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/web-manifest.py"));
    if let Some(bytes) = chunk_bytes {
        cmd.arg("--chunk-bytes").arg(bytes.to_string());
    }
    let out = cmd.arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a tests/browser driver with `args` (then `--out results_dir`) and returns its
/// results.json, which it must have written without a failure.
pub fn run_driver(script: &str, args: &[&std::ffi::OsStr], results_dir: &Path) -> serde_json::Value {
    let _ = std::fs::remove_dir_all(results_dir);
    let driver = Command::new("node")
        .arg(repo().join("tests/browser").join(script))
        .args(args)
        .arg("--out")
        .arg(results_dir)
        .output()
        .expect("running node (scripts/test.sh installs tests/browser's packages)");
    let text = std::fs::read_to_string(results_dir.join("results.json"))
        .unwrap_or_else(|_| panic!("the driver wrote no results: {}", String::from_utf8_lossy(&driver.stderr)));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(driver.status.success() && r.get("failure").is_none(), "driver failed: {}\n{}", r["failure"], String::from_utf8_lossy(&driver.stderr));
    r
}

/// [`FRONT_END_PICTURE`] with some flags' values replaced, then `more` flags.
fn picture_flags(replace: &[(&str, &str)], more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = FRONT_END_PICTURE.iter().map(|s| s.to_string()).collect();
    for (flag, value) in replace {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.to_string();
    }
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// The CLI's pictures under their default names, with `dirs` mapped and /outputs a new dir.
fn cli_pictures(name: &str, dirs: &[(&Path, &str)], args: &[String]) -> BTreeMap<String, Vec<u8>> {
    let out = scratch(name);
    let dirs = [dirs, &[(out.as_path(), "/outputs")][..]].concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_wasm_dirs(&dirs, &args, 4 << 30, &[]);
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    pngs(&out)
}

/// `src`, a safetensors file, with a tensor of `extra` zero bytes more that no network uses
/// (as a checkpoint's EMA copy is), written to `dst`: a checkpoint as large as a test needs.
fn padded_checkpoint(src: &Path, dst: &Path, extra: u64) {
    let bytes = std::fs::read(src).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let end = data.len() as u64;
    header.insert("sd_wasm_test.padding".into(), serde_json::json!({ "dtype": "F16", "shape": [extra / 2], "data_offsets": [end, end + extra] }));
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    std::fs::write(dst, &out).unwrap();
    // The zeros as a hole: written in no time, read as zeros.
    std::fs::OpenOptions::new().write(true).open(dst).unwrap().set_len(out.len() as u64 + extra).unwrap();
}

#[test]
fn page_in_chromium_matches_the_cli() {
    // The model dir is named `tiny` on both sides: its name is part of the PNG's metadata.
    let models = scratch("browser-models");
    let tiny = models.join("tiny");
    std::fs::rename(tiny_model_copy("browser"), &tiny).unwrap();
    let out = scratch("browser-cli");
    let args = [&["--models", "/models/tiny", "--output", "/outputs/cli.png"][..], FRONT_END_PICTURE].concat();
    let cli = run_wasm(&models, &out, &args);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    let cli_png = std::fs::read(out.join("cli.png")).unwrap();
    // The checkpoint runs' pictures from the CLI: the fixture's template (named "template" on
    // both sides) with a checkpoint, and with one without a VAE plus a VAE file.
    let checkpoints = repo().join("fixtures/tiny-checkpoint");
    let cli_checkpoint = |name: &str, weights: &[&str]| {
        let output = format!("/outputs/{name}.png");
        let args = [&["--models", "/ckpt/template", "--output", output.as_str()][..], weights, FRONT_END_PICTURE].concat();
        let r = run_wasm_dirs(&[(&checkpoints, "/ckpt"), (&out, "/outputs")], &args, 4 << 30, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::read(out.join(format!("{name}.png"))).unwrap()
    };
    let cli_ckpt = cli_checkpoint("cli-ckpt", &["--checkpoint", "/ckpt/tiny-fp32-ema.safetensors"]);
    // A checkpoint larger than a private window's Cache API stores (one entry of 400 MB fails in
    // headless chromium's default context, 250 MB does not): the page keeps it in memory instead.
    let big = scratch("browser-big-checkpoint");
    padded_checkpoint(&checkpoints.join("tiny-fp32-ema.safetensors"), &big.join("padded.safetensors"), 450 << 20);
    let cli_big = cli_pictures(
        "browser-cli-big",
        &[(checkpoints.as_path(), "/ckpt"), (big.as_path(), "/big")],
        &picture_flags(&[], &["--models", "/ckpt/template", "--checkpoint", "/big/padded.safetensors"]),
    );
    let cli_ckpt_vae = cli_checkpoint(
        "cli-ckpt-vae",
        &["--checkpoint", "/ckpt/tiny-fp16-novae.safetensors", "--vae-file", "/ckpt/tiny-vae.safetensors"],
    );
    assert!(cli_ckpt != cli_png && cli_ckpt != cli_ckpt_vae, "the checkpoints' pictures differ from the model dir's and each other");

    // 64 KiB pieces, so the tiny model's files span many and the per-piece check is exercised.
    web_manifest(&tiny, Some(65536));
    // SD-Turbo's tiny shapes with TAESD, also named alike on both sides.
    let turbo = models.join("turbo");
    std::fs::rename(model_copy(&repo().join("fixtures/tiny-sd-turbo"), "browser-turbo"), &turbo).unwrap();
    web_manifest(&turbo, None);
    let results_dir = repo().join("target/browser-test");
    let (init, lora) = (repo().join("fixtures/tiny-img2img/init.png"), repo().join("fixtures/tiny-lora/style.safetensors"));
    let flags = [("--model", &tiny), ("--checkpoints", &checkpoints), ("--big", &big), ("--turbo", &turbo), ("--init", &init), ("--lora", &lora)];
    let args: Vec<&std::ffi::OsStr> = flags.iter().flat_map(|(flag, path)| [std::ffi::OsStr::new(*flag), path.as_os_str()]).collect();
    let r = run_driver("driver.mjs", &args, &results_dir);

    let png = |name: &str| std::fs::read(results_dir.join(format!("{name}.png"))).unwrap();
    let runs = ["first", "after-cancel", "after-reload", "after-corrupt", "plain-after-cancel", "from-folder"];
    for name in runs {
        assert!(png(name) == cli_png, "{name}.png from the page differs from the CLI's cli.png ({} vs {} bytes)", png(name).len(), cli_png.len());
    }
    let parameters = sd_wasm::codecs::png::read_parameters(&cli_png).unwrap().unwrap();
    assert_eq!(r["first"]["parameters"], parameters.as_str(), "the page shows the PNG's parameters text");
    assert!(r["first"]["fileName"].as_str().unwrap().starts_with("sd-42-"), "{}", r["first"]["fileName"]);

    // First visit downloads every file of the manifest once.
    let listed: Vec<String> = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(tiny.join("sd-manifest.json")).unwrap())
        .unwrap()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .filter(|path| !path.starts_with("vae_encoder/"))
        .map(|path| format!("{path} 200"))
        .collect();
    let requested: Vec<String> = r["firstRequests"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(requested, listed, "first visit downloads each file once (the VAE encoder only for image-to-image)");
    assert!(r["first"]["downloads"].as_object().unwrap().values().all(|s| s == "downloaded"), "{}", r["first"]["downloads"]);

    // Cancel: cooperative (SharedArrayBuffer, page cross-origin isolated) stops within one step.
    assert_eq!(r["crossOriginIsolated"], true);
    for (key, isolated) in [("cancel", true), ("plainCancel", false)] {
        let c = &r[key];
        assert_eq!(c["state"], "cancelled", "{key}: {c}");
        assert_eq!(c["generateEnabled"], true, "{key}: {c}");
        let (at, stopped) = (c["cancelAt"].as_u64().unwrap(), c["stoppedAt"].as_u64().unwrap());
        assert!(at >= 5 && stopped < 1000, "{key}: {c}");
        if isolated {
            // Steps finished when Cancel was pressed (shared memory) vs when the run ended.
            assert!(stopped == at || stopped == at + 1, "{key}: cancel at step {at} stopped at {stopped}: {c}");
        }
    }
    assert_eq!(r["plainIsolated"], false);
    // Which build each page ran, as the page says: the threaded one (scripts/build-web.sh builds
    // it) on the isolated page, on every core the browser reports; web/pkg on the plain page.
    let cores = r["hardwareConcurrency"].as_u64().unwrap();
    let threaded = if cores == 1 { "Threaded build, 1 thread.".to_string() } else { format!("Threaded build, {cores} threads.") };
    assert_eq!(r["first"]["build"], threaded.as_str(), "the cross-origin isolated page");
    assert_eq!(r["plainAfterCancel"]["build"], "Single-threaded build.", "the plain page");

    // Reload: nothing downloaded again.
    assert_eq!(r["reloadRequests"], serde_json::json!([]), "a reload must take the model from the cache");
    assert!(r["reload"]["downloads"].as_object().unwrap().values().all(|s| s == "cached"), "{}", r["reload"]["downloads"]);

    // A partial cached file, and a whole one with one byte changed in its fourth piece, are
    // detected and fetched again (only those two).
    assert_eq!(r["corruptRequests"], serde_json::json!(["text_encoder/model.onnx 200", "unet/model.onnx_data 200"]));
    assert_eq!(r["corrupt"]["downloads"]["unet/model.onnx_data"], "downloaded");
    assert_eq!(r["corrupt"]["downloads"]["text_encoder/model.onnx"], "downloaded");

    // A picked folder is read in place.
    assert_eq!(r["folderRequests"], serde_json::json!([]));

    // Single-file checkpoints with a picked template folder: picked, fetched by URL (once,
    // then from the cache), with a picked VAE: the CLI's bytes.
    let runs = [("ckpt-picked", &cli_ckpt), ("ckpt-fetched", &cli_ckpt), ("ckpt-cached", &cli_ckpt), ("ckpt-partial", &cli_ckpt), ("ckpt-vae", &cli_ckpt_vae)];
    for (name, want) in runs {
        assert!(png(name) == *want, "{name}.png from the page differs from the CLI's --checkpoint picture");
    }
    assert_eq!(r["ckptFetchedRequests"], serde_json::json!(["tiny-fp32-ema.safetensors 200"]));
    assert_eq!(r["ckptCachedRequests"], serde_json::json!([]), "a fetched checkpoint is taken from the cache the second time");
    assert_eq!(r["ckptCached"]["downloads"]["tiny-fp32-ema.safetensors"], "cached");
    // A cached copy shorter than the size stored with it is fetched again.
    assert_eq!(r["ckptPartialRequests"], serde_json::json!(["tiny-fp32-ema.safetensors 200"]));
    assert_eq!(r["ckptPartial"]["downloads"]["tiny-fp32-ema.safetensors"], "downloaded");
    // The checkpoint the browser would not cache: fetched twice (the refused store, then into
    // memory), the CLI's picture, and the page says it was not cached.
    assert!(png("ckpt-uncached") == *cli_big.values().next().unwrap(), "ckpt-uncached.png from the page differs from the CLI's");
    assert_eq!(r["ckptUncachedRequests"], serde_json::json!(["padded.safetensors 200", "padded.safetensors 200"]));
    let note = r["ckptUncached"]["downloadNotes"]["padded.safetensors"].as_str().unwrap();
    assert!(note.contains("not cached"), "{note}");
    for (key, words) in [("ckptNoVae", &["has no VAE", "vae-file"][..]), ("ckptNotSafetensors", &["ema.png"][..])] {
        assert_eq!(r[key]["state"], "error", "{key}: {}", r[key]);
        let text = r[key]["error"].as_str().unwrap();
        assert!(words.iter().all(|w| text.contains(w)), "{key}: {text}");
    }

    // Errors in plain words.
    assert_eq!(r["brokenUrl"]["state"], "error");
    let broken = r["brokenUrl"]["error"].as_str().unwrap();
    assert!(broken.contains("No model at") && broken.contains("404"), "{broken}");
    assert_eq!(r["badSize"]["state"], "error");
    let bad = r["badSize"]["error"].as_str().unwrap();
    assert!(bad.contains("width must be a multiple of 8") && bad.contains("got 20"), "{bad}");
    assert_eq!(r["tooLarge"]["state"], "error");
    let large = r["tooLarge"]["error"].as_str().unwrap();
    assert!(large.starts_with("Out of memory: unet needs about") && large.contains("smaller size"), "{large}");
    assert!(results_dir.join("screenshot.png").exists());

    // Image-to-image with the mask painted in the page: the mask has the first stroke (rows
    // 4–5 of 16) and not the undone second (row 14).
    let mask = read_png(&results_dir.join("mask.png"));
    assert_eq!((mask.width, mask.height), (16, 16));
    let at = |x: u32, y: u32| mask.pixels[((y * mask.width + x) * 3) as usize];
    assert!((3..=5).any(|y| at(8, y) >= 128), "the painted stroke is not in the mask");
    assert!((0..16).all(|x| at(x, 14) < 128), "the undone stroke is still in the mask");
    let fixture_dir = repo().join("fixtures/tiny-img2img");
    let inputs = [(models.as_path(), "/models"), (fixture_dir.as_path(), "/in"), (results_dir.as_path(), "/page")];
    let image_flags = ["--models", "/models/tiny", "--init-image", "/in/init.png", "--strength", "0.6"];
    let inpaint = cli_pictures("browser-inpaint", &inputs, &picture_flags(&[], &[&image_flags[..], &["--mask", "/page/mask.png", "--num-images", "2"]].concat()));
    let page_names: Vec<&str> = r["inpaint"]["fileNames"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(page_names, inpaint.keys().map(String::as_str).collect::<Vec<_>>(), "the page names its pictures as the CLI does");
    for (i, bytes) in inpaint.values().enumerate() {
        assert!(png(&format!("inpaint-{}", i + 1)) == *bytes, "inpaint picture {} differs from the CLI's", i + 1);
    }
    let img2img = cli_pictures("browser-img2img", &inputs, &picture_flags(&[], &image_flags));
    let img2img = img2img.values().next().unwrap();
    assert!(png("img2img") == *img2img, "img2img.png from the page differs from the CLI's");
    assert!(inpaint.values().all(|p| p != img2img) && *img2img != cli_png, "the mask and the init picture change the picture");
    assert_eq!(r["img2imgMaskShown"], false, "a cleared mask is not sent");
    let not_picture = r["notPicture"].as_str().unwrap();
    assert!(not_picture.contains("Cargo.toml is not a picture"), "{not_picture}");

    // A LoRA picked and named in the prompt: the CLI's --lora-dir picture.
    let lora_dir = repo().join("fixtures/tiny-lora");
    let tagged = cli_pictures(
        "browser-lora",
        &[(models.as_path(), "/models"), (lora_dir.as_path(), "/loras")],
        &picture_flags(&[("--prompt", "a red cube on a table <lora:style:0.8>")], &["--models", "/models/tiny", "--lora-dir", "/loras"]),
    );
    let tagged = tagged.values().next().unwrap();
    assert!(png("lora") == *tagged && *tagged != cli_png, "lora.png from the page differs from the CLI's (or the LoRA did nothing)");
    assert_eq!(r["loraMissing"]["state"], "error");
    let missing = r["loraMissing"]["error"].as_str().unwrap();
    assert!(missing.contains("nothere.safetensors is not among the LoRA files picked"), "{missing}");

    // TAESD as the decoder, SD-Turbo's one step.
    let taesd = cli_pictures(
        "browser-turbo",
        &[(models.as_path(), "/models")],
        &picture_flags(&[("--steps", "1"), ("--guidance-scale", "0")], &["--models", "/models/turbo", "--vae", "taesd"]),
    );
    assert!(png("turbo-taesd") == *taesd.values().next().unwrap(), "turbo-taesd.png from the page differs from the CLI's");

    // Cancel during a network load (each read slowed to 50 ms): stopped at the next read.
    let c = &r["cancelLoad"];
    assert_eq!(c["state"], "cancelled", "{c}");
    assert!(c["status"].as_str().unwrap().contains("while loading UNet"), "{c}");
    assert!(c["seconds"].as_f64().unwrap() < 3.0 && c["generateEnabled"] == true, "{c}");
}
