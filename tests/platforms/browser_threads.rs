//! The threaded browser build (web/pkg-threads/, scripts/build-web-threads.sh) in a real
//! headless chromium, driven by tests/browser/threads.mjs: on a cross-origin isolated page the
//! worker runs it with a pool of 1, 2 and 4 threads, on a plain page the single-threaded
//! web/pkg/; the PNGs must be the same bytes (tests/platforms/browser.rs checks the plain
//! page's against the CLI's); a panic on a pool thread ends that run with a message, and the
//! page runs again. scripts/build-web.sh builds web/pkg-threads (scripts/test.sh runs it).

use crate::browser::{run_driver, web_manifest};
use crate::common::*;

#[test]
fn threaded_page_makes_the_same_png() {
    assert!(
        repo().join("web/pkg-threads/sd_wasm_bg.wasm").exists(),
        "web/pkg-threads is missing: build it with scripts/build-web.sh"
    );
    let models = scratch("browser-threads-models");
    let tiny = models.join("tiny");
    std::fs::rename(tiny_model_copy("browser-threads"), &tiny).unwrap();
    web_manifest(&tiny, Some(65536));
    let results_dir = repo().join("target/browser-threads-test");
    let args = ["--model".as_ref(), tiny.as_os_str(), "--threads".as_ref(), "1,2,4".as_ref()];
    let r = run_driver("threads.mjs", &args, &results_dir);
    for (run, build, threads) in [("plain", "pkg", 1), ("threads-1", "pkg-threads", 1), ("threads-2", "pkg-threads", 2), ("threads-4", "pkg-threads", 4)] {
        let v = &r["runs"][run];
        assert_eq!(v["state"], "done", "{run}: {v}");
        assert_eq!((v["build"].as_str(), v["threads"].as_u64()), (Some(build), Some(threads)), "{run}: {v}");
    }
    let png = |name: &str| std::fs::read(results_dir.join(format!("{name}.png"))).unwrap();
    assert!(png("threads-1") == png("plain"), "the threaded build at 1 thread makes other bytes than web/pkg");
    assert!(png("threads-2") == png("plain"), "the threaded build at 2 threads makes other bytes than web/pkg");
    assert!(png("threads-4") == png("plain"), "the threaded build at 4 threads makes other bytes than web/pkg");

    // A panic on a pool thread (?poolPanicAtStep=3) traps that Web Worker while the generating
    // worker waits for it: the page hears it on its channel, says so, starts a fresh worker,
    // and the next run on the same page makes the same picture.
    let panic = &r["runs"]["pool-panic"];
    let before = &panic["before"];
    assert_eq!(before["state"], "error", "{panic}");
    let error = before["error"].as_str().unwrap();
    assert!(error.contains("a thread of the pool failed") && error.contains("a test panic on a pool thread"), "{error}");
    assert_eq!(before["generateEnabled"], true, "{panic}");
    assert_eq!(panic["state"], "done", "the run after the failure: {panic}");
    assert!(png("pool-panic") == png("plain"), "the run after a pool failure makes other bytes");
}
