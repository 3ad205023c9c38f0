//! The browser page (web/, built by scripts/build-web.sh) in a real headless chromium, driven
//! by tests/browser/driver.mjs (playwright-core): the PNG it makes must be byte-identical to
//! sd.wasm's under wasmtime; Cancel stops within one step and the next run still matches;
//! a reload takes every model file from the cache; a partial cached file is fetched again; a
//! broken model URL, a bad size and a size too large for wasm32 end as plain-words errors in
//! the page. Single-file checkpoints (picked, fetched, with a VAE file) make the CLI's
//! --checkpoint pictures.

use crate::common::*;
use std::process::Command;

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
    let cli_ckpt_vae = cli_checkpoint(
        "cli-ckpt-vae",
        &["--checkpoint", "/ckpt/tiny-fp16-novae.safetensors", "--vae-file", "/ckpt/tiny-vae.safetensors"],
    );
    assert!(cli_ckpt != cli_png && cli_ckpt != cli_ckpt_vae, "the checkpoints' pictures differ from the model dir's and each other");

    // 64 KiB pieces, so the tiny model's files span many and the per-piece check is exercised.
    let manifest = Command::new("python3").arg(repo().join("scripts/web-manifest.py")).args(["--chunk-bytes", "65536"]).arg(&tiny).output().unwrap();
    assert!(manifest.status.success(), "{}", String::from_utf8_lossy(&manifest.stderr));

    let results_dir = repo().join("target/browser-test");
    let _ = std::fs::remove_dir_all(&results_dir);
    let driver = Command::new("node")
        .arg(repo().join("tests/browser/driver.mjs"))
        .arg("--model")
        .arg(&tiny)
        .arg("--out")
        .arg(&results_dir)
        .arg("--checkpoints")
        .arg(&checkpoints)
        .output()
        .expect("running node (scripts/test.sh installs tests/browser's packages)");
    let text = std::fs::read_to_string(results_dir.join("results.json"))
        .unwrap_or_else(|_| panic!("the driver wrote no results: {}", String::from_utf8_lossy(&driver.stderr)));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(driver.status.success() && r.get("failure").is_none(), "driver failed: {}\n{}", r["failure"], String::from_utf8_lossy(&driver.stderr));

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
        .map(|f| format!("{} 200", f["path"].as_str().unwrap()))
        .collect();
    let requested: Vec<String> = r["firstRequests"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(requested, listed, "first visit downloads each file once");
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
    for (name, want) in [("ckpt-picked", &cli_ckpt), ("ckpt-fetched", &cli_ckpt), ("ckpt-cached", &cli_ckpt), ("ckpt-vae", &cli_ckpt_vae)] {
        assert!(png(name) == *want, "{name}.png from the page differs from the CLI's --checkpoint picture");
    }
    assert_eq!(r["ckptFetchedRequests"], serde_json::json!(["tiny-fp32-ema.safetensors 200"]));
    assert_eq!(r["ckptCachedRequests"], serde_json::json!([]), "a fetched checkpoint is taken from the cache the second time");
    assert_eq!(r["ckptCached"]["downloads"]["tiny-fp32-ema.safetensors"], "cached");
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
}
