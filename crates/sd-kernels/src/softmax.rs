//! Row softmax pieces for attention: a vectorized `exp` (Cephes' expf polynomial, ~1 ulp on
//! the range attention uses) and "subtract the row max, exponentiate in place, return the
//! sum". SIMD128 on wasm32; the portable version computes the same formula lane by lane.

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

/// The largest element (NaNs ignored unless all are NaN; -inf for an empty slice).
pub fn max(x: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        unsafe { simd128::max(x) }
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let mut acc = [f32::NEG_INFINITY; 8];
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..8 {
                acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for v in acc.iter().chain(tail) {
            m = if *v > m { *v } else { m };
        }
        m
    }
}

/// x[i] = exp(x[i] - shift) in place; returns the sum of the new values.
pub fn exp_sub_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        unsafe { simd128::exp_sub_sum(x, shift) }
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        // Two passes: the exponentials as wide as the CPU goes (each element alone), then the
        // sum in the vector version's order (four lanes, in k order each), so the bits match
        // the wasm build's whatever the vector width.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { exp_sub_avx512(x, shift) };
            return sum4(x);
        }
        exp_sub(x, shift);
        sum4(x)
    }
}

/// x[i] = exp(x[i] - shift), element by element (vectorized by LLVM at the target's width).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn exp_sub(x: &mut [f32], shift: f32) {
    for v in x.iter_mut() {
        *v = exp(*v - shift);
    }
}

/// [`exp_sub`] compiled for AVX-512: sixteen lanes natively where the CPU has them. The same
/// operations per element (Rust does not fuse multiplies and adds), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_sub_avx512(x: &mut [f32], shift: f32) {
    exp_sub(x, shift)
}

/// The sum in four lanes, element i into lane i % 4 in order, then (0 + 2) + (1 + 3) + the
/// tail: the SIMD128 version's order.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn sum4(x: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let chunks = x.chunks_exact(4);
    let tail: f32 = chunks.remainder().iter().fold(0.0, |s, v| s + v);
    for c in chunks {
        for l in 0..4 {
            acc[l] += c[l];
        }
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
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

    pub unsafe fn max(x: &[f32]) -> f32 {
        let n = x.len() / 8 * 8;
        let p = x.as_ptr();
        let (mut a, mut b) = (f32x4_splat(f32::NEG_INFINITY), f32x4_splat(f32::NEG_INFINITY));
        let mut i = 0;
        while i < n {
            // pmax(a, v) = if a < v { v } else { a }: NaN in v is skipped.
            a = f32x4_pmax(a, v128_load(p.add(i) as *const v128));
            b = f32x4_pmax(b, v128_load(p.add(i + 4) as *const v128));
            i += 8;
        }
        let a = f32x4_pmax(a, b);
        let mut m = f32::NEG_INFINITY;
        for v in [f32x4_extract_lane::<0>(a), f32x4_extract_lane::<1>(a), f32x4_extract_lane::<2>(a), f32x4_extract_lane::<3>(a)]
            .iter()
            .chain(&x[n..])
        {
            m = if *v > m { *v } else { m };
        }
        m
    }

    pub unsafe fn exp_sub_sum(x: &mut [f32], shift: f32) -> f32 {
        let n = x.len() / 4 * 4;
        let p = x.as_mut_ptr();
        let s = f32x4_splat(shift);
        let mut acc = f32x4_splat(0.0);
        let mut i = 0;
        while i < n {
            let v = exp4(f32x4_sub(v128_load(p.add(i) as *const v128), s));
            v128_store(p.add(i) as *mut v128, v);
            acc = f32x4_add(acc, v);
            i += 4;
        }
        let mut tail = 0.0;
        for v in &mut x[n..] {
            *v = exp(*v - shift);
            tail += *v;
        }
        (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<2>(acc))
            + (f32x4_extract_lane::<1>(acc) + f32x4_extract_lane::<3>(acc))
            + tail
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

    #[test]
    fn vector_versions_match_scalar() {
        for len in [0usize, 1, 3, 4, 7, 8, 9, 31, 77, 256, 1001] {
            let data: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.037).collect();
            let want_max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&data), want_max, "len {len}");
            let mut got = data.clone();
            let sum = exp_sub_sum(&mut got, want_max);
            let mut want_sum = 0f64;
            for (g, d) in got.iter().zip(&data) {
                assert_eq!(g.to_bits(), exp(d - want_max).to_bits());
                want_sum += *g as f64;
            }
            assert!((sum as f64 - want_sum).abs() <= 1e-5 * want_sum.max(1.0), "len {len}: {sum} vs {want_sum}");
        }
    }
}
