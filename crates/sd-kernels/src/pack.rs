//! fp16 weights widened straight into a GEMM kernel's packed panel layout (tract-linalg's
//! `PackedFormat`): one pass over the fp16 weight instead of a Cast to an f32 copy and a
//! second pass packing that copy. And f32 activations whose mn axis is contiguous packed with
//! four k rows per loop pass ([`pack_f32_mn_major`]).
//!
//! Layout (as tract-linalg's `PackedFormat::pack_t` writes it): panels of `r` consecutive
//! mn-indices, `panel_len` elements apart; inside a panel, element (k, x) at `k * r + x`.
//! Everything past the valid data in a panel (rows beyond mn in the last panel, the end
//! padding after k rows) is zeroed.

use crate::cast::f16_bits_to_f32;
use tract_linalg::mmm::EagerPackedInput;

/// A packed operand's floats (its panels, padding included), read in place.
pub fn floats(packed: &EagerPackedInput) -> &[f32] {
    let bytes = packed.packed.as_bytes();
    // SAFETY: tract's packed buffers are aligned for their kernel's vectors (at least 4 bytes);
    // whole floats are read.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) }
}

/// Whether [`pack_f16`] has a vectorized path for this layout (otherwise it converts element
/// by element, slower than a vectorized cast followed by tract's own packing).
pub fn is_fast(k_stride: usize, mn_stride: usize, r: usize) -> bool {
    mn_stride == 1 || (k_stride == 1 && r == 8 && cfg!(all(target_arch = "wasm32", target_feature = "simd128")))
}

/// Packs a `k × mn` fp16 matrix (element (kk, x) at `src[kk * k_stride + x * mn_stride]`).
/// `dst` holds `ceil(mn / r)` panels of `panel_len >= k * r` elements.
pub fn pack_f16(src: &[u16], k: usize, mn: usize, k_stride: usize, mn_stride: usize, r: usize, panel_len: usize, dst: &mut [f32]) {
    let panels = mn.div_ceil(r);
    assert!(panel_len >= k * r && dst.len() >= panels * panel_len);
    if k > 0 && mn > 0 {
        assert!((k - 1) * k_stride + (mn - 1) * mn_stride < src.len());
    }
    for p in 0..panels {
        let panel = &mut dst[p * panel_len..(p + 1) * panel_len];
        let rows = r.min(mn - p * r);
        let base = p * r * mn_stride;
        if mn_stride == 1 {
            // mn-major: each k is `rows` contiguous values.
            for kk in 0..k {
                let s = &src[base + kk * k_stride..][..rows];
                crate::cast::f16_to_f32(s, &mut panel[kk * r..kk * r + rows]);
                panel[kk * r + rows..kk * r + r].fill(0.0);
            }
        } else if k_stride == 1 && rows == 8 && r == 8 {
            pack8_k_major(&src[base..], k, mn_stride, panel);
        } else {
            for kk in 0..k {
                for x in 0..r {
                    panel[kk * r + x] = if x < rows { f16_bits_to_f32(src[base + kk * k_stride + x * mn_stride]) } else { 0.0 };
                }
            }
        }
        panel[k * r..].fill(0.0);
    }
}

/// Packs a `k × mn` f32 matrix whose mn axis is contiguous (element (kk, x) at
/// `src[kk * k_stride + x]`) into `ceil(mn / r)` panels of `panel_len >= k * r` elements, the
/// same layout and bytes as tract-linalg's `PackedFormat` packing (its `pack_mn_major`), the
/// padding zeroed. tract's loop copies one panel row per pass over the panels: under an engine
/// that checks for exit at every loop header (wazero, Bacalhau's engine) each 32-byte copy paid
/// a check. Here each panel's rows are copied four per pass.
pub fn pack_f32_mn_major(src: &[f32], k: usize, mn: usize, k_stride: usize, r: usize, panel_len: usize, dst: &mut [f32]) {
    let panels = mn.div_ceil(r);
    assert!(panel_len >= k * r && dst.len() >= panels * panel_len);
    if k > 0 && mn > 0 {
        assert!((k - 1) * k_stride + mn <= src.len());
    }
    for (p, panel) in dst[..panels * panel_len].chunks_exact_mut(panel_len).enumerate() {
        let rows = r.min(mn - p * r);
        let src = &src[p * r..];
        // Full panels of the widths tract's f32 kernels use (B's r is the kernel's nr): copies
        // of a constant size, inlined.
        match (rows == r, r) {
            (true, 4) => copy_rows::<4>(src, k, k_stride, panel),
            (true, 6) => copy_rows::<6>(src, k, k_stride, panel),
            (true, 8) => copy_rows::<8>(src, k, k_stride, panel),
            (true, 12) => copy_rows::<12>(src, k, k_stride, panel),
            (true, 16) => copy_rows::<16>(src, k, k_stride, panel),
            _ => {
                for kk in 0..k {
                    panel[kk * r..kk * r + rows].copy_from_slice(&src[kk * k_stride..][..rows]);
                    panel[kk * r + rows..kk * r + r].fill(0.0);
                }
            }
        }
        panel[k * r..].fill(0.0);
    }
}

/// `panel[kk * R..][..R] = src[kk * k_stride..][..R]` for every kk < k, four per pass.
#[inline(always)]
fn copy_rows<const R: usize>(src: &[f32], k: usize, k_stride: usize, panel: &mut [f32]) {
    let row = |panel: &mut [f32], kk: usize| panel[kk * R..kk * R + R].copy_from_slice(&src[kk * k_stride..][..R]);
    let mut kk = 0;
    while kk + 4 <= k {
        row(panel, kk);
        row(panel, kk + 1);
        row(panel, kk + 2);
        row(panel, kk + 3);
        kk += 4;
    }
    for kk in kk..k {
        row(panel, kk);
    }
}

/// One full panel of 8 rows from a k-major source (row x at `src[x * row_stride..][..k]`).
fn pack8_k_major(src: &[u16], k: usize, row_stride: usize, panel: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = unsafe { simd128::pack8_k_major(src, k, row_stride, panel) };
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let done = 0;
    for kk in done..k {
        for x in 0..8 {
            panel[kk * 8 + x] = f16_bits_to_f32(src[x * row_stride + kk]);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    /// 4×4 transpose of f32 lanes.
    #[inline(always)]
    unsafe fn transpose4(a: v128, b: v128, c: v128, d: v128) -> [v128; 4] {
        let ab_lo = i32x4_shuffle::<0, 4, 1, 5>(a, b);
        let ab_hi = i32x4_shuffle::<2, 6, 3, 7>(a, b);
        let cd_lo = i32x4_shuffle::<0, 4, 1, 5>(c, d);
        let cd_hi = i32x4_shuffle::<2, 6, 3, 7>(c, d);
        [
            i64x2_shuffle::<0, 2>(ab_lo, cd_lo),
            i64x2_shuffle::<1, 3>(ab_lo, cd_lo),
            i64x2_shuffle::<0, 2>(ab_hi, cd_hi),
            i64x2_shuffle::<1, 3>(ab_hi, cd_hi),
        ]
    }

    /// Converts and transposes 8 k-values at a time; returns how many k it did.
    pub unsafe fn pack8_k_major(src: &[u16], k: usize, row_stride: usize, panel: &mut [f32]) -> usize {
        let n = k / 8 * 8;
        if n == 0 {
            return 0;
        }
        // Bounds: the last row's last full chunk.
        assert!(7 * row_stride + n <= src.len() && panel.len() >= n * 8);
        let s = src.as_ptr();
        let d = panel.as_mut_ptr();
        let mut kk = 0;
        while kk < n {
            let mut lo = [u32x4_splat(0); 8];
            let mut hi = [u32x4_splat(0); 8];
            for x in 0..8 {
                let h = v128_load(s.add(x * row_stride + kk) as *const v128);
                lo[x] = super::super::cast::widen4_simd(u32x4_extend_low_u16x8(h));
                hi[x] = super::super::cast::widen4_simd(u32x4_extend_high_u16x8(h));
            }
            // Output for k index kk+j: rows 0..4 then rows 4..8.
            let a = transpose4(lo[0], lo[1], lo[2], lo[3]); // k 0..4, rows 0..4
            let b = transpose4(lo[4], lo[5], lo[6], lo[7]); // k 0..4, rows 4..8
            let c = transpose4(hi[0], hi[1], hi[2], hi[3]); // k 4..8, rows 0..4
            let e = transpose4(hi[4], hi[5], hi[6], hi[7]); // k 4..8, rows 4..8
            let out = d.add(kk * 8);
            for j in 0..4 {
                v128_store(out.add(j * 8) as *mut v128, a[j]);
                v128_store(out.add(j * 8 + 4) as *mut v128, b[j]);
                v128_store(out.add((j + 4) * 8) as *mut v128, c[j]);
                v128_store(out.add((j + 4) * 8 + 4) as *mut v128, e[j]);
            }
            kk += 8;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(src: &[u16], k: usize, mn: usize, ks: usize, ms: usize, r: usize, pl: usize) -> Vec<f32> {
        let mut out = vec![0f32; mn.div_ceil(r) * pl];
        for x in 0..mn {
            for kk in 0..k {
                out[(x / r) * pl + kk * r + x % r] = f16_bits_to_f32(src[kk * ks + x * ms]);
            }
        }
        out
    }

    /// Against tract-linalg's own packing of the same matrix (its reference path).
    #[test]
    fn f32_mn_major_matches_tract() {
        use tract_data::internal::*;
        use tract_linalg::pack::PackedFormat;
        for &(k, mn, r, extra) in &[(19usize, 8usize, 8usize, 0usize), (40, 20, 8, 3), (64, 16, 8, 0), (5, 13, 16, 1), (1, 1, 8, 0), (130, 27, 4, 2), (3, 24, 8, 5), (9, 36, 12, 1), (7, 12, 6, 0), (6, 40, 16, 2)] {
            let k_stride = mn + extra;
            let src: Vec<f32> = (0..k * k_stride).map(|i| i as f32 * 0.5 - 7.0).collect();
            let format = PackedFormat::new(DatumType::F32, r, 16);
            let t = Tensor::from_shape(&[k, k_stride], &src).unwrap();
            let (shape, strides) = ([k, mn], [k_stride as isize, 1]);
            let view = unsafe { TensorView::from_bytes(&t, 0, &shape, &strides) };
            let mut theirs = format.new_packed_buffer(k, mn).unwrap();
            format.repack_tensor_view(&mut theirs, &view, 0, 1).unwrap();
            let panel_len = format.single_panel_len(k);
            let mut ours = vec![f32::NAN; mn.div_ceil(r) * panel_len];
            pack_f32_mn_major(&src, k, mn, k_stride, r, panel_len, &mut ours);
            let theirs = &floats(&theirs)[..ours.len()];
            for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
                // tract leaves the end padding as allocated (zeroed): compare every element.
                assert_eq!(a.to_bits(), b.to_bits(), "k {k} mn {mn} r {r} stride {k_stride} at {i}");
            }
        }
    }

    #[test]
    fn matches_reference_layouts() {
        for &(k, mn, r, pad) in &[(19usize, 8usize, 8usize, 1usize), (40, 20, 8, 1), (64, 16, 8, 0), (33, 13, 16, 1), (8, 8, 8, 3), (1, 1, 8, 1), (130, 27, 4, 2)] {
            let pl = (k + pad) * r;
            let src: Vec<u16> = (0..k * mn).map(|i| ((i * 2654435761usize) >> 7) as u16 & 0xbfff).collect();
            // k-major (rows of k contiguous) and mn-major.
            for (ks, ms) in [(1, k), (mn, 1)] {
                let mut dst = vec![f32::NAN; mn.div_ceil(r) * pl];
                pack_f16(&src, k, mn, ks, ms, r, pl, &mut dst);
                let want = reference(&src, k, mn, ks, ms, r, pl);
                for (i, (a, b)) in dst.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "k {k} mn {mn} r {r} strides {ks},{ms} at {i}");
                }
            }
        }
    }
}
