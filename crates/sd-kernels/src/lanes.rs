//! Four f32 lanes written once for both builds: a `v128` on wasm32 with simd128, an array
//! elsewhere (which LLVM vectorizes natively). Element-wise kernels that must be vectorized in
//! the shipped module are written on [`Lanes`], not left to the auto-vectorizers: the `dist`
//! profile's fat LTO inlines this crate's functions into size-optimized callers, and the
//! Winograd transforms, written as plain loops, ran scalar there (7.6 % of a 32×32 UNet run).
//!
//! [`Lanes`] is implemented by [`F32x4`] and by `f32`, so a step written once generically runs
//! four lanes at a time and then the tail one at a time ([`for_lanes!`]).

use std::ops::{Add, Mul, Sub};

/// A vector of floats, or one float: the operations the element-wise kernels need.
pub trait Lanes: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    /// How many floats one value holds.
    const N: usize;
    fn splat(x: f32) -> Self;
    /// `s[at..at + N]`.
    fn load(s: &[f32], at: usize) -> Self;
    /// Into `s[at..at + N]`.
    fn store(self, s: &mut [f32], at: usize);
    /// Into the `N` floats at `p`.
    ///
    /// # Safety
    /// `p..p + N` must be valid for writes.
    unsafe fn store_to(self, p: *mut f32);
}

impl Lanes for f32 {
    const N: usize = 1;
    #[inline(always)]
    fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        s[at]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], at: usize) {
        s[at] = self
    }
    #[inline(always)]
    unsafe fn store_to(self, p: *mut f32) {
        unsafe { *p = self }
    }
}

/// The operations and [`Lanes`] of `$name([f32; $n])`, each a plain loop over the lanes (what
/// LLVM turns into one vector instruction at the target's width).
macro_rules! array_lanes {
    (@op $name:ident, $n:literal, $trait:ident, $method:ident, $op:tt) => {
        impl std::ops::$trait for $name {
            type Output = Self;
            #[inline(always)]
            fn $method(mut self, o: Self) -> Self {
                for l in 0..$n {
                    self.0[l] = self.0[l] $op o.0[l];
                }
                self
            }
        }
    };
    ($name:ident, $n:literal) => {
        array_lanes!(@op $name, $n, Add, add, +);
        array_lanes!(@op $name, $n, Sub, sub, -);
        array_lanes!(@op $name, $n, Mul, mul, *);
        impl $crate::lanes::Lanes for $name {
            const N: usize = $n;
            #[inline(always)]
            fn splat(x: f32) -> Self {
                $name([x; $n])
            }
            #[inline(always)]
            fn load(s: &[f32], at: usize) -> Self {
                $name(s[at..at + $n].try_into().unwrap())
            }
            #[inline(always)]
            fn store(self, s: &mut [f32], at: usize) {
                s[at..at + $n].copy_from_slice(&self.0)
            }
            #[inline(always)]
            unsafe fn store_to(self, p: *mut f32) {
                unsafe { std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, $n) }
            }
        }
    };
}

/// Four floats.
#[derive(Clone, Copy, Debug)]
pub struct F32x4(Inner);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
type Inner = core::arch::wasm32::v128;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
type Inner = [f32; 4];

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use super::F32x4;
    use core::arch::wasm32::*;

    impl std::ops::Add for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x4(f32x4_add(self.0, o.0))
        }
    }
    impl std::ops::Sub for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x4(f32x4_sub(self.0, o.0))
        }
    }
    impl std::ops::Mul for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x4(f32x4_mul(self.0, o.0))
        }
    }
    impl super::Lanes for F32x4 {
        const N: usize = 4;
        #[inline(always)]
        fn splat(x: f32) -> Self {
            F32x4(f32x4_splat(x))
        }
        #[inline(always)]
        fn load(s: &[f32], at: usize) -> Self {
            let s = &s[at..at + 4];
            // SAFETY: four floats in bounds; v128 loads need no alignment.
            F32x4(unsafe { v128_load(s.as_ptr() as *const v128) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], at: usize) {
            let s = &mut s[at..at + 4];
            // SAFETY: as in load.
            unsafe { v128_store(s.as_mut_ptr() as *mut v128, self.0) }
        }
        #[inline(always)]
        unsafe fn store_to(self, p: *mut f32) {
            unsafe { v128_store(p as *mut v128, self.0) }
        }
    }

    impl F32x4 {
        /// The 4×4 matrix whose rows are `m` transposed: lane l of row r becomes lane r of row l.
        #[inline(always)]
        pub fn transpose(m: [Self; 4]) -> [Self; 4] {
            let [a, b, c, d] = m.map(|v| v.0);
            let (ab01, ab23) = (i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<2, 6, 3, 7>(a, b));
            let (cd01, cd23) = (i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
            [
                F32x4(i32x4_shuffle::<0, 1, 4, 5>(ab01, cd01)),
                F32x4(i32x4_shuffle::<2, 3, 6, 7>(ab01, cd01)),
                F32x4(i32x4_shuffle::<0, 1, 4, 5>(ab23, cd23)),
                F32x4(i32x4_shuffle::<2, 3, 6, 7>(ab23, cd23)),
            ]
        }
        /// The even and the odd elements of `s[at..at + 8]`.
        #[inline(always)]
        pub fn deinterleave(s: &[f32], at: usize) -> (Self, Self) {
            let s = &s[at..at + 8];
            // SAFETY: eight floats in bounds.
            let (a, b) = unsafe { (v128_load(s.as_ptr() as *const v128), v128_load(s.as_ptr().add(4) as *const v128)) };
            (F32x4(i32x4_shuffle::<0, 2, 4, 6>(a, b)), F32x4(i32x4_shuffle::<1, 3, 5, 7>(a, b)))
        }
        /// `s[at..at + 8]` = even[0], odd[0], even[1], odd[1], ….
        #[inline(always)]
        pub fn interleave(even: Self, odd: Self, s: &mut [f32], at: usize) {
            let s = &mut s[at..at + 8];
            let (lo, hi) = (i32x4_shuffle::<0, 4, 1, 5>(even.0, odd.0), i32x4_shuffle::<2, 6, 3, 7>(even.0, odd.0));
            // SAFETY: as in deinterleave.
            unsafe {
                v128_store(s.as_mut_ptr() as *mut v128, lo);
                v128_store(s.as_mut_ptr().add(4) as *mut v128, hi);
            }
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    use super::F32x4;

    array_lanes!(F32x4, 4);

    impl F32x4 {
        /// The 4×4 matrix whose rows are `m` transposed: lane l of row r becomes lane r of row l.
        #[inline(always)]
        pub fn transpose(m: [Self; 4]) -> [Self; 4] {
            std::array::from_fn(|l| F32x4(std::array::from_fn(|r| m[r].0[l])))
        }
        /// The even and the odd elements of `s[at..at + 8]`.
        #[inline(always)]
        pub fn deinterleave(s: &[f32], at: usize) -> (Self, Self) {
            let s = &s[at..at + 8];
            (F32x4(std::array::from_fn(|l| s[2 * l])), F32x4(std::array::from_fn(|l| s[2 * l + 1])))
        }
        /// `s[at..at + 8]` = even[0], odd[0], even[1], odd[1], ….
        #[inline(always)]
        pub fn interleave(even: Self, odd: Self, s: &mut [f32], at: usize) {
            let s = &mut s[at..at + 8];
            for l in 0..4 {
                s[2 * l] = even.0[l];
                s[2 * l + 1] = odd.0[l];
            }
        }
    }
}

/// Sixteen floats, each operation a plain loop over them: for code compiled for AVX-512 (the
/// native builds' `#[target_feature]` twins), where each becomes one 512-bit instruction. The
/// same operations per lane as [`F32x4`], so the same bits.
#[derive(Clone, Copy, Debug)]
pub struct F32x16([f32; 16]);

array_lanes!(F32x16, 16);

/// Rows interleaved: `out[R·c + l]` = `rows[l][c]` for every column c of the R rows (all of one
/// length, R a multiple of four), four columns of four rows at a time by 4×4 transposes.
pub fn interleave_rows(rows: &[&[f32]], out: &mut [f32]) {
    let (r, len) = (rows.len(), rows.first().map_or(0, |row| row.len()));
    assert!(r % 4 == 0 && rows.iter().all(|row| row.len() == len) && out.len() >= r * len);
    let mut c = 0;
    while c + 4 <= len {
        for (q, four) in rows.chunks_exact(4).enumerate() {
            let block = [four[0], four[1], four[2], four[3]].map(|row| F32x4::load(row, c));
            for (m, column) in F32x4::transpose(block).into_iter().enumerate() {
                column.store(out, r * (c + m) + 4 * q);
            }
        }
        c += 4;
    }
    for c in c..len {
        for (l, row) in rows.iter().enumerate() {
            out[r * c + l] = row[c];
        }
    }
}

/// Runs `$body` for `$i` in `$range`, with the type `$L` the lanes of each step: [`F32x4`] for
/// steps of four while four remain, then `f32` for the tail one at a time. `$body` is written
/// once, generically over [`Lanes`] (`$L::load`, `$L::splat`, …), and uses `$L::N`.
#[macro_export]
macro_rules! for_lanes {
    ($range:expr, |$i:ident, $L:ident| $body:block) => {{
        let range: std::ops::Range<usize> = $range;
        let mut $i = range.start;
        {
            type $L = $crate::lanes::F32x4;
            while $i + 4 <= range.end {
                $body
                $i += 4;
            }
        }
        {
            type $L = f32;
            while $i < range.end {
                $body
                $i += 1;
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_steps_cover_the_range_once() {
        let x: Vec<f32> = (0..11).map(|i| i as f32).collect();
        let mut y = vec![0f32; 11];
        let mut steps = Vec::new();
        for_lanes!(1..10, |i, L| {
            steps.push((i, L::N));
            (L::load(&x, i) * L::splat(2.0) + L::splat(1.0)).store(&mut y, i);
        });
        assert_eq!(steps, [(1, 4), (5, 4), (9, 1)]);
        let want: Vec<f32> = (0..11).map(|i| if (1..10).contains(&i) { 2.0 * i as f32 + 1.0 } else { 0.0 }).collect();
        assert_eq!(y, want);
    }

    #[test]
    fn interleave_rows_transposes_every_column() {
        for r in [4usize, 8, 16] {
            for len in [0usize, 3, 4, 9, 16] {
                let rows: Vec<Vec<f32>> = (0..r).map(|l| (0..len).map(|c| (100 * l + c) as f32).collect()).collect();
                let rows: Vec<&[f32]> = rows.iter().map(|row| row.as_slice()).collect();
                let mut out = vec![f32::NAN; r * len];
                interleave_rows(&rows, &mut out);
                let want: Vec<f32> = (0..r * len).map(|i| (100 * (i % r) + i / r) as f32).collect();
                assert_eq!(out, want, "{r} rows of length {len}");
            }
        }
    }

    #[test]
    fn interleave_undoes_deinterleave() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let (even, odd) = F32x4::deinterleave(&x, 1);
        let mut y = vec![0f32; 10];
        even.store(&mut y, 0);
        odd.store(&mut y, 4);
        assert_eq!(&y[..8], [1., 3., 5., 7., 2., 4., 6., 8.]);
        let mut z = vec![0f32; 9];
        F32x4::interleave(even, odd, &mut z, 1);
        assert_eq!(&z[1..], &x[1..9]);
    }
}
