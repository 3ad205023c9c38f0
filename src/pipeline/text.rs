//! Stage 2: prompts → token ids (no network) → text embeddings (the text encoder).

use super::events::Run;
use super::slot::Slot;
use crate::error::{Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::models::TextEncoder;
use crate::request::GenerateRequest;
use crate::tensor::Latents;
use crate::tokenizer::ClipTokenizer;

/// One request's prompts as token ids.
pub struct Tokens {
    pub cond: Vec<i64>,
    /// The negative prompt's ids, when guidance runs an unconditional pass.
    pub uncond: Option<Vec<i64>>,
}

/// The text encoder's outputs: [1, tokens, dim] each.
pub struct Embeddings {
    pub cond: Latents,
    pub uncond: Option<Latents>,
}

impl Embeddings {
    /// [tokens, dim].
    pub fn text_shape(&self) -> Result<[usize; 2]> {
        match *self.cond.shape() {
            [1, tokens, dim] => Ok([tokens, dim]),
            ref other => Err(SdError::model(format!("text encoder output has shape {other:?}; expected [1, tokens, dim]"))),
        }
    }
}

pub fn load_tokenizer(dir: &ModelDir) -> Result<ClipTokenizer> {
    ClipTokenizer::from_files(&dir.tokenizer).map_err(|e| SdError::model(format!("{}/tokenizer: {e}", dir.files.describe())))
}

/// Tokenizes the prompt (and the negative prompt when `guided`), warning about cut text.
pub fn tokenize(tokenizer: &ClipTokenizer, req: &GenerateRequest, guided: bool, run: &mut Run) -> Result<Tokens> {
    let cond = tokenizer.encode_padded(&req.prompt).map_err(SdError::runtime)?;
    if let Some(removed) = &cond.removed_text {
        run.warn(format!(
            "the prompt is longer than the text encoder's {} tokens; this part was cut off: {removed:?}",
            cond.ids.len()
        ));
    }
    let uncond = if guided {
        let neg = tokenizer.encode_padded(req.negative_prompt.as_deref().unwrap_or("")).map_err(SdError::runtime)?;
        if let Some(removed) = &neg.removed_text {
            run.warn(format!("the negative prompt was cut off after {} tokens: {removed:?}", neg.ids.len()));
        }
        Some(neg.ids)
    } else {
        None
    };
    Ok(Tokens { cond: cond.ids, uncond })
}

/// The text encoder, kept for every request of a job.
pub type EncoderSlot = Slot<usize, TextEncoder>;

pub fn encoder_slot() -> EncoderSlot {
    Slot::new("text encoder")
}

/// One request's embeddings, from the slot's text encoder (loaded on first use).
pub fn encode(slot: &mut EncoderSlot, files: &dyn ModelFiles, tokens: &Tokens, run: &mut Run) -> Result<Embeddings> {
    let (encoder, seconds) = slot.get(tokens.cond.len(), run, |&seq_len| TextEncoder::load(files, seq_len))?;
    run.timings.load_text_encoder += seconds;
    let start = run.now();
    let cond = encoder.encode(&tokens.cond)?;
    let uncond = tokens.uncond.as_ref().map(|ids| encoder.encode(ids)).transpose()?;
    run.tensor("text embeddings (text encoder output, prompt)", &cond)?;
    if let Some(uncond) = &uncond {
        run.tensor("text embeddings (text encoder output, negative prompt)", uncond)?;
    }
    run.timings.text_encoding += run.now() - start;
    let embeddings = Embeddings { cond, uncond };
    embeddings.text_shape()?;
    Ok(embeddings)
}
