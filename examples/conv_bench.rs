//! Times the Winograd convolution op alone on the SD 1.5 UNet's 3×3 shapes at a 64×64 latent
//! (fp16 weights, as converted), so a change to it or to the F2/F4 choice is measured in
//! seconds instead of minutes of UNet:
//!
//!     cargo run --profile profiling --example conv_bench -- [THREADS] [RUNS]
//!
//! One line per shape: the best of RUNS (default 6) and the rate in direct-convolution
//! GFLOP/s (2·9·inputs·outputs·pixels, whatever the algorithm), so the algorithms compare.

use sd_wasm::models::ops::winograd::{conv, f4_from};
use std::time::Instant;
use tract_onnx::prelude::*;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("THREADS and RUNS are numbers"));
    let threads = args.next().unwrap_or(1);
    let runs = args.next().unwrap_or(6);
    sd_wasm::models::threads::use_threads(threads).unwrap();
    println!("{threads} thread(s), best of {runs}, F4 from output side {}", f4_from());
    // (batch, inputs, outputs, side): the up path's widest at 16×16, the 1280-channel levels,
    // a batch of two (guidance), the 640 and 320 levels, the up path's first convolution at
    // each of those two (skip connection concatenated).
    let shapes = [
        (1usize, 2560usize, 1280usize, 16usize),
        (1, 1280, 1280, 16),
        (1, 1280, 1280, 8),
        (2, 1280, 1280, 16),
        (1, 640, 640, 32),
        (1, 1920, 640, 32),
        (1, 320, 320, 64),
        (1, 960, 320, 64),
    ];
    for (batch, inputs, outputs, side) in shapes {
        let x = Tensor::from_shape(&[batch, inputs, side, side], &vec![0.5f32; batch * inputs * side * side]).unwrap();
        let w: Vec<f16> = (0..outputs * inputs * 9).map(|i| f16::from_f32(((i % 7) as f32 - 3.0) * 0.01)).collect();
        let w = Tensor::from_shape(&[outputs, inputs, 3, 3], &w).unwrap();
        let b = Tensor::from_shape(&[outputs], &vec![0.1f32; outputs]).unwrap();
        let best = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(conv(&x, &w, &b, [1, 1, 1, 1]).unwrap());
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        let direct = 2.0 * (batch * outputs * inputs * 9 * side * side) as f64;
        println!("batch {batch}, {inputs} -> {outputs} channels, {side}x{side}: {best:.4} s, {:.1} GFLOP/s direct", direct / best / 1e9);
    }
}
