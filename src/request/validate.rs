//! The one validation of a request: every row's own check, then the rules between fields.
//! Runs in the library before any loading, whoever built the request.

use super::{GenerateRequest, PARAMS};
use crate::error::{Result, SdError};

pub fn validate(request: &GenerateRequest) -> Result<()> {
    for param in PARAMS {
        param.check(request)?;
    }
    let usage = |template: String| Err(SdError::usage(template));
    if request.init_image.is_none() {
        if request.mask.is_some() {
            return usage("«mask» needs «init_image» (the picture to inpaint)".into());
        }
        if let Some(s) = request.strength {
            return usage(format!(
                "«strength» {s} needs «init_image» (image-to-image; a recorded strength comes from a picture that had one)"
            ));
        }
    } else if request.latents.is_some() {
        return usage("«latents» and «init_image» cannot be combined: the init image makes the latents".into());
    }
    if request.seed.checked_add(request.num_images as u64 - 1).is_none() {
        return usage("«seed» + «num_images» goes past the largest seed".into());
    }
    if let (Some(a), Some(b)) = (request.beta_start, request.beta_end) {
        if a > b {
            return usage(format!("«beta_start» {a} is larger than «beta_end» {b}"));
        }
    }
    Ok(())
}
