//! The three networks, each a small wrapper over a tract plan. Loading reads through
//! [`ModelFiles`] (so browsers and WASI share it), pins every input to a concrete shape (tract
//! optimizes best with concrete shapes, and a free timestep axis breaks its analysis), and the
//! caller drops one network before loading the next.

pub mod check;
pub mod checkpoint;
pub mod lora;
pub mod memory;
pub mod ops;
pub mod profile;
pub mod resident;
pub mod tensor_file;
pub mod text_encoder;
pub mod threads;
pub mod unet;
pub mod vae;

pub use text_encoder::TextEncoder;
pub use unet::Unet;
pub use vae::{VaeDecoder, VaeEncoder};

use crate::error::{chain, Result, SdError};
use crate::model_dir::ModelFiles;
use lora::{Merge, Stored};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// An optimized network and the fp16 weights it is fed on every run (see [`OnnxGraph`]; none
/// where they were folded at load, [`resident`]).
pub struct Plan {
    plan: std::sync::Arc<TypedSimplePlan>,
    weights: Vec<TValue>,
}

impl Plan {
    /// How many weights are fed (and widened) on every run.
    pub fn weights_per_run(&self) -> usize {
        self.weights.len()
    }
}

/// A parsed (not yet optimized) ONNX network and where it came from, for messages.
///
/// fp16 weights at rest (the converter's form: an fp16 initializer, then a Cast to f32) stay
/// graph inputs, fed from `weights` on every run, instead of becoming constants: tract's
/// constant folding evaluates every Cast of a constant at load — 860M f16→f32 conversions
/// per pass on the SD 1.5 UNet, several passes, ~40 s in wasm — only to drop the result as
/// too large. As inputs they are never folded; the Cast runs once per evaluation, as it
/// would anyway.
pub struct OnnxGraph {
    pub model: InferenceModel,
    pub path: String,
    weights: Vec<TValue>,
    /// Whether the weights' per-run handling is done once at load ([`resident`]).
    fold_weights: bool,
}

/// What one input of a network looks like before we pin it.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub index: usize,
    pub name: String,
    pub datum_type: Option<DatumType>,
    /// None for an open (unknown) rank; Some(dim) per axis, dim None when symbolic.
    pub shape: Option<Vec<Option<usize>>>,
}

impl OnnxGraph {
    /// Reads `rel` (and its external data) from the model dir and parses it, after checking
    /// that its weights and `working(proto, external weight bytes)` bytes of working memory
    /// can be allocated.
    pub fn load(files: &dyn ModelFiles, rel: &str, working: impl FnOnce(&pb::ModelProto, u64) -> u64) -> Result<Self> {
        Self::load_merged(files, rel, working, &Merge::default())
    }

    /// [`OnnxGraph::load`], with LoRAs merged into the weights as they are read.
    pub fn load_merged(
        files: &dyn ModelFiles,
        rel: &str,
        working: impl FnOnce(&pb::ModelProto, u64) -> u64,
        merge: &Merge,
    ) -> Result<Self> {
        let (mut proto, external, path) = read_proto(files, rel)?;
        let missing: Vec<&str> = merge
            .initializers()
            .filter(|name| !external.iter().any(|t| t.name == *name))
            .filter(|name| !proto.graph.iter().flat_map(|g| &g.initializer).any(|t| t.name == *name))
            .collect();
        if let Some(name) = missing.first() {
            return Err(SdError::model(format!(
                "{path} has no initializer {name}, which its weights.json names: convert the model dir again"
            )));
        }
        for tensor in proto.graph.iter_mut().flat_map(|g| g.initializer.iter_mut()).filter(|t| merge.changes(&t.name)) {
            merge_into_proto(tensor, merge).map_err(|e| e.context(&path))?;
        }
        let needed = memory_needed(&proto, &external, working);
        memory::ensure(network_name(rel), needed)?;
        let fp16_bytes = external.iter().filter(|t| t.datum_type == DatumType::F16).map(byte_len).sum();
        let fold_weights = resident::fold_at_load(fp16_bytes, needed);
        let parsed = tract_onnx::onnx().parse(&proto, None).map_err(|e| {
            SdError::model(format!("{path} could not be read by tract: {}", chain(&e)))
        })?;
        drop(proto);
        let undefined: Vec<&String> =
            parsed.unresolved_inputs.iter().filter(|name| !external.iter().any(|t| &t.name == *name)).collect();
        if !undefined.is_empty() {
            return Err(SdError::model(format!("{path} refers to undefined values {undefined:?}")));
        }
        let mut graph = OnnxGraph { model: parsed.model, path, weights: Vec::new(), fold_weights };
        graph.bind_external_initializers(external, files, merge)?;
        Ok(graph)
    }

    /// Checks, as [`OnnxGraph::load`] does first, that loading `rel` and running it can have
    /// its memory, without loading it: a job asks for its largest network's memory before its
    /// first network loads (see [`memory::ensure`] on why once).
    pub fn reserve(files: &dyn ModelFiles, rel: &str, working: impl FnOnce(&pb::ModelProto, u64) -> u64) -> Result<()> {
        let (proto, external, _) = read_proto(files, rel)?;
        memory::ensure(network_name(rel), memory_needed(&proto, &external, working))
    }

    /// The network's own inputs (not the weights fed as inputs, which come last).
    pub fn inputs(&self) -> Result<Vec<InputSpec>> {
        let mut outlets = self.model.input_outlets().map_err(|e| self.err(e))?.to_vec();
        outlets.truncate(outlets.len() - self.weights.len());
        outlets
            .iter()
            .enumerate()
            .map(|(index, outlet)| {
                let fact = self.model.input_fact(index).map_err(|e| self.err(e))?;
                let shape = (!fact.shape.is_open()).then(|| {
                    fact.shape
                        .dims()
                        .map(|d| d.concretize().and_then(|d| d.as_i64()).map(|d| d as usize))
                        .collect()
                });
                Ok(InputSpec {
                    index,
                    name: self.model.node(outlet.node).name.clone(),
                    datum_type: fact.datum_type.concretize(),
                    shape,
                })
            })
            .collect()
    }

    /// Finds an input by one of its usual names, else says which inputs the model has.
    pub fn input(&self, names: &[&str]) -> Result<InputSpec> {
        let inputs = self.inputs()?;
        inputs.iter().find(|i| names.contains(&i.name.as_str())).cloned().ok_or_else(|| {
            SdError::model(format!(
                "{} has no input named {}; its inputs are {:?}: this does not look like the expected network",
                self.path,
                names.join(" or "),
                inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>()
            ))
        })
    }

    pub fn pin_input(&mut self, index: usize, dt: DatumType, shape: &[usize]) -> Result<()> {
        let fact = InferenceFact::dt_shape(dt, shape.iter().copied().collect::<TVec<usize>>());
        self.model.set_input_fact(index, fact).map_err(|e| self.err(e))
    }

    /// The names of the network's outputs.
    pub fn output_names(&self) -> Result<Vec<String>> {
        let outputs = self.model.output_outlets().map_err(|e| self.err(e))?.to_vec();
        Ok(outputs
            .iter()
            .map(|o| self.model.outlet_label(*o).map_or_else(|| self.model.node(o.node).name.clone(), str::to_string))
            .collect())
    }

    /// Keeps only the first output (or the one named `name` when present).
    pub fn keep_output(&mut self, name: &str) -> Result<()> {
        let outputs = self.model.output_outlets().map_err(|e| self.err(e))?.to_vec();
        let chosen = outputs
            .iter()
            .find(|o| self.model.outlet_label(**o) == Some(name) || self.model.node(o.node).name == name)
            .or(outputs.first())
            .copied()
            .ok_or_else(|| SdError::model(format!("{} has no outputs", self.path)))?;
        self.model.select_output_outlets(&[chosen]).map_err(|e| self.err(e))
    }

    pub fn into_plan(self) -> Result<Plan> {
        let path = self.path;
        let typed = self.model.into_typed().map_err(|e| {
            SdError::model(format!("{path}: its inputs do not fit the pipeline: {}", chain(&e)))
        })?;
        let optimizing = |e: TractError| SdError::runtime(format!("{path}: optimizing failed: {}", chain(&e)));
        let mut decluttered = typed.into_decluttered().map_err(optimizing)?;
        ops::substitute_decluttered(&mut decluttered).map_err(|e| SdError::runtime(format!("{path}: {}", chain(&e))))?;
        let mut optimized = decluttered.into_optimized().map_err(optimizing)?;
        ops::substitute(&mut optimized).map_err(|e| SdError::runtime(format!("{path}: {}", chain(&e))))?;
        let weights = if self.fold_weights && !self.weights.is_empty() {
            resident::fold_weights(&mut optimized, self.weights, &path)?
        } else {
            self.weights
        };
        // With weights as inputs, tract's memory-minded ordering counts live values, not
        // bytes, and runs many Casts early: every f32 weight copy alive at once (3.4 GB on
        // SD 1.5). Its plain depth-first order casts each weight right before its one use.
        let options = RunOptions { skip_order_opt_ram: !weights.is_empty(), ..Default::default() };
        let plan = optimized
            .into_runnable_with_options(&options)
            .map_err(|e| SdError::runtime(format!("{path}: preparing to run failed: {}", chain(&e))))?;
        Ok(Plan { plan, weights })
    }

    /// Reads each external initializer into the tensor that keeps it. fp16 ones stay inputs
    /// (moved after the network's own inputs), everything else becomes a constant.
    fn bind_external_initializers(&mut self, tensors: Vec<ExternalTensor>, files: &dyn ModelFiles, merge: &Merge) -> Result<()> {
        use tract_onnx::tract_hir::ops::konst::Const;
        let path = self.path.clone();
        let fail = |e: TractError| SdError::model(format!("{path}: {}", chain(&e)));
        let mut weight_inputs = Vec::new();
        let ids: std::collections::HashMap<String, usize> =
            self.model.nodes().iter().map(|n| (n.name.clone(), n.id)).collect();
        for ext in tensors {
            let Some(&id) = ids.get(&ext.name) else {
                continue; // an unused initializer
            };
            // SAFETY: every byte is overwritten by the read below before the tensor is used.
            let mut tensor = unsafe { Tensor::uninitialized_dt(ext.datum_type, &ext.shape) }.map_err(|e| {
                SdError::runtime(format!("{path}: out of memory for tensor {} ({})", ext.name, chain(&e)))
            })?;
            files.read_into(&ext.rel, ext.offset, tensor.as_bytes_mut())?;
            if merge.changes(&ext.name) {
                let stored = stored_type(ext.datum_type, &ext.name)?;
                merge.apply(&ext.name, stored, &ext.shape, tensor.as_bytes_mut()).map_err(|e| e.context(&path))?;
            }
            let tensor = tensor.into_arc_tensor();
            if ext.datum_type == DatumType::F16 {
                let fact = InferenceFact::dt_shape(DatumType::F16, ext.shape.iter().copied().collect::<TVec<usize>>());
                self.model.set_outlet_fact(OutletId::new(id, 0), fact).map_err(fail)?;
                weight_inputs.push(OutletId::new(id, 0));
                self.weights.push(TValue::from_const(tensor));
            } else {
                let fact = TypedFact::try_from(tensor.clone()).map_err(fail)?;
                let node = self.model.node_mut(id);
                node.op = Box::new(Const::new(tensor).map_err(fail)?);
                node.outputs[0].fact = fact.into();
                self.model.inputs.retain(|outlet| outlet.node != id);
            }
        }
        self.model.inputs.retain(|outlet| !weight_inputs.contains(outlet));
        self.model.inputs.extend(weight_inputs);
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Debug) -> SdError {
        SdError::model(format!("{}: {}", self.path, chain(&e)))
    }
}

/// The stored type of a weight a LoRA changes: the float types weights are stored in.
fn stored_type(datum_type: DatumType, name: &str) -> Result<Stored> {
    match datum_type {
        DatumType::F32 => Ok(Stored::F32),
        DatumType::F16 => Ok(Stored::F16),
        other => Err(SdError::model(format!("weight {name} is stored as {other:?}; a LoRA can change f32 and f16 weights"))),
    }
}

/// Merges into an initializer kept in the .onnx file itself (small weights; every weight of an
/// export without external data), in the representation it has there.
fn merge_into_proto(tensor: &mut pb::TensorProto, merge: &Merge) -> Result<()> {
    let datum_type = onnx_datum_type(tensor.data_type)
        .ok_or_else(|| SdError::model(format!("weight {} has an unsupported element type", tensor.name)))?;
    let stored = stored_type(datum_type, &tensor.name)?;
    let shape: Vec<usize> = tensor.dims.iter().map(|&d| d.max(0) as usize).collect();
    let name = tensor.name.clone();
    if !tensor.raw_data.is_empty() {
        return merge.apply(&name, stored, &shape, &mut tensor.raw_data).map(drop);
    }
    if stored != Stored::F32 || tensor.float_data.is_empty() {
        return Err(SdError::model(format!("weight {name} is stored in a form a LoRA cannot be merged into; convert again")));
    }
    let mut bytes: Vec<u8> = tensor.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    merge.apply(&name, stored, &shape, &mut bytes)?;
    tensor.float_data = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(())
}

/// An initializer whose bytes live in an external data file.
struct ExternalTensor {
    name: String,
    datum_type: DatumType,
    shape: Vec<usize>,
    rel: String,
    offset: u64,
}

/// The ONNX file `rel` parsed, its external initializers taken out (described, not read), and
/// its path for messages.
fn read_proto(files: &dyn ModelFiles, rel: &str) -> Result<(pb::ModelProto, Vec<ExternalTensor>, String)> {
    let path = format!("{}/{rel}", files.describe());
    let bytes = files.read(rel)?;
    let mut proto = pb::ModelProto::decode(&bytes[..]).map_err(|e| {
        SdError::model(format!("{path} is not a valid ONNX file ({e}); it may be truncated: copy or export it again"))
    })?;
    drop(bytes);
    let external = take_external_initializers(&mut proto, files, folder(rel), &path)?;
    Ok((proto, external, path))
}

/// The folder of `rel` in the model dir ("" at its top).
fn folder(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// The network's name in messages: its folder (`unet/model.onnx` → `unet`).
fn network_name(rel: &str) -> &str {
    folder(rel).rsplit('/').next().filter(|d| !d.is_empty()).unwrap_or(rel)
}

/// Bytes loading and running a network needs: its weights, room for the f32 copy of its
/// largest fp16 weight that the Cast makes per run and what its consumer makes of it
/// (measured: the text encoder's embedding table), and `working(proto, external weight bytes)`.
fn memory_needed(proto: &pb::ModelProto, external: &[ExternalTensor], working: impl FnOnce(&pb::ModelProto, u64) -> u64) -> u64 {
    let external_bytes: u64 = external.iter().map(byte_len).sum();
    let largest_cast = external.iter().filter(|t| t.datum_type == DatumType::F16).map(|t| 4 * byte_len(t)).max();
    external_bytes + proto.encoded_len() as u64 + largest_cast.unwrap_or(0) + working(proto, external_bytes)
}

/// tract resolves external data by canonicalizing paths, which WASI does not support and
/// browsers have no files for. So external initializers are taken out of the proto before
/// tract parses it (they become unresolved inputs) and read here, one tensor at a time,
/// straight into the tensor tract will keep: the weights are in memory once, never twice,
/// and no allocation is larger than one tensor.
fn take_external_initializers(
    proto: &mut pb::ModelProto,
    files: &dyn ModelFiles,
    dir: &str,
    path: &str,
) -> Result<Vec<ExternalTensor>> {
    let Some(graph) = proto.graph.as_mut() else {
        return Err(SdError::model(format!("{path} has no graph")));
    };
    let external = pb::tensor_proto::DataLocation::External as i32;
    // Constant-node attributes with external data are rare and small: inline those.
    for tensor in graph.node.iter_mut().flat_map(|n| n.attribute.iter_mut()).filter_map(|a| a.t.as_mut()) {
        if tensor.data_location == Some(external) {
            let ext = describe_external(tensor, files, dir, path)?;
            tensor.raw_data = files.read_range(&ext.rel, ext.offset, Some(byte_len(&ext)))?;
            tensor.data_location = None;
            tensor.external_data.clear();
        }
    }
    let (taken, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut graph.initializer).into_iter().partition(|t| t.data_location == Some(external));
    graph.initializer = kept;
    taken.iter().map(|t| describe_external(t, files, dir, path)).collect()
}

fn byte_len(t: &ExternalTensor) -> u64 {
    (t.shape.iter().product::<usize>() * t.datum_type.size_of()) as u64
}

fn describe_external(tensor: &pb::TensorProto, files: &dyn ModelFiles, dir: &str, path: &str) -> Result<ExternalTensor> {
    let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.clone());
    let location = entry("location").ok_or_else(|| {
        SdError::model(format!("{path}: tensor {} has external data without a location", tensor.name))
    })?;
    if location.split('/').any(|c| c == ".." || c.is_empty()) || location.starts_with('/') {
        return Err(SdError::model(format!("{path}: external data location {location:?} leaves the model dir")));
    }
    let number = |v: Option<String>, what: &str| -> Result<Option<u64>> {
        v.map(|s| s.parse::<u64>().map_err(|_| SdError::model(format!("{path}: bad external data {what} {s:?}"))))
            .transpose()
    };
    let offset = number(entry("offset"), "offset")?.unwrap_or(0);
    let length = number(entry("length"), "length")?;
    let rel = if dir.is_empty() { location.clone() } else { format!("{dir}/{location}") };
    let Some(file_size) = files.size(&rel) else {
        return Err(SdError::model(format!(
            "{path} keeps its weights in {location}, which is missing beside it: copy the whole folder"
        )));
    };
    let datum_type = onnx_datum_type(tensor.data_type).ok_or_else(|| {
        SdError::model(format!("{path}: tensor {} has an unsupported element type ({})", tensor.name, tensor.data_type))
    })?;
    let shape: Vec<usize> = tensor.dims.iter().map(|&d| d.max(0) as usize).collect();
    let ext = ExternalTensor { name: tensor.name.clone(), datum_type, shape, rel, offset };
    let needed = byte_len(&ext);
    if length.is_some_and(|l| l != needed) {
        return Err(SdError::model(format!(
            "{path}: tensor {} declares {} bytes of external data but its shape needs {needed}",
            ext.name,
            length.unwrap_or(0)
        )));
    }
    if offset + needed > file_size {
        return Err(SdError::model(format!(
            "{}/{} is truncated: {file_size} bytes, but the model refers to bytes {offset}..{}; copy or export it again",
            files.describe(),
            ext.rel,
            offset + needed
        )));
    }
    Ok(ext)
}

fn onnx_datum_type(code: i32) -> Option<DatumType> {
    use pb::tensor_proto::DataType as D;
    Some(match D::try_from(code).ok()? {
        D::Float => DatumType::F32,
        D::Float16 => DatumType::F16,
        D::Double => DatumType::F64,
        D::Int8 => DatumType::I8,
        D::Uint8 => DatumType::U8,
        D::Int16 => DatumType::I16,
        D::Int32 => DatumType::I32,
        D::Int64 => DatumType::I64,
        D::Bool => DatumType::Bool,
        _ => return None,
    })
}

/// Runs a plan and returns its first output as an f32 array.
pub(crate) fn run_f32(plan: &Plan, mut inputs: TVec<TValue>, what: &str) -> Result<ndarray::ArrayD<f32>> {
    inputs.extend(plan.weights.iter().cloned());
    let outputs = profile::run(&plan.plan, inputs, what)
        .map_err(|e| SdError::runtime(format!("{what} failed: {}", chain(&e))))?;
    let out = outputs[0]
        .cast_to::<f32>()
        .map_err(|e| SdError::runtime(format!("{what}: output is not numeric: {}", chain(&e))))?;
    let view = out
        .to_plain_array_view::<f32>()
        .map_err(|e| SdError::runtime(format!("{what}: {}", chain(&e))))?;
    Ok(view.to_owned())
}

/// The float type a network expects for an input: f16 models take f16, everything else f32.
pub(crate) fn float_type(spec: &InputSpec) -> DatumType {
    match spec.datum_type {
        Some(DatumType::F16) => DatumType::F16,
        Some(DatumType::F64) => DatumType::F64,
        _ => DatumType::F32,
    }
}

pub(crate) fn float_tensor(a: ndarray::ArrayD<f32>, dt: DatumType) -> Result<Tensor> {
    Tensor::from(a).cast_to_dt(dt).map(|t| t.into_owned()).map_err(|e| SdError::runtime(chain(&e)))
}
