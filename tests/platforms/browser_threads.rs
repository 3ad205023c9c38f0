//! The threaded browser build (web/pkg-threads/, scripts/build-web-threads.sh) in a real
//! headless chromium, driven by tests/browser/threads.mjs: on a cross-origin isolated page the
//! worker runs it with a pool of 1 and of 2 threads, on a plain page the single-threaded
//! web/pkg/; the three PNGs must be the same bytes (tests/platforms/browser.rs checks the plain
//! page's against the CLI's). Runs when web/pkg-threads exists or SD_WEB_THREADS=1 (then it
//! must exist); otherwise it says it did not test it (the threaded build is opt-in for now).

use crate::common::*;
use std::process::Command;

#[test]
fn threaded_page_makes_the_same_png() {
    let built = repo().join("web/pkg-threads/sd_wasm_bg.wasm").exists();
    if !built && std::env::var("SD_WEB_THREADS").is_ok_and(|v| v == "1") {
        panic!("SD_WEB_THREADS=1 but web/pkg-threads is missing: build it with scripts/build-web-threads.sh");
    }
    if !built {
        eprintln!("web/pkg-threads is not built (SD_WEB_THREADS=1 scripts/build-web.sh): the threaded page is not tested");
        return;
    }
    let models = scratch("browser-threads-models");
    let tiny = models.join("tiny");
    std::fs::rename(tiny_model_copy("browser-threads"), &tiny).unwrap();
    let manifest = Command::new("python3").arg(repo().join("scripts/web-manifest.py")).args(["--chunk-bytes", "65536"]).arg(&tiny).output().unwrap();
    assert!(manifest.status.success(), "{}", String::from_utf8_lossy(&manifest.stderr));
    let results_dir = repo().join("target/browser-threads-test");
    let _ = std::fs::remove_dir_all(&results_dir);
    let driver = Command::new("node")
        .arg(repo().join("tests/browser/threads.mjs"))
        .arg("--model")
        .arg(&tiny)
        .arg("--out")
        .arg(&results_dir)
        .args(["--threads", "1,2"])
        .output()
        .expect("running node (scripts/test.sh installs tests/browser's packages)");
    let text = std::fs::read_to_string(results_dir.join("results.json"))
        .unwrap_or_else(|_| panic!("the driver wrote no results: {}", String::from_utf8_lossy(&driver.stderr)));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(driver.status.success() && r.get("failure").is_none(), "driver failed: {}\n{}", r["failure"], String::from_utf8_lossy(&driver.stderr));
    for (run, build, threads) in [("plain", "pkg", 1), ("threads-1", "pkg-threads", 1), ("threads-2", "pkg-threads", 2)] {
        let v = &r["runs"][run];
        assert_eq!(v["state"], "done", "{run}: {v}");
        assert_eq!((v["build"].as_str(), v["threads"].as_u64()), (Some(build), Some(threads)), "{run}: {v}");
    }
    let png = |name: &str| std::fs::read(results_dir.join(format!("{name}.png"))).unwrap();
    assert!(png("threads-1") == png("plain"), "the threaded build at 1 thread makes other bytes than web/pkg");
    assert!(png("threads-2") == png("plain"), "the threaded build at 2 threads makes other bytes than web/pkg");
}
