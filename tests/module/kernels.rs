//! The GEMM tile sd.wasm registers with tract (crates/sd-kernels/src/mmm.rs), in the shipped
//! module: its one-step reduction loop, the loop tools/wasm-ship unrolled, and tract's own
//! `wasm_f32_8x8` (`SD_WASM_MMM` picks; by default the module times its two builds of the
//! loop and keeps the faster) add the same products in the same order, so the picture is the same bytes.
//! The unrolled loop exists only in the shipped module, so this is where it is checked.

use crate::common::*;

#[test]
fn every_gemm_kernel_writes_the_same_picture() {
    let args = ["--prompt", "a lighthouse at dusk", "--seed", "7", "--steps", "2", "--width", "64", "--height", "64", "--quiet"];
    let mut pictures = Vec::new();
    for kernel in ["step", "unrolled", "tract", "auto"] {
        let out = scratch(&format!("kernels-{kernel}"));
        let run = run_wasm_with_env(&tiny_model(), &out, &args, &[("SD_WASM_MMM", kernel)]);
        assert_eq!(run.code, 0, "{kernel}: {}", run.stderr);
        let written = pngs(&out);
        assert_eq!(written.len(), 1, "{kernel}: {:?}", written.keys());
        pictures.push((kernel, written.into_values().next().unwrap()));
        std::fs::remove_dir_all(&out).ok();
    }
    for (kernel, png) in &pictures[1..] {
        assert!(png == &pictures[0].1, "SD_WASM_MMM={kernel} wrote other bytes than the one-step tile");
    }
}
