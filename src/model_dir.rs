//! The model directory as diffusers/optimum lay out ONNX pipelines. Reading goes through
//! [`ModelFiles`]: a real directory for the WASI/native CLI, a map of bytes in a browser.
//! This trait is the only place where the platforms differ.

use crate::error::{Result, SdError};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Read access to the files of a model dir, by path relative to its root ("unet/model.onnx").
pub trait ModelFiles: Send + Sync {
    /// Reads `len` bytes at `offset` (all of the rest when `len` is None).
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>>;
    fn size(&self, rel: &str) -> Option<u64>;
    /// Fills `buf` from `offset` (weights go straight into the tensor that keeps them).
    fn read_into(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(&self.read_range(rel, offset, Some(buf.len() as u64))?);
        Ok(())
    }
    /// A human-readable name for messages ("/models").
    fn describe(&self) -> String;

    /// Where the weights come from when not from the model dir's own files (a single-file
    /// checkpoint): what the records name as the model.
    fn weights_identity(&self) -> Option<WeightsIdentity> {
        None
    }

    fn exists(&self, rel: &str) -> bool {
        self.size(rel).is_some()
    }
    /// Why a file that does not [`exists`](Self::exists) cannot be read ("is missing").
    fn why_absent(&self, _rel: &str) -> String {
        "is missing".into()
    }
    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        self.read_range(rel, 0, None)
    }
    fn read_optional(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        if self.exists(rel) {
            self.read(rel).map(Some)
        } else {
            Ok(None)
        }
    }
    fn read_json(&self, rel: &str) -> Result<serde_json::Value> {
        let bytes = self.read(rel)?;
        serde_json::from_slice(&python_json_literals(&bytes)).map_err(|e| {
            SdError::model(format!("{}/{rel} is not valid JSON ({e}); re-export the model dir", self.describe()))
        })
    }
    fn read_json_optional(&self, rel: &str) -> Result<Option<serde_json::Value>> {
        if self.exists(rel) {
            self.read_json(rel).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A checkpoint's name (its file stem) and Automatic1111's short "Model hash" of it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsIdentity {
    pub name: String,
    pub hash: String,
}

/// Python's json module writes `Infinity`, `-Infinity` and `NaN` (diffusers saves DPM
/// configs with `"lambda_min_clipped": -Infinity`); JSON has no such literals. Outside strings,
/// map the infinities to ±1e308 (as good as infinite for every config value) and NaN to null.
pub fn python_json_literals(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped, mut i) = (false, false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            in_string = escaped || b != b'"';
            escaped = !escaped && b == b'\\';
        } else if b == b'"' {
            in_string = true;
        } else {
            let rest = &bytes[i..];
            let replaced: Option<(&[u8], usize)> = if rest.starts_with(b"-Infinity") {
                Some((b"-1e308", 9))
            } else if rest.starts_with(b"Infinity") {
                Some((b"1e308", 8))
            } else if rest.starts_with(b"NaN") {
                Some((b"null", 3))
            } else {
                None
            };
            if let Some((with, len)) = replaced {
                out.extend_from_slice(with);
                i += len;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// A model dir on a file system (native, or WASI preopens under wasmtime/wazero).
pub struct DirFiles {
    root: PathBuf,
}

/// One read call per chunk: wasmtime 49 fails a single ~200 MB read with ENOMEM.
const READ_CHUNK: usize = 16 << 20;

fn read_chunked(file: &mut std::fs::File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    for chunk in buf.chunks_mut(READ_CHUNK) {
        file.read_exact(chunk)?;
    }
    Ok(())
}

impl DirFiles {
    /// The folder that holds the file at `path`, and the file's name in it.
    pub fn file(path: &Path) -> std::result::Result<(std::sync::Arc<dyn ModelFiles>, String), String> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| format!("{} names no file", path.display()))?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let folder = DirFiles::open(parent).map_err(|_| format!("{}: its folder cannot be read", path.display()))?;
        Ok((std::sync::Arc::new(folder), name))
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(DirFiles { root }),
            Ok(_) => Err(SdError::model(format!(
                "model dir {} is not a directory; pass --models DIR with the exported pipeline",
                root.display()
            ))),
            Err(e) => Err(SdError::model(format!(
                "model dir {} cannot be read ({e}); pass --models DIR (under wasmtime, map it with --dir HOST::{})",
                root.display(),
                root.display()
            ))),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl ModelFiles for DirFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        let path = self.root.join(rel);
        let fail = |what: &str, e: std::io::Error| {
            SdError::model(format!("{}: {what} failed ({e})", path.display()))
        };
        let mut file = std::fs::File::open(&path).map_err(|e| fail("open", e))?;
        let size = file.metadata().map_err(|e| fail("stat", e))?.len();
        if offset > size || len.is_some_and(|l| offset + l > size) {
            return Err(SdError::model(format!(
                "{} is truncated: {} bytes, but the model refers to bytes {}..{}; copy or export it again",
                path.display(),
                size,
                offset,
                offset + len.unwrap_or(0)
            )));
        }
        let len = len.unwrap_or(size - offset) as usize;
        let mut buf = Vec::new();
        crate::error::fallible(|| buf.try_reserve_exact(len)).map_err(|_| {
            SdError::runtime(format!("out of memory reading {} ({} MB): {}", path.display(), len >> 20, crate::error::MORE_MEMORY))
        })?;
        buf.resize(len, 0);
        read_chunked(&mut file, offset, &mut buf).map_err(|e| fail("read", e))?;
        Ok(buf)
    }

    fn read_into(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let path = self.root.join(rel);
        let mut file = std::fs::File::open(&path)
            .map_err(|e| SdError::model(format!("{}: open failed ({e})", path.display())))?;
        read_chunked(&mut file, offset, buf).map_err(|e| {
            SdError::model(format!("{}: read of {} bytes at {offset} failed ({e}); copy or export it again", path.display(), buf.len()))
        })
    }

    fn size(&self, rel: &str) -> Option<u64> {
        std::fs::metadata(self.root.join(rel)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// A symbolic link whose target is out of reach (outside the directory mounted into the
    /// module, or dangling) is there, but cannot be read: "missing" would send the user looking
    /// for a file they can see.
    fn why_absent(&self, rel: &str) -> String {
        let path = self.root.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(&path) {
                Err(e) => format!(
                    "is a symbolic link whose target cannot be reached ({e}): under wasmtime or Bacalhau a link \
                     may not point outside the mounted directory; copy the file into the model dir"
                ),
                Ok(_) => "is a symbolic link to something that is not a file".into(),
            },
            Ok(m) if !m.is_file() => "is not a file".into(),
            _ => "is missing".into(),
        }
    }
}

/// A model dir held in memory (browser: fetched or picked files).
#[derive(Default)]
pub struct MemoryFiles {
    pub name: String,
    pub files: HashMap<String, Vec<u8>>,
}

impl ModelFiles for MemoryFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        let data = self
            .files
            .get(rel)
            .ok_or_else(|| SdError::model(format!("{}: missing file {rel}", self.name)))?;
        let start = offset as usize;
        let end = len.map(|l| start + l as usize).unwrap_or(data.len());
        data.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
            SdError::model(format!("{}/{rel} is truncated ({} bytes, need {end})", self.name, data.len()))
        })
    }
    fn size(&self, rel: &str) -> Option<u64> {
        self.files.get(rel).map(|d| d.len() as u64)
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// What the pipeline needs to know about a model dir before loading any network.
pub struct ModelDir<'a> {
    pub files: &'a dyn ModelFiles,
    pub scheduler_config: serde_json::Value,
    pub unet_config: Option<serde_json::Value>,
    pub vae_config: Option<serde_json::Value>,
    pub tokenizer: crate::tokenizer::TokenizerFiles,
    /// Short stable identity of the model dir (configs, tokenizer and file sizes), for metadata.
    pub identity: String,
}

pub const TEXT_ENCODER: &str = "text_encoder/model.onnx";
pub const UNET: &str = "unet/model.onnx";
pub const VAE_DECODER: &str = "vae_decoder/model.onnx";
pub const VAE_ENCODER: &str = "vae_encoder/model.onnx";

impl<'a> ModelDir<'a> {
    pub fn open(files: &'a dyn ModelFiles) -> Result<Self> {
        let dir = files.describe();
        for required in ["scheduler/scheduler_config.json", TEXT_ENCODER, UNET, VAE_DECODER] {
            if !files.exists(required) {
                return Err(SdError::model(format!(
                    "{dir} is not a diffusers ONNX model dir: {required} {} (export with \
                     optimum-cli export onnx, or scripts/make_fixtures.py for the tiny test model)",
                    files.why_absent(required)
                )));
            }
        }
        let scheduler_config = files.read_json("scheduler/scheduler_config.json")?;
        let unet_config = files.read_json_optional("unet/config.json")?;
        let vae_config = match files.read_json_optional("vae_decoder/config.json")? {
            Some(c) => Some(c),
            None => files.read_json_optional("vae/config.json")?,
        };
        let tokenizer = tokenizer_files(files)?;
        let identity = files.weights_identity().map_or_else(|| identity(files, &tokenizer), |w| w.hash);
        Ok(ModelDir { files, scheduler_config, unet_config, vae_config, tokenizer, identity })
    }

    /// 2^(len(block_out_channels)-1), as diffusers computes `vae_scale_factor`; more than 7
    /// blocks (a factor above 64) is no VAE diffusers ships, and would overflow the shift.
    pub fn vae_scale_factor(&self) -> Result<Option<u32>> {
        let Some(blocks) = self.vae_config.as_ref().and_then(|c| c.get("block_out_channels")?.as_array()).map(Vec::len) else {
            return Ok(None);
        };
        match blocks {
            1..=7 => Ok(Some(1u32 << (blocks - 1))),
            _ => Err(SdError::model(format!(
                "{}: the VAE config's block_out_channels has {blocks} entries; expected 1 to 7 (4 in Stable Diffusion)",
                self.files.describe()
            ))),
        }
    }

    /// The VAE's `scaling_factor` (diffusers' AutoencoderKL default when the config omits it).
    pub fn vae_scaling_factor(&self) -> Result<f32> {
        let v = self.vae_config.as_ref().and_then(|c| c.get("scaling_factor")).and_then(|v| v.as_f64()).unwrap_or(0.18215);
        checked_scaling(v, "the VAE config")
    }

    /// The scaling factor of a decoder dir: TAESD has its own (1.0) in its config.json.
    pub fn decoder_scaling_factor(&self, dir: &str) -> Result<f32> {
        if dir == "vae_decoder" {
            return self.vae_scaling_factor();
        }
        let config = self.files.read_json_optional(&format!("{dir}/config.json"))?;
        let v = config.as_ref().and_then(|c| c.get("scaling_factor")).and_then(|v| v.as_f64()).unwrap_or(1.0);
        checked_scaling(v, &format!("{dir}/config.json"))
    }

    /// An integer from unet/config.json, or `default` when absent.
    pub fn unet_config_usize(&self, key: &str, default: usize) -> usize {
        config_usize(&self.unet_config, key, default)
    }

    /// An integer from the VAE's config.json, or `default` when absent.
    pub fn vae_config_usize(&self, key: &str, default: usize) -> usize {
        config_usize(&self.vae_config, key, default)
    }

    /// The width of the UNet's guidance embedding (`time_cond_proj_dim`): set in UNets distilled
    /// with guidance as an input (LCM), absent or null in every other.
    pub fn unet_guidance_embedding_dim(&self) -> Option<usize> {
        self.unet_config.as_ref()?.get("time_cond_proj_dim")?.as_u64().map(|d| d as usize)
    }

    pub fn unet_sample_size(&self) -> Option<u64> {
        let v = self.unet_config.as_ref()?.get("sample_size")?;
        v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())
    }

    /// Short name for the model: the checkpoint's, else the last component of the dir path.
    pub fn name(&self) -> String {
        if let Some(weights) = self.files.weights_identity() {
            return weights.name;
        }
        let d = self.files.describe();
        d.trim_end_matches('/').rsplit('/').next().unwrap_or(&d).to_string()
    }
}

/// Latents are divided by the scaling factor before decoding: 0 (or a non-finite or absurd
/// value) would make every pixel NaN or Inf, a black picture.
fn checked_scaling(v: f64, what: &str) -> Result<f32> {
    if v.is_finite() && v > 1e-6 && v < 1e6 {
        return Ok(v as f32);
    }
    Err(SdError::model(format!("{what}: scaling_factor {v} is not a positive number (Stable Diffusion's VAE uses 0.18215)")))
}

fn config_usize(config: &Option<serde_json::Value>, key: &str, default: usize) -> usize {
    config.as_ref().and_then(|c| c.get(key)).and_then(|v| v.as_u64()).map_or(default, |v| v as usize)
}

/// FNV-1a over the small files and the sizes of the large ones: cheap (no hashing of GBs of
/// weights) yet changes whenever the export changes shape, config or tokenizer.
fn identity(files: &dyn ModelFiles, tokenizer: &crate::tokenizer::TokenizerFiles) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for small in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "vae_decoder/config.json",
        "text_encoder/config.json",
    ] {
        if let Ok(Some(bytes)) = files.read_optional(small) {
            feed(small.as_bytes());
            feed(&bytes);
        }
    }
    // The tokenizer files are already in memory (the vocabulary is a megabyte or more).
    for (name, bytes) in [
        ("tokenizer/tokenizer.json", &tokenizer.tokenizer_json),
        ("tokenizer/vocab.json", &tokenizer.vocab_json),
        ("tokenizer/merges.txt", &tokenizer.merges_txt),
        ("tokenizer/tokenizer_config.json", &tokenizer.tokenizer_config_json),
        ("tokenizer/special_tokens_map.json", &tokenizer.special_tokens_map_json),
    ] {
        if let Some(bytes) = bytes {
            feed(name.as_bytes());
            feed(bytes);
        }
    }
    for big in [TEXT_ENCODER, UNET, VAE_DECODER, "unet/model.onnx_data", "unet/weights.pb"] {
        if let Some(size) = files.size(big) {
            feed(big.as_bytes());
            feed(&size.to_le_bytes());
        }
    }
    format!("{h:016x}")[..10].to_string()
}

/// The tokenizer folder's files, whichever of the two layouts the export wrote.
pub fn tokenizer_files(files: &dyn ModelFiles) -> Result<crate::tokenizer::TokenizerFiles> {
    let read = |name: &str| files.read_optional(&format!("tokenizer/{name}"));
    let t = crate::tokenizer::TokenizerFiles {
        tokenizer_json: read("tokenizer.json")?,
        vocab_json: read("vocab.json")?,
        merges_txt: read("merges.txt")?,
        tokenizer_config_json: read("tokenizer_config.json")?,
        special_tokens_map_json: read("special_tokens_map.json")?,
    };
    if t.tokenizer_json.is_none() && (t.vocab_json.is_none() || t.merges_txt.is_none()) {
        return Err(SdError::model(format!(
            "{}/tokenizer has neither tokenizer.json nor vocab.json + merges.txt",
            files.describe()
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::python_json_literals;

    #[test]
    fn python_literals_become_json_outside_strings() {
        let text = br#"{"a": -Infinity, "b": [Infinity, NaN], "c": "NaN -Infinity \" Infinity"}"#;
        let v: serde_json::Value = serde_json::from_slice(&python_json_literals(text)).unwrap();
        assert_eq!(v["a"], -1e308);
        assert_eq!(v["b"][0], 1e308);
        assert!(v["b"][1].is_null());
        assert_eq!(v["c"], "NaN -Infinity \" Infinity");
    }
}
