//! Times sd-kernels' hot kernels alone, so a change to one can be measured in seconds under
//! both engines instead of minutes of UNet (scripts/bench-kernels.py builds this for
//! wasm32-wasip1, ships it with tools/wasm-ship as sd.wasm is shipped, and runs it under
//! wasmtime and wasi-runner). One line per kernel: `name shape: best seconds, rate`.
//! The inputs are fixed, so a checksum printed with each line must be the same everywhere.

use sd_kernels::winograd::{kernel_rows_f16, Algorithm, Panels};
use std::time::Instant;

/// The best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// The Winograd kernel transform of a block of fp16 weights (the UNet's 640-channel level, one
/// block of output channels, panels of 4 rows: the GEMM tile's), by both algorithms.
fn kernel_transform() {
    let (rows, inputs, r) = (128usize, 640usize, 4usize);
    let mut seed = 1u32;
    let w: Vec<u16> = (0..rows * inputs * 9)
        .map(|_| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            0x3000 | ((seed >> 16) as u16 & 0x0fff)
        })
        .collect();
    for (algorithm, name) in [(Algorithm::F4, "F4"), (Algorithm::F2, "F2")] {
        let panels = Panels { r, panel_len: inputs * r };
        let mut planes: Vec<Vec<f32>> = (0..algorithm.positions()).map(|_| vec![0f32; rows.div_ceil(r) * panels.panel_len]).collect();
        let seconds = best(30, || {
            let mut u: Vec<&mut [f32]> = planes.iter_mut().map(|p| p.as_mut_slice()).collect();
            kernel_rows_f16(algorithm, &w, rows, inputs, panels, &mut u);
        });
        let checksum: f64 = planes.iter().flatten().map(|&x| x as f64).sum();
        let kernels = (rows * inputs) as f64;
        println!("kernel_transform_{name} {rows}x{inputs}: {seconds:.6} s, {:.2} ns/kernel (checksum {checksum:.6})", seconds * 1e9 / kernels);
    }
}

/// C = A·B through tract's frame on the GEMM tile (wasm32 only: natively tract's own kernels
/// run), both builds of its reduction loop.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn gemm() {
    use tract_data::prelude::*;
    use tract_linalg::mmm::{AsInputValue, FusedSpec};
    use tract_linalg::pack::PackedFormat;
    for (name, kernel) in [("step", sd_kernels::mmm::wasm_f32_4x8()), ("unrolled", sd_kernels::mmm::wasm_f32_4x8_unrolled())] {
        let mmm = kernel.mmm();
        for (m, k, n, runs) in [(128, 640, 256, 60), (320, 2880, 64, 30)] {
            let (pa, pb) = &mmm.packings()[0];
            let (pa, pb) = (pa.downcast_ref::<PackedFormat>().unwrap(), pb.downcast_ref::<PackedFormat>().unwrap());
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
            let (ta, tb) = (Tensor::from_shape(&[m, k], &a).unwrap(), Tensor::from_shape(&[k, n], &b).unwrap());
            let (mut pa_buf, mut pb_buf) = (pa.new_packed_buffer(k, m).unwrap(), pb.new_packed_buffer(k, n).unwrap());
            let c = Tensor::zero::<f32>(&[m, n]).unwrap();
            let seconds = unsafe {
                pa.repack_tensor_view(&mut pa_buf, &ta.view(), 1, 0).unwrap();
                pb.repack_tensor_view(&mut pb_buf, &tb.view(), 0, 1).unwrap();
                let mut scratch = mmm.allocate_scratch_space();
                best(runs, || {
                    let store = mmm.c_view(Some(0), Some(1)).wrap(&c.view());
                    let ops = [FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&pa_buf), b: AsInputValue::Borrowed(&pb_buf), packing: 0 }, FusedSpec::Store(store)];
                    mmm.run_with_scratch_space(m, n, &mut *scratch, &ops).unwrap();
                })
            };
            let checksum: f64 = c.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|&x| x as f64).sum();
            println!("gemm_{name} {m}x{k}x{n}: {seconds:.6} s, {:.1} GFLOP/s (checksum {checksum:.6})", 2.0 * (m * k * n) as f64 / seconds / 1e9);
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn gemm() {}

fn main() {
    kernel_transform();
    gemm();
    // Returning from main ends a wasip1 module without proc_exit, which Bacalhau (and
    // wasi-runner) report as exit code -1.
    std::process::exit(0);
}
