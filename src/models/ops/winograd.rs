//! 3×3 convolutions at stride 1 by Winograd F(4×4, 3×3), or F(2×2, 3×3) where a plane has few
//! tiles (sd_kernels::winograd): 4× (2.25×) fewer multiplies than tract's im2col + GEMM for
//! the UNet's and the VAE's 3×3 convolutions, the products on tract-linalg's packed GEMM
//! kernels (our tiles on wasm).
//!
//! Per image and chunk of tile rows: the input transform (split over input channels), V packed
//! once per position as the kernels' B operand; then per block of output channels (blocks split
//! over the threads): the kernel transform of the block's weights packed as A (kept across
//! chunks when all of U is small), the products (one per position) into a block buffer, the
//! output transform with the bias into the output. Memory: V for one chunk (≤ [`V_BYTES`]) and one block's U and
//! products per thread, against im2col's 9 × inputs × pixels and the whole packed weight.
//!
//! Replaces tract's `Conv` before codegen where it is 2-D, NCHW, OIHW, 3×3, stride 1,
//! dilation 1, one group, f32: everything else keeps tract's op.

use super::f32_kernel;
use crate::models::threads;
use sd_kernels::winograd::{self as kernels, Algorithm, Panels, Tiling};
use std::sync::Mutex;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::tract_linalg::mmm::{AsInputValue, EagerPackedInput, FusedSpec, ScratchSpace};
use tract_onnx::tract_core::tract_linalg::pack::PackedFormat;

/// Bytes of transformed input (plain and packed) per chunk of tile rows.
pub const V_BYTES: usize = 48 << 20;
/// All of U (packed) is kept across chunks when it is at most this large; above, each chunk
/// transforms each block's weights again.
pub const U_BYTES: usize = 64 << 20;
/// Output channels per block, at most.
pub const BLOCK: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WinogradConv {
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl Op for WinogradConv {
    fn name(&self) -> StaticName {
        "WinogradConv3x3".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("pad (top, left, bottom, right) = {:?}", self.pad)])
    }
    op_as_typed_op!();
}

impl EvalOp for WinogradConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "WinogradConv takes input, kernel, bias");
        Ok(tvec!(conv(&inputs[0], &inputs[1], &inputs[2], self.pad)?.into_tvalue()))
    }
}

impl TypedOp for WinogradConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (x, w) = (&inputs[0].shape, &inputs[1].shape);
        ensure!(x.rank() == 4 && w.rank() == 4);
        let [top, left, bottom, right] = self.pad;
        let shape = tvec![x[0].clone(), w[0].clone(), x[2].clone() + top + bottom - 2, x[3].clone() + left + right - 2];
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = &self.output_facts(inputs)?[0].shape;
        // The products: one multiply-add per position, tile and channel pair.
        let algorithm = match (out[2].to_usize(), out[3].to_usize()) {
            (Ok(oh), Ok(ow)) => algorithm_for(oh, ow),
            _ => Algorithm::F2,
        };
        let (m, positions) = (algorithm.m(), algorithm.positions());
        let tiles = out[0].clone() * out[2].clone().div_ceil(m as u64) * out[3].clone().div_ceil(m as u64);
        let fma = tiles * &inputs[1].shape[0] * &inputs[1].shape[1] * positions;
        Ok(tvec!((Cost::FMA(DatumType::F32), fma)))
    }

    as_op!();
}

/// Swaps node `id`'s op for ours when it is a convolution we compute (see the module's doc).
pub fn replace(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(false) };
    let spec = &conv.pool_spec;
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
    if node.inputs.len() != 3
        || conv.group != 1
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.data_format != DataFormat::NCHW
        || spec.kernel_shape.as_slice() != [3, 3]
        || !ones(&spec.strides)
        || !ones(&spec.dilations)
    {
        return Ok(false);
    }
    let pad = match &spec.padding {
        PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, _) => [before[0], before[1], after[0], after[1]],
        PaddingSpec::Valid => [0; 4],
        PaddingSpec::SameUpper | PaddingSpec::SameLower => [1; 4],
    };
    let facts: Vec<&TypedFact> = node.inputs.iter().map(|i| model.outlet_fact(*i)).collect::<TractResult<_>>()?;
    let (x, w, bias) = (facts[0], facts[1], facts[2]);
    if [x, w, bias].iter().any(|f| f.datum_type != DatumType::F32 || f.is_exotic()) || x.rank() != 4 || w.rank() != 4 || bias.rank() > 1 {
        return Ok(false);
    }
    // fp16 weights cast to f32 for this convolution alone: read them before the cast (the
    // kernel transform widens them), so no f32 copy of the weights is made.
    let mut kernel = node.inputs[1];
    let source = model.node(kernel.node);
    if let Some(cast) = source.op_as::<Cast>() {
        if cast.to == DatumType::F32 && model.outlet_fact(source.inputs[0])?.datum_type == DatumType::F16 && model.outlet_successors(kernel).len() == 1 {
            kernel = source.inputs[0];
        }
    }
    let inputs = [node.inputs[0], kernel, node.inputs[2]];
    let patch = TypedModelPatch::replace_single_op(model, model.node(id), &inputs, WinogradConv { pad })?;
    patch.apply(model)?;
    Ok(true)
}

/// The convolution of `x` [N, C, H, W] by `w` [O, C, 3, 3] plus `bias` (one per output channel,
/// or one for all), zero padding `pad` (top, left, bottom, right), stride 1.
pub fn conv(x: &Tensor, w: &Tensor, bias: &Tensor, pad: [usize; 4]) -> TractResult<Tensor> {
    conv_by(None, x, w, bias, pad)
}

/// [`conv`] by `algorithm`, or by [`algorithm_for`] the output plane when `None`.
fn conv_by(algorithm: Option<Algorithm>, x: &Tensor, w: &Tensor, bias: &Tensor, pad: [usize; 4]) -> TractResult<Tensor> {
    let &[batch, inputs, height, width] = x.shape() else { bail!("convolution input of shape {:?}", x.shape()) };
    let &[outputs, kernel_inputs, 3, 3] = w.shape() else { bail!("3×3 kernel of shape {:?}", w.shape()) };
    ensure!(kernel_inputs == inputs, "kernel for {kernel_inputs} channels, input of {inputs}");
    let [top, left, bottom, right] = pad;
    let (padded_h, padded_w) = (height + top + bottom, width + left + right);
    ensure!(padded_h >= 3 && padded_w >= 3, "a {height}×{width} input padded by {pad:?} is smaller than the kernel");
    let (oh, ow) = (padded_h - 2, padded_w - 2);
    let mut out = unsafe { Tensor::uninitialized::<f32>(&[batch, outputs, oh, ow])? };
    if out.len() == 0 {
        return Ok(out);
    }
    let bias: Vec<f32> = {
        let plain = bias.try_as_plain_ram()?;
        let b = plain.as_slice::<f32>()?;
        match b.len() {
            1 => vec![b[0]; outputs],
            n if n == outputs => b.to_vec(),
            n => bail!("{n} biases for {outputs} output channels"),
        }
    };
    if inputs == 0 {
        let mut plain = out.try_as_plain_ram_mut()?;
        for (plane, b) in plain.as_slice_mut::<f32>()?.chunks_mut(oh * ow).zip(bias.iter().cycle()) {
            plane.fill(*b);
        }
        return Ok(out);
    }
    let x_plain = x.try_as_plain_ram()?;
    let x = x_plain.as_slice::<f32>()?;
    let w_plain = w.try_as_plain_ram()?;
    let weights = match w.datum_type() {
        DatumType::F32 => Weights::F32(w_plain.as_slice::<f32>()?),
        DatumType::F16 => Weights::F16(super::f16_bits(w_plain.as_slice::<f16>()?)),
        other => bail!("3×3 kernel of {other:?}"),
    };

    let shape = Shape { batch, inputs, height, width, outputs, top, left, oh, ow };
    let y = out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?.as_mut_ptr();
    transformed(algorithm.unwrap_or_else(|| algorithm_for(oh, ow)), x, &weights, &bias, &shape, SharedOut(y))?;
    Ok(out)
}

/// F4 where the output plane is at least [`f4_from`] on each side, else F2.
fn algorithm_for(oh: usize, ow: usize) -> Algorithm {
    if oh.min(ow) >= f4_from() {
        Algorithm::F4
    } else {
        Algorithm::F2
    }
}

/// The smallest output side convolved by F4: its kernel transform, paid per evaluation, writes
/// 36 values per channel pair against F2's 16, repaid by its fewer products only where a plane
/// has many tiles. Measured in sd.wasm (wasmtime, SD 1.5 UNet at a 32×32 latent, levels
/// 32/16/8/4): F4 from 16 5.42 s, from 8 5.9 s, from 32 5.5 s, F2 only 5.72 s. Where tract's
/// GEMM runs AVX-512 tiles (4× SIMD128's width), the transform weighs more against the
/// products: 32 (native, 2026-12-03, best of 6: the UNet's 2560→1280 convolution at 16×16
/// 0.12–0.14 s by F2 against 0.15–0.16 s by F4; at 32×32 F4 stays ahead, 0.034–0.041 s against
/// 0.047–0.054 s).
pub fn f4_from() -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 32;
    }
    16
}

/// A convolution's sizes: input [batch, inputs, height, width], the leading padding, output
/// [batch, outputs, oh, ow].
struct Shape {
    batch: usize,
    inputs: usize,
    height: usize,
    width: usize,
    outputs: usize,
    top: usize,
    left: usize,
    oh: usize,
    ow: usize,
}

/// The convolution by `algorithm` into `out_ptr` (see the module's doc).
fn transformed(algorithm: Algorithm, x: &[f32], weights: &Weights, bias: &[f32], shape: &Shape, out_ptr: SharedOut) -> TractResult<()> {
    let &Shape { batch, inputs, height, width, outputs, top, left, oh, ow } = shape;
    let (side, positions) = (algorithm.m(), algorithm.positions());
    let (tile_rows, across) = (oh.div_ceil(side), ow.div_ceil(side));
    let tiling = Tiling { height, width, top, left, across };
    // Whole tile rows of one image per chunk, V (plain and packed) within V_BYTES.
    let chunk_rows = (V_BYTES / (2 * positions * inputs * across * 4)).clamp(1, tile_rows);
    let chunks_per_image = tile_rows.div_ceil(chunk_rows);
    let max_cols = chunk_rows * across;
    let (mmm, packing, pack_a, pack_b) = f32_kernel(outputs.min(BLOCK), inputs, max_cols)?;
    // With our wasm tile the products skip tract's frame (sd_kernels::mmm::product_into_rows).
    let direct = sd_kernels::mmm::tile_loop(mmm.name());
    // Blocks of output channels over the threads, each part's blocks at most BLOCK rows.
    let blocks = Blocks::new(outputs, mmm.mr(), threads::current());
    let (parts, block) = (blocks.parts(), blocks.largest());
    let keep_u = batch * chunks_per_image > 1 && positions * outputs * inputs * 4 <= U_BYTES;
    // Packed U per block, kept across chunks (keep_u), else per thread and refilled per block.
    let kept_u: Vec<Mutex<Option<Vec<EagerPackedInput>>>> = (0..if keep_u { blocks.len() } else { 0 }).map(|_| Mutex::new(None)).collect();
    let panels = Panels { r: pack_a.r, panel_len: pack_a.single_panel_len(inputs) };
    let mut v = unsafe { Tensor::uninitialized::<f32>(&[inputs * positions * max_cols])? };
    let mut packed_v: Vec<(usize, Vec<EagerPackedInput>)> = Vec::new();
    let out_plane = oh * ow;
    for image in 0..batch {
        let x_image = &x[image * inputs * height * width..][..inputs * height * width];
        for chunk in 0..chunks_per_image {
            let rows = chunk * chunk_rows..((chunk + 1) * chunk_rows).min(tile_rows);
            let cols = rows.len() * across;
            // Input transform: channel c's positions at v[c][p][0..cols].
            {
                let mut v_plain = v.try_as_plain_ram_mut()?;
                let v_all = &mut v_plain.as_slice_mut::<f32>()?[..inputs * positions * cols];
                let per_channel = positions * cols;
                let channels = inputs.div_ceil(threads::parts_for(v_all.len()));
                threads::for_each_chunk_mut(v_all, channels * per_channel, |part, dst| {
                    let mut scratch = vec![0f32; algorithm.scratch_len(across)];
                    for (i, v_c) in dst.chunks_exact_mut(per_channel).enumerate() {
                        let c = part * channels + i;
                        kernels::input_channel(algorithm, &x_image[c * height * width..][..height * width], &tiling, rows.clone(), v_c, cols, &mut scratch);
                    }
                });
            }
            // V packed per position as the kernel's B (k = input channels, n = tiles).
            if !packed_v.iter().any(|(c, _)| *c == cols) {
                // SAFETY: pack_f32_mn_major below writes each panel whole, padding included.
                let buffers = (0..positions).map(|_| unsafe { super::packed_buffer_for_overwrite(&pack_b, inputs, cols) }).collect::<TractResult<_>>()?;
                packed_v.push((cols, buffers));
            }
            let packed = &mut packed_v.iter_mut().find(|(c, _)| *c == cols).unwrap().1;
            {
                let slots: Vec<Mutex<&mut EagerPackedInput>> = packed.iter_mut().map(Mutex::new).collect();
                let v_plain = v.try_as_plain_ram()?;
                let v_all = v_plain.as_slice::<f32>()?;
                let panel_len = pack_b.single_panel_len(inputs);
                threads::try_for_each_part(positions, |p| -> TractResult<()> {
                    let mut slot = slots[p].lock().unwrap_or_else(|e| e.into_inner());
                    let dst = super::blob_f32(Arc::get_mut(&mut slot.packed).context("packed buffer is shared")?);
                    // Channel c's row of position p: v_all[c * positions * cols + p * cols..][..cols].
                    sd_kernels::pack::pack_f32_mn_major(&v_all[p * cols..], inputs, cols, positions * cols, pack_b.r, panel_len, dst);
                    Ok(())
                })?;
            }
            let packed_v = &*packed;
            // Products and output transform, blocks of output channels over the threads.
            threads::try_for_each_part(parts, |part| -> TractResult<()> {
                let mut scratch: Box<dyn ScratchSpace> = unsafe { mmm.allocate_scratch_space() };
                let mut products = unsafe { Tensor::uninitialized::<f32>(&[positions * block * cols])? };
                // This part's U when not kept: sized once for its largest block.
                let mut own_u: Option<Vec<EagerPackedInput>> = None;
                let own_rows = blocks.of_part(part).map(|b| blocks.rows(b).1).max().unwrap_or(0);
                let mut out_scratch = vec![0f32; algorithm.scratch_len(across)];
                for b in blocks.of_part(part) {
                    let (o0, m) = blocks.rows(b);
                    let fresh = |buffers: &mut Vec<EagerPackedInput>| weights.transform(algorithm, o0, m, inputs, panels, buffers);
                    let mut kept = kept_u.get(b).map(|k| k.lock().unwrap_or_else(|e| e.into_inner()));
                    let u_packed: &Vec<EagerPackedInput> = match kept.as_deref_mut() {
                        Some(Some(u)) => u,
                        Some(slot) => {
                            let mut buffers = new_buffers(&pack_a, positions, inputs, m)?;
                            fresh(&mut buffers)?;
                            slot.insert(buffers)
                        }
                        None => {
                            let buffers = match &mut own_u {
                                Some(buffers) => buffers,
                                None => own_u.insert(new_buffers(&pack_a, positions, inputs, own_rows)?),
                            };
                            fresh(buffers)?;
                            buffers
                        }
                    };
                    for p in 0..positions {
                        if let Some(tile) = direct {
                            let mut plain = products.try_as_plain_ram_mut()?;
                            let c = &mut plain.as_slice_mut::<f32>()?[p * m * cols..][..m * cols];
                            let (u, v) = (&u_packed[p], &packed_v[p]);
                            sd_kernels::mmm::product_into_rows(tile, sd_kernels::pack::floats(u), u.panel_bytes / 4, sd_kernels::pack::floats(v), v.panel_bytes / 4, inputs, m, cols, c, cols);
                            continue;
                        }
                        let (shape, strides) = ([m, cols], [cols as isize, 1]);
                        unsafe {
                            let view = TensorView::from_bytes(&products, (p * m * cols * 4) as isize, &shape, &strides);
                            let store = mmm.c_view(Some(0), Some(1)).wrap(&view);
                            mmm.run_with_scratch_space(
                                m,
                                cols,
                                &mut *scratch,
                                &[
                                    FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&u_packed[p]), b: AsInputValue::Borrowed(&packed_v[p]), packing },
                                    FusedSpec::Store(store),
                                ],
                            )?;
                        }
                    }
                    drop(kept);
                    let plain = products.try_as_plain_ram()?;
                    let products = plain.as_slice::<f32>()?;
                    for o in 0..m {
                        // SAFETY: output channel o0 + o of this image belongs to this block
                        // only, and within it this chunk writes only its own rows.
                        let y = unsafe { std::slice::from_raw_parts_mut(out_ptr.at((image * outputs + o0 + o) * out_plane), out_plane) };
                        kernels::output_channel(algorithm, &products[o * cols..], m * cols, rows.clone(), across, bias[o0 + o], y, oh, ow, &mut out_scratch);
                    }
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Output channels cut into blocks for the products: first into one run of whole kernel row
/// panels (`mr` rows) per thread, as even as panels allow (blocks of BLOCK rows dealt out in
/// turn left one thread half again the other's work at 320 and 640 channels on two threads),
/// then each run into blocks of at most [`BLOCK`] rows. Each output channel is still computed
/// whole by one tile, so the cut does not change a bit.
struct Blocks {
    /// Each block's first row and its rows.
    rows: Vec<(usize, usize)>,
    /// Each part's first block; the last entry is the block count.
    starts: Vec<usize>,
}

impl Blocks {
    fn new(outputs: usize, mr: usize, threads: usize) -> Blocks {
        let panels = outputs.div_ceil(mr);
        let parts = threads.clamp(1, panels.max(1));
        let per_block = (BLOCK / mr).max(1);
        let (mut rows, mut starts) = (Vec::new(), vec![0]);
        for part in 0..parts {
            let (first, end) = (part * panels / parts, (part + 1) * panels / parts);
            let run = end - first;
            // The part's panels in equal blocks, none above BLOCK rows.
            let count = run.div_ceil(per_block);
            for i in 0..count {
                let (p0, p1) = (first + i * run / count, first + (i + 1) * run / count);
                let o0 = p0 * mr;
                rows.push((o0, (p1 * mr).min(outputs) - o0));
            }
            starts.push(rows.len());
        }
        Blocks { rows, starts }
    }

    fn parts(&self) -> usize {
        self.starts.len() - 1
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Rows of the largest block (the products' buffer per thread).
    fn largest(&self) -> usize {
        self.rows.iter().map(|r| r.1).max().unwrap_or(0)
    }

    fn of_part(&self, part: usize) -> std::ops::Range<usize> {
        self.starts[part]..self.starts[part + 1]
    }

    /// Block `b`'s first output channel and its count.
    fn rows(&self, b: usize) -> (usize, usize) {
        self.rows[b]
    }
}

/// The kernel's weights as stored: f32, or fp16 bits when the convolution reads them before
/// tract's cast (see [`replace`]).
enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl Weights<'_> {
    /// The kernel transform of output channels `o0..o0 + m`, packed into `buffers` (one per
    /// position) as the GEMM's A.
    fn transform(&self, algorithm: Algorithm, o0: usize, m: usize, inputs: usize, panels: Panels, buffers: &mut [EagerPackedInput]) -> TractResult<()> {
        let mut planes: Vec<&mut [f32]> = buffers
            .iter_mut()
            .map(|b| Ok(super::blob_f32(Arc::get_mut(&mut b.packed).context("packed buffer is shared")?)))
            .collect::<TractResult<_>>()?;
        let range = o0 * inputs * 9..(o0 + m) * inputs * 9;
        match self {
            Weights::F32(w) => kernels::kernel_rows_f32(algorithm, &w[range], m, inputs, panels, &mut planes),
            Weights::F16(w) => kernels::kernel_rows_f16(algorithm, &w[range], m, inputs, panels, &mut planes),
        }
        Ok(())
    }
}

/// One packed A buffer per position for `m` rows, not cleared: the kernel transform writes
/// every float of its panels, padding included ([`kernels::kernel_rows_f16`]).
fn new_buffers(pack_a: &PackedFormat, positions: usize, inputs: usize, m: usize) -> TractResult<Vec<EagerPackedInput>> {
    // SAFETY: filled by Weights::transform before any product reads them (both callers).
    (0..positions).map(|_| unsafe { super::packed_buffer_for_overwrite(pack_a, inputs, m) }).collect()
}

/// The output's data, written by the blocks' threads at disjoint places.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect();
        Tensor::from_shape(shape, &data).unwrap()
    }

    /// tract's own Conv (its reference path: im2col and its GEMM) on the same inputs.
    fn tract_conv(x: &Tensor, w: &Tensor, bias: &Tensor, pad: [usize; 4]) -> Tensor {
        let (inputs, outputs) = (w.shape()[1], w.shape()[0]);
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![pad[0], pad[1]], tvec![pad[2], pad[3]]),
                dilations: None,
                strides: None,
                input_channels: inputs,
                output_channels: outputs,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let inputs = tvec!(x.clone().into_tvalue(), w.clone().into_tvalue(), bias.clone().into_tvalue());
        conv.eval(&EvalContext::out_of_plan(), inputs).unwrap().remove(0).into_tensor()
    }

    /// Largest difference, relative to the largest output.
    fn difference(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.shape(), b.shape());
        let (a, b) = (a.try_as_plain_ram().unwrap(), b.try_as_plain_ram().unwrap());
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
    }

    fn check(x: &[usize], outputs: usize, pad: [usize; 4], bias_len: usize) {
        let xt = random(x, 1);
        let wt = random(&[outputs, x[1], 3, 3], 2);
        let bt = if bias_len == 0 { tensor0(0.5f32) } else { random(&[bias_len], 3) };
        let reference = tract_conv(&xt, &wt, &bt, pad);
        for algorithm in [Algorithm::F2, Algorithm::F4] {
            let ours = conv_by(Some(algorithm), &xt, &wt, &bt, pad).unwrap();
            let worst = difference(&ours, &reference);
            assert!(worst < 1e-5, "{algorithm:?}, {x:?} → {outputs} pad {pad:?}: relative difference {worst}");
        }
    }

    #[test]
    fn matches_tract_conv() {
        check(&[1, 32, 16, 16], 40, [1; 4], 40); // the fixtures' shapes
        check(&[2, 5, 7, 9], 3, [1; 4], 0); // batch of 2, odd sizes, a scalar bias
        check(&[1, 4, 6, 5], 70, [0, 2, 1, 0], 70); // uneven padding, blocks of outputs
        check(&[1, 3, 3, 3], 2, [0; 4], 2); // one output
        check(&[1, 130, 12, 10], 260, [1; 4], 260); // more than one block
        // Planes of more tiles (F4 by default where each side is at least f4_from()): cut-off
        // tiles, a batch, blocks, uneven padding.
        check(&[2, 20, 19, 23], 12, [1; 4], 12);
        check(&[1, 130, 18, 17], 260, [1; 4], 260);
        check(&[1, 6, 17, 21], 9, [0, 2, 1, 0], 0);
    }

    /// fp16 weights (read before tract's cast): the same as tract's Conv on the widened weights.
    #[test]
    fn matches_tract_conv_on_fp16_weights() {
        let xt = random(&[2, 24, 10, 11], 8);
        let half = random(&[36, 24, 3, 3], 9).cast_to::<f16>().unwrap().into_owned();
        let wide = half.cast_to::<f32>().unwrap().into_owned();
        let bt = random(&[36], 10);
        let reference = tract_conv(&xt, &wide, &bt, [1; 4]);
        for algorithm in [Algorithm::F2, Algorithm::F4] {
            let ours = conv_by(Some(algorithm), &xt, &half, &bt, [1; 4]).unwrap();
            let worst = difference(&ours, &reference);
            assert!(worst < 1e-5, "{algorithm:?}: relative difference {worst}");
        }
    }

    /// A picture big enough for several chunks of tile rows, U kept across them.
    #[test]
    fn matches_tract_conv_over_chunks() {
        let inputs = 64;
        let (f4, width) = (Algorithm::F4, 80);
        let rows_per_chunk = V_BYTES / (2 * f4.positions() * inputs * 4 * (width / f4.m()));
        let height = f4.m() * rows_per_chunk * 2 + 6; // two full chunks and a partial one
        check(&[1, inputs, height, width], 16, [1; 4], 16);
    }

    /// Each output channel a wrong bias, or a mistake in a transform, moves the output far
    /// beyond the tolerance above.
    #[test]
    fn the_comparison_has_power() {
        assert_eq!((algorithm_for(8, 8), algorithm_for(f4_from(), f4_from())), (Algorithm::F2, Algorithm::F4));
        for algorithm in [Algorithm::F2, Algorithm::F4] {
            let side = 16;
            let (xt, wt, bt) = (random(&[1, 8, side, side], 1), random(&[8, 8, 3, 3], 2), random(&[8], 3));
            let reference = tract_conv(&xt, &wt, &bt, [1; 4]);
            let shifted = conv_by(Some(algorithm), &xt, &wt, &bt, [1, 0, 1, 2]).unwrap();
            assert!(difference(&shifted, &reference) > 0.05);
            let other_bias = conv_by(Some(algorithm), &xt, &wt, &random(&[8], 4), [1; 4]).unwrap();
            assert!(difference(&other_bias, &reference) > 0.05);
        }
    }

    /// Every output channel in exactly one block, in order; blocks of whole panels (but the
    /// last) and at most BLOCK rows; the parts' panel counts within one of each other.
    #[test]
    fn blocks_cover_the_outputs_evenly() {
        for (outputs, mr, threads) in [(320, 32, 2), (640, 32, 2), (1280, 32, 2), (200, 32, 3), (320, 4, 2), (4, 4, 2), (330, 16, 4), (7, 32, 1)] {
            let blocks = Blocks::new(outputs, mr, threads);
            let mut next = 0;
            let mut panels_per_part = Vec::new();
            for part in 0..blocks.parts() {
                let mut panels = 0;
                for b in blocks.of_part(part) {
                    let (o0, m) = blocks.rows(b);
                    assert_eq!(o0, next, "{outputs}/{mr}/{threads}: block {b} starts at {o0}");
                    assert!(m > 0 && m <= BLOCK.max(mr) && (m % mr == 0 || o0 + m == outputs), "{outputs}/{mr}/{threads}: block {b} has {m} rows");
                    next += m;
                    panels += m.div_ceil(mr);
                }
                panels_per_part.push(panels);
            }
            assert_eq!(next, outputs);
            assert_eq!(blocks.parts(), threads.min(outputs.div_ceil(mr)));
            let (least, most) = (panels_per_part.iter().min().unwrap(), panels_per_part.iter().max().unwrap());
            assert!(most - least <= 1, "{outputs}/{mr}/{threads}: panels per part {panels_per_part:?}");
        }
    }

    /// Natively the blocks are split over the `--threads` pool: the same bits at 1, 2 and 3
    /// threads.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn the_same_bits_on_any_number_of_threads() {
        use crate::models::threads::pool;
        use tract_onnx::tract_core::tract_linalg::multithread::multithread_tract_scope;
        let (xt, wt, bt) = (random(&[2, 48, 20, 18], 5), random(&[200, 48, 3, 3], 6), random(&[200], 7));
        for algorithm in [Algorithm::F2, Algorithm::F4] {
            let one = conv_by(Some(algorithm), &xt, &wt, &bt, [1; 4]).unwrap();
            for n in [2, 3] {
                let many = multithread_tract_scope(pool(n).unwrap(), || conv_by(Some(algorithm), &xt, &wt, &bt, [1; 4])).unwrap();
                assert!(one == many, "{algorithm:?}, {n} threads: different bits than 1");
            }
        }
    }
}
