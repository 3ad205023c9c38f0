//! A network checked before the run starts: it parses as ONNX, has the inputs its loader looks
//! for and an output, and its external weights are all there. A broken VAE decoder then fails
//! before the first denoising step (and before any preview is written), not minutes later.
//!
//! Reads only names and external-data entries: the slim messages below skip every weight, so
//! the check costs a read of the .onnx file, not a second copy of the network.

use crate::error::{Result, SdError};
use crate::model_dir::ModelFiles;
use prost::Message;

/// The input names each network's loader accepts: one of each group.
pub const TEXT_ENCODER_INPUTS: &[&[&str]] = &[&["input_ids"]];
pub const UNET_INPUTS: &[&[&str]] = &[&["sample"], &["timestep", "timesteps", "t"], &["encoder_hidden_states"]];
/// The guidance embedding of a UNet distilled with guidance as an input (LCM).
pub const GUIDANCE_EMBEDDING_INPUT: &[&str] = &["timestep_cond"];
pub const LCM_UNET_INPUTS: &[&[&str]] = &[UNET_INPUTS[0], UNET_INPUTS[1], UNET_INPUTS[2], GUIDANCE_EMBEDDING_INPUT];
pub const VAE_DECODER_INPUTS: &[&[&str]] = &[&["latent_sample", "latent", "z"]];
pub const VAE_ENCODER_INPUTS: &[&[&str]] = &[&["sample", "image", "x"]];

#[derive(Clone, PartialEq, Message)]
struct SlimModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<SlimGraph>,
}

#[derive(Clone, PartialEq, Message)]
struct SlimGraph {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<SlimTensor>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<SlimValueInfo>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<SlimValueInfo>,
}

#[derive(Clone, PartialEq, Message)]
struct SlimValueInfo {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct SlimTensor {
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<SlimEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct SlimEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// Checks the network at `rel` (e.g. "unet/model.onnx") against its loader's input names.
pub fn check_network(files: &dyn ModelFiles, rel: &str, inputs: &[&[&str]]) -> Result<()> {
    let path = format!("{}/{rel}", files.describe());
    let bytes = files.read(rel)?;
    let model = SlimModel::decode(&bytes[..]).map_err(|e| {
        SdError::model(format!("{path} is not a valid ONNX file ({e}); it may be truncated: copy or export it again"))
    })?;
    drop(bytes);
    let graph = model.graph.ok_or_else(|| SdError::model(format!("{path} has no graph")))?;
    let names: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    if let Some(missing) = inputs.iter().find(|group| !group.iter().any(|n| names.contains(n))) {
        return Err(SdError::model(format!(
            "{path} has no input named {}; its inputs are {names:?}: this does not look like the expected network",
            missing.join(" or ")
        )));
    }
    if graph.output.is_empty() {
        return Err(SdError::model(format!("{path} has no outputs")));
    }
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
    graph.initializer.iter().try_for_each(|t| check_external(files, dir, &path, t))
}

/// An external weight's file holds the bytes the network says it does.
fn check_external(files: &dyn ModelFiles, dir: &str, path: &str, tensor: &SlimTensor) -> Result<()> {
    let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let Some(location) = entry("location") else { return Ok(()) };
    let number = |key: &str| entry(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let end = number("offset").saturating_add(number("length"));
    let rel = if dir.is_empty() { location.to_string() } else { format!("{dir}/{location}") };
    match files.size(&rel) {
        Some(size) if size >= end => Ok(()),
        Some(size) => Err(SdError::model(format!(
            "{path}: its weights file {rel} is truncated ({size} bytes; tensor {} ends at byte {end}): copy or export it again",
            tensor.name
        ))),
        None => Err(SdError::model(format!("{path}: its weights file {rel} {}", files.why_absent(&rel)))),
    }
}
