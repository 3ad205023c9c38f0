//! LoRAs named in prompts, as Automatic1111 users write them: `<lora:NAME:WEIGHT>` loads
//! NAME.safetensors from the LoRA folder — `--lora-dir`, else `loras/` beside the model dir
//! (`/loras` when the model dir is `/models`, as under wasmtime or Bacalhau with a second
//! mount). The tags stay in the prompt (the pipeline takes them out before tokenizing), so the
//! picture records them as Automatic1111 does.

use super::args::CliArgs;
use crate::error::{Result, SdError};
use crate::model_dir::{DirFiles, ModelFiles};
use crate::models::lora::{Lora, LoraFile};
use crate::request::GenerateRequest;
use std::path::PathBuf;
use std::sync::Arc;

/// The folder `<lora:NAME>` tags are looked up in.
pub fn lora_dir(cli: &CliArgs) -> PathBuf {
    cli.lora_dir.clone().unwrap_or_else(|| match cli.models.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("loras"),
        _ => PathBuf::from("loras"),
    })
}

/// Adds the LoRAs the request's prompts name by tag. A tag naming a LoRA given by `--lora` as
/// well is that LoRA (a record read back with `--params-from` plus the same `--lora` does not
/// merge it twice); with another weight it is an error, since the record could not say which.
pub fn add_prompt_loras(request: &mut GenerateRequest, dir: &std::path::Path) -> Result<()> {
    let mut folder: Option<Arc<dyn ModelFiles>> = None;
    let prompts = [Some(request.prompt.as_str()), request.negative_prompt.as_deref()];
    let tags = prompts
        .into_iter()
        .flatten()
        .map(crate::prompt::lora_tags)
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(|e| SdError::usage(format!("«prompt»: {e}")))?;
    for tag in tags.into_iter().flatten() {
        if let Some(given) = request.loras.iter().find(|l| l.name == tag.name) {
            if given.scale != tag.scale {
                return Err(SdError::usage(format!(
                    "«loras» gives {} weight {}, but the prompt's <lora:{}:{}> weight {}: give one",
                    tag.name, given.scale, tag.name, tag.scale, tag.scale
                )));
            }
            continue;
        }
        let rel = format!("{}.safetensors", tag.name);
        if tag.name.contains(['/', '\\']) || tag.name.starts_with('.') {
            return Err(SdError::usage(format!("<lora:{}>: a LoRA name is a file name in the LoRA folder", tag.name)));
        }
        let files = match &folder {
            Some(files) => files.clone(),
            None => {
                let opened: Arc<dyn ModelFiles> = Arc::new(DirFiles::open(dir).map_err(|_| not_found(&tag.name, dir))?);
                folder.insert(opened).clone()
            }
        };
        if !files.exists(&rel) {
            return Err(not_found(&tag.name, dir));
        }
        let file = LoraFile::open(files, &rel)?;
        request.loras.push(Lora { name: tag.name, scale: tag.scale, file: Arc::new(file) });
    }
    Ok(())
}

fn not_found(name: &str, dir: &std::path::Path) -> SdError {
    SdError::usage(format!(
        "the prompt names <lora:{name}:…>, but {}/{name}.safetensors is not there: put it there, or pass \
         --lora-dir DIR (under wasmtime, map it with --dir HOST::/loras)",
        dir.display()
    ))
}
