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

/// exp(x), the same arithmetic as the vector version.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = if x < LO { LO } else if x > HI { HI } else { x };
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * C1 - n * C2;
    let p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
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
        let mut acc = [0f32; 4];
        let mut chunks = x.chunks_exact_mut(4);
        for c in &mut chunks {
            for l in 0..4 {
                c[l] = exp(c[l] - shift);
                acc[l] += c[l];
            }
        }
        let mut tail = 0.0;
        for v in chunks.into_remainder() {
            *v = exp(*v - shift);
            tail += *v;
        }
        (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
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
