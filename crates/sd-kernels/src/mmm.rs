//! An f32 GEMM tile for tract-linalg on wasm32 SIMD128, sized for the host's registers.
//!
//! tract-linalg 0.23.9 runs every wasm f32 GEMM on `wasm_f32_8x8`: 16 v128 accumulators. The
//! engines compile wasm for x86-64 with 16 vector registers (wasmtime's Cranelift, wazero), so
//! with the B vectors and the broadcast A value that kernel cannot hold its accumulators:
//! Cranelift keeps 6 of 16 in registers and loads and stores the other 10 on every step of the
//! reduction (read in `wasmtime compile` output; perf put the kernel at 75 % of a UNet
//! evaluation). The tile here is 4 rows × 8 columns, 8 accumulators: the whole step (two B
//! loads, one A load, four lane shuffles, 8 multiplies, 8 adds) stays in registers.
//!
//! Same arithmetic as tract's kernel: per output element the products are added in k order
//! with a separate multiply and add (no FMA), so the results are bit-identical to
//! `wasm_f32_8x8`'s (tests/mmm.rs compares them, and against a plain product). Every
//! [`FusedKerSpec`] tract can send is handled as `wasm_f32_8x8` handles it.
//!
//! Two builds of the reduction loop, because the two engines want opposite things:
//! - one k step per pass: Cranelift (wasmtime) elaborates pure arithmetic where it is demanded,
//!   so in a multi-step body every step's loads come first and their values spill;
//! - 128 or 32 steps per pass, written out by tools/wasm-ship after LLVM (its function name carries
//!   the `wasm_ship_unroll` marker): wazero (Bacalhau's engine) checks for exit at every loop
//!   header, ~35 ns, checks bounds per pointer value, and compiles in the module's order.
//! Both are registered; which one runs is measured once per process on a small product
//! ([`chosen`]): the results are the same bits either way, and as tract's own kernel's.
//!
//! Registered with tract from outside its crate, through the two registries tract-linalg keeps
//! with `inventory`: the kernels as [`MmmRoutine`]s and a dispatch tier for wasm32+simd128 one
//! rung above tract's own, answering every f32 GEMM (n ≠ 1; matrix-vector products stay on
//! tract's GEMV kernels). Not used with relaxed-simd, whose FMA tract's kernels use.
//! `SD_WASM_MMM=tract|step|unrolled` overrides the choice, to compare.
//! Written so it could go to tract-linalg as `wasm_f32_4x8`.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd::{chosen, product_into_rows, register, scores_into_panels, tile_loop, tract_wasm_f32_8x8, wasm_f32_4x8, wasm_f32_4x8_unrolled, TileLoop};

/// Nothing to register outside wasm32+simd128: native builds use tract's native kernels.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub fn register() {}

/// The kernel the tier answers with; none outside wasm32+simd128.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub fn chosen() -> Option<&'static str> {
    None
}

/// Which build of the tile's loop a kernel is: none outside wasm32+simd128 (no value exists).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[derive(Clone, Copy, Debug)]
pub enum TileLoop {}

/// Never ours outside wasm32+simd128.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub fn tile_loop(_kernel: &str) -> Option<TileLoop> {
    None
}

/// Unreachable outside wasm32+simd128: there is no [`TileLoop`] to call it with.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
pub fn product_into_rows(tile: TileLoop, _: &[f32], _: usize, _: &[f32], _: usize, _: usize, _: usize, _: usize, _: &mut [f32], _: usize) {
    match tile {}
}

/// Unreachable outside wasm32+simd128: there is no [`TileLoop`] to call it with.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
pub fn scores_into_panels(tile: TileLoop, _: &[f32], _: usize, _: &[f32], _: usize, _: usize, _: usize, _: usize, _: f32, _: &mut [f32], _: usize) {
    match tile {}
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use std::arch::wasm32::*;
    use std::sync::OnceLock;
    use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
    use tract_linalg::mmm::{AsInputValue, DynKernel, FusedKerSpec, FusedSpec, MatMatMul, OutputStoreKer, Query, Suitable};
    use tract_linalg::mmm_routines::MmmRoutine;
    use tract_linalg::mmm_tiers::MmmTier;
    use tract_linalg::pack::PackedFormat;
    use tract_linalg::Scaler;
    use tract_data::prelude::DatumType;

    const NR: usize = 8;
    const MR: usize = 4;
    const NAME_STEP: &str = "sd_wasm_f32_4x8";
    const NAME_UNROLLED: &str = "sd_wasm_f32_4x8_unrolled";

    type Tile = [[v128; 2]; MR];

    fn kernel(name: &str, ker: unsafe fn(&[FusedKerSpec<f32>]) -> isize) -> DynKernel<MR, NR, f32> {
        let a = PackedFormat::new(DatumType::F32, MR, 16);
        let b = PackedFormat::new(DatumType::F32, NR, 16);
        let mut k = DynKernel::<MR, NR, f32>::new(name, ker, a, b);
        k.arch = Some(Arch::Wasm32Simd128);
        k.with_isa(IsaReq::ANY.needing(&[Isa::Wasm32Simd128]))
    }

    /// The tile with the one-step reduction loop (wasmtime's choice).
    pub fn wasm_f32_4x8() -> DynKernel<MR, NR, f32> {
        kernel(NAME_STEP, run::<false>)
    }

    /// The tile with the reduction loop tools/wasm-ship unrolls (wazero's choice).
    pub fn wasm_f32_4x8_unrolled() -> DynKernel<MR, NR, f32> {
        kernel(NAME_UNROLLED, run::<true>)
    }

    inventory::submit! { MmmRoutine { make: || wasm_f32_4x8().mmm() } }
    inventory::submit! { MmmRoutine { make: || wasm_f32_4x8_unrolled().mmm() } }

    /// The kernel the tier answers with: `SD_WASM_MMM` (`step`, `unrolled`, or `tract` for
    /// tract's own choice: `None`), else whichever of the two builds of the loop ran a small
    /// product fastest here, measured once. Without
    /// a clock (the browser build's wasm32-unknown-unknown has none in std) the one-step loop,
    /// which suits optimizing engines.
    pub fn chosen() -> Option<&'static str> {
        static CHOICE: OnceLock<Option<&'static str>> = OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var("SD_WASM_MMM").ok().as_deref() {
            Some("tract") => None,
            Some("step") => Some(NAME_STEP),
            Some("unrolled") => Some(NAME_UNROLLED),
            _ if cfg!(target_os = "unknown") => Some(NAME_STEP),
            _ => fastest(),
        })
    }

    /// Times the two builds on a 64×512×64 product, alternating, best of three each (~1 ms
    /// each under wasmtime, a few under wazero). tract's 8×8 no longer takes part: it won
    /// under wazero only while tools/wasm-ship unrolled its loop and ours less, and under
    /// wasmtime it could win this small product and then lose on the UNet's (5.96 s per
    /// evaluation at 32×32 against the one-step tile's 5.50 s, 2026-12-03).
    fn fastest() -> Option<&'static str> {
        let (m, k, n) = (64, 512, 64);
        let candidates: Vec<(Option<&'static str>, Box<dyn MatMatMul>)> =
            vec![(Some(NAME_STEP), wasm_f32_4x8().mmm()), (Some(NAME_UNROLLED), wasm_f32_4x8_unrolled().mmm())];
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut best = vec![f64::MAX; candidates.len()];
        for _ in 0..3 {
            for (i, (_, ker)) in candidates.iter().enumerate() {
                best[i] = best[i].min(time_product(&**ker, &a, &b, m, k, n));
            }
        }
        let winner = (0..candidates.len()).min_by(|&x, &y| best[x].total_cmp(&best[y])).unwrap_or(0);
        candidates[winner].0
    }

    /// tract's own wasm kernel, the one the tile replaces (and is compared with).
    pub fn tract_wasm_f32_8x8() -> Option<Box<dyn MatMatMul>> {
        tract_linalg::mmm_routines::runnable_for(&tract_linalg::isa::native())
            .into_iter()
            .find(|ker| ker.name() == "wasm_f32_8x8")
    }

    /// Seconds for C = A·B through tract's frame with kernel `mmm`, packing included.
    fn time_product(mmm: &dyn MatMatMul, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> f64 {
        let start = std::time::Instant::now();
        let (pa, pb) = &mmm.packings()[0];
        let (Some(pa), Some(pb)) = (pa.downcast_ref::<PackedFormat>(), pb.downcast_ref::<PackedFormat>()) else {
            return f64::MAX;
        };
        let run = || -> tract_data::TractResult<()> {
            let ta = tract_data::prelude::Tensor::from_shape(&[m, k], a)?;
            let tb = tract_data::prelude::Tensor::from_shape(&[k, n], b)?;
            let mut abuf = pa.new_packed_buffer(k, m)?;
            let mut bbuf = pb.new_packed_buffer(k, n)?;
            let tc = tract_data::prelude::Tensor::zero::<f32>(&[m, n])?;
            unsafe {
                pa.repack_tensor_view(&mut abuf, &ta.view(), 1, 0)?;
                pb.repack_tensor_view(&mut bbuf, &tb.view(), 0, 1)?;
                let store = mmm.c_view(Some(0), Some(1)).wrap(&tc.view());
                let mut scratch = mmm.allocate_scratch_space();
                mmm.run_with_scratch_space(
                    m,
                    n,
                    &mut *scratch,
                    &[
                        FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&abuf), b: AsInputValue::Borrowed(&bbuf), packing: 0 },
                        FusedSpec::Store(store),
                    ],
                )?;
            }
            std::hint::black_box(tc.try_as_plain_ram()?.as_slice::<f32>()?);
            Ok(())
        };
        match run() {
            Ok(()) => start.elapsed().as_secs_f64(),
            Err(_) => f64::MAX,
        }
    }

    fn preferred(_: &IsaSet, dt: DatumType, query: &Query, _: &[Suitable]) -> Option<&'static str> {
        match (dt, query.n) {
            (DatumType::F32, Some(1)) => None,
            (DatumType::F32, _) => chosen(),
            _ => None,
        }
    }

    inventory::submit! {
        MmmTier {
            arch: Some(Arch::Wasm32Simd128),
            precedence: 2,
            name: "sd-wasm-simd128",
            applies: |isa| !isa.has(Isa::Wasm32RelaxedSimd),
            preferred,
        }
    }

    /// wasm-ld keeps an object file only if something references it, and the registrations
    /// above are referenced by nothing but the linker section `inventory` collects: call this
    /// once before the first model is optimized.
    pub fn register() {
        std::hint::black_box((run::<false> as *const (), run::<true> as *const (), preferred as *const ()));
    }

    /// Which build of the tile's reduction loop a kernel is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum TileLoop {
        Step,
        Unrolled,
    }

    /// Kernel `name`'s loop, when it is one of our tiles.
    pub fn tile_loop(name: &str) -> Option<TileLoop> {
        match name {
            NAME_STEP => Some(TileLoop::Step),
            NAME_UNROLLED => Some(TileLoop::Unrolled),
            _ => None,
        }
    }

    /// Attention's scores for one block of queries, `scale`·K·Qᵀ, written straight into the
    /// softmax's panels: what tract's frame computes with our tile for Q·Kᵀ (A = four query
    /// rows, B = eight keys, scale fused, stored through a panel's strides), the same bits,
    /// without the frame. With a head size of 40–160 each tile's reduction is short, so per
    /// tile the frame's bookkeeping, the kernel's operation loop and their loop headers
    /// (each one a trip to Go under wazero with Bacalhau's settings) cost as much as the
    /// products; here a tile is one pass of the key loop.
    ///
    /// Transposed so that no lanes move: the tile's A is four keys (`keys`: K packed as our
    /// tile's A, panels of `key_panel` floats, k = `d`), its B eight queries (`queries`: the
    /// block's Q packed as our B, panels of `query_panel`), so each tile row is one key's
    /// scores for four queries: one v128 store into P, whose panels (`p_panel` floats each,
    /// four query rows, key c's four values at 4c) are the P·V product's packed A. The same
    /// products and sums per element as Q·Kᵀ (products commute; k order; multiply, then add;
    /// then the scale), so the same bits. Keys past `n_keys` in the last panel are not
    /// stored; query rows past `rows` (zero padding) are, in the panels P has.
    #[allow(clippy::too_many_arguments)]
    pub fn scores_into_panels(
        tile: TileLoop,
        keys: &[f32],
        key_panel: usize,
        queries: &[f32],
        query_panel: usize,
        d: usize,
        n_keys: usize,
        rows: usize,
        scale: f32,
        p: &mut [f32],
        p_panel: usize,
    ) {
        let (key_groups, query_groups, p_panels) = (n_keys.div_ceil(MR), rows.div_ceil(NR), rows.div_ceil(MR));
        assert!(key_panel >= MR * d && query_panel >= NR * d && p_panel >= MR * n_keys);
        assert!(keys.len() >= key_groups * key_panel && queries.len() >= query_groups * query_panel && p.len() >= p_panels * p_panel);
        assert!(key_panel % MR == 0 && query_panel % MR == 0 && p_panel % MR == 0, "panels of whole v128s");
        let s = f32x4_splat(scale);
        let out = p.as_mut_ptr();
        for j in 0..query_groups {
            let b = queries[j * query_panel..].as_ptr();
            let halves = (p_panels - 2 * j).min(2);
            for g in 0..key_groups {
                // SAFETY: panels of d steps in bounds (asserted above; wasm loads need no alignment).
                let ab = unsafe { product_tile(tile, d, keys[g * key_panel..].as_ptr(), b) };
                let first = g * MR;
                // SAFETY (both branches): key first + r below n_keys, panel 2j + h below
                // p_panels: 4 floats at (2j + h) · p_panel + 4 · (first + r) are within p.
                unsafe {
                    let at = out.add(2 * j * p_panel + MR * first);
                    if first + MR <= n_keys && halves == 2 {
                        for (r, row) in ab.iter().enumerate() {
                            v128_store(at.add(MR * r) as *mut v128, f32x4_mul(s, row[0]));
                            v128_store(at.add(p_panel + MR * r) as *mut v128, f32x4_mul(s, row[1]));
                        }
                    } else {
                        scores_part(&ab, n_keys - first, halves, s, at, p_panel);
                    }
                }
            }
        }
    }

    /// A border tile of [`scores_into_panels`]: its first `keys` rows, `halves` query panels.
    /// Out of line, so that the key loop has no loop inside it (tools/wasm-ship unrolls only
    /// innermost loops).
    #[inline(never)]
    unsafe fn scores_part(ab: &Tile, keys: usize, halves: usize, s: v128, at: *mut f32, p_panel: usize) {
        for (r, row) in ab.iter().enumerate().take(keys) {
            for (h, v) in row.iter().enumerate().take(halves) {
                unsafe { v128_store(at.add(h * p_panel + MR * r) as *mut v128, f32x4_mul(s, *v)) };
            }
        }
    }

    /// C = A·B (`m` × `n`, row i at `c[i · c_row..]`) with our tile, without tract's frame:
    /// `a` is A packed as our A (panels of `a_panel` floats, four rows over k), `b` is B packed
    /// as our B (panels of `b_panel`, eight columns over k). Row panels outside, column panels
    /// inside, as tract's frame walks two packed operands when it knows no cache sizes (wasm).
    /// The same bits as through the frame with the same tile (each element's products added in
    /// k order); per tile, one pass of the column loop instead of the frame's bookkeeping and
    /// the kernel's operation loop: with short reductions (the TAESD decoder's 64 channels)
    /// those cost as much as the products under wazero.
    #[allow(clippy::too_many_arguments)]
    pub fn product_into_rows(tile: TileLoop, a: &[f32], a_panel: usize, b: &[f32], b_panel: usize, k: usize, m: usize, n: usize, c: &mut [f32], c_row: usize) {
        let (row_panels, col_panels) = (m.div_ceil(MR), n.div_ceil(NR));
        assert!(a_panel >= MR * k && b_panel >= NR * k && a_panel % MR == 0 && b_panel % MR == 0);
        assert!(a.len() >= row_panels * a_panel && b.len() >= col_panels * b_panel);
        assert!(m == 0 || n == 0 || (c_row >= n && c.len() >= (m - 1) * c_row + n));
        let out = c.as_mut_ptr();
        for i in 0..row_panels {
            let ai = a[i * a_panel..].as_ptr();
            let first_row = i * MR;
            for j in 0..col_panels {
                // SAFETY: panels of k steps in bounds (asserted above; wasm loads need no alignment).
                let ab = unsafe { product_tile(tile, k, ai, b[j * b_panel..].as_ptr()) };
                let first_col = j * NR;
                // SAFETY (both branches): rows below m and columns below n, c_row apart, are
                // within c (asserted above); v128 stores need no alignment in wasm.
                unsafe {
                    let at = out.add(first_row * c_row + first_col);
                    if first_row + MR <= m && first_col + NR <= n {
                        for (r, row) in ab.iter().enumerate() {
                            v128_store(at.add(r * c_row) as *mut v128, row[0]);
                            v128_store(at.add(r * c_row + 4) as *mut v128, row[1]);
                        }
                    } else {
                        rows_part(&ab, m - first_row, n - first_col, at, c_row);
                    }
                }
            }
        }
    }

    /// A border tile of [`product_into_rows`]: its first `rows` rows and `cols` columns. Out of
    /// line, as [`scores_part`].
    #[inline(never)]
    unsafe fn rows_part(ab: &Tile, rows: usize, cols: usize, at: *mut f32, c_row: usize) {
        for (r, row) in ab.iter().enumerate().take(rows) {
            let lanes: [f32; NR] = unsafe { std::mem::transmute(*row) };
            for (col, v) in lanes.iter().enumerate().take(cols) {
                unsafe { *at.add(r * c_row + col) = *v };
            }
        }
    }

    /// One tile of A·B from zero: `k` steps of a four-row A panel and an eight-column B panel.
    #[inline(always)]
    unsafe fn product_tile(tile: TileLoop, k: usize, a: *const f32, b: *const f32) -> Tile {
        let mut ab: Tile = [[f32x4_splat(0.0); 2]; MR];
        let (a, b) = (a as *const v128, b as *const v128);
        unsafe {
            match tile {
                TileLoop::Step => add_mat_mul(&mut ab, k, a, b),
                TileLoop::Unrolled => add_mat_mul_wasm_ship_unroll(&mut ab, k, a, b),
            }
        }
        ab
    }

    #[inline(always)]
    fn each(ab: &mut Tile, f: impl Fn(v128) -> v128) {
        for row in ab.iter_mut() {
            row[0] = f(row[0]);
            row[1] = f(row[1]);
        }
    }

    /// `acc += a · b` as tract's kernels do it without relaxed-simd: multiply, then add.
    #[inline(always)]
    fn madd(acc: v128, a: v128, b: v128) -> v128 {
        f32x4_add(acc, f32x4_mul(a, b))
    }

    /// C (4×8) += A panel (k × 4, k-major) · B panel (k × 8, k-major), one k step per pass.
    /// Not inlined, the accumulators in a local for the loop: inside `run` they stay live across
    /// the whole dispatch and the engines' register allocators spill them.
    #[inline(never)]
    unsafe fn add_mat_mul(ab: &mut Tile, k: usize, a: *const v128, b: *const v128) {
        unsafe { reduce(ab, k, a, b) }
    }

    /// [`add_mat_mul`] again, under a name tools/wasm-ship recognises (`wasm_ship_unroll`): after
    /// LLVM it runs the loop as whole passes of 128, then 32 steps, each step's loads at constant
    /// offsets from the pointers as they were at the top of the pass (wazero then checks bounds
    /// once per pointer per pass), and unrolls the remainder 32 times. An unrolled body LLVM writes
    /// itself computes every step's products first and spills them (tried: 2× slower under
    /// wazero). The loop walks pointers, advanced after their loads, because that is the shape
    /// the pass rewrite accepts; it also keeps LLVM from merging the two functions into one.
    #[inline(never)]
    unsafe fn add_mat_mul_wasm_ship_unroll(ab: &mut Tile, k: usize, a: *const v128, b: *const v128) {
        unsafe {
            let (mut a, mut b) = (a, b);
            let end = a.add(k);
            let mut acc = *ab;
            while a != end {
                step_splat(&mut acc, a as *const f32, b);
                a = a.add(1);
                b = b.add(2);
            }
            *ab = acc;
        }
    }

    #[inline(always)]
    unsafe fn reduce(ab: &mut Tile, k: usize, a: *const v128, b: *const v128) {
        unsafe {
            let mut acc = *ab;
            for i in 0..k {
                step(&mut acc, a.add(i), b.add(2 * i));
            }
            *ab = acc;
        }
    }

    /// One k step: A's four values (one v128) times B's eight (two). A's values are broadcast
    /// by shuffles (one instruction each on x86) rather than splatted from scalar loads (a
    /// load, a move and a broadcast each).
    #[inline(always)]
    unsafe fn step(acc: &mut Tile, a: *const v128, b: *const v128) {
        unsafe {
            let blo = v128_load(b);
            let bhi = v128_load(b.add(1));
            let quad = v128_load(a);
            for (r, row) in acc.iter_mut().enumerate() {
                let s = lane(quad, r);
                row[0] = madd(row[0], s, blo);
                row[1] = madd(row[1], s, bhi);
            }
        }
    }

    /// [`step`] for wazero: A's values splatted from memory, B's high half and A's last value
    /// loaded first. wazero v1.12.0 lowers every `i8x16.shuffle` to two mask loads, two
    /// `pshufb` and an `or` (no broadcast special case), but an `f32.load` + `f32x4.splat` to
    /// `insertps` from memory + `pshufd`; and it checks bounds once per base address, for the
    /// largest offset seen first. tools/wasm-ship turns LLVM's `v128.load32_splat` back into
    /// `f32.load` + `f32x4.splat` and folds constant address adds into the offsets in marked
    /// functions. Same products and sums per element as [`step`] (rows are independent).
    #[inline(always)]
    unsafe fn step_splat(acc: &mut Tile, a: *const f32, b: *const v128) {
        unsafe {
            let bhi = in_order(b.add(1));
            let blo = in_order(b);
            let mut s = [blo; MR];
            for r in (0..MR).rev() {
                s[r] = f32x4_splat(in_order(a.add(r)));
            }
            for r in 0..MR {
                acc[r][0] = madd(acc[r][0], s[r], blo);
                acc[r][1] = madd(acc[r][1], s[r], bhi);
            }
        }
    }

    /// `*p`, loaded where the source has it. LLVM otherwise moves each load next to its first
    /// use after reordering the products (A's values came out as 1, 2, 3, 0), and wazero,
    /// which checks bounds once per base for the furthest offset seen so far, then checked A
    /// three times per step instead of once: two checks per step instead of four made the
    /// tile ~25 % faster under wasi-runner on a Zen 1 EPYC (docs/performance.md). A volatile
    /// load is an ordinary load in wasm; only LLVM keeps volatile accesses in order.
    #[inline(always)]
    unsafe fn in_order<T>(p: *const T) -> T {
        unsafe { std::ptr::read_volatile(p) }
    }

    /// Lane `l` of `v` in all four lanes.
    #[inline(always)]
    fn lane(v: v128, l: usize) -> v128 {
        match l {
            0 => i32x4_shuffle::<0, 0, 0, 0>(v, v),
            1 => i32x4_shuffle::<1, 1, 1, 1>(v, v),
            2 => i32x4_shuffle::<2, 2, 2, 2>(v, v),
            _ => i32x4_shuffle::<3, 3, 3, 3>(v, v),
        }
    }

    unsafe fn store(ab: &Tile, tile: &OutputStoreKer) {
        unsafe {
            let mut ptr = tile.ptr;
            let cs = tile.col_byte_stride;
            for row in ab {
                if cs == 4 {
                    v128_store(ptr as *mut v128, row[0]);
                    v128_store(ptr.add(16) as *mut v128, row[1]);
                } else {
                    let lanes: [f32; 8] = std::mem::transmute(*row);
                    for (c, v) in lanes.iter().enumerate() {
                        *(ptr.offset(cs * c as isize) as *mut f32) = *v;
                    }
                }
                ptr = ptr.offset(tile.row_byte_stride);
            }
        }
    }

    unsafe fn add_unicast(ab: &mut Tile, tile: &OutputStoreKer) {
        unsafe {
            let mut ptr = tile.ptr as *const u8;
            let cs = tile.col_byte_stride;
            for row in ab.iter_mut() {
                let m = |c: isize| *(ptr.offset(cs * c) as *const f32);
                row[0] = f32x4_add(row[0], f32x4(m(0), m(1), m(2), m(3)));
                row[1] = f32x4_add(row[1], f32x4(m(4), m(5), m(6), m(7)));
                ptr = ptr.offset(tile.row_byte_stride);
            }
        }
    }

    /// Runs one tile's list of operations (tract's micro-kernel contract).
    unsafe fn run<const UNROLLED: bool>(specs: &[FusedKerSpec<f32>]) -> isize {
        unsafe {
            let mut ab: Tile = [[f32x4_splat(0.0); 2]; MR];
            for spec in specs {
                match *spec {
                    FusedKerSpec::Done => break,
                    FusedKerSpec::Clear => ab = [[f32x4_splat(0.0); 2]; MR],
                    FusedKerSpec::LoadTile(_col_major, row_major) => {
                        let p = row_major as *const v128;
                        for (r, row) in ab.iter_mut().enumerate() {
                            row[0] = v128_load(p.add(2 * r));
                            row[1] = v128_load(p.add(2 * r + 1));
                        }
                    }
                    FusedKerSpec::ScalarMin(s) => each(&mut ab, |x| f32x4_min(f32x4_splat(s), x)),
                    FusedKerSpec::ScalarMax(s) => each(&mut ab, |x| f32x4_max(f32x4_splat(s), x)),
                    FusedKerSpec::ScalarAdd(s) => each(&mut ab, |x| f32x4_add(f32x4_splat(s), x)),
                    FusedKerSpec::ScalarMul(s) => each(&mut ab, |x| f32x4_mul(f32x4_splat(s), x)),
                    FusedKerSpec::ScalarSub(s) => each(&mut ab, |x| f32x4_sub(f32x4_splat(s), x)),
                    FusedKerSpec::ScalarSubF(s) => each(&mut ab, |x| f32x4_sub(x, f32x4_splat(s))),
                    FusedKerSpec::LeakyRelu(s) => each(&mut ab, |x| {
                        v128_bitselect(x, f32x4_mul(f32x4_splat(s), x), f32x4_gt(x, f32x4_splat(0.0)))
                    }),
                    FusedKerSpec::PerRowMin(p) => per_row(&mut ab, p, |s, x| f32x4_min(s, x)),
                    FusedKerSpec::PerRowMax(p) => per_row(&mut ab, p, |s, x| f32x4_max(s, x)),
                    FusedKerSpec::PerRowAdd(p) => per_row(&mut ab, p, |s, x| f32x4_add(s, x)),
                    FusedKerSpec::PerRowMul(p) => per_row(&mut ab, p, |s, x| f32x4_mul(s, x)),
                    FusedKerSpec::PerRowSub(p) => per_row(&mut ab, p, |s, x| f32x4_sub(s, x)),
                    FusedKerSpec::PerRowSubF(p) => per_row(&mut ab, p, |s, x| f32x4_sub(x, s)),
                    FusedKerSpec::PerColMin(p) => per_col(&mut ab, p, |c, x| f32x4_min(c, x)),
                    FusedKerSpec::PerColMax(p) => per_col(&mut ab, p, |c, x| f32x4_max(c, x)),
                    FusedKerSpec::PerColAdd(p) => per_col(&mut ab, p, |c, x| f32x4_add(c, x)),
                    FusedKerSpec::PerColMul(p) => per_col(&mut ab, p, |c, x| f32x4_mul(c, x)),
                    FusedKerSpec::PerColSub(p) => per_col(&mut ab, p, |c, x| f32x4_sub(c, x)),
                    FusedKerSpec::PerColSubF(p) => per_col(&mut ab, p, |c, x| f32x4_sub(x, c)),
                    FusedKerSpec::QScale(shift, rp, mult) => {
                        let s = f32x4_splat(Scaler::from_fuse_params(shift, rp, mult).scale);
                        each(&mut ab, |x| f32x4_mul(s, x))
                    }
                    FusedKerSpec::RoundingShiftRight(shift, _) => {
                        let s = f32x4_splat(2f32.powi(-(shift as i32)));
                        each(&mut ab, |x| f32x4_mul(s, x))
                    }
                    FusedKerSpec::ShiftLeft(shift) => {
                        let s = f32x4_splat(2f32.powi(shift as i32));
                        each(&mut ab, |x| f32x4_mul(s, x))
                    }
                    FusedKerSpec::AddUnicast(tile) => add_unicast(&mut ab, &tile),
                    FusedKerSpec::AddRowColProducts(rows, cols) => {
                        let clo = v128_load(cols as *const v128);
                        let chi = v128_load(cols.add(4) as *const v128);
                        for (r, row) in ab.iter_mut().enumerate() {
                            let s = f32x4_splat(*rows.add(r));
                            row[0] = madd(row[0], s, clo);
                            row[1] = madd(row[1], s, chi);
                        }
                    }
                    FusedKerSpec::Store(tile) => store(&ab, &tile),
                    FusedKerSpec::AddMatMul { k, pa, pb, packing: _ } => {
                        let (a, b) = (pa as *const v128, pb as *const v128);
                        if UNROLLED {
                            add_mat_mul_wasm_ship_unroll(&mut ab, k, a, b)
                        } else {
                            add_mat_mul(&mut ab, k, a, b)
                        }
                    }
                }
            }
            0
        }
    }

    #[inline(always)]
    unsafe fn per_row(ab: &mut Tile, p: *const f32, f: impl Fn(v128, v128) -> v128) {
        for (r, row) in ab.iter_mut().enumerate() {
            let s = f32x4_splat(unsafe { *p.add(r) });
            row[0] = f(s, row[0]);
            row[1] = f(s, row[1]);
        }
    }

    #[inline(always)]
    unsafe fn per_col(ab: &mut Tile, p: *const f32, f: impl Fn(v128, v128) -> v128) {
        let (clo, chi) = unsafe { (v128_load(p as *const v128), v128_load(p.add(4) as *const v128)) };
        for row in ab.iter_mut() {
            row[0] = f(clo, row[0]);
            row[1] = f(chi, row[1]);
        }
    }
}
