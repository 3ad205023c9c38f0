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

/// Positions of a transformed tile (4×4), the number of matrix products.
pub const POSITIONS: usize = 16;

/// U = G·g·Gᵀ of one 3×3 kernel `g` (row-major), 16 values row-major.
/// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
#[inline(always)]
pub fn kernel_tile(g: &[f32]) -> [f32; 16] {
    let g = &g[..9];
    let mut t = [[0f32; 3]; 4];
    for c in 0..3 {
        let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
        t[0][c] = g0;
        t[1][c] = 0.5 * (g0 + g1 + g2);
        t[2][c] = 0.5 * (g0 - g1 + g2);
        t[3][c] = g2;
    }
    let mut u = [0f32; 16];
    for (r, &[a, b, c]) in t.iter().enumerate() {
        u[4 * r] = a;
        u[4 * r + 1] = 0.5 * (a + b + c);
        u[4 * r + 2] = 0.5 * (a - b + c);
        u[4 * r + 3] = c;
    }
    u
}

/// A weight as stored: f32, or fp16 bits (widened as sd_kernels::cast widens them).
pub trait Weight: Copy {
    fn value(self) -> f32;
}
impl Weight for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
}
impl Weight for u16 {
    #[inline(always)]
    fn value(self) -> f32 {
        crate::cast::f16_bits_to_f32(self)
    }
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
/// Instantiated here for f32 and fp16 weights ([`kernel_rows_f32`], [`kernel_rows_f16`]) so
/// that it is compiled at this crate's opt-level, not the caller's.
#[inline(always)]
fn kernel_rows<W: Weight>(w: &[W], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    let Panels { r, panel_len } = panels;
    assert!(w.len() >= rows * inputs * 9 && u.len() == POSITIONS);
    assert!(u.iter().all(|u| u.len() >= rows.div_ceil(r) * panel_len && panel_len >= inputs * r));
    let mut g = [0f32; 9];
    for panel in 0..rows.div_ceil(r) {
        let in_panel = r.min(rows - panel * r);
        for i in 0..inputs {
            let at = panel * panel_len + i * r;
            for j in 0..in_panel {
                let o = panel * r + j;
                for (value, weight) in g.iter_mut().zip(&w[(o * inputs + i) * 9..][..9]) {
                    *value = weight.value();
                }
                let t = kernel_tile(&g);
                for (plane, value) in u.iter_mut().zip(t) {
                    plane[at + j] = value;
                }
            }
        }
    }
}

/// [`kernel_rows`] of f32 weights.
pub fn kernel_rows_f32(w: &[f32], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    kernel_rows(w, rows, inputs, panels, u)
}

/// [`kernel_rows`] of fp16 weights (their bits).
pub fn kernel_rows_f16(w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    kernel_rows(w, rows, inputs, panels, u)
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
            let row = &x[y * tiling.width..][..tiling.width];
            for i in 0..cols {
                let xe = (2 * i).wrapping_sub(tiling.left);
                let xo = (2 * i + 1).wrapping_sub(tiling.left);
                e[i] = if xe < tiling.width { row[xe] } else { 0.0 };
                o[i] = if xo < tiling.width { row[xo] } else { 0.0 };
            }
        }
        // Bᵀ·d over the rows, in place: rows d0..d3 become d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        for half in [&mut *even, &mut *odd] {
            let (d0, rest) = half.split_at_mut(cols);
            let (d1, rest) = rest.split_at_mut(cols);
            let (d2, d3) = rest.split_at_mut(cols);
            for i in 0..cols {
                let (a, b, c, d) = (d0[i], d1[i], d2[i], d3[i]);
                d0[i] = a - c;
                d1[i] = b + c;
                d2[i] = c - b;
                d3[i] = b - d;
            }
        }
        // ·B over the columns: columns c0..c3 = even[tx], odd[tx], even[tx + 1], odd[tx + 1].
        let base = k * n;
        for r in 0..4 {
            let (e, o) = (&even[r * cols..][..cols], &odd[r * cols..][..cols]);
            let (v0, rest) = v[(4 * r) * stride + base..].split_at_mut(stride);
            let (v1, rest) = rest.split_at_mut(stride);
            let (v2, v3) = rest.split_at_mut(stride);
            let (v0, v1, v2, v3) = (&mut v0[..n], &mut v1[..n], &mut v2[..n], &mut v3[..n]);
            for tx in 0..n {
                let (c0, c1, c2, c3) = (e[tx], o[tx], e[tx + 1], o[tx + 1]);
                v0[tx] = c0 - c2;
                v1[tx] = c1 + c2;
                v2[tx] = c2 - c1;
                v3[tx] = c1 - c3;
            }
        }
    }
}

/// Output transform of one output channel's tile rows `tile_rows`: position p of the k-th tile
/// is `m[p * stride + k]` (k as in [`input_channel`]); writes the 2×2 outputs plus `bias` into
/// the `height × width` output plane `y` (the last tile row and column may be cut off).
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
            for tx in 0..n {
                a[tx] = m0[tx] + m1[tx] + m2[tx];
                b[tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        // ·A over the columns, the bias, and the store (cut at the plane's edges).
        for (r, s) in [&*s0, &*s1].into_iter().enumerate() {
            let oy = 2 * ty + r;
            if oy >= height {
                break;
            }
            let out = &mut y[oy * width..][..width];
            let (c0, c1, c2, c3) = (&s[..n], &s[n..2 * n], &s[2 * n..3 * n], &s[3 * n..4 * n]);
            for tx in 0..n {
                let left = c0[tx] + c1[tx] + c2[tx] + bias;
                let right = c1[tx] - c2[tx] - c3[tx] + bias;
                let ox = 2 * tx;
                out[ox] = left;
                if ox + 1 < width {
                    out[ox + 1] = right;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel through all three transforms against the direct 3×3 correlation, with
    /// padding on every side and odd sizes (cut-off tiles).
    #[test]
    fn one_channel_matches_the_direct_sum() {
        for (h, w, top, left, bottom, right) in [(7usize, 5usize, 1usize, 1usize, 1usize, 1usize), (6, 6, 0, 0, 0, 0), (5, 9, 2, 0, 1, 2), (3, 3, 0, 1, 0, 0)] {
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let g: Vec<f32> = (0..9).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
            let (oh, ow) = (h + top + bottom - 2, w + left + right - 2);
            let (rows, across) = (oh.div_ceil(2), ow.div_ceil(2));
            let tiling = Tiling { height: h, width: w, top, left, across };
            let stride = rows * across;
            let mut v = vec![0f32; 16 * stride];
            let mut scratch = vec![0f32; tiling.scratch_len().max(8 * across)];
            input_channel(&x, &tiling, 0..rows, &mut v, stride, &mut scratch);
            let u = kernel_tile(&g);
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
}
