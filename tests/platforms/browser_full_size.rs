//! A full-size model in the browser tab (issue 15): SD-Turbo's real shapes (random init, made
//! once by scripts/convert.py under ~/.cache/sd-wasm/models), 512², 1 step, TAESD, loaded by
//! the page from its URL and manifest (scripts/web-manifest.py) into the Cache API, on the
//! single-threaded page and on the threaded one at 2 threads, to the PNG: the same bytes as
//! sd.wasm's under wasmtime. scripts/bench_browser.py makes the runs (and prints their time
//! and memory); this test checks what it kept.
//!
//! It is here, not only in the benchmark, because the full-size page once broke without any
//! tiny-model test noticing: the memory probe asked the tab for one ~2 GiB block, which a tab
//! refuses (fixed in 1de6531).

use crate::common::*;
use std::process::Command;

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn full_size_sd_turbo_in_the_page_matches_the_cli() {
    let out = repo().join("target/browser-full-size-test");
    let run = Command::new("python3")
        .arg(repo().join("scripts/bench_browser.py"))
        .args(["--variants", "plain", "threads=2", "--keep"])
        .arg(&out)
        .arg("--wasm")
        .arg(sd_wasm_path())
        .output()
        .unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(out.join("results.json")).unwrap_or_else(|_| panic!("bench_browser.py kept no results:\n{log}"));
    let results: serde_json::Value = serde_json::from_str(&text).unwrap();
    eprintln!("{log}");

    let cli = std::fs::read(out.join("cli/cli.png")).unwrap();
    assert_eq!(png_size(&cli), (512, 512), "the CLI's picture");
    for (variant, build) in [("plain", "Single-threaded"), ("threads=2", "2 threads")] {
        let r = &results["runs"][variant];
        assert_eq!(r["state"], "done", "{variant}: {r}");
        assert!(r["build"].as_str().unwrap_or("").contains(build), "{variant} ran another build: {r}");
        let page = std::fs::read(out.join(variant).join("page.png")).unwrap();
        assert!(page == cli, "the full-size page ({variant}) made other bytes than the CLI");
        // The tab held the model: the worker's wasm memory peaked above the UNet's 1.7 GB of
        // fp16 weights (a run that loaded less would be another model).
        assert!(r["peak_memory_bytes"].as_u64().unwrap() > 1_700_000_000, "{variant}: {r}");
    }
    assert!(run.status.success(), "bench_browser.py failed:\n{log}");
}
