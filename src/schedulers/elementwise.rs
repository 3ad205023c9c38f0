//! Element-wise f32 kernels over same-shaped tensors: each closure a caller passes mirrors one
//! torch expression, op by op, so the rounding matches diffusers'.

use ndarray::Zip;

use crate::tensor::{Latents, NoiseSource};

pub(crate) fn shape_err(a: &Latents, b: &Latents) -> String {
    format!("tensor shape mismatch: {:?} vs {:?}", a.shape(), b.shape())
}

pub(crate) fn map2(
    a: &Latents,
    b: &Latents,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Latents, String> {
    if a.shape() != b.shape() {
        return Err(shape_err(a, b));
    }
    Ok(Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)))
}

pub(crate) fn map3(
    a: &Latents,
    b: &Latents,
    c: &Latents,
    f: impl Fn(f32, f32, f32) -> f32,
) -> Result<Latents, String> {
    if a.shape() != b.shape() {
        return Err(shape_err(a, b));
    }
    if a.shape() != c.shape() {
        return Err(shape_err(a, c));
    }
    Ok(Zip::from(a)
        .and(b)
        .and(c)
        .map_collect(|&x, &y, &z| f(x, y, z)))
}

pub(crate) fn map4(
    a: &Latents,
    b: &Latents,
    c: &Latents,
    d: &Latents,
    f: impl Fn(f32, f32, f32, f32) -> f32,
) -> Result<Latents, String> {
    for o in [b, c, d] {
        if a.shape() != o.shape() {
            return Err(shape_err(a, o));
        }
    }
    Ok(Zip::from(a)
        .and(b)
        .and(c)
        .and(d)
        .map_collect(|&w, &x, &y, &z| f(w, x, y, z)))
}

/// Element-wise f32 map over any number of same-shaped tensors (logical order); `f` gets one value
/// per tensor, in the order given.
pub(crate) fn map_n(arrays: &[&Latents], f: impl Fn(&[f32]) -> f32) -> Result<Latents, String> {
    let first = arrays
        .first()
        .ok_or_else(|| "map_n needs at least one tensor".to_string())?;
    for a in arrays {
        if a.shape() != first.shape() {
            return Err(shape_err(first, a));
        }
    }
    let mut iters: Vec<_> = arrays.iter().map(|a| a.iter()).collect();
    let mut vals = vec![0f32; arrays.len()];
    let mut out = Vec::with_capacity(first.len());
    for _ in 0..first.len() {
        for (v, it) in vals.iter_mut().zip(iters.iter_mut()) {
            *v = *it.next().unwrap_or(&0.0);
        }
        out.push(f(&vals));
    }
    Latents::from_shape_vec(first.raw_dim(), out).map_err(|e| e.to_string())
}

/// Draws noise of `shape`, checking the source honoured it.
pub(crate) fn draw_noise(noise: &mut dyn NoiseSource, shape: &[usize]) -> Result<Latents, String> {
    let n = noise.randn(shape);
    if n.shape() != shape {
        return Err(format!(
            "noise source returned shape {:?}, expected {:?}",
            n.shape(),
            shape
        ));
    }
    Ok(n)
}
