//! LoRAs named in prompts, as Automatic1111 users write them: `<lora:NAME:WEIGHT>` loads
//! NAME.safetensors from the LoRA folder — `--lora-dir`, else `loras/` beside the model dir
//! (`/loras` when the model dir is `/models`, as under wasmtime or Bacalhau with a second
//! mount). The tags stay in the prompt (the pipeline takes them out before tokenizing), so the
//! picture records them as Automatic1111 does.

use super::args::CliArgs;
use crate::error::{Result, SdError};
use crate::model_dir::{DirFiles, ModelFiles};
use crate::models::lora::{open_lora, Lora, LoraFile};
use crate::request::GenerateRequest;
use std::path::PathBuf;
use std::sync::Arc;

/// The LoRAs that prompts' `<lora:NAME>` tags load, from one folder. Each file is opened (its
/// header read, its content hashed: seconds for a large one) once for all the lines of a
/// `--prompts` job, not once per line that names it.
pub struct TaggedLoras {
    dir: PathBuf,
    folder: Option<Arc<dyn ModelFiles>>,
    opened: Vec<(String, Arc<LoraFile>)>,
}

impl TaggedLoras {
    /// Tags are looked up in `--lora-dir`, else `loras/` beside the model dir.
    pub fn new(cli: &CliArgs) -> Self {
        let dir = cli.lora_dir.clone().unwrap_or_else(|| match cli.models.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join("loras"),
            _ => PathBuf::from("loras"),
        });
        TaggedLoras { dir, folder: None, opened: Vec::new() }
    }

    /// Adds the LoRAs the request's prompts name by tag. A tag naming a LoRA given by `--lora`
    /// as well is that LoRA (a record read back with `--params-from` plus the same `--lora`
    /// does not merge it twice); with another weight it is an error, since the record could not
    /// say which.
    pub fn add_to(&mut self, request: &mut GenerateRequest) -> Result<()> {
        let tags = crate::prompt::request_lora_tags(&request.prompt, request.negative_prompt.as_deref())
            .map_err(|e| SdError::usage(format!("«prompt»: {e}")))?;
        for tag in tags {
            if let Some(given) = request.loras.iter().find(|l| l.name == tag.name) {
                if given.scale != tag.scale {
                    return Err(SdError::usage(format!(
                        "«loras» gives {} weight {}, but the prompt's <lora:{}:{}> weight {}: give one",
                        tag.name, given.scale, tag.name, tag.scale, tag.scale
                    )));
                }
                continue;
            }
            let file = self.open(&tag.name)?;
            request.loras.push(Lora { name: tag.name, scale: tag.scale, file });
        }
        Ok(())
    }

    /// NAME.safetensors from the folder, opened on its first use.
    fn open(&mut self, name: &str) -> Result<Arc<LoraFile>> {
        if let Some((_, file)) = self.opened.iter().find(|(n, _)| n == name) {
            return Ok(file.clone());
        }
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(SdError::usage(format!("<lora:{name}>: a LoRA name is a file name in the LoRA folder")));
        }
        let files = match &self.folder {
            Some(files) => files.clone(),
            None => {
                let opened: Arc<dyn ModelFiles> =
                    Arc::new(DirFiles::open(&self.dir).map_err(|_| not_found(name, &self.dir))?);
                self.folder.insert(opened).clone()
            }
        };
        let rel = format!("{name}.safetensors");
        if !files.exists(&rel) {
            return Err(not_found(name, &self.dir));
        }
        let file = Arc::new(open_lora(files, &rel)?);
        self.opened.push((name.to_string(), file.clone()));
        Ok(file)
    }
}

fn not_found(name: &str, dir: &std::path::Path) -> SdError {
    SdError::usage(format!(
        "the prompt names <lora:{name}:…>, but {}/{name}.safetensors is not there: put it there, or pass \
         --lora-dir DIR (under wasmtime, map it with --dir HOST::/loras)",
        dir.display()
    ))
}
