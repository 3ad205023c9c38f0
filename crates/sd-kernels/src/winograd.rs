//! Winograd F(2×2, 3×3) transforms (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2015): a 3×3 convolution at stride 1 computed over 4×4 input tiles that overlap
//! by 2, each giving 2×2 outputs, as 16 matrix products (one per position of the transformed
//! tile) of [outputs × inputs] by [inputs × tiles]. 16 multiplies per 4 outputs and channel
//! pair instead of 36: 2.25× fewer. The products are the caller's (tract-linalg's GEMM); here
//! are the three transforms:
//! - kernel: U = G·g·Gᵀ per (output, input) channel pair;
//! - input: V = Bᵀ·d·B per tile, a tile row at a time over the row's even and odd columns, so
//!   every step is element-wise over the row's tiles (vectorizable);
//! - output: Y = Aᵀ·M·A per tile, plus the bias, likewise over a tile row.
//!
//! The constants are 0, ±1 and ±½, exact in f32: the result differs from the direct sum only
//! by the order of additions (and the products' different grouping).

use crate::for_lanes;
use crate::lanes::{F32x4, Lanes};

// The public transforms are `#[inline(never)]`: inlined into the size-optimized caller by the
// `dist` profile's fat LTO, they would lose this crate's opt-level-3 code (see crate::lanes).

/// Positions of a transformed tile (4×4), the number of matrix products.
pub const POSITIONS: usize = 16;

/// U = G·g·Gᵀ of 3×3 kernels `g` (row-major), 16 values row-major; lane by lane for
/// [`F32x4`]. G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
#[inline(always)]
pub fn kernel_tile<L: Lanes>(g: [L; 9]) -> [L; 16] {
    let half = L::splat(0.5);
    let mut t = [[L::splat(0.0); 3]; 4];
    for c in 0..3 {
        let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
        t[0][c] = g0;
        t[1][c] = half * (g0 + g1 + g2);
        t[2][c] = half * (g0 - g1 + g2);
        t[3][c] = g2;
    }
    let mut u = [L::splat(0.0); 16];
    for (r, &[a, b, c]) in t.iter().enumerate() {
        u[4 * r] = a;
        u[4 * r + 1] = half * (a + b + c);
        u[4 * r + 2] = half * (a - b + c);
        u[4 * r + 3] = c;
    }
    u
}

/// tract-linalg's packed layout of a GEMM operand: panels of `r` rows (of m, or n), each
/// `panel_len` floats, element (row, k) at (row / r)·panel_len + k·r + row % r.
#[derive(Clone, Copy, Debug)]
pub struct Panels {
    pub r: usize,
    pub panel_len: usize,
}

/// Kernel transform of `rows` output channels straight into the GEMM's A operand: `w` holds
/// their [rows][inputs][3][3] weights; position p's [rows × inputs] matrix goes to `u[p]`,
/// packed as `panels` says (rows past `rows` in the last panel are left as they are).
#[inline(never)]
pub fn kernel_rows_f32(w: &[f32], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    kernel_rows(w, rows, inputs, panels, u, |src, dst| dst.copy_from_slice(src))
}

/// [`kernel_rows_f32`] of fp16 weights (their bits), widened a panel at a time.
#[inline(never)]
pub fn kernel_rows_f16(w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    kernel_rows(w, rows, inputs, panels, u, crate::cast::f16_to_f32)
}

/// The kernel transform, panel by panel, each panel's weights first made f32 by `widen`.
#[inline(always)]
fn kernel_rows<W>(w: &[W], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]], widen: impl Fn(&[W], &mut [f32])) {
    let Panels { r, panel_len } = panels;
    assert!(u.len() == POSITIONS && panel_len >= inputs * r);
    assert!(u.iter().all(|u| u.len() >= rows.div_ceil(r) * panel_len));
    let row_len = inputs * 9;
    assert!(w.len() >= rows * row_len);
    let mut widened = vec![0f32; r.min(rows) * row_len];
    let mut interleaved = vec![0f32; 4 * row_len];
    for panel in 0..rows.div_ceil(r) {
        let first = panel * r;
        let in_panel = r.min(rows - first);
        let panel_weights = &mut widened[..in_panel * row_len];
        widen(&w[first * row_len..][..in_panel * row_len], panel_weights);
        let w = &*panel_weights;
        let base = panel * panel_len;
        // Four output channels at a time: their values for one input are adjacent in each
        // position's panel, so each of the 16 results is one four-lane store.
        let mut j = 0;
        while j + 4 <= in_panel {
            let row = |l: usize| &w[(j + l) * row_len..][..row_len];
            crate::lanes::interleave_rows([row(0), row(1), row(2), row(3)], &mut interleaved);
            for i in 0..inputs {
                let mut g = [F32x4::splat(0.0); 9];
                for (k, g) in g.iter_mut().enumerate() {
                    *g = F32x4::load(&interleaved, 4 * (i * 9 + k));
                }
                for (plane, value) in u.iter_mut().zip(kernel_tile(g)) {
                    value.store(plane, base + i * r + j);
                }
            }
            j += 4;
        }
        for j in j..in_panel {
            for i in 0..inputs {
                let t = kernel_tile::<f32>(w[j * row_len + i * 9..][..9].try_into().unwrap());
                for (plane, value) in u.iter_mut().zip(t) {
                    plane[base + i * r + j] = value;
                }
            }
        }
    }
}

/// Where one channel's tiles come from and go.
#[derive(Clone, Copy, Debug)]
pub struct Tiling {
    /// The input plane's height and width.
    pub height: usize,
    pub width: usize,
    /// Zero rows above and columns left of the input (the convolution's leading padding).
    pub top: usize,
    pub left: usize,
    /// Tiles across (each 2 outputs wide).
    pub across: usize,
}

impl Tiling {
    /// Floats of scratch the transforms need.
    pub fn scratch_len(&self) -> usize {
        8 * (self.across + 1)
    }
}

/// Input transform of one channel's tile rows `tile_rows` (tile row ty reads input rows
/// 2·ty − top … 2·ty − top + 3, zero outside the plane): position p of the k-th tile goes to
/// `v[p * stride + k]`, k counting the tiles of `tile_rows` row by row.
#[inline(never)]
pub fn input_channel(x: &[f32], tiling: &Tiling, tile_rows: std::ops::Range<usize>, v: &mut [f32], stride: usize, scratch: &mut [f32]) {
    let n = tiling.across;
    let cols = n + 1;
    assert!(x.len() >= tiling.height * tiling.width && scratch.len() >= 8 * cols);
    let (even, odd) = scratch[..8 * cols].split_at_mut(4 * cols);
    for (k, ty) in tile_rows.enumerate() {
        // The tile row's four input rows, split into even and odd columns (of the padded plane):
        // tile tx reads even[tx], odd[tx], even[tx + 1], odd[tx + 1].
        for r in 0..4 {
            let (e, o) = (&mut even[r * cols..][..cols], &mut odd[r * cols..][..cols]);
            let y = (2 * ty + r).wrapping_sub(tiling.top);
            if y >= tiling.height {
                e.fill(0.0);
                o.fill(0.0);
                continue;
            }
            split_row(&x[y * tiling.width..][..tiling.width], tiling.left, e, o);
        }
        // Bᵀ·d over the rows, in place: rows d0..d3 become d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        for half in [&mut *even, &mut *odd] {
            let (d0, rest) = half.split_at_mut(cols);
            let (d1, rest) = rest.split_at_mut(cols);
            let (d2, d3) = rest.split_at_mut(cols);
            for_lanes!(0..cols, |i, L| {
                let (a, b, c, d) = (L::load(d0, i), L::load(d1, i), L::load(d2, i), L::load(d3, i));
                (a - c).store(d0, i);
                (b + c).store(d1, i);
                (c - b).store(d2, i);
                (b - d).store(d3, i);
            });
        }
        // ·B over the columns: columns c0..c3 = even[tx], odd[tx], even[tx + 1], odd[tx + 1].
        let base = k * n;
        for r in 0..4 {
            let (e, o) = (&even[r * cols..][..cols], &odd[r * cols..][..cols]);
            let (v0, rest) = v[(4 * r) * stride + base..].split_at_mut(stride);
            let (v1, rest) = rest.split_at_mut(stride);
            let (v2, v3) = rest.split_at_mut(stride);
            for_lanes!(0..n, |tx, L| {
                let (c0, c1, c2, c3) = (L::load(e, tx), L::load(o, tx), L::load(e, tx + 1), L::load(o, tx + 1));
                (c0 - c2).store(v0, tx);
                (c1 + c2).store(v1, tx);
                (c2 - c1).store(v2, tx);
                (c1 - c3).store(v3, tx);
            });
        }
    }
}

/// `even[i]` = row[2i − left], `odd[i]` = row[2i + 1 − left], zero outside the row.
#[inline(always)]
fn split_row(row: &[f32], left: usize, even: &mut [f32], odd: &mut [f32]) {
    let at = |x: usize| x.wrapping_sub(left);
    let scalar = |i: usize, even: &mut [f32], odd: &mut [f32]| {
        even[i] = row.get(at(2 * i)).copied().unwrap_or(0.0);
        odd[i] = row.get(at(2 * i + 1)).copied().unwrap_or(0.0);
    };
    // The columns left of the row, then eight floats at a time while they lie inside it.
    let mut i = 0;
    while i < even.len() && 2 * i < left {
        scalar(i, even, odd);
        i += 1;
    }
    while i + 4 <= even.len() && at(2 * i) + 8 <= row.len() {
        let (e, o) = F32x4::deinterleave(row, at(2 * i));
        e.store(even, i);
        o.store(odd, i);
        i += 4;
    }
    while i < even.len() {
        scalar(i, even, odd);
        i += 1;
    }
}

/// Output transform of one output channel's tile rows `tile_rows`: position p of the k-th tile
/// is `m[p * stride + k]` (k as in [`input_channel`]); writes the 2×2 outputs plus `bias` into
/// the `height × width` output plane `y` (the last tile row and column may be cut off).
#[inline(never)]
pub fn output_channel(m: &[f32], stride: usize, tile_rows: std::ops::Range<usize>, across: usize, bias: f32, y: &mut [f32], height: usize, width: usize, scratch: &mut [f32]) {
    let n = across;
    assert!(scratch.len() >= 8 * n && y.len() >= height * width);
    let (s0, rest) = scratch.split_at_mut(4 * n);
    let s1 = &mut rest[..4 * n];
    for (k, ty) in tile_rows.enumerate() {
        let base = k * n;
        // Aᵀ·M over the rows (Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]): column c of s0 and s1.
        for c in 0..4 {
            let row = |r: usize| &m[(4 * r + c) * stride + base..][..n];
            let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
            let (a, b) = (&mut s0[c * n..][..n], &mut s1[c * n..][..n]);
            for_lanes!(0..n, |tx, L| {
                let (x0, x1, x2, x3) = (L::load(m0, tx), L::load(m1, tx), L::load(m2, tx), L::load(m3, tx));
                (x0 + x1 + x2).store(a, tx);
                (x1 - x2 - x3).store(b, tx);
            });
        }
        // ·A over the columns, the bias, and the store (cut at the plane's edges).
        for (r, s) in [&*s0, &*s1].into_iter().enumerate() {
            let oy = 2 * ty + r;
            if oy >= height {
                break;
            }
            let out = &mut y[oy * width..][..width];
            let columns = [&s[..n], &s[n..2 * n], &s[2 * n..3 * n], &s[3 * n..4 * n]];
            let mut tx = 0;
            while tx + 4 <= n && 2 * tx + 8 <= width {
                let (left, right) = output_pair::<F32x4>(columns, tx, bias);
                F32x4::interleave(left, right, out, 2 * tx);
                tx += 4;
            }
            for tx in tx..n {
                let (left, right) = output_pair::<f32>(columns, tx, bias);
                out[2 * tx] = left;
                if 2 * tx + 1 < width {
                    out[2 * tx + 1] = right;
                }
            }
        }
    }
}

/// ·A over the columns c0..c3 at tile `tx` (A = [[1, 0], [1, 1], [1, −1], [0, −1]]) plus the
/// bias: the tile's left and right outputs.
#[inline(always)]
fn output_pair<L: Lanes>(c: [&[f32]; 4], tx: usize, bias: f32) -> (L, L) {
    let (c0, c1, c2, c3) = (L::load(c[0], tx), L::load(c[1], tx), L::load(c[2], tx), L::load(c[3], tx));
    let bias = L::splat(bias);
    (c0 + c1 + c2 + bias, c1 - c2 - c3 + bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel through all three transforms against the direct 3×3 correlation, with
    /// padding on every side and odd sizes (cut-off tiles).
    #[test]
    fn one_channel_matches_the_direct_sum() {
        // The small planes run the scalar steps; the wide ones the four-lane steps and their
        // tails, with the rows' leading and trailing padding.
        let cases = [(7usize, 5usize, 1usize, 1usize, 1usize, 1usize), (6, 6, 0, 0, 0, 0), (5, 9, 2, 0, 1, 2), (3, 3, 0, 1, 0, 0)];
        let wide = [(5, 21, 1, 1, 1, 1), (4, 24, 0, 0, 0, 0), (3, 19, 0, 2, 1, 1), (6, 32, 1, 1, 1, 1), (3, 17, 0, 3, 0, 0)];
        for (h, w, top, left, bottom, right) in cases.into_iter().chain(wide) {
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let g: Vec<f32> = (0..9).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
            let (oh, ow) = (h + top + bottom - 2, w + left + right - 2);
            let (rows, across) = (oh.div_ceil(2), ow.div_ceil(2));
            let tiling = Tiling { height: h, width: w, top, left, across };
            let stride = rows * across;
            let mut v = vec![0f32; 16 * stride];
            let mut scratch = vec![0f32; tiling.scratch_len().max(8 * across)];
            input_channel(&x, &tiling, 0..rows, &mut v, stride, &mut scratch);
            let u = kernel_tile::<f32>(g.clone().try_into().unwrap());
            let m: Vec<f32> = (0..16 * stride).map(|i| v[i] * u[i / stride]).collect();
            let mut y = vec![f32::NAN; oh * ow];
            output_channel(&m, stride, 0..rows, across, 0.25, &mut y, oh, ow, &mut scratch);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut direct = 0.25f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy + ky).wrapping_sub(top), (ox + kx).wrapping_sub(left));
                            if iy < h && ix < w {
                                direct += x[iy * w + ix] as f64 * g[ky * 3 + kx] as f64;
                            }
                        }
                    }
                    let got = y[oy * ow + ox] as f64;
                    assert!((got - direct).abs() < 1e-5, "{h}×{w} pad {top},{left},{bottom},{right}: ({oy}, {ox}) {got} vs {direct}");
                }
            }
        }
    }

    /// The four-lane kernel transform, fp16 and f32, against [`kernel_tile`] one kernel at a
    /// time, for panels of 4 and 8 rows with a partial last panel and padded panels.
    #[test]
    fn kernel_rows_match_one_tile_at_a_time() {
        for (rows, inputs, r, pad) in [(9usize, 3usize, 4usize, 0usize), (12, 5, 8, 3), (3, 2, 4, 1), (1, 1, 8, 0)] {
            let panels = Panels { r, panel_len: inputs * r + pad };
            // Finite fp16 values (exponents 5..25, both signs).
            let w16: Vec<u16> = (0..rows * inputs * 9).map(|i| ((i * 7 % 21) as u16 + 5) << 10 | (i * 37 % 1024) as u16 | ((i as u16 & 1) << 15)).collect();
            let w32: Vec<f32> = w16.iter().map(|&h| crate::cast::f16_bits_to_f32(h)).collect();
            let len = rows.div_ceil(r) * panels.panel_len;
            let mut want = vec![vec![f32::NAN; len]; POSITIONS];
            for o in 0..rows {
                for i in 0..inputs {
                    let t = kernel_tile::<f32>(std::array::from_fn(|k| w32[(o * inputs + i) * 9 + k]));
                    for (p, value) in t.into_iter().enumerate() {
                        want[p][(o / r) * panels.panel_len + i * r + o % r] = value;
                    }
                }
            }
            for fp16 in [false, true] {
                let mut got = vec![vec![f32::NAN; len]; POSITIONS];
                let mut planes: Vec<&mut [f32]> = got.iter_mut().map(|p| p.as_mut_slice()).collect();
                if fp16 {
                    kernel_rows_f16(&w16, rows, inputs, panels, &mut planes);
                } else {
                    kernel_rows_f32(&w32, rows, inputs, panels, &mut planes);
                }
                for p in 0..POSITIONS {
                    // Bits, NaN where nothing is written (padding, rows past `rows`) included.
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got[p]), bits(&want[p]), "rows {rows}, inputs {inputs}, r {r}, fp16 {fp16}, position {p}");
                }
            }
        }
    }
}
