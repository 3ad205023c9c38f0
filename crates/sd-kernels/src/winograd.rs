//! Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2015) for 3×3 convolutions at stride 1: F(m×m, 3×3) computes m×m outputs from a
//! t×t input tile (t = m + 2; tiles overlap by 2) as t² products per channel pair instead of
//! 9m², as t² matrix products (one per position of the transformed tile) of [outputs × inputs]
//! by [inputs × tiles]. [`F2`] (m = 2) does 16 multiplies for 4 outputs (2.25× fewer than the
//! direct sum), [`F4`] (m = 4) 36 for 16 (4×): F4 pays 2.25× more transformed weights (U) for
//! fewer products, a gain where a convolution has many tiles. The products are the caller's
//! (tract-linalg's GEMM); here are the three transforms:
//! - kernel: U = G·g·Gᵀ per (output, input) channel pair;
//! - input: V = Bᵀ·d·B per tile, a tile row at a time over the row's columns split by their
//!   remainder mod m, so every step is element-wise over the row's tiles (vectorizable);
//! - output: Y = Aᵀ·M·A per tile, plus the bias, likewise over a tile row.
//!
//! F2's constants are 0, ±1 and ±½, exact in f32: its result differs from the direct sum only by
//! the order of additions. F4's (interpolation points 0, ±1, ±2) include ⅙ and powers of 2 up
//! to 8: its rounding error is some ten times larger, still far inside float noise for the
//! networks' activations (see the tests' tolerances).

use crate::for_lanes;
use crate::lanes::{F32x4, Lanes};

// The public transforms are `#[inline(never)]`: inlined into the size-optimized caller by the
// `dist` profile's fat LTO, they would lose this crate's opt-level-3 code (see crate::lanes).
// They are not generic for the same reason: a generic function is compiled in (and at the
// opt-level of) the crate that instantiates it, so they take an [`Algorithm`] and instantiate
// the variant here.

/// Which F(m×m, 3×3) the public transforms compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    F2,
    F4,
}

/// Runs `$f::<V>($args)` with V the variant `$algorithm` names.
macro_rules! with_variant {
    ($algorithm:expr, $f:ident($($arg:expr),*)) => {
        match $algorithm {
            Algorithm::F2 => $f::<F2>($($arg),*),
            Algorithm::F4 => $f::<F4>($($arg),*),
        }
    };
}

impl Algorithm {
    /// Outputs per tile side (m).
    pub fn m(self) -> usize {
        fn m<V: Variant>() -> usize {
            V::M
        }
        with_variant!(self, m())
    }
    /// Positions of a transformed tile ((m + 2)²): the number of matrix products.
    pub fn positions(self) -> usize {
        fn positions<V: Variant>() -> usize {
            V::POSITIONS
        }
        with_variant!(self, positions())
    }
    /// Floats of scratch [`input_channel`] and [`output_channel`] need for `across` tiles in a
    /// row.
    pub fn scratch_len(self, across: usize) -> usize {
        with_variant!(self, scratch_len(across))
    }
}

/// [`Algorithm::scratch_len`] of a variant: the input transform's T rows of M phases of
/// `across + 1` columns (the output transform's M × T rows of `across` fit in it).
fn scratch_len<V: Variant>(across: usize) -> usize {
    V::T * V::M * (across + 1)
}

/// The largest tile side of the variants (arrays of the 1-D transforms are this long; a variant
/// uses the first `T` entries).
const MAX_T: usize = 6;
/// The most positions of a transformed tile.
const MAX_POSITIONS: usize = MAX_T * MAX_T;

/// One F(m×m, 3×3) algorithm: its 1-D transforms (applied along rows, then along columns) and
/// how four tiles' outputs and inputs are laid out in a row.
trait Variant {
    /// Outputs per tile side (m).
    const M: usize;
    /// Its name among the public transforms' choices (the tests call them by it).
    #[cfg(test)]
    const ALGORITHM: Algorithm;
    /// Input tile side: m + 2.
    const T: usize = Self::M + 2;
    /// Positions of a transformed tile (t²): the number of matrix products.
    const POSITIONS: usize = Self::T * Self::T;
    /// G·g of three kernel values: `T` of the result are used.
    fn kernel<L: Lanes>(g: [L; 3]) -> [L; MAX_T];
    /// Bᵀ·d of `T` input values (the rest of `d` is ignored).
    fn input<L: Lanes>(d: [L; MAX_T]) -> [L; MAX_T];
    /// Aᵀ·m of `T` products: `M` outputs (the rest is ignored).
    fn output<L: Lanes>(m: [L; MAX_T]) -> [L; 4];
    /// The columns `row[at..at + 4M]` by their remainder mod M: result q holds columns q, q + M,
    /// q + 2M, q + 3M (four tiles' column q).
    fn split(row: &[f32], at: usize) -> [F32x4; 4];
    /// The inverse for `M` outputs of four tiles: `row[at..at + 4M]` = tile 0's outputs, tile
    /// 1's, … (`y[j]` lane l is tile l's output j).
    fn join(y: [F32x4; 4], row: &mut [f32], at: usize);
}

/// F(2×2, 3×3): G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]],
/// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]],
/// Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
#[derive(Clone, Copy, Debug)]
struct F2;

impl Variant for F2 {
    const M: usize = 2;
    #[cfg(test)]
    const ALGORITHM: Algorithm = Algorithm::F2;
    #[inline(always)]
    fn kernel<L: Lanes>([g0, g1, g2]: [L; 3]) -> [L; MAX_T] {
        let (half, zero) = (L::splat(0.5), L::splat(0.0));
        [g0, half * (g0 + g1 + g2), half * (g0 - g1 + g2), g2, zero, zero]
    }
    #[inline(always)]
    fn input<L: Lanes>([d0, d1, d2, d3, ..]: [L; MAX_T]) -> [L; MAX_T] {
        let zero = L::splat(0.0);
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3, zero, zero]
    }
    #[inline(always)]
    fn output<L: Lanes>([m0, m1, m2, m3, ..]: [L; MAX_T]) -> [L; 4] {
        let zero = L::splat(0.0);
        [m0 + m1 + m2, m1 - m2 - m3, zero, zero]
    }
    #[inline(always)]
    fn split(row: &[f32], at: usize) -> [F32x4; 4] {
        let (even, odd) = F32x4::deinterleave(row, at);
        [even, odd, even, odd]
    }
    #[inline(always)]
    fn join([left, right, ..]: [F32x4; 4], row: &mut [f32], at: usize) {
        F32x4::interleave(left, right, row, at)
    }
}

/// F(4×4, 3×3) with interpolation points 0, ±1, ±2:
/// G = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1⁄24, 1⁄12, ⅙], [1⁄24, −1⁄12, ⅙], [0, 0, 1]],
/// Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0],
///       [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]],
/// Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]],
/// each evaluated with the shared sums and differences of its row pairs.
#[derive(Clone, Copy, Debug)]
struct F4;

impl Variant for F4 {
    const M: usize = 4;
    #[cfg(test)]
    const ALGORITHM: Algorithm = Algorithm::F4;
    #[inline(always)]
    fn kernel<L: Lanes>([g0, g1, g2]: [L; 3]) -> [L; MAX_T] {
        let s = L::splat(-1.0 / 6.0) * (g0 + g2);
        let t = L::splat(1.0 / 6.0) * g1;
        let a = L::splat(1.0 / 24.0) * g0 + L::splat(1.0 / 6.0) * g2;
        let b = L::splat(1.0 / 12.0) * g1;
        [L::splat(0.25) * g0, s - t, s + t, a + b, a - b, g2]
    }
    #[inline(always)]
    fn input<L: Lanes>([d0, d1, d2, d3, d4, d5]: [L; MAX_T]) -> [L; MAX_T] {
        let (four, five, two) = (L::splat(4.0), L::splat(5.0), L::splat(2.0));
        let a = d4 - four * d2;
        let b = d3 - four * d1;
        let c = d4 - d2;
        let e = two * (d3 - d1);
        [four * d0 - five * d2 + d4, a + b, a - b, c + e, c - e, four * d1 - five * d3 + d5]
    }
    #[inline(always)]
    fn output<L: Lanes>([m0, m1, m2, m3, m4, m5]: [L; MAX_T]) -> [L; 4] {
        let (p, q, r, s) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [m0 + p + r, q + L::splat(2.0) * s, p + L::splat(4.0) * r, q + L::splat(8.0) * s + m5]
    }
    #[inline(always)]
    fn split(row: &[f32], at: usize) -> [F32x4; 4] {
        F32x4::transpose(std::array::from_fn(|i| F32x4::load(row, at + 4 * i)))
    }
    #[inline(always)]
    fn join(y: [F32x4; 4], row: &mut [f32], at: usize) {
        for (i, tile) in F32x4::transpose(y).into_iter().enumerate() {
            tile.store(row, at + 4 * i);
        }
    }
}

/// U = G·g·Gᵀ of 3×3 kernels `g` (row-major): `V::POSITIONS` values row-major (the rest
/// unused); lane by lane for [`F32x4`]. The tests' reference for [`kernel_rows`].
#[cfg(test)]
fn kernel_tile<V: Variant, L: Lanes>(g: [L; 9]) -> [L; MAX_POSITIONS] {
    let mut u = [L::splat(0.0); MAX_POSITIONS];
    kernel_tile_each::<V, L>(|k| g[k], |p, value| u[p] = value);
    u
}

/// U = G·g·Gᵀ of 3×3 kernels `g` (row-major), each value handed to `put(position, value)` as
/// soon as its row of U is computed, so that the caller stores it straight to its plane: no
/// round trip through a local array (36 stores and loads per four kernels for F4).
#[inline(always)]
fn kernel_tile_each<V: Variant, L: Lanes>(g: impl Fn(usize) -> L, mut put: impl FnMut(usize, L)) {
    // G over the kernel's rows (column by column), then over the columns (row by row); each
    // kernel value loaded where it is used (`g(k)`), not gathered into an array first (a copy
    // through the stack at sixteen lanes).
    let columns = [V::kernel([g(0), g(3), g(6)]), V::kernel([g(1), g(4), g(7)]), V::kernel([g(2), g(5), g(8)])];
    for r in 0..V::T {
        let row = V::kernel([columns[0][r], columns[1][r], columns[2][r]]);
        for (c, &value) in row[..V::T].iter().enumerate() {
            put(V::T * r + c, value);
        }
    }
}

/// U of `L::N` kernels (`g`: their nine values interleaved, kernel l's k-th at N·k + l) stored
/// as N lanes at `planes[p] + at` for each position p.
///
/// # Safety
/// `planes[p] + at .. + L::N` must be valid for writes for every position p of `V`.
#[inline(always)]
unsafe fn kernel_group<V: Variant, L: Lanes>(g: &[f32], planes: &[*mut f32; MAX_POSITIONS], at: usize) {
    kernel_tile_each::<V, L>(|k| L::load(g, L::N * k), |p, value| unsafe { value.store_to(planes[p].add(at)) });
}

/// [`kernel_group`] of four kernels. Not inlined: in its caller's loop the plane pointers
/// would be live across the loop header, where wazero (Bacalhau's engine) calls its exit check
/// and spills every live value around the call; here they are loaded as used.
///
/// # Safety
/// As [`kernel_group`]'s.
#[inline(never)]
unsafe fn kernel_four<V: Variant>(g: &[f32], planes: &[*mut f32; MAX_POSITIONS], at: usize) {
    unsafe { kernel_group::<V, F32x4>(g, planes, at) }
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
/// packed as `panels` says. Every float of the `rows.div_ceil(r)` panels is written (rows past
/// `rows` in the last panel and each panel's tail past `inputs · r` as zeros), so the planes
/// need no clearing first.
#[inline(never)]
pub fn kernel_rows_f32(algorithm: Algorithm, w: &[f32], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    fn run<V: Variant>(w: &[f32], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
        kernel_rows::<V, _, 4>(w, rows, inputs, panels, u, |src, dst| dst.copy_from_slice(src), kernel_four::<V>)
    }
    with_variant!(algorithm, run(w, rows, inputs, panels, u))
}

/// [`kernel_rows_f32`] of fp16 weights (their bits), widened a panel at a time.
#[inline(never)]
pub fn kernel_rows_f16(algorithm: Algorithm, w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
    #[inline(always)]
    fn run<V: Variant>(w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
        kernel_rows::<V, _, 4>(w, rows, inputs, panels, u, crate::cast::f16_to_f32, kernel_four::<V>)
    }
    /// The same code compiled for AVX-512, sixteen output channels at a time where the panels
    /// hold a multiple of sixteen rows (the AVX-512 GEMM tiles' 16 and 32): one 512-bit store
    /// per position and input, the same operations per value, so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(algorithm: Algorithm, w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
        #[inline(always)]
        fn run_wide<V: Variant>(w: &[u16], rows: usize, inputs: usize, panels: Panels, u: &mut [&mut [f32]]) {
            if panels.r % 16 == 0 {
                kernel_rows::<V, _, 16>(w, rows, inputs, panels, u, crate::cast::f16_to_f32, kernel_group::<V, crate::lanes::F32x16>)
            } else {
                run::<V>(w, rows, inputs, panels, u)
            }
        }
        with_variant!(algorithm, run_wide(w, rows, inputs, panels, u))
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { run_avx512(algorithm, w, rows, inputs, panels, u) };
    }
    with_variant!(algorithm, run(w, rows, inputs, panels, u))
}

/// The kernel transform, panel by panel, each panel's weights first made f32 by `widen`, `N`
/// output channels at a time by `group` ([`kernel_group`] of N lanes).
#[inline(always)]
fn kernel_rows<V: Variant, W, const N: usize>(
    w: &[W],
    rows: usize,
    inputs: usize,
    panels: Panels,
    u: &mut [&mut [f32]],
    widen: impl Fn(&[W], &mut [f32]),
    group: unsafe fn(&[f32], &[*mut f32; MAX_POSITIONS], usize),
) {
    let Panels { r, panel_len } = panels;
    assert!(u.len() == V::POSITIONS && panel_len >= inputs * r);
    assert!(u.iter().all(|u| u.len() >= rows.div_ceil(r) * panel_len));
    let row_len = inputs * 9;
    assert!(w.len() >= rows * row_len);
    // The planes' starts, so that each store below is one instruction and not a bounds check per
    // plane: every offset written is below (panel + 1)·panel_len, in bounds by the asserts above.
    let planes: [*mut f32; MAX_POSITIONS] = std::array::from_fn(|p| u.get_mut(p).map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()));
    let mut widened = vec![0f32; r.min(rows) * row_len];
    let mut interleaved = vec![0f32; (r / N).max(1) * N * row_len];
    for panel in 0..rows.div_ceil(r) {
        let first = panel * r;
        let in_panel = r.min(rows - first);
        let panel_weights = &mut widened[..in_panel * row_len];
        widen(&w[first * row_len..][..in_panel * row_len], panel_weights);
        let w = &*panel_weights;
        let base = panel * panel_len;
        // N output channels at a time: their values for one input are adjacent in each
        // position's panel, so each of the results is one N-lane store; all the panel's
        // groups per input, so each position's panel is written in order (whole cache lines,
        // not halves revisited when the panel has 8 rows).
        let groups = in_panel / N;
        for (group, interleaved) in interleaved.chunks_exact_mut(N * row_len).take(groups).enumerate() {
            let rows: [&[f32]; N] = std::array::from_fn(|l| &w[(N * group + l) * row_len..][..row_len]);
            crate::lanes::interleave_rows(&rows, interleaved);
        }
        for i in 0..inputs {
            for (g, interleaved) in interleaved.chunks_exact(N * row_len).take(groups).enumerate() {
                // SAFETY: the last float written, base + i·r + N·g + N − 1, is at most
                // base + inputs·r − 1 < (panel + 1)·panel_len ≤ a plane's length.
                unsafe { group(&interleaved[9 * N * i..][..9 * N], &planes, base + i * r + N * g) }
            }
        }
        for j in N * groups..in_panel {
            for i in 0..inputs {
                let g = &w[j * row_len + i * 9..][..9];
                // SAFETY: as above (i·r + j < inputs·r ≤ panel_len).
                kernel_tile_each::<V, f32>(|k| g[k], |p, value| unsafe { *planes[p].add(base + i * r + j) = value });
            }
        }
    }
    zero_padding(u, rows, inputs, panels);
}

/// Zeros what [`kernel_rows`] does not compute in each plane's panels: the rows past `rows` in
/// the last panel and each panel's tail past `inputs · r`.
fn zero_padding(u: &mut [&mut [f32]], rows: usize, inputs: usize, panels: Panels) {
    let Panels { r, panel_len } = panels;
    let last_rows = rows - (rows.div_ceil(r).max(1) - 1) * r;
    for plane in u.iter_mut() {
        for panel in plane[..rows.div_ceil(r) * panel_len].chunks_exact_mut(panel_len) {
            panel[inputs * r..].fill(0.0);
        }
        if rows > 0 && last_rows < r {
            let last = &mut plane[(rows.div_ceil(r) - 1) * panel_len..][..inputs * r];
            for row in last.chunks_exact_mut(r) {
                row[last_rows..].fill(0.0);
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
    /// Tiles across (each `M` outputs wide).
    pub across: usize,
}

/// Input transform of one channel's tile rows `tile_rows` (tile row ty reads input rows
/// m·ty − top … m·ty − top + m + 1, zero outside the plane): position p of the k-th tile goes to
/// `v[p * stride + k]`, k counting the tiles of `tile_rows` row by row.
#[inline(never)]
pub fn input_channel(algorithm: Algorithm, x: &[f32], tiling: &Tiling, tile_rows: std::ops::Range<usize>, v: &mut [f32], stride: usize, scratch: &mut [f32]) {
    assert!(scratch.len() >= algorithm.scratch_len(tiling.across));
    with_variant!(algorithm, input_rows(x, tiling, tile_rows, v, stride, scratch))
}

#[inline(always)]
fn input_rows<V: Variant>(x: &[f32], tiling: &Tiling, tile_rows: std::ops::Range<usize>, v: &mut [f32], stride: usize, scratch: &mut [f32]) {
    let (m, t, n) = (V::M, V::T, tiling.across);
    // Each of the tile row's T input rows as M phases of `cols` columns: phase q holds columns
    // q, q + M, … (of the padded plane), so tile tx reads column j of its tile at phase j % M,
    // index tx + j / M.
    let cols = n + 1;
    assert!(x.len() >= tiling.height * tiling.width);
    let split = &mut scratch[..scratch_len::<V>(n)];
    for (k, ty) in tile_rows.enumerate() {
        for (r, phases) in split.chunks_exact_mut(m * cols).enumerate() {
            let y = (m * ty + r).wrapping_sub(tiling.top);
            if y >= tiling.height {
                phases.fill(0.0);
                continue;
            }
            split_row::<V>(&x[y * tiling.width..][..tiling.width], tiling.left, phases, cols);
        }
        // Bᵀ·d over the rows, in place, phase by phase.
        for q in 0..m {
            for_lanes!(0..cols, |i, L| {
                let at = |r: usize| (r * m + q) * cols + i;
                let d = std::array::from_fn(|r| if r < t { L::load(split, at(r)) } else { L::splat(0.0) });
                for (r, value) in V::input(d).into_iter().take(t).enumerate() {
                    value.store(split, at(r));
                }
            });
        }
        // ·B over the columns, into the positions' rows of v.
        let base = k * n;
        for (r, phases) in split.chunks_exact(m * cols).enumerate() {
            for_lanes!(0..n, |tx, L| {
                let c = std::array::from_fn(|j| if j < t { L::load(phases, (j % m) * cols + tx + j / m) } else { L::splat(0.0) });
                for (q, value) in V::input(c).into_iter().take(t).enumerate() {
                    value.store(v, (t * r + q) * stride + base + tx);
                }
            });
        }
    }
}

/// `phases[q * cols + i]` = row[M·i + q − left], zero outside the row.
#[inline(always)]
fn split_row<V: Variant>(row: &[f32], left: usize, phases: &mut [f32], cols: usize) {
    let m = V::M;
    let at = |x: usize| x.wrapping_sub(left);
    let scalar = |i: usize, phases: &mut [f32]| {
        for q in 0..m {
            phases[q * cols + i] = row.get(at(m * i + q)).copied().unwrap_or(0.0);
        }
    };
    // The columns left of the row, then 4·M floats at a time while they lie inside it.
    let mut i = 0;
    while i < cols && m * i < left {
        scalar(i, phases);
        i += 1;
    }
    while i + 4 <= cols && at(m * i) + 4 * m <= row.len() {
        for (q, phase) in V::split(row, at(m * i)).into_iter().take(m).enumerate() {
            phase.store(phases, q * cols + i);
        }
        i += 4;
    }
    while i < cols {
        scalar(i, phases);
        i += 1;
    }
}

/// Output transform of one output channel's tile rows `tile_rows`: position p of the k-th tile
/// is `products[p * stride + k]` (k as in [`input_channel`]); writes the M×M outputs plus `bias`
/// into the `height × width` output plane `y` (the last tile row and column may be cut off).
#[inline(never)]
pub fn output_channel(algorithm: Algorithm, products: &[f32], stride: usize, tile_rows: std::ops::Range<usize>, across: usize, bias: f32, y: &mut [f32], height: usize, width: usize, scratch: &mut [f32]) {
    assert!(scratch.len() >= algorithm.scratch_len(across) && y.len() >= height * width);
    with_variant!(algorithm, output_rows(products, stride, tile_rows, across, bias, y, height, width, scratch))
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_rows<V: Variant>(products: &[f32], stride: usize, tile_rows: std::ops::Range<usize>, across: usize, bias: f32, y: &mut [f32], height: usize, width: usize, scratch: &mut [f32]) {
    let (m, t, n) = (V::M, V::T, across);
    // Aᵀ·M over the rows: output row i's column c at s[(i·T + c)·n ..][..n].
    let s = &mut scratch[..m * t * n];
    for (k, ty) in tile_rows.enumerate() {
        let base = k * n;
        for c in 0..t {
            for_lanes!(0..n, |tx, L| {
                let x = std::array::from_fn(|r| if r < t { L::load(products, (t * r + c) * stride + base + tx) } else { L::splat(0.0) });
                for (i, value) in V::output(x).into_iter().take(m).enumerate() {
                    value.store(s, (i * t + c) * n + tx);
                }
            });
        }
        // ·A over the columns, the bias, and the store (cut at the plane's edges).
        for (i, columns) in s.chunks_exact(t * n).enumerate() {
            let oy = m * ty + i;
            if oy >= height {
                break;
            }
            let out = &mut y[oy * width..][..width];
            let mut tx = 0;
            while tx + 4 <= n && m * tx + 4 * m <= width {
                V::join(output_tile::<V, F32x4>(columns, n, tx, bias), out, m * tx);
                tx += 4;
            }
            for tx in tx..n {
                let values = output_tile::<V, f32>(columns, n, tx, bias);
                for (j, value) in values.into_iter().take(m).enumerate() {
                    if m * tx + j < width {
                        out[m * tx + j] = value;
                    }
                }
            }
        }
    }
}

/// ·A over one output row's columns (column c at `columns[c * n..]`) at tile `tx`, plus the
/// bias: the tile's `M` outputs in that row.
#[inline(always)]
fn output_tile<V: Variant, L: Lanes>(columns: &[f32], n: usize, tx: usize, bias: f32) -> [L; 4] {
    let c = std::array::from_fn(|c| if c < V::T { L::load(columns, c * n + tx) } else { L::splat(0.0) });
    let bias = L::splat(bias);
    V::output(c).map(|y| y + bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel through all three transforms against the direct 3×3 correlation, with
    /// padding on every side and odd sizes (cut-off tiles); `tolerance` relative to the largest
    /// output.
    fn one_channel<V: Variant>(tolerance: f64) {
        // The small planes run the scalar steps; the wide ones the four-lane steps and their
        // tails, with the rows' leading and trailing padding.
        let cases = [(7usize, 5usize, 1usize, 1usize, 1usize, 1usize), (6, 6, 0, 0, 0, 0), (5, 9, 2, 0, 1, 2), (3, 3, 0, 1, 0, 0)];
        let wide = [(5, 21, 1, 1, 1, 1), (4, 24, 0, 0, 0, 0), (3, 19, 0, 2, 1, 1), (6, 32, 1, 1, 1, 1), (3, 17, 0, 3, 0, 0), (9, 50, 1, 1, 1, 1), (7, 37, 0, 1, 2, 0)];
        for (h, w, top, left, bottom, right) in cases.into_iter().chain(wide) {
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let g: Vec<f32> = (0..9).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
            let (oh, ow) = (h + top + bottom - 2, w + left + right - 2);
            let algorithm = V::ALGORITHM;
            let (rows, across) = (oh.div_ceil(V::M), ow.div_ceil(V::M));
            let tiling = Tiling { height: h, width: w, top, left, across };
            let stride = rows * across;
            let mut v = vec![0f32; V::POSITIONS * stride];
            let mut scratch = vec![0f32; algorithm.scratch_len(across)];
            input_channel(algorithm, &x, &tiling, 0..rows, &mut v, stride, &mut scratch);
            let u = kernel_tile::<V, f32>(g.clone().try_into().unwrap());
            let m: Vec<f32> = (0..V::POSITIONS * stride).map(|i| v[i] * u[i / stride]).collect();
            let mut y = vec![f32::NAN; oh * ow];
            output_channel(algorithm, &m, stride, 0..rows, across, 0.25, &mut y, oh, ow, &mut scratch);
            let mut direct = vec![0.25f64; oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy + ky).wrapping_sub(top), (ox + kx).wrapping_sub(left));
                            if iy < h && ix < w {
                                direct[oy * ow + ox] += x[iy * w + ix] as f64 * g[ky * 3 + kx] as f64;
                            }
                        }
                    }
                }
            }
            let scale = direct.iter().fold(0f64, |m, d| m.max(d.abs()));
            for (i, (&got, &want)) in y.iter().zip(&direct).enumerate() {
                let error = (got as f64 - want).abs() / scale;
                assert!(error < tolerance, "F{}, {h}×{w} pad {top},{left},{bottom},{right}: ({}, {}) {got} vs {want}", V::M, i / ow, i % ow);
            }
        }
    }

    #[test]
    fn one_channel_matches_the_direct_sum() {
        one_channel::<F2>(1e-6);
        one_channel::<F4>(1e-5);
    }

    /// The kernel transform, fp16 and f32, four lanes and sixteen (called directly, as the
    /// AVX-512 build runs it), against [`kernel_tile`] one kernel at a time, for panels of 4 to
    /// 32 rows with a partial last panel and padded panels.
    fn kernel_rows_match<V: Variant>() {
        let cases = [(9usize, 3usize, 4usize, 0usize), (12, 5, 8, 3), (3, 2, 4, 1), (1, 1, 8, 0), (40, 3, 16, 0), (37, 2, 16, 5), (70, 2, 32, 0)];
        for (rows, inputs, r, pad) in cases {
            let panels = Panels { r, panel_len: inputs * r + pad };
            // Finite fp16 values (exponents 5..25, both signs).
            let w16: Vec<u16> = (0..rows * inputs * 9).map(|i| ((i * 7 % 21) as u16 + 5) << 10 | (i * 37 % 1024) as u16 | ((i as u16 & 1) << 15)).collect();
            let w32: Vec<f32> = w16.iter().map(|&h| crate::cast::f16_bits_to_f32(h)).collect();
            let len = rows.div_ceil(r) * panels.panel_len;
            // Zeros where no value goes (padding, rows past `rows`): every float is written.
            let mut want = vec![vec![0f32; len]; V::POSITIONS];
            for o in 0..rows {
                for i in 0..inputs {
                    let t = kernel_tile::<V, f32>(std::array::from_fn(|k| w32[(o * inputs + i) * 9 + k]));
                    for (p, value) in t.into_iter().take(V::POSITIONS).enumerate() {
                        want[p][(o / r) * panels.panel_len + i * r + o % r] = value;
                    }
                }
            }
            for way in ["f32", "fp16", "fp16 sixteen lanes"] {
                let mut got = vec![vec![f32::NAN; len]; V::POSITIONS];
                let mut planes: Vec<&mut [f32]> = got.iter_mut().map(|p| p.as_mut_slice()).collect();
                match way {
                    "f32" => kernel_rows_f32(V::ALGORITHM, &w32, rows, inputs, panels, &mut planes),
                    "fp16" => kernel_rows_f16(V::ALGORITHM, &w16, rows, inputs, panels, &mut planes),
                    _ if r % 16 == 0 => kernel_rows::<V, _, 16>(&w16, rows, inputs, panels, &mut planes, crate::cast::f16_to_f32, kernel_group::<V, crate::lanes::F32x16>),
                    _ => continue,
                }
                for p in 0..V::POSITIONS {
                    // Bits, the zeros of the padding included (`got` starts as NaN).
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got[p]), bits(&want[p]), "F{}, rows {rows}, inputs {inputs}, r {r}, {way}, position {p}", V::M);
                }
            }
        }
    }

    #[test]
    fn kernel_rows_match_one_tile_at_a_time() {
        kernel_rows_match::<F2>();
        kernel_rows_match::<F4>();
    }
}
