//! Softmax pieces for attention: a vectorized `exp` (Cephes' expf polynomial, ~1 ulp on the
//! range attention uses) and "subtract each row's max, exponentiate in place, sum" over a panel
//! of rows in a GEMM operand's packed layout. SIMD128 on wasm32; the portable version computes
//! the same formula lane by lane.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const C1: f32 = 0.693_359_4; // ln 2, high part (exact in a few bits)
const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 5.000_000_1e-1;
const LO: f32 = -87.0;
const HI: f32 = 88.0;
/// 1.5 × 2^23: adding it to a float of magnitude below 2^22 leaves no fraction bits, so the add
/// rounds to an integer (ties to even, the default rounding), and subtracting it is exact.
const ROUNDER: f32 = 12_582_912.0;

/// `y` rounded to an integer, ties to even, for |y| < 2^22: two adds, where `round_ties_even`
/// is a libm call per element on x86-64's baseline (SSE2 has no rounding instruction), which
/// kept the native softmax scalar: 45 % of a native UNet evaluation at 64×64 (perf, 2026-12-03).
#[inline(always)]
fn round_small(y: f32) -> f32 {
    (y + ROUNDER) - ROUNDER
}

/// exp(x), the same arithmetic as the vector version.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Selects, float adds and bit operations only, so the native row loop vectorizes (a
    // float-to-int conversion saturates in Rust, which kept it scalar). A NaN stays NaN.
    let x = if x < LO { LO } else { x };
    let x = if x > HI { HI } else { x };
    let n = round_small(x * LOG2E);
    let r = x - n * C1 - n * C2;
    let p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5;
    let p = p * r * r + r + 1.0;
    p * two_to(n)
}

/// 2^n for an integer-valued n in [-126, 127]: n + 127 + 2^23 has n + 127 as its low mantissa
/// bits, which shifted into the exponent field are 2^n's bits (the rest shifts out).
#[inline(always)]
fn two_to(n: f32) -> f32 {
    f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

/// The most rows [`panel_softmax`] takes (tract's f32 GEMM tiles have at most 32).
pub const MAX_ROWS: usize = 64;

/// Softmax of a panel's rows, up to the division: `p` holds `r` rows stored column by column
/// (row l's c-th value at `p[r·c + l]`: tract-linalg's packed layout of a GEMM's A operand, so
/// the result is P·V's operand as it stands). Each row's max is subtracted and the result
/// exponentiated in place; `inv[l]` gets 1 / row l's sum. Vectorized across the rows (the
/// layout's contiguous axis); each row's values are summed in column order, so the bits are the
/// same at any vector width.
pub fn panel_softmax(p: &mut [f32], r: usize, inv: &mut [f32]) {
    assert!(r > 0 && r <= MAX_ROWS && p.len() % r == 0 && inv.len() >= r);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if r % 4 == 0 {
        // SAFETY: whole groups of four rows, the columns in bounds (asserted above).
        unsafe { simd128::panel_softmax(p, r, inv) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        unsafe { panel_softmax_avx512(p, r, inv) };
        return;
    }
    panel_softmax_portable(p, r, inv)
}

/// [`panel_softmax_portable`] compiled for AVX-512: sixteen rows per instruction. The same
/// operations per element (Rust does not fuse multiplies and adds), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panel_softmax_avx512(p: &mut [f32], r: usize, inv: &mut [f32]) {
    panel_softmax_portable(p, r, inv)
}

/// [`panel_softmax`] element by element, the GEMM tiles' panel heights as constants so that
/// each loop over a column's rows becomes straight vector code.
#[inline(always)]
fn panel_softmax_portable(p: &mut [f32], r: usize, inv: &mut [f32]) {
    match r {
        4 => panel_rows(p, 4, inv),
        8 => panel_rows(p, 8, inv),
        16 => panel_rows(p, 16, inv),
        32 => panel_rows(p, 32, inv),
        _ => panel_rows(p, r, inv),
    }
}

#[inline(always)]
fn panel_rows(p: &mut [f32], r: usize, inv: &mut [f32]) {
    let mut max = [f32::NEG_INFINITY; MAX_ROWS];
    let max = &mut max[..r];
    for column in p.chunks_exact(r) {
        for (m, &v) in max.iter_mut().zip(column) {
            // NaN in v is skipped (as f32x4.pmax does).
            *m = if v > *m { v } else { *m };
        }
    }
    let mut sum = [0f32; MAX_ROWS];
    let sum = &mut sum[..r];
    for column in p.chunks_exact_mut(r) {
        for ((v, &m), s) in column.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
            *v = exp(*v - m);
            *s += *v;
        }
    }
    for (i, &s) in inv.iter_mut().zip(sum.iter()) {
        *i = 1.0 / s;
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::*;
    use core::arch::wasm32::*;

    #[inline(always)]
    pub unsafe fn exp4(x: v128) -> v128 {
        let x = f32x4_pmin(f32x4_pmax(x, f32x4_splat(LO)), f32x4_splat(HI));
        let n = f32x4_nearest(f32x4_mul(x, f32x4_splat(LOG2E)));
        let r = f32x4_sub(f32x4_sub(x, f32x4_mul(n, f32x4_splat(C1))), f32x4_mul(n, f32x4_splat(C2)));
        let mut p = f32x4_add(f32x4_mul(f32x4_splat(P0), r), f32x4_splat(P1));
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(P2));
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(P3));
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(P4));
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(P5));
        p = f32x4_add(f32x4_add(f32x4_mul(f32x4_mul(p, r), r), r), f32x4_splat(1.0));
        let e = i32x4_shl(i32x4_add(i32x4_trunc_sat_f32x4(n), i32x4_splat(127)), 23);
        f32x4_mul(p, e)
    }

    /// [`super::panel_softmax`] for `r` a multiple of four: each group of four rows down all
    /// the columns (a row's lane sees the same operations in the same order as the portable
    /// version).
    pub unsafe fn panel_softmax(p: &mut [f32], r: usize, inv: &mut [f32]) {
        let columns = p.len() / r;
        let ptr = p.as_mut_ptr();
        for g in (0..r).step_by(4) {
            let mut m = f32x4_splat(f32::NEG_INFINITY);
            for c in 0..columns {
                // pmax(m, v) = if m < v { v } else { m }: NaN in v is skipped.
                m = f32x4_pmax(m, v128_load(ptr.add(c * r + g) as *const v128));
            }
            let mut s = f32x4_splat(0.0);
            for c in 0..columns {
                let at = ptr.add(c * r + g) as *mut v128;
                let e = exp4(f32x4_sub(v128_load(at), m));
                v128_store(at, e);
                s = f32x4_add(s, e);
            }
            v128_store(inv.as_mut_ptr().add(g) as *mut v128, f32x4_div(f32x4_splat(1.0), s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_std() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.000_7;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }

    /// The rounding exp uses: ties to even like `round_ties_even` (what wasm's `f32x4.nearest`
    /// does, so the scalar tail matches the vector lanes) over the whole range exp's clamped argument reaches, ±88 × log2(e), ties included.
    #[test]
    fn small_rounding_is_round_ties_even() {
        let mut y = -130.0f32;
        while y <= 130.0 {
            for v in [y, y + 0.5, y - f32::EPSILON * y.abs(), y + 0.499_999_97] {
                // Equal as numbers: (-0.5, 0] gives +0 where round_ties_even gives -0, which
                // exp only subtracts from x and converts to an integer (the same result).
                assert_eq!(round_small(v), v.round_ties_even(), "{v}");
            }
            y += 0.25;
        }
        for n in -126..=127 {
            assert_eq!(two_to(n as f32), 2f32.powi(n), "{n}");
        }
        assert_eq!(round_small(2.5), 2.0);
        assert_eq!(round_small(-3.5), -4.0);
    }

    /// Every panel height the GEMM tiles use (and an odd one), against each row computed alone:
    /// the same bits, the sum in column order.
    #[test]
    fn panel_softmax_matches_rows_one_at_a_time() {
        for r in [4usize, 8, 12, 16, 32, 3] {
            for columns in [1usize, 7, 77, 256] {
                let data: Vec<f32> = (0..r * columns).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.037).collect();
                let mut got = data.clone();
                let mut inv = vec![f32::NAN; r];
                panel_softmax(&mut got, r, &mut inv);
                for l in 0..r {
                    let row: Vec<f32> = (0..columns).map(|c| data[c * r + l]).collect();
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (c, v) in row.iter().enumerate() {
                        let e = exp(v - max);
                        assert_eq!(got[c * r + l].to_bits(), e.to_bits(), "r {r}, {columns} columns, row {l}, column {c}");
                        sum += e;
                    }
                    assert_eq!(inv[l].to_bits(), (1.0 / sum).to_bits(), "r {r}, {columns} columns, row {l}");
                }
            }
        }
    }
}
