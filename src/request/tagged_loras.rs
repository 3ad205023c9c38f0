//! LoRAs named in prompts, as Automatic1111 users write them: `<lora:NAME:WEIGHT>` loads
//! NAME.safetensors from a LoRA folder. The front end says where that folder is (the CLI:
//! `--lora-dir` or `loras/` beside the model dir; the page: the LoRA files picked) and how to
//! say that a name is missing there. The tags stay in the prompt (the pipeline takes them out
//! before tokenizing), so the picture records them as Automatic1111 does.

use super::GenerateRequest;
use crate::error::{Result, SdError};
use crate::model_dir::ModelFiles;
use crate::models::lora::{open_lora, Lora, LoraFile};
use std::sync::Arc;

/// Opens the LoRA folder on the first tag that needs it.
pub type OpenFolder = Box<dyn FnMut() -> Result<Arc<dyn ModelFiles>>>;
/// The error for a name with no file in the folder (in the front end's words).
pub type NotFound = Box<dyn Fn(&str) -> SdError>;

/// The LoRAs that prompts' tags load, from one folder. Each file is opened (its header read,
/// its content hashed: seconds for a large one) once for all the requests of a job, not once
/// per request that names it.
pub struct TaggedLoras {
    open_folder: OpenFolder,
    not_found: NotFound,
    folder: Option<Arc<dyn ModelFiles>>,
    opened: Vec<(String, Arc<LoraFile>)>,
}

impl TaggedLoras {
    pub fn new(open_folder: OpenFolder, not_found: NotFound) -> Self {
        TaggedLoras { open_folder, not_found, folder: None, opened: Vec::new() }
    }

    /// Adds the LoRAs the request's prompts name by tag. A tag naming a LoRA given in
    /// «loras» as well is that LoRA (a record read back with the same LoRA given does not
    /// merge it twice); with another weight it is an error, since the record could not say
    /// which.
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
                let opened = (self.open_folder)().map_err(|_| (self.not_found)(name))?;
                self.folder.insert(opened).clone()
            }
        };
        let rel = format!("{name}.safetensors");
        if !files.exists(&rel) {
            return Err((self.not_found)(name));
        }
        let file = Arc::new(open_lora(files, &rel)?);
        self.opened.push((name.to_string(), file.clone()));
        Ok(file)
    }
}
