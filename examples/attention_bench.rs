//! Times the attention op alone on the SD 1.5 UNet's shapes at a 64×64 latent (self-attention
//! of the 320-channel level, S = 4096, 8 heads of 40; its cross-attention to 77 tokens; the
//! 640-channel level's S = 1024, 8 heads of 80), and SD 2.x's (SD-Turbo's) 320-channel level, 5 heads of
//! 64 at S = 4096:
//!
//!     cargo run --profile profiling --example attention_bench -- [THREADS] [RUNS]
//!
//! One line per shape: the best of RUNS (default 4) and the rate in GFLOP/s (4·S_q·S_k·D per
//! head: Q·Kᵀ and P·V).

use sd_wasm::models::ops::attention::attention;
use std::time::Instant;
use tract_onnx::prelude::*;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("THREADS and RUNS are numbers"));
    let threads = args.next().unwrap_or(1);
    let runs = args.next().unwrap_or(4);
    sd_wasm::models::threads::use_threads(threads).unwrap();
    println!("{threads} thread(s), best of {runs}");
    let tensor = |shape: [usize; 4], seed: usize| {
        let n = shape.iter().product::<usize>();
        Tensor::from_shape(&shape, &(0..n).map(|i| (((i * 7919 + seed) % 1000) as f32 - 500.0) * 0.004).collect::<Vec<_>>()).unwrap()
    };
    for (heads, sq, sk, d) in [(8usize, 4096usize, 4096usize, 40usize), (8, 4096, 77, 40), (8, 1024, 1024, 80), (5, 4096, 4096, 64)] {
        let (q, k, v) = (tensor([1, heads, sq, d], 1), tensor([1, heads, sk, d], 2), tensor([1, heads, sk, d], 3));
        let best = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(attention(&q, &k, &v, None).unwrap());
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        let flops = 4.0 * (heads * sq * sk * d) as f64;
        println!("{heads} heads, {sq} x {sk} keys of {d}: {best:.4} s, {:.1} GFLOP/s", flops / best / 1e9);
    }
}
