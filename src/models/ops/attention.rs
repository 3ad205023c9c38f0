//! Attention (the converted model's `com.microsoft::MultiHeadAttention`, which tract lowers to
//! its `FlashSdpaOp`) on tract-linalg's packed GEMM kernels instead of FlashSdpaOp's 32×32
//! ndarray tiles.
//!
//! Per (batch, head): K and V are packed once into the kernel's B layout. Then per block of
//! `BLOCK` query rows: Q·Kᵀ·scale with the kernel (scale fused into the tile), panel by panel
//! of P·V's packed A operand (r rows each, stored column-major through the C store's strides),
//! straight into that operand's buffer; the softmax across each panel's rows
//! (sd_kernels::softmax::panel_softmax: vectorized max, exp, sum); P·V with the kernel and the
//! 1/sum row scaling fused into its store, straight into the output. No repack of the
//! probabilities. Exact softmax per row (every key of a row is in the block), so no online
//! rescaling; memory is the block's scores, not the S_q × S_k matrix: flash attention's memory
//! behaviour with GEMM-class kernels. Every buffer is allocated once per evaluation (natively:
//! per thread) and reused across heads and blocks.
//!
//! In wasm, where tract picks our SIMD128 tile, Q·Kᵀ runs without tract's frame
//! (sd_kernels::mmm::scores_into_panels, the same bits, K packed as the tile's A): a head's
//! reduction is short, and per tile the frame cost as much as the products.
//!
//! Replaces FlashSdpaOp nodes without mask and without causal masking (what the SD UNets
//! have); anything else keeps tract's op.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::mmm::{AsInputValue, EagerPackedInput, FusedSpec, ScratchSpace};
use tract_onnx::tract_core::tract_linalg::BinOp;

/// Query rows per block.
pub const BLOCK: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct BlockAttention {
    pub scale: Option<f32>,
}
impl Eq for BlockAttention {}
impl std::hash::Hash for BlockAttention {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scale.map(f32::to_bits).hash(state)
    }
}

impl Op for BlockAttention {
    fn name(&self) -> StaticName {
        "BlockAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("scale={:?}", self.scale)])
    }
    op_as_typed_op!();
}

impl EvalOp for BlockAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "BlockAttention takes Q, K, V");
        Ok(tvec!(attention(&inputs[0], &inputs[1], &inputs[2], self.scale)?.into_tvalue()))
    }
}

impl TypedOp for BlockAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
        Ok(tvec!(inputs[0].without_value()))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (q, k) = (&inputs[0].shape, &inputs[1].shape);
        let r = q.rank();
        // Q·Kᵀ and P·V: S_q·S_k·D each, per batch and head.
        let fma = q.iter().take(r - 1).product::<TDim>() * &k[r - 2] * &q[r - 1] * 2;
        Ok(tvec!((Cost::FMA(DatumType::F32), fma)))
    }

    as_op!();
}

/// Swaps node `id`'s op for ours when it is a FlashSdpaOp we can run (f32, 3 inputs, rank 3
/// or 4, not causal, same head dim for Q/K/V).
pub fn replace(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_transformers::ops::flash_sdpa::FlashSdpaOp;
    let node = model.node(id);
    let Some(op) = node.op_as::<FlashSdpaOp>() else { return Ok(false) };
    if op.causal || node.inputs.len() != 3 {
        return Ok(false);
    }
    let facts: Vec<&TypedFact> = node.inputs.iter().map(|i| model.outlet_fact(*i)).collect::<TractResult<_>>()?;
    let rank = facts[0].rank();
    if facts.iter().any(|f| f.datum_type != DatumType::F32 || f.rank() != rank) || !(rank == 3 || rank == 4) {
        return Ok(false);
    }
    if facts[0].shape[rank - 1] != facts[1].shape[rank - 1] || facts[0].shape[rank - 1] != facts[2].shape[rank - 1] {
        return Ok(false);
    }
    let scale = op.scale;
    model.node_mut(id).op = Box::new(BlockAttention { scale });
    Ok(true)
}

fn dims4(t: &Tensor) -> TractResult<[usize; 4]> {
    Ok(match t.shape() {
        &[b, h, s, d] => [b, h, s, d],
        &[b, s, d] => [b, 1, s, d],
        other => bail!("attention input of shape {other:?}"),
    })
}

/// softmax(Q·Kᵀ·scale)·V over [B, H, S, D] (or [B, S, D]) f32 tensors; K/V may have fewer
/// heads than Q (grouped-query attention).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f32>) -> TractResult<Tensor> {
    let [b, hq, sq, d] = dims4(q)?;
    let [bk, hkv, sk, dk] = dims4(k)?;
    ensure!(dims4(v)? == [bk, hkv, sk, dk] && b == bk && d == dk && hkv > 0 && hq % hkv == 0, "attention shapes {:?} {:?} {:?}", q.shape(), k.shape(), v.shape());
    let scale = scale.unwrap_or((d as f32).recip().sqrt());
    let group = hq / hkv;
    let out = unsafe { Tensor::uninitialized::<f32>(q.shape())? };
    if sq == 0 || d == 0 || b == 0 || hq == 0 {
        return Ok(out);
    }
    ensure!(sk > 0, "attention over zero keys");
    let block = BLOCK.min(sq);
    // Q·Kᵀ and P·V on one kernel, the one tract picks for Q·Kᵀ's shape; P is written in its
    // packed A layout (panels of `r` rows, column-major within a panel). (A second pick for
    // P·V's shape was faster natively but picked another kernel in the browser page's build than
    // in sd.wasm's: 1/255 apart at full size.)
    let (mmm, packing, pack_a, pack_b) = super::f32_kernel(block, d, sk)?;
    let r = pack_a.r;
    ensure!(r <= sd_kernels::softmax::MAX_ROWS, "a GEMM tile of {r} rows");
    let panel_len = pack_a.single_panel_len(sk);
    let scale_t = tensor0(scale);
    let q_head = sq * d;
    let kv_head = sk * d;
    let (kv_shape, kv_strides) = ([sk, d], [d as isize, 1]);
    let panel_strides = [1isize, r as isize];
    // Each head's query blocks are independent: the (head, block) pairs are split over the
    // threads in contiguous runs, each run with its own buffers, each block computed as on one
    // thread (same bytes). Whole heads per thread where they divide evenly; otherwise a head is
    // shared and both threads pack its K and V (SD 2.x's 5 heads at S = 4096 left one of two
    // threads 3 heads against 2).
    let heads = b * hq;
    let blocks_per_head = sq.div_ceil(block);
    let units = heads * blocks_per_head;
    let parts = super::super::threads::current().clamp(1, units);
    // With our wasm tile, Q·Kᵀ skips tract's frame (sd_kernels::mmm::scores_into_panels: K
    // is then the tile's A and a block's Q its B); otherwise each panel of P goes through it.
    let direct = sd_kernels::mmm::tile_loop(mmm.name());
    let pack_k = if direct.is_some() { &pack_a } else { &pack_b }; // K (k = D, m = S_k) or Kᵀ (n = S_k)
    super::super::threads::try_for_each_part(parts, |part| -> TractResult<()> {
        let mut scratch: Box<dyn ScratchSpace> = unsafe { mmm.allocate_scratch_space() };
        let mut kbuf = pack_k.new_packed_buffer(d, sk)?;
        let mut vbuf = pack_b.new_packed_buffer(sk, d)?; // V: k = S_k, n = D
        // Q per panel height (full panels, and the last partial one; per block height when
        // direct); P per block height.
        let mut qbufs: Vec<(usize, EagerPackedInput)> = Vec::new();
        let mut pbufs: Vec<(usize, EagerPackedInput)> = Vec::new();
        let mut inv = Tensor::zero::<f32>(&[block.next_multiple_of(r)])?;
        let mut packed_kv = None;
        for unit in part * units / parts..(part + 1) * units / parts {
            let (head_index, i0) = (unit / blocks_per_head, unit % blocks_per_head * block);
            let (bi, h) = (head_index / hq, head_index % hq);
            let kvh = bi * hkv + h / group;
            if packed_kv != Some(kvh) {
                unsafe {
                    let kview = TensorView::from_bytes(k, (kvh * kv_head * 4) as isize, &kv_shape, &kv_strides);
                    pack_k.repack_tensor_view(&mut kbuf, &kview, 1, 0)?;
                    let vview = TensorView::from_bytes(v, (kvh * kv_head * 4) as isize, &kv_shape, &kv_strides);
                    pack_b.repack_tensor_view(&mut vbuf, &vview, 0, 1)?;
                }
                packed_kv = Some(kvh);
            }
            let head = head_index * q_head;
            {
                let rows = block.min(sq - i0);
                if !pbufs.iter().any(|(n, _)| *n == rows) {
                    pbufs.push((rows, pack_a.new_packed_buffer(sk, rows)?));
                }
                let pbuf = &mut pbufs.iter_mut().find(|(n, _)| *n == rows).unwrap().1;
                let mut scores = take_plain(pbuf)?;
                if let Some(tile) = direct {
                    if !qbufs.iter().any(|(n, _)| *n == rows) {
                        qbufs.push((rows, pack_b.new_packed_buffer(d, rows)?));
                    }
                    let qbuf = &mut qbufs.iter_mut().find(|(n, _)| *n == rows).unwrap().1;
                    let (q_shape, q_strides) = ([rows, d], [d as isize, 1]);
                    let qview = unsafe { TensorView::from_bytes(q, ((head + i0 * d) * 4) as isize, &q_shape, &q_strides) };
                    pack_b.repack_tensor_view(qbuf, &qview, 1, 0)?;
                    let mut s = scores.try_as_plain_ram_mut()?;
                    let (keys, queries) = (sd_kernels::pack::floats(&kbuf), sd_kernels::pack::floats(qbuf));
                    let (key_panel, query_panel) = (kbuf.panel_bytes / 4, qbuf.panel_bytes / 4);
                    sd_kernels::mmm::scores_into_panels(tile, keys, key_panel, queries, query_panel, d, sk, rows, scale, s.as_slice_mut::<f32>()?, panel_len);
                } else {
                    for first in (0..rows).step_by(r) {
                        let height = r.min(rows - first);
                        if !qbufs.iter().any(|(n, _)| *n == height) {
                            qbufs.push((height, pack_a.new_packed_buffer(d, height)?));
                        }
                        let qbuf = &mut qbufs.iter_mut().find(|(n, _)| *n == height).unwrap().1;
                        let (q_shape, q_strides) = ([height, d], [d as isize, 1]);
                        unsafe {
                            let qview = TensorView::from_bytes(q, ((head + (i0 + first) * d) * 4) as isize, &q_shape, &q_strides);
                            pack_a.repack_tensor_view(qbuf, &qview, 1, 0)?;
                            // This panel of P: row l's score c at r·c + l.
                            let s_shape = [height, sk];
                            let sview = TensorView::from_bytes(&scores, (first / r * panel_len * 4) as isize, &s_shape, &panel_strides);
                            let store = mmm.c_view(Some(0), Some(1)).wrap(&sview);
                            mmm.run_with_scratch_space(
                                height,
                                sk,
                                &mut *scratch,
                                &[
                                    FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&*qbuf), b: AsInputValue::Borrowed(&kbuf), packing },
                                    FusedSpec::BinScalar(&scale_t, BinOp::Mul),
                                    FusedSpec::Store(store),
                                ],
                            )?;
                        }
                    }
                }
                {
                    let mut s = scores.try_as_plain_ram_mut()?;
                    let s = s.as_slice_mut::<f32>()?;
                    let mut inv = inv.try_as_plain_ram_mut()?;
                    let inv = inv.as_slice_mut::<f32>()?;
                    // Whole panels: rows past `rows` in the last one hold finite leftovers
                    // (zeros, or an earlier block's probabilities) that P·V never stores.
                    for (panel, inv) in s.chunks_exact_mut(panel_len).zip(inv.chunks_exact_mut(r)).take(rows.div_ceil(r)) {
                        sd_kernels::softmax::panel_softmax(&mut panel[..r * sk], r, inv);
                    }
                }
                give_back(pbuf, scores)?;
                let (q_shape, q_strides) = ([rows, d], [d as isize, 1]);
                unsafe {
                    // This head's rows of the output: no other part writes them.
                    let oview = TensorView::from_bytes(&out, ((head + i0 * d) * 4) as isize, &q_shape, &q_strides);
                    let store = mmm.c_view(Some(0), Some(1)).wrap(&oview);
                    let inv_shape = [rows];
                    let inv_strides = [1isize];
                    let inv_view = TensorView::from_bytes(&inv, 0, &inv_shape, &inv_strides);
                    mmm.run_with_scratch_space(
                        rows,
                        d,
                        &mut *scratch,
                        &[
                            FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&*pbuf), b: AsInputValue::Borrowed(&vbuf), packing },
                            FusedSpec::BinPerRow(inv_view, BinOp::Mul),
                            FusedSpec::Store(store),
                        ],
                    )?;
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// A packed operand's bytes as a plain f32 tensor, moved out (no copy), for the products and
/// the softmax to write in place; [`give_back`] returns them.
fn take_plain(packed: &mut EagerPackedInput) -> TractResult<Tensor> {
    let blob = Arc::try_unwrap(std::mem::take(&mut packed.packed)).map_err(|_| format_err!("packed buffer is shared"))?;
    let len = blob.layout().size() / 4;
    Tensor::from_storage(DatumType::F32, &[len], PlainStorage::from(blob)).into_plain_ram()
}

fn give_back(packed: &mut EagerPackedInput, t: Tensor) -> TractResult<()> {
    packed.packed = Arc::new(t.into_blob()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_transformers::ops::flash_sdpa::FlashSdpaOp;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect();
        Tensor::from_shape(shape, &data).unwrap()
    }

    fn check(q: &[usize], kv: &[usize], scale: Option<f32>) {
        let (qt, kt, vt) = (random(q, 1), random(kv, 2), random(kv, 3));
        let ours = attention(&qt, &kt, &vt, scale).unwrap();
        let reference = FlashSdpaOp { causal: false, scale }
            .eval(&EvalContext::out_of_plan(), tvec!(qt.into_tvalue(), kt.into_tvalue(), vt.into_tvalue()))
            .unwrap()
            .remove(0);
        assert_eq!(ours.shape(), reference.shape());
        let (a, b) = (ours.try_as_plain_ram().unwrap(), reference.try_as_plain_ram().unwrap());
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-5, "{q:?} {kv:?}: worst difference {worst}");
    }

    #[test]
    fn matches_tract_flash_sdpa() {
        check(&[1, 8, 256, 40], &[1, 8, 256, 40], None); // UNet self-attention shapes
        check(&[1, 8, 256, 40], &[1, 8, 77, 40], None); // cross-attention
        check(&[1, 2, 130, 24], &[1, 2, 70, 24], Some(0.3)); // partial blocks and tiles
        check(&[2, 4, 65, 16], &[2, 2, 33, 16], None); // grouped heads, batch 2
        check(&[1, 100, 8], &[1, 5, 8], None); // rank 3
        check(&[1, 1, 1, 3], &[1, 1, 1, 3], None);
    }

    /// Natively the (head, query block) pairs are split over the `--threads` pool: the same
    /// bits at 1, 2 and 3 threads (3 splits 8 heads inside a head, so does 2 with 5 heads), for
    /// grouped heads and a batch of 2 too.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn the_same_bits_on_any_number_of_threads() {
        use crate::models::threads::pool;
        use tract_onnx::tract_core::tract_linalg::multithread::multithread_tract_scope;
        for (q, kv) in [([1, 8, 256, 40], [1, 8, 77, 40]), ([2, 4, 65, 16], [2, 2, 33, 16]), ([1, 5, 200, 64], [1, 5, 200, 64])] {
            let (qt, kt, vt) = (random(&q, 4), random(&kv, 5), random(&kv, 6));
            let one = attention(&qt, &kt, &vt, None).unwrap();
            for n in [2, 3] {
                let many = multithread_tract_scope(pool(n).unwrap(), || attention(&qt, &kt, &vt, None)).unwrap();
                assert!(one == many, "{q:?} at {n} threads: different bits than at 1");
            }
        }
    }
}
