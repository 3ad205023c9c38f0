//! LoRA files (kohya's and Automatic1111's format) merged into the UNet's and the text
//! encoder's weights as those load: W += scale · alpha/rank · up·down, for a conv the product
//! reshaped to its kernel (LoCon: a k×k `lora_down`, a 1×1 `lora_up`), alpha = rank when the
//! file has none — what diffusers' `fuse_lora` computes.
//!
//! The export stores a Linear's weight transposed under its MatMul's name (`onnx::MatMul_12`),
//! so each converted network's `weights.json` (scripts/convert.py) says which initializer holds
//! which diffusers weight. A kohya module name is its diffusers module path with `_` for `.`
//! (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`; the text encoder's
//! under `lora_te_text_model_`), matched against that map's names spelled the same way.
//!
//! A request's LoRAs are matched against both maps before any network loads ([`plan`]): keys that
//! match nothing, a file that matches nothing, a layer of another shape fail or warn then. At
//! load, each weight is updated in place in f32, 64 rows at a time, and stored back in the
//! graph's type (fp16 at rest stays fp16): no second copy of a network's weights.

use super::tensor_file::{Hashed, TensorFile};
use crate::codecs::safetensors;
use crate::error::{Result, SdError};
use crate::model_dir::ModelFiles;
use std::sync::Arc;
use tract_onnx::prelude::f16;

/// A LoRA file ([`TensorFile::open`] with [`Hashed::Data`], Automatic1111's LoRA hash).
pub type LoraFile = TensorFile;

pub fn open_lora(files: Arc<dyn ModelFiles>, rel: &str) -> Result<LoraFile> {
    TensorFile::open(files, rel, "LoRA", Hashed::Data)
}

/// One LoRA of a request: its name (the file's stem, as Automatic1111's `<lora:NAME:SCALE>`),
/// its weight, its file.
#[derive(Debug, Clone)]
pub struct Lora {
    pub name: String,
    pub scale: f32,
    pub file: Arc<LoraFile>,
}

impl Lora {
    /// The prompt tag Automatic1111 records it as: `<lora:NAME:WEIGHT>`.
    pub fn tag(&self) -> String {
        format!("<lora:{}:{}>", self.name, self.scale)
    }
}

/// What identifies a set of LoRAs for a loaded network: each file's hash and weight.
pub type LoraKey = Vec<(String, u32)>;

pub fn key(loras: &[Lora]) -> LoraKey {
    loras.iter().map(|l| (l.file.hash.clone(), l.scale.to_bits())).collect()
}

/// The two networks a LoRA changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    TextEncoder,
    Unet,
}

impl Network {
    fn dir(self) -> &'static str {
        match self {
            Network::TextEncoder => "text_encoder",
            Network::Unet => "unet",
        }
    }

    /// The network a kohya module name belongs to, and the name without its prefix.
    fn of(module: &str) -> Option<(Network, &str)> {
        if let Some(rest) = module.strip_prefix("lora_unet_") {
            return Some((Network::Unet, rest));
        }
        // kohya names the text encoder's modules under `text_model` (transformers 4's CLIP).
        let rest = module.strip_prefix("lora_te_").or_else(|| module.strip_prefix("lora_te1_"))?;
        Some((Network::TextEncoder, rest.strip_prefix("text_model_").unwrap_or(rest)))
    }
}

/// One weight of a network as weights.json describes it.
#[derive(Debug, Clone)]
struct MappedWeight {
    /// The module's kohya spelling: its path with `_` for `.`.
    kohya: String,
    /// The diffusers parameter name ("down_blocks.0.attentions.0.proj_in.weight").
    name: String,
    initializer: String,
    transposed: bool,
    /// The diffusers shape ([out, in] or [out, in, kh, kw]).
    shape: Vec<usize>,
}

/// A network's weights.json.
struct WeightMap(Vec<MappedWeight>);

impl WeightMap {
    fn read(files: &dyn ModelFiles, network: Network) -> Result<Self> {
        let rel = format!("{}/weights.json", network.dir());
        let Some(json) = files.read_json_optional(&rel)? else {
            return Err(SdError::model(format!(
                "{}/{rel} is missing: this model dir was converted before sd.wasm could merge LoRAs; convert it \
                 again with scripts/convert.py (it writes weights.json, the map from each weight to the ONNX file's \
                 initializer)",
                files.describe()
            )));
        };
        let bad = || {
            SdError::model(format!(
                "{}/{rel} is not a weight map scripts/convert.py wrote; convert again",
                files.describe()
            ))
        };
        let weights = json.get("weights").and_then(|w| w.as_object()).ok_or_else(bad)?;
        let mut map = Vec::with_capacity(weights.len());
        for (name, entry) in weights {
            let initializer = entry.get("initializer").and_then(|v| v.as_str()).ok_or_else(bad)?.to_string();
            let transposed = entry.get("transposed").and_then(|v| v.as_bool()).ok_or_else(bad)?;
            let shape: Vec<usize> = entry
                .get("shape")
                .and_then(|v| v.as_array())
                .and_then(|dims| dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(bad)?;
            if shape.len() < 2 || (transposed && shape.len() != 2) {
                return Err(bad());
            }
            let Some(module) = name.strip_suffix(".weight") else { continue };
            map.push(MappedWeight {
                kohya: module.replace('.', "_"),
                name: name.clone(),
                initializer,
                transposed,
                shape,
            });
        }
        Ok(WeightMap(map))
    }
}

/// One LoRA module's update of one weight.
struct Update {
    file: Arc<LoraFile>,
    down: String,
    up: String,
    /// scale · alpha / rank.
    factor: f32,
    rank: usize,
    weight: MappedWeight,
}

/// Everything a request's LoRAs change in one network, by initializer name.
#[derive(Default)]
pub struct Merge {
    updates: Vec<(String, Vec<Update>)>,
}

/// A request's LoRAs matched against the model: what each network's load merges, and what
/// did not match (warnings).
#[derive(Default)]
pub struct Merges {
    /// The LoRAs (hashes and weights): part of each loaded network's key.
    pub key: LoraKey,
    pub text_encoder: Merge,
    pub unet: Merge,
    pub warnings: Vec<String>,
}

/// Matches every LoRA's modules against the networks' weight maps and checks their shapes.
/// A file none of whose modules match is an error; modules that match nothing are a warning
/// with their count.
pub fn plan(files: &dyn ModelFiles, loras: &[Lora]) -> Result<Merges> {
    let mut merges = Merges { key: key(loras), ..Default::default() };
    if loras.is_empty() {
        return Ok(merges);
    }
    let maps = [
        (Network::TextEncoder, WeightMap::read(files, Network::TextEncoder)?),
        (Network::Unet, WeightMap::read(files, Network::Unet)?),
    ];
    for lora in loras {
        let file = &lora.file;
        let modules: Vec<&str> = file.tensors.iter().filter_map(|(k, _)| k.strip_suffix(".lora_down.weight")).collect();
        let mut unmatched: Vec<&str> = Vec::new();
        let mut matched = 0;
        for module in &modules {
            let found = Network::of(module).and_then(|(network, name)| {
                let (_, map) = maps.iter().find(|(n, _)| *n == network)?;
                Some((network, map.0.iter().find(|w| w.kohya == name)?))
            });
            let Some((network, weight)) = found else {
                unmatched.push(module);
                continue;
            };
            let update = update(lora, module, weight)?;
            let merge = match network {
                Network::TextEncoder => &mut merges.text_encoder,
                Network::Unet => &mut merges.unet,
            };
            match merge.updates.iter_mut().find(|(name, _)| *name == weight.initializer) {
                Some((_, updates)) => updates.push(update),
                None => merge.updates.push((weight.initializer.clone(), vec![update])),
            }
            matched += 1;
        }
        // Keys of no LoRA module kohya writes (LyCORIS' other kinds, DoRA scales) are unused too.
        let known = |k: &str| {
            [".lora_down.weight", ".lora_up.weight", ".alpha"]
                .iter()
                .any(|s| k.strip_suffix(s).is_some_and(|m| modules.contains(&m)))
        };
        let other: Vec<&String> = file.tensors.iter().map(|(k, _)| k).filter(|k| !known(k)).collect();
        if matched == 0 {
            let example = unmatched.first().map(|m| m.to_string()).or_else(|| other.first().map(|k| k.to_string()));
            return Err(SdError::usage(format!(
                "LoRA {}: none of its {} keys match a layer of this model's UNet or text encoder (e.g. {}): sd.wasm reads \
                 kohya/Automatic1111 LoRAs (lora_unet_…, lora_te_…: lora_down, lora_up, alpha) for this model family",
                file.describe(),
                file.tensors.len(),
                example.as_deref().unwrap_or("no keys")
            )));
        }
        if !unmatched.is_empty() || !other.is_empty() {
            let example = unmatched.first().map(|m| m.to_string()).unwrap_or_else(|| other[0].clone());
            merges.warnings.push(format!(
                "LoRA {}: {} of its {} modules match no layer of this model and {} other keys are not LoRA weights \
                 sd.wasm reads (e.g. {example}); they are ignored",
                lora.name,
                unmatched.len(),
                modules.len(),
                other.len()
            ));
        }
    }
    Ok(merges)
}

/// One module's update, its shapes checked against the model's weight.
fn update(lora: &Lora, module: &str, weight: &MappedWeight) -> Result<Update> {
    let file = &lora.file;
    let (down, up) = (format!("{module}.lora_down.weight"), format!("{module}.lora_up.weight"));
    let missing = |key: &str| {
        SdError::usage(format!("LoRA {}: {key} is missing (its lora_down has no lora_up)", file.describe()))
    };
    let down_entry = file.entry(&down).ok_or_else(|| missing(&down))?;
    let up_entry = file.entry(&up).ok_or_else(|| missing(&up))?;
    let (out, inner) = (weight.shape[0], weight.shape[1..].iter().product::<usize>());
    let rank = down_entry.shape.first().copied().unwrap_or(0);
    let fits = rank > 0
        && down_entry.shape[1..].iter().product::<usize>() == inner
        && up_entry.shape.len() >= 2
        && up_entry.shape[0] == out
        && up_entry.shape[1] == rank
        && up_entry.shape[2..].iter().all(|&d| d == 1);
    if !fits {
        return Err(SdError::usage(format!(
            "LoRA {} does not fit this model: layer {} is {:?} here, but its lora_up is {:?} and lora_down {:?} \
             (a LoRA for another model family?)",
            file.describe(),
            weight.name.trim_end_matches(".weight"),
            weight.shape,
            up_entry.shape,
            down_entry.shape
        )));
    }
    let alpha = match file.entry(&format!("{module}.alpha")) {
        Some(_) => *file
            .read_f32(&format!("{module}.alpha"))?
            .first()
            .ok_or_else(|| SdError::usage(format!("LoRA {}: {module}.alpha is empty", file.describe())))?,
        None => rank as f32,
    };
    Ok(Update { file: file.clone(), down, up, factor: lora.scale * alpha / rank as f32, rank, weight: weight.clone() })
}

/// The element types a merged weight can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    F32,
    F16,
}

impl Stored {
    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            Stored::F32 => 4,
            Stored::F16 => 2,
        }
    }

    /// Its safetensors dtype name.
    pub fn dtype(self) -> &'static str {
        match self {
            Stored::F32 => "F32",
            Stored::F16 => "F16",
        }
    }
}

/// Rows of a weight updated at a time: a 64-row block of even the largest conv (2560·9
/// columns) is 6 MB of f32.
const BLOCK_ROWS: usize = 64;

impl Merge {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// The initializers this merge changes.
    pub fn initializers(&self) -> impl Iterator<Item = &str> {
        self.updates.iter().map(|(name, _)| name.as_str())
    }

    pub fn changes(&self, initializer: &str) -> bool {
        self.updates(initializer).is_some()
    }

    fn updates(&self, initializer: &str) -> Option<&[Update]> {
        self.updates.iter().find(|(name, _)| name == initializer).map(|(_, u)| &u[..])
    }

    /// Adds the LoRAs' updates of `initializer` to its stored bytes (little-endian, `stored`
    /// type, `shape` as the graph has it). Returns whether it had any.
    pub fn apply(&self, initializer: &str, stored: Stored, shape: &[usize], bytes: &mut [u8]) -> Result<bool> {
        let Some(updates) = self.updates(initializer) else { return Ok(false) };
        let rows = shape.first().copied().unwrap_or(0);
        let cols = shape.iter().skip(1).product::<usize>();
        let width = stored.width();
        // Each update as rows × rank and rank × cols matrices of the stored layout.
        let mut factors = Vec::with_capacity(updates.len());
        for u in updates {
            let (out, inner) = (u.weight.shape[0], u.weight.shape[1..].iter().product::<usize>());
            let (want_rows, want_cols) = if u.weight.transposed { (inner, out) } else { (out, inner) };
            if (rows, cols) != (want_rows, want_cols) || bytes.len() != rows * cols * width {
                return Err(SdError::model(format!(
                    "initializer {initializer} is {shape:?}, but weights.json describes {} as {:?}{}: convert the model dir again",
                    u.weight.name,
                    u.weight.shape,
                    if u.weight.transposed { " transposed" } else { "" }
                )));
            }
            let (down, up) = (u.file.read_f32(&u.down)?, u.file.read_f32(&u.up)?);
            if down.len() != u.rank * inner || up.len() != out * u.rank {
                return Err(SdError::usage(format!("LoRA {}: {} has an unexpected size", u.file.describe(), u.down)));
            }
            // W += f·up·down, or for a weight stored transposed Wᵀ += f·downᵀ·upᵀ.
            factors.push(if u.weight.transposed {
                (transpose(&down, u.rank, inner), transpose(&up, out, u.rank), u.rank, u.factor)
            } else {
                (up, down, u.rank, u.factor)
            });
        }
        for (block_index, block) in bytes.chunks_mut(BLOCK_ROWS * cols * width).enumerate() {
            let first = block_index * BLOCK_ROWS;
            let n = block.len() / (cols * width);
            let mut values = read_values(block, stored);
            for (left, right, rank, factor) in &factors {
                let left = &left[first * rank..(first + n) * rank];
                sd_kernels::low_rank::add_low_rank(&mut values, cols, left, *rank, right, *factor);
            }
            write_values(&values, stored, block);
        }
        Ok(true)
    }
}

/// A rows × cols row-major matrix transposed.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|j| (0..rows).map(move |i| m[i * cols + j])).collect()
}

fn read_values(bytes: &[u8], stored: Stored) -> Vec<f32> {
    safetensors::to_f32(stored.dtype(), bytes).expect("a float type")
}

pub(crate) fn write_values(values: &[f32], stored: Stored, bytes: &mut [u8]) {
    match stored {
        Stored::F32 => bytes.chunks_exact_mut(4).zip(values).for_each(|(b, v)| b.copy_from_slice(&v.to_le_bytes())),
        // half's rounding: to nearest even, as numpy's and torch's casts.
        Stored::F16 => bytes
            .chunks_exact_mut(2)
            .zip(values)
            .for_each(|(b, v)| b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fp16 weights round-trip exactly through a merge's f32 block, and a merged value is
    /// rounded to nearest even.
    #[test]
    fn fp16_values_round_trip_and_round_to_nearest_even() {
        let all: Vec<u8> = (0..=u16::MAX).filter(|&h| !f16::from_bits(h).is_nan()).flat_map(u16::to_le_bytes).collect();
        let mut written = vec![0u8; all.len()];
        write_values(&read_values(&all, Stored::F16), Stored::F16, &mut written);
        assert!(written == all, "an fp16 value changed through f32");
        let narrow = |v: f32| {
            let mut b = [0u8; 2];
            write_values(&[v], Stored::F16, &mut b);
            u16::from_le_bytes(b)
        };
        assert_eq!(narrow(1.0 + 1.0 / 2048.0), 0x3c00); // halfway: to even
        assert_eq!(narrow(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(narrow(65520.0), 0x7c00);
        assert_eq!(narrow(1e-8), 0);
    }
}
