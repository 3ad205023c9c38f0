//! A safetensors file reached through [`ModelFiles`] (a LoRA, a single-file checkpoint, a VAE
//! file): its header read and checked once, its content hashed as Automatic1111 hashes it, each
//! tensor read when it is used, so a file is never in memory whole.

use crate::codecs::safetensors::{self, TensorEntry};
use crate::codecs::sha256::{hex, Sha256};
use crate::error::{Result, SdError};
use crate::model_dir::ModelFiles;
use std::sync::Arc;

pub struct TensorFile {
    files: Arc<dyn ModelFiles>,
    rel: String,
    /// What the file is to the user, for messages ("LoRA", "checkpoint").
    kind: &'static str,
    /// In the header's order: sorted by name (serde_json's map), else searched one by one.
    pub tensors: Vec<(String, TensorEntry)>,
    /// SHA-256 (hex) of what Automatic1111 hashes: a LoRA's data after the header, a
    /// checkpoint's whole file (empty until [`TensorFile::hash_now`] for [`Hashed::Later`]).
    pub hash: String,
    data_start: u64,
    size: u64,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorFile({}, {} tensors, {})", self.describe(), self.tensors.len(), self.hash.get(..12).unwrap_or("not hashed"))
    }
}

/// Bytes hashed per read: the file is never in memory whole.
const HASH_CHUNK: u64 = 16 << 20;

/// Which bytes of the file its hash covers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// After the header: Automatic1111's hash of a LoRA (its "Lora hashes").
    Data,
    /// All of it: Automatic1111's "Model hash" of a checkpoint.
    Whole,
    /// Not when opened: [`TensorFile::hash_now`] once the file is known to fit (a checkpoint's
    /// gigabytes take seconds to hash).
    Later,
}

impl TensorFile {
    /// Reads and checks the header of `rel` in `files` and hashes it; a file that is not
    /// safetensors, truncated or inconsistent is a usage error naming it as a `kind`.
    pub fn open(files: Arc<dyn ModelFiles>, rel: &str, kind: &'static str, hashed: Hashed) -> Result<Self> {
        let path = format!("{}/{rel}", files.describe().trim_end_matches('/'));
        let bad = |why: String| SdError::usage(format!("{kind} {path}: {why}"));
        let size = files.size(rel).ok_or_else(|| bad(files.why_absent(rel)))?;
        let first = files.read_range(rel, 0, Some(8.min(size)))?;
        let len = safetensors::header_len(&first, size).map_err(bad)?;
        let header = safetensors::parse_header(&files.read_range(rel, 8, Some(len))?, size).map_err(bad)?;
        let (tensors, data_start) = (header.tensors, header.data_start);
        let mut file = TensorFile { files, rel: rel.to_string(), kind, tensors, hash: String::new(), data_start, size };
        if hashed != Hashed::Later {
            file.hash_now(hashed)?;
        }
        Ok(file)
    }

    /// Hashes the file (the part `hashed` says), a chunk at a time.
    pub fn hash_now(&mut self, hashed: Hashed) -> Result<()> {
        let mut sha = Sha256::new();
        let mut offset = if hashed == Hashed::Data { self.data_start } else { 0 };
        while offset < self.size {
            let n = HASH_CHUNK.min(self.size - offset);
            sha.update(&self.files.read_range(&self.rel, offset, Some(n))?);
            offset += n;
        }
        self.hash = hex(&sha.finish());
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.files.describe().trim_end_matches('/'), self.rel)
    }

    /// The file's name without its folder and extension (Automatic1111's names for LoRAs and models).
    pub fn stem(&self) -> &str {
        let name = self.rel.rsplit('/').next().unwrap_or(&self.rel);
        name.rsplit_once('.').map_or(name, |(stem, _)| stem)
    }

    /// The first `digits` hex digits of the hash: Automatic1111 records 12 of a LoRA's ("Lora
    /// hashes"), 10 of a checkpoint's ("Model hash").
    pub fn short_hash(&self, digits: usize) -> &str {
        &self.hash[..digits]
    }

    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        // Vectors and scans rather than hash maps and sorts: each of those is code in a module
        // that must stay under 10 MB.
        match self.tensors.binary_search_by(|(name, _)| name.as_str().cmp(key)) {
            Ok(i) => Some(&self.tensors[i].1),
            Err(_) => self.tensors.iter().find(|(name, _)| name == key).map(|(_, e)| e),
        }
    }

    /// The bytes of elements `start..start + count` of tensor `key` (row-major), and its dtype.
    pub fn read_range(&self, key: &str, start: usize, count: usize) -> Result<(Vec<u8>, &str)> {
        let entry = self.entry(key).ok_or_else(|| self.error(format!("no tensor {key}")))?;
        let size = (entry.end - entry.start) / entry.shape.iter().product::<usize>().max(1) as u64;
        let (first, bytes) = (entry.start + start as u64 * size, count as u64 * size);
        if first + bytes > entry.end {
            return Err(self.error(format!("{key} has fewer than {} elements", start + count)));
        }
        Ok((self.files.read_range(&self.rel, first, Some(bytes))?, &entry.dtype))
    }

    /// Elements `start..start + count` of tensor `key` (row-major), as f32.
    pub fn read_f32_range(&self, key: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let (data, dtype) = self.read_range(key, start, count)?;
        safetensors::to_f32(dtype, &data).map_err(|e| self.error(format!("{key}: {e}")))
    }

    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let count = self.entry(key).map_or(0, |e| e.shape.iter().product());
        self.read_f32_range(key, 0, count)
    }

    /// A usage error about this file.
    pub fn error(&self, why: String) -> SdError {
        SdError::usage(format!("{} {}: {why}", self.kind, self.describe()))
    }
}
