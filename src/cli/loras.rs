//! Where the command line's `<lora:NAME:WEIGHT>` tags find their files: `--lora-dir`, else
//! `loras/` beside the model dir (`/loras` when the model dir is `/models`, as under wasmtime or
//! Bacalhau with a second mount). The tags themselves: [`TaggedLoras`].

use super::args::CliArgs;
use crate::error::SdError;
use crate::model_dir::{DirFiles, ModelFiles};
use crate::request::TaggedLoras;
use std::path::PathBuf;
use std::sync::Arc;

/// The prompts' LoRAs, looked up in `--lora-dir`, else `loras/` beside the model dir.
pub fn tagged_loras(cli: &CliArgs) -> TaggedLoras {
    let dir = cli.lora_dir.clone().unwrap_or_else(|| match cli.models.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("loras"),
        _ => PathBuf::from("loras"),
    });
    let folder = dir.clone();
    TaggedLoras::new(
        Box::new(move || Ok(Arc::new(DirFiles::open(&folder)?) as Arc<dyn ModelFiles>)),
        Box::new(move |name| not_found(name, &dir)),
    )
}

fn not_found(name: &str, dir: &std::path::Path) -> SdError {
    SdError::usage(format!(
        "the prompt names <lora:{name}:…>, but {}/{name}.safetensors is not there: put it there, or pass \
         --lora-dir DIR (under wasmtime, map it with --dir HOST::/loras)",
        dir.display()
    ))
}
