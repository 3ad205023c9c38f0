//! The GEMM tiles (src/mmm.rs) against tract-linalg's own wasm kernel and a plain reference.
//! wasm32 + simd128 only, where the tiles exist: scripts/test.sh runs this under wasmtime
//! (`cargo test -p sd-kernels --target wasm32-wasip1`).
//!
//! Whole products go through tract's frame (`MatMatMul::run_with_scratch_space`: packing,
//! border tiles through scratch, fused operations), once with our tile and once with
//! `wasm_f32_8x8`, the kernel it replaces. Both add the products in k order with a separate
//! multiply and add, so the results must be the same bits; a plain f64 product checks that
//! both are right.
#![cfg(all(target_arch = "wasm32", target_feature = "simd128"))]

use sd_kernels::{mmm, pack};
use tract_data::prelude::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul, MmmDispatch, Query};
use tract_linalg::pack::PackedFormat;
use tract_linalg::BinOp;

/// Deterministic values in [-1, 1) with all mantissa bits in play.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Which fused operations follow the product.
#[derive(Clone, Copy, Debug)]
enum Extra {
    None,
    /// bias per row (+), per column (×), scalar (−, flipped), then max with a scalar
    Bins,
    LeakyRelu,
    /// C += D (another m×n tensor), then += rows ⊗ cols
    Unicast,
}

/// The scalar operand of the fused operations.
const SCALAR: f32 = 0.375;

struct Problem {
    m: usize,
    k: usize,
    n: usize,
    /// C stored transposed (column stride ≠ 1 element), as tract's store tests do.
    transposed: bool,
    extra: Extra,
}

impl Problem {
    /// A (m×k), B (k×n), per-row and per-column operands, D (m×n), all row-major.
    fn inputs(&self) -> [Vec<f32>; 5] {
        let (m, k, n) = (self.m, self.k, self.n);
        let seed = (m * 1_000_000 + k * 1000 + n) as u64;
        [values(m * k, seed), values(k * n, seed + 1), values(m, seed + 2), values(n, seed + 3), values(m * n, seed + 4)]
    }

    /// C through tract's frame with this kernel.
    fn run(&self, mmm: &dyn MatMatMul) -> Vec<f32> {
        let (m, k, n) = (self.m, self.k, self.n);
        let [a, b, rows, cols, d] = self.inputs();
        let a = Tensor::from_shape(&[m, k], &a).unwrap();
        let b = Tensor::from_shape(&[k, n], &b).unwrap();
        let rows = Tensor::from_shape(&[m], &rows).unwrap();
        let cols = Tensor::from_shape(&[n], &cols).unwrap();
        let d = Tensor::from_shape(&[m, n], &d).unwrap();
        let scalar = tensor0(SCALAR);
        let (pa, pb) = &mmm.packings()[0];
        let pa = pa.downcast_ref::<PackedFormat>().unwrap();
        let pb = pb.downcast_ref::<PackedFormat>().unwrap();
        let mut abuf = pa.new_packed_buffer(k, m).unwrap();
        let mut bbuf = pb.new_packed_buffer(k, n).unwrap();
        let c_shape = if self.transposed { [n, m] } else { [m, n] };
        let c = Tensor::zero::<f32>(&c_shape).unwrap();
        unsafe {
            pa.repack_tensor_view(&mut abuf, &a.view(), 1, 0).unwrap();
            pb.repack_tensor_view(&mut bbuf, &b.view(), 0, 1).unwrap();
            let c_axes = if self.transposed { (Some(1), Some(0)) } else { (Some(0), Some(1)) };
            let store = mmm.c_view(c_axes.0, c_axes.1).wrap(&c.view());
            let d_store = mmm.c_view(Some(0), Some(1)).wrap(&d.view());
            let mut specs =
                vec![FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&abuf), b: AsInputValue::Borrowed(&bbuf), packing: 0 }];
            match self.extra {
                Extra::None => {}
                Extra::Bins => specs.extend([
                    FusedSpec::BinPerRow(rows.view(), BinOp::Add),
                    FusedSpec::BinPerCol(cols.view(), BinOp::Mul),
                    FusedSpec::BinScalar(&scalar, BinOp::SubF),
                    FusedSpec::BinScalar(&scalar, BinOp::Max),
                ]),
                Extra::LeakyRelu => specs.push(FusedSpec::LeakyRelu(&scalar)),
                Extra::Unicast => {
                    specs.push(FusedSpec::AddUnicast(d_store));
                    specs.push(FusedSpec::AddRowColProducts(&rows, &cols));
                }
            }
            specs.push(FusedSpec::Store(store));
            let mut scratch = mmm.allocate_scratch_space();
            mmm.run_with_scratch_space(m, n, &mut *scratch, &specs).unwrap();
        }
        let c = c.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        if self.transposed {
            (0..m * n).map(|i| c[(i % n) * m + i / n]).collect()
        } else {
            c
        }
    }

    /// The plain product (f64 sums) and the same fused operations, row-major m×n.
    fn reference(&self) -> Vec<f64> {
        let (m, k, n) = (self.m, self.k, self.n);
        let [a, b, rows, cols, d] = self.inputs();
        let s = SCALAR as f64;
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut c: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                match self.extra {
                    Extra::None => {}
                    Extra::Bins => c = (((c + rows[i] as f64) * cols[j] as f64) - s).max(s),
                    Extra::LeakyRelu => c = if c > 0.0 { c } else { s * c },
                    Extra::Unicast => c += d[i * n + j] as f64 + rows[i] as f64 * cols[j] as f64,
                }
                out[i * n + j] = c;
            }
        }
        out
    }
}

fn problems() -> Vec<Problem> {
    let mut all = vec![];
    for &m in &[1, 3, 4, 5, 6, 7, 8, 12, 13, 37] {
        for &n in &[2, 7, 8, 9, 24, 33] {
            for &k in &[1, 2, 3, 16, 77] {
                let transposed = (m + n + k) % 3 == 0;
                let extra = [Extra::None, Extra::Bins, Extra::LeakyRelu, Extra::Unicast][(m * 7 + n * 3 + k) % 4];
                all.push(Problem { m, k, n, transposed, extra });
            }
        }
    }
    all
}

fn check_tile(ours: Box<dyn MatMatMul>) {
    let tract = mmm::tract_wasm_f32_8x8().expect("tract's wasm_f32_8x8");
    for p in problems() {
        let got = p.run(&*ours);
        let theirs = p.run(&*tract);
        let want = p.reference();
        for (i, ((g, t), w)) in got.iter().zip(&theirs).zip(&want).enumerate() {
            let what = format!("{} m={} k={} n={} {:?} transposed={} at {i}", ours.name(), p.m, p.k, p.n, p.extra, p.transposed);
            assert_eq!(g.to_bits(), t.to_bits(), "{what}: {g} vs wasm_f32_8x8's {t}");
            assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()) * p.k as f64, "{what}: {g} vs reference {w}");
        }
    }
}

#[test]
fn tile_equals_tracts_8x8_bit_for_bit() {
    check_tile(mmm::wasm_f32_4x8().mmm());
}

/// The same loop under another name, for tools/wasm-ship to unroll: under `cargo test` it is not
/// unrolled; tests/module/kernels.rs checks the shipped module's build of it.
#[test]
fn unrolled_tile_equals_tracts_8x8_bit_for_bit() {
    check_tile(mmm::wasm_f32_4x8_unrolled().mmm());
}

/// Our tier answers every f32 GEMM with the chosen tile; matrix-vector products stay on
/// tract's GEMV kernels.
#[test]
fn dispatch_picks_the_tile_for_gemm_and_tracts_gemv_for_vectors() {
    mmm::register();
    let pick = |m, k, n| {
        let (mmm, _, _) = MmmDispatch::native().pick(&Query::plain(DatumType::F32, Some(m), Some(k), Some(n))).unwrap();
        mmm.name().to_string()
    };
    // The timed choice may be tract's own kernel on some engine; under wasmtime it is ours.
    let tile = mmm::chosen().unwrap_or("wasm_f32_8x8");
    assert_eq!(pick(320, 2880, 4096), tile);
    assert_eq!(pick(64, 40, 77), tile);
    assert_eq!(pick(8, 8, 2), tile);
    assert!(pick(320, 1280, 1).starts_with("wasm_f32_") && pick(320, 1280, 1).ends_with("x1"), "{}", pick(320, 1280, 1));
}

/// P's panels for one block of queries the way attention computed them before
/// `scores_into_panels`: per panel of four query rows, Q·Kᵀ through tract's frame with `mmm`,
/// the scale fused, stored through the panel's strides (key c's four rows at 4c).
fn scores_through_the_frame(mmm: &dyn MatMatMul, q: &Tensor, k: &Tensor, scale: f32, p_panel: usize) -> Vec<f32> {
    let (rows, d, n_keys) = (q.shape()[0], q.shape()[1], k.shape()[0]);
    let (pa, pb) = &mmm.packings()[0];
    let pa = pa.downcast_ref::<PackedFormat>().unwrap();
    let pb = pb.downcast_ref::<PackedFormat>().unwrap();
    let r = pa.r;
    let mut kbuf = pb.new_packed_buffer(d, n_keys).unwrap();
    let p = Tensor::zero::<f32>(&[rows.div_ceil(r) * p_panel]).unwrap();
    let scale = tensor0(scale);
    unsafe {
        pb.repack_tensor_view(&mut kbuf, &k.view(), 1, 0).unwrap();
        let mut scratch = mmm.allocate_scratch_space();
        for first in (0..rows).step_by(r) {
            let height = r.min(rows - first);
            let panel = q.slice(0, first, first + height).unwrap();
            let mut qbuf = pa.new_packed_buffer(d, height).unwrap();
            pa.repack_tensor_view(&mut qbuf, &panel.view(), 1, 0).unwrap();
            let shape = [height, n_keys];
            let strides = [1isize, r as isize];
            let view = tract_data::internal::TensorView::from_bytes(&p, (first / r * p_panel * 4) as isize, &shape, &strides);
            let store = mmm.c_view(Some(0), Some(1)).wrap(&view);
            let specs = [
                FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&qbuf), b: AsInputValue::Borrowed(&kbuf), packing: 0 },
                FusedSpec::BinScalar(&scale, BinOp::Mul),
                FusedSpec::Store(store),
            ];
            mmm.run_with_scratch_space(height, n_keys, &mut *scratch, &specs).unwrap();
        }
    }
    p.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
}

/// Attention's scores straight into P's panels: the same bits as through tract's frame with the
/// same tile, at every head size, key count and block height the edges can take (partial key
/// panels, a last query group of one panel, of a partial panel), and right against f64 sums.
#[test]
fn scores_into_panels_equal_the_frames_bit_for_bit() {
    for (kernel, tile) in [(mmm::wasm_f32_4x8().mmm(), mmm::TileLoop::Step), (mmm::wasm_f32_4x8_unrolled().mmm(), mmm::TileLoop::Unrolled)] {
        assert_eq!(mmm::tile_loop(kernel.name()), Some(tile));
        let (pa, pb) = &kernel.packings()[0];
        let pa = pa.downcast_ref::<PackedFormat>().unwrap();
        let pb = pb.downcast_ref::<PackedFormat>().unwrap();
        for d in [1usize, 3, 40, 64, 77] {
            for n_keys in [1usize, 5, 8, 77, 130] {
                for rows in [1usize, 4, 5, 8, 13, 64] {
                    let seed = (d * 10_000 + n_keys * 100 + rows) as u64;
                    let q = Tensor::from_shape(&[rows, d], &values(rows * d, seed)).unwrap();
                    let k = Tensor::from_shape(&[n_keys, d], &values(n_keys * d, seed + 1)).unwrap();
                    let scale = 0.158_113_88;
                    let p_panel = pa.single_panel_len(n_keys);
                    let want = scores_through_the_frame(&*kernel, &q, &k, scale, p_panel);
                    let mut kbuf = pa.new_packed_buffer(d, n_keys).unwrap();
                    let mut qbuf = pb.new_packed_buffer(d, rows).unwrap();
                    pa.repack_tensor_view(&mut kbuf, &k.view(), 1, 0).unwrap();
                    pb.repack_tensor_view(&mut qbuf, &q.view(), 1, 0).unwrap();
                    let (keys, queries) = (pack::floats(&kbuf), pack::floats(&qbuf));
                    let mut got = vec![f32::NAN; want.len()];
                    let key_panel = pa.single_panel_len(d);
                    let query_panel = pb.single_panel_len(d);
                    mmm::scores_into_panels(tile, keys, key_panel, queries, query_panel, d, n_keys, rows, scale, &mut got, p_panel);
                    let (qv, kv) = (q.try_as_plain_ram().unwrap(), k.try_as_plain_ram().unwrap());
                    let (qv, kv) = (qv.as_slice::<f32>().unwrap(), kv.as_slice::<f32>().unwrap());
                    for l in 0..rows {
                        for c in 0..n_keys {
                            let at = l / 4 * p_panel + 4 * c + l % 4;
                            let what = format!("{tile:?} d={d} keys={n_keys} rows={rows}: query {l}, key {c}");
                            assert_eq!(got[at].to_bits(), want[at].to_bits(), "{what}: {} vs the frame's {}", got[at], want[at]);
                            let exact: f64 = (0..d).map(|i| qv[l * d + i] as f64 * kv[c * d + i] as f64).sum::<f64>() * scale as f64;
                            assert!((got[at] as f64 - exact).abs() <= 1e-6 * d as f64, "{what}: {} vs {exact}", got[at]);
                        }
                    }
                }
            }
        }
    }
}

/// A plain product without the frame: the same bits as through it with the same tile, for
/// every edge shape `problems` has (partial row and column panels, k of 1 to 77), into rows
/// further apart than n (what lies between them is left alone).
#[test]
fn product_into_rows_equals_the_frames_bit_for_bit() {
    for (kernel, tile) in [(mmm::wasm_f32_4x8().mmm(), mmm::TileLoop::Step), (mmm::wasm_f32_4x8_unrolled().mmm(), mmm::TileLoop::Unrolled)] {
        let (pa, pb) = &kernel.packings()[0];
        let pa = pa.downcast_ref::<PackedFormat>().unwrap();
        let pb = pb.downcast_ref::<PackedFormat>().unwrap();
        for p in problems() {
            let p = Problem { extra: Extra::None, transposed: false, ..p };
            let (m, k, n) = (p.m, p.k, p.n);
            let want = p.run(&*kernel);
            let [a, b, ..] = p.inputs();
            let a = Tensor::from_shape(&[m, k], &a).unwrap();
            let b = Tensor::from_shape(&[k, n], &b).unwrap();
            let mut abuf = pa.new_packed_buffer(k, m).unwrap();
            let mut bbuf = pb.new_packed_buffer(k, n).unwrap();
            pa.repack_tensor_view(&mut abuf, &a.view(), 1, 0).unwrap();
            pb.repack_tensor_view(&mut bbuf, &b.view(), 0, 1).unwrap();
            let c_row = n + 3;
            let mut got = vec![f32::NAN; m * c_row];
            let (a_panel, b_panel) = (abuf.panel_bytes / 4, bbuf.panel_bytes / 4);
            mmm::product_into_rows(tile, pack::floats(&abuf), a_panel, pack::floats(&bbuf), b_panel, k, m, n, &mut got, c_row);
            for i in 0..m {
                for j in 0..c_row {
                    let g = got[i * c_row + j];
                    let what = format!("{tile:?} m={m} k={k} n={n} at ({i}, {j})");
                    if j < n {
                        assert_eq!(g.to_bits(), want[i * n + j].to_bits(), "{what}: {g} vs the frame's {}", want[i * n + j]);
                    } else {
                        assert!(g.is_nan(), "{what}: written past the row");
                    }
                }
            }
        }
    }
}
