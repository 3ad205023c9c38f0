//! fp16 → f32 widening, bit-exact with `half`'s software conversion (which tract's Cast uses
//! on wasm32): normals rebias, subnormals normalize, ±0/±inf keep their sign, NaNs keep their
//! payload with the quiet bit set.
//!
//! Branch-free formulation: shift the exponent and mantissa into place and add the exponent
//! rebias (112 << 23); the exponent-all-ones case gets a second rebias (to 255) plus the quiet
//! bit when the mantissa is non-zero; the exponent-zero case (subnormals and zero) is
//! `(2^-14 + m·2^-24) - 2^-14` in float arithmetic, which is exact.

/// One value; the reference the vector versions are tested against (and equal to
/// `half::f16::from_bits(h).to_f32()` for all 65536 inputs, see tests).
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let shifted = em << 13;
    let mut bits = shifted + (112 << 23);
    if em >= 0x7c00 {
        // inf / NaN: exponent 31 + 112 + 112 = 255; NaN gets the quiet bit like half does.
        bits += 112 << 23;
        if em > 0x7c00 {
            bits |= 0x0040_0000;
        }
    }
    if em < 0x0400 {
        // zero / subnormal: value = mantissa * 2^-24 = f32(2^-14 + m*2^-24) - 2^-14, exact.
        let f = f32::from_bits(bits + (1 << 23)) - f32::from_bits(113 << 23);
        bits = f.to_bits();
    }
    f32::from_bits(bits | sign)
}

/// Widens `src` (fp16 bit patterns) into `dst`. Panics if the lengths differ.
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let done = unsafe { simd128::f16_to_f32(src, dst) };
        for (s, d) in src[done..].iter().zip(dst[done..].iter_mut()) {
            *d = f16_bits_to_f32(*s);
        }
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = f16_bits_to_f32(*s);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use simd128::widen4 as widen4_simd;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    #[inline(always)]
    pub(crate) unsafe fn widen4(h: v128) -> v128 {
        // h: four u32 lanes holding fp16 bit patterns.
        let sign = i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16);
        let em = v128_and(h, u32x4_splat(0x7fff));
        let mut bits = i32x4_add(i32x4_shl(em, 13), u32x4_splat(112 << 23));
        // em >= 0x7c00: exponent all ones (signed compare is fine: em < 2^15).
        let infnan = i32x4_gt(em, u32x4_splat(0x7bff));
        bits = i32x4_add(bits, v128_and(infnan, u32x4_splat(112 << 23)));
        let nan = i32x4_gt(em, u32x4_splat(0x7c00));
        bits = v128_or(bits, v128_and(nan, u32x4_splat(0x0040_0000)));
        let small = i32x4_lt(em, u32x4_splat(0x0400));
        let renorm = f32x4_sub(i32x4_add(bits, u32x4_splat(1 << 23)), f32x4_splat(f32::from_bits(113 << 23)));
        bits = v128_bitselect(renorm, bits, small);
        v128_or(bits, sign)
    }

    /// Converts the largest multiple of 8 elements; returns how many it did.
    pub unsafe fn f16_to_f32(src: &[u16], dst: &mut [f32]) -> usize {
        let n = src.len() / 8 * 8;
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let h = v128_load(s.add(i) as *const v128);
            let lo = widen4(u32x4_extend_low_u16x8(h));
            let hi = widen4(u32x4_extend_high_u16x8(h));
            v128_store(d.add(i) as *mut v128, lo);
            v128_store(d.add(i + 4) as *mut v128, hi);
            i += 8;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IEEE binary16 by its definition, computed in f64 (independent of the bit tricks).
    fn by_definition(h: u16) -> f32 {
        let sign = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
        let (e, m) = (((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f64);
        match e {
            0 => (sign * m * 2f64.powi(-24)) as f32,
            31 if m == 0.0 => (sign * f64::INFINITY) as f32,
            // NaN: payload kept, quiet bit set (what half and F16C do).
            31 => f32::from_bits(((h as u32 & 0x8000) << 16) | 0x7fc0_0000 | ((h as u32 & 0x3ff) << 13)),
            _ => (sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15)) as f32,
        }
    }

    #[test]
    fn scalar_matches_the_definition_for_every_input() {
        for h in 0..=u16::MAX {
            assert_eq!(f16_bits_to_f32(h).to_bits(), by_definition(h).to_bits(), "input {h:#06x}");
        }
    }

    /// The slice version (SIMD128 on wasm32: run with `cargo test --target wasm32-wasip1`
    /// under wasmtime) over all inputs, at every offset of the vector tail.
    #[test]
    fn slice_matches_scalar_for_every_input() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for skip in 0..9 {
            let src = &all[skip..];
            let mut dst = vec![0f32; src.len()];
            f16_to_f32(src, &mut dst);
            for (s, d) in src.iter().zip(&dst) {
                assert_eq!(d.to_bits(), f16_bits_to_f32(*s).to_bits(), "input {s:#06x}");
            }
        }
    }
}
