//! torch-compatible float32 arithmetic: where diffusers builds a table or a step with torch
//! tensors, these reproduce torch's CPU results (order of operations, accumulation precision).

/// torch.linspace(start, end, steps, dtype=float32) on CPU: per-element scalar formula from both
/// ends, which torch's AVX2 build compiles to fused multiply-adds.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// torch.cumprod on a float32 CPU tensor accumulates in double.
pub(crate) fn cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// f32 transcendental as torch computes it on a 0-d tensor, rounded from float64 (torch's MKL/SLEEF
/// kernels are within ~1 ulp of this).
pub(crate) fn ln_f32(x: f32) -> f32 {
    crate::math::ln(x as f64) as f32
}

pub(crate) fn exp_f32(x: f32) -> f32 {
    crate::math::exp(x as f64) as f32
}

/// torch.clamp(v, lo, hi) = min(max(v, lo), hi), NaN-propagating.
pub(crate) fn torch_clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let y = if v < lo { lo } else { v };
    if y > hi {
        hi
    } else {
        y
    }
}
