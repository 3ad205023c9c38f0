//! Single-file checkpoints (Automatic1111/Civitai `.safetensors`, SD 1.x and 2.x) run through a
//! template: a model dir whose graphs keep their weights as external data in a
//! `model.onnx_data` that does not exist, with a `checkpoint.json` beside each network
//! (`scripts/convert.py --template`) saying which checkpoint tensor fills each byte range there.
//!
//! [`CheckpointFiles`] is the template's [`ModelFiles`] with those ranges served from the
//! checkpoint, so every loader, the LoRA merge and the memory checks read it as they read a
//! converted model dir. Each tensor is converted as it is read, one at a time (fp32, bf16 or fp16
//! in the file → the graph's stored fp16 or fp32, transposed where the export stores a Linear's
//! weight transposed, OpenCLIP's fused q/k/v split by rows): the checkpoint is never in memory
//! whole, and an fp32 checkpoint costs no more memory than an fp16 one.

use super::lora::{transpose, write_values, Stored};
use super::tensor_file::{Hashed, TensorFile};
use crate::codecs::safetensors::{to_f32, TensorEntry};
use crate::error::{Result, SdError};
use crate::model_dir::{DirFiles, ModelFiles, WeightsIdentity};
use std::path::Path;
use std::sync::Arc;

/// The template's networks: each may have a checkpoint.json (a template without a VAE encoder
/// does text-to-image only).
const NETWORKS: [&str; 4] = ["text_encoder", "unet", "vae_decoder", "vae_encoder"];
const VAE_PREFIX: &str = "first_stage_model.";
/// SD 1.x checkpoints name the text encoder with or without transformers' `text_model`.
const CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";
const CLIP_PREFIX_OLD: &str = "cond_stage_model.transformer.";

/// One range of a network's (absent) external data file and the checkpoint tensor behind it.
#[derive(Debug)]
struct Range {
    offset: u64,
    stored: Stored,
    /// As stored in the graph.
    shape: Vec<usize>,
    key: String,
    /// Rows of the checkpoint tensor (its first axis) that hold this weight.
    rows: Option<(usize, usize)>,
    transposed: bool,
}

impl Range {
    fn len(&self) -> u64 {
        (self.shape.iter().product::<usize>() * self.stored.width()) as u64
    }
}

struct Network {
    /// `unet/model.onnx_data`: the file the graph's external data names.
    data: String,
    /// Sorted by offset.
    ranges: Vec<Range>,
}

pub struct CheckpointFiles {
    template: Arc<dyn ModelFiles>,
    checkpoint: TensorFile,
    /// A separate VAE file (`encoder.*`, `decoder.*` keys, as Automatic1111's VAE folder holds).
    vae: Option<TensorFile>,
    networks: Vec<Network>,
}

/// Opens a checkpoint (or VAE) file in `files` at `rel`: its header read and checked. It is hashed
/// whole, as Automatic1111 hashes it for "Model hash", once [`CheckpointFiles::new`] finds that
/// it fits the template.
pub fn open(files: Arc<dyn ModelFiles>, rel: &str, kind: &'static str) -> Result<TensorFile> {
    // PyTorch's .ckpt/.pt files are zip archives of pickles, which can run code when read.
    if files.size(rel).is_some_and(|n| n >= 4) && files.read_range(rel, 0, Some(4))? == b"PK\x03\x04" {
        return Err(SdError::usage(format!(
            "{kind} {}/{rel}: a PyTorch pickle (.ckpt) file; sd.wasm reads .safetensors only (a pickle can run code \
             when read): use the model's .safetensors release, or convert it once with scripts/convert.py FILE OUT",
            files.describe().trim_end_matches('/')
        )));
    }
    TensorFile::open(files, rel, kind, Hashed::Later)
}

/// The model dir at `models` with `checkpoint`'s weights (and `vae`'s), all files on disk: what
/// the command line and the component run with `--checkpoint`; without one, the dir itself.
pub fn files_on_disk(models: &Path, checkpoint: Option<&Path>, vae: Option<&Path>) -> Result<Arc<dyn ModelFiles>> {
    let template: Arc<dyn ModelFiles> = Arc::new(DirFiles::open(models)?);
    let on_disk = |path: &Path, kind: &str| DirFiles::file(path).map_err(|e| SdError::usage(format!("{kind} {e}")));
    let checkpoint = checkpoint.map(|p| on_disk(p, "checkpoint")).transpose()?;
    let vae = vae.map(|p| on_disk(p, "VAE")).transpose()?;
    with_checkpoint(template, checkpoint, vae)
}

/// A single file a front end hands over: the files holding it and its name among them.
pub type FileRef = (Arc<dyn ModelFiles>, String);

/// The template with `checkpoint`'s weights (and `vae`'s); without a checkpoint, the template
/// itself. Every front end comes through here, wherever its files live (disk, the browser).
pub fn with_checkpoint(template: Arc<dyn ModelFiles>, checkpoint: Option<FileRef>, vae: Option<FileRef>) -> Result<Arc<dyn ModelFiles>> {
    let Some((files, rel)) = checkpoint else {
        return match vae {
            Some(_) => Err(SdError::usage("a VAE file (--vae-file) replaces a checkpoint's VAE; give the checkpoint (--checkpoint) too")),
            None => Ok(template),
        };
    };
    let vae = vae.map(|(files, rel)| open(files, &rel, "VAE")).transpose()?;
    Ok(Arc::new(CheckpointFiles::new(template, open(files, &rel, "checkpoint")?, vae)?))
}

impl CheckpointFiles {
    /// The template's maps read, and every tensor they name found in the checkpoint (or the
    /// VAE file) with the size the graph needs, before anything loads; then the files hashed.
    pub fn new(template: Arc<dyn ModelFiles>, checkpoint: TensorFile, vae: Option<TensorFile>) -> Result<Self> {
        let mut networks = Vec::new();
        for dir in NETWORKS {
            let rel = format!("{dir}/checkpoint.json");
            match template.read_json_optional(&rel)? {
                Some(json) => networks.push(read_map(&json, dir).map_err(|why| {
                    SdError::model(format!(
                        "{}/{rel}: {why}; write the template again with scripts/convert.py --template",
                        template.describe()
                    ))
                })?),
                None if dir == "vae_encoder" => {}
                None => {
                    return Err(SdError::usage(format!(
                        "--checkpoint needs a template as the model dir: {} has no {rel}. The project's templates \
                         (templates/, or scripts/convert.py --template) give the graphs of each family",
                        template.describe()
                    )))
                }
            }
        }
        let mut files = CheckpointFiles { template, checkpoint, vae, networks };
        files.check()?;
        files.checkpoint.hash_now(Hashed::Whole)?;
        if let Some(vae) = &mut files.vae {
            vae.hash_now(Hashed::Whole)?;
        }
        Ok(files)
    }

    /// Every range's tensor present, a float, and of the size the graph stores.
    fn check(&self) -> Result<()> {
        for range in self.networks.iter().flat_map(|n| &n.ranges) {
            let Some((file, key)) = self.source(&range.key) else {
                return Err(self.missing(&range.key));
            };
            let entry = file.entry(&key).expect("source() found it");
            let elements: usize = entry.shape.iter().product();
            let wanted: usize = range.shape.iter().product();
            let available = match range.rows {
                Some((start, end)) if entry.shape.first().is_some_and(|&rows| rows >= end) => {
                    (end - start) * row_elements(entry)
                }
                Some(_) => 0,
                None => elements,
            };
            if available != wanted || !matches!(entry.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
                return Err(file.error(format!(
                    "{key} is {} {:?}, but this template's graph needs {wanted} values from it: the checkpoint is of \
                     another model family or size than the template {} (it looks like {})",
                    entry.dtype,
                    entry.shape,
                    self.template.describe(),
                    family(&self.checkpoint)
                )));
            }
        }
        Ok(())
    }

    /// The file and key a checkpoint key is read from.
    fn source(&self, key: &str) -> Option<(&TensorFile, String)> {
        if let (Some(vae), Some(short)) = (&self.vae, key.strip_prefix(VAE_PREFIX)) {
            return [short, key].iter().find(|k| vae.entry(k).is_some()).map(|k| (vae, k.to_string()));
        }
        let file = &self.checkpoint;
        if file.entry(key).is_some() {
            return Some((file, key.to_string()));
        }
        let old = key.strip_prefix(CLIP_PREFIX).map(|rest| format!("{CLIP_PREFIX_OLD}{rest}"))?;
        file.entry(&old).is_some().then_some((file, old))
    }

    fn missing(&self, key: &str) -> SdError {
        let has = |prefix: &str| self.checkpoint.tensors.iter().any(|(k, _)| k.starts_with(prefix));
        let template = self.template.describe();
        if key.starts_with(VAE_PREFIX) && !has(VAE_PREFIX) && self.vae.is_none() {
            return self
                .checkpoint
                .error(format!("it has no VAE (no {VAE_PREFIX}… tensors): give one with --vae-file FILE.safetensors"));
        }
        let theirs = family(&self.checkpoint);
        let ours = self
            .networks
            .iter()
            .flat_map(|n| &n.ranges)
            .map(|r| r.key.as_str())
            .find(|k| k.starts_with("cond_stage_model."));
        let ours =
            ours.map_or("unknown", |k| if k.starts_with("cond_stage_model.model.") { "SD 2.x" } else { "SD 1.x" });
        if theirs != ours {
            return self.checkpoint.error(format!(
                "it looks like {theirs}, and the template {template} is for {ours}: use the template of its family"
            ));
        }
        let file = match (&self.vae, key.starts_with(VAE_PREFIX)) {
            (Some(vae), true) => vae,
            _ => &self.checkpoint,
        };
        file.error(format!("it has no tensor {key}, which the template {template} needs"))
    }

    fn range_at(&self, rel: &str, offset: u64) -> Option<Result<&Range>> {
        let network = self.networks.iter().find(|n| n.data == rel)?;
        Some(match network.ranges.binary_search_by_key(&offset, |r| r.offset) {
            Ok(i) => Ok(&network.ranges[i]),
            Err(_) => Err(SdError::model(format!(
                "{}/{rel}: a read at byte {offset}, which starts no weight of checkpoint.json",
                self.template.describe()
            ))),
        })
    }

    /// Writes `range`'s weight, converted to its stored form, into `buf`.
    fn fill(&self, range: &Range, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 != range.len() {
            return Err(SdError::model(format!(
                "{}: {} bytes read for {}, which is {} bytes",
                self.template.describe(),
                buf.len(),
                range.key,
                range.len()
            )));
        }
        let (file, key) = self.source(&range.key).ok_or_else(|| self.missing(&range.key))?;
        let count: usize = range.shape.iter().product();
        let start = match range.rows {
            Some((first, _)) => first * row_elements(file.entry(&key).expect("source() found it")),
            None => 0,
        };
        // Stored [in, out] when transposed: the checkpoint's [out, in] transposed.
        let (rows, cols) = if range.transposed { (range.shape[1], range.shape[0]) } else { (1, count) };
        let (bytes, dtype) = file.read_range(&key, start, count)?;
        let same = dtype == range.stored.dtype();
        if same && !range.transposed {
            buf.copy_from_slice(&bytes);
        } else if same {
            // fp16 files into fp16 graphs (the usual case): elements moved, never converted.
            let size = bytes.len() / count.max(1);
            for (i, element) in bytes.chunks_exact(size).enumerate() {
                let at = (i % cols * rows + i / cols) * size;
                buf[at..at + size].copy_from_slice(element);
            }
        } else {
            let values = to_f32(dtype, &bytes).map_err(|e| file.error(format!("{key}: {e}")))?;
            drop(bytes);
            let values = if range.transposed { transpose(&values, rows, cols) } else { values };
            write_values(&values, range.stored, buf);
        }
        Ok(())
    }
}

impl ModelFiles for CheckpointFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        match self.range_at(rel, offset) {
            None => self.template.read_range(rel, offset, len),
            Some(range) => {
                let range = range?;
                let mut buf = vec![0; len.unwrap_or(range.len()) as usize];
                self.fill(range, &mut buf)?;
                Ok(buf)
            }
        }
    }

    fn read_into(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.range_at(rel, offset) {
            None => self.template.read_into(rel, offset, buf),
            Some(range) => self.fill(range?, buf),
        }
    }

    fn size(&self, rel: &str) -> Option<u64> {
        match self.networks.iter().find(|n| n.data == rel) {
            Some(n) => Some(n.ranges.last().map_or(0, |r| r.offset + r.len())),
            None => self.template.size(rel),
        }
    }

    fn describe(&self) -> String {
        self.template.describe()
    }

    fn why_absent(&self, rel: &str) -> String {
        self.template.why_absent(rel)
    }

    fn weights_identity(&self) -> Option<WeightsIdentity> {
        Some(WeightsIdentity {
            name: self.checkpoint.stem().to_string(),
            hash: self.checkpoint.short_hash(10).to_string(),
        })
    }
}

/// Elements per row (per index of the first axis) of a checkpoint tensor.
fn row_elements(entry: &TensorEntry) -> usize {
    entry.shape.iter().skip(1).product()
}

/// The model family a checkpoint's tensor names say, in words.
fn family(file: &TensorFile) -> &'static str {
    let has = |prefix: &str| file.tensors.iter().any(|(k, _)| k.starts_with(prefix));
    if has("conditioner.embedders.") {
        "SDXL, which sd.wasm does not run"
    } else if has("cond_stage_model.model.") {
        "SD 2.x"
    } else if has(CLIP_PREFIX_OLD) {
        "SD 1.x"
    } else if has("model.diffusion_model.") {
        "a UNet without a text encoder"
    } else {
        "no Stable Diffusion checkpoint"
    }
}

fn read_map(json: &serde_json::Value, dir: &str) -> std::result::Result<Network, String> {
    let weights = json.get("weights").and_then(|w| w.as_object()).ok_or("no \"weights\" object")?;
    let mut ranges = Vec::with_capacity(weights.len());
    for (initializer, entry) in weights {
        let bad = |what: &str| format!("{initializer}: {what}");
        let number = |v: &serde_json::Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        let stored = match entry.get("dtype").and_then(|v| v.as_str()) {
            Some("F32") => Stored::F32,
            Some("F16") => Stored::F16,
            _ => return Err(bad("dtype is not F32 or F16")),
        };
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|dims| dims.iter().map(number).collect())
            .ok_or_else(|| bad("no shape"))?;
        let rows = match entry.get("rows").and_then(|v| v.as_array()).map(|r| r.iter().map(number).collect::<Vec<_>>())
        {
            None => None,
            Some(r) => match r[..] {
                [Some(a), Some(b)] if a < b => Some((a, b)),
                _ => return Err(bad("rows is not [first, end]")),
            },
        };
        let transposed = entry.get("transposed").and_then(|v| v.as_bool()).ok_or_else(|| bad("no transposed"))?;
        if transposed && shape.len() != 2 {
            return Err(bad("only a matrix is stored transposed"));
        }
        ranges.push(Range {
            offset: entry.get("offset").and_then(|v| v.as_u64()).ok_or_else(|| bad("no offset"))?,
            stored,
            shape,
            key: entry.get("key").and_then(|v| v.as_str()).ok_or_else(|| bad("no key"))?.to_string(),
            rows,
            transposed,
        });
    }
    ranges.sort_by_key(|r| r.offset);
    if ranges.windows(2).any(|w| w[0].offset + w[0].len() > w[1].offset) {
        return Err("its weights overlap".into());
    }
    Ok(Network { data: format!("{dir}/model.onnx_data"), ranges })
}
