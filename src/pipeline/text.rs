//! Stage 2: prompts → token chunks (no network) → text embeddings (the text encoder), as
//! Automatic1111 makes them: its emphasis syntax, any length in 77-id chunks encoded one by
//! one and concatenated along the sequence, each chunk's weights applied to the encoder's
//! output with the chunk's mean restored, and its "Clip skip".

use super::events::Run;
use super::slot::Slot;
use crate::error::{Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::models::lora::{LoraKey, Merges};
use crate::models::TextEncoder;
use crate::prompt::{self, Chunk};
use crate::request::GenerateRequest;
use crate::tensor::Latents;
use crate::tokenizer::ClipTokenizer;
use ndarray::Axis;

/// One request's prompts as token chunks. With guidance, both prompts have the same number
/// of chunks: the shorter is padded with empty chunks, as Automatic1111 does with its option
/// "Pad prompt/negative prompt" on, so one UNet (pinned to one text shape) serves both passes.
/// Its default runs the two at their own lengths, which would need a second UNet here: when
/// the chunk counts differ, pictures differ from its default's.
pub struct Tokens {
    pub cond: Vec<Chunk>,
    /// The negative prompt's chunks, when guidance runs an unconditional pass.
    pub uncond: Option<Vec<Chunk>>,
    /// Automatic1111's "Clip skip" (1: the last layer).
    pub clip_skip: usize,
    /// The two prompts' chunk counts differed and the shorter was padded.
    pub padded: bool,
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

/// The model dir's tokenizer, which must make the 77 ids ([`prompt::chunks`]) a CLIP text
/// encoder takes.
pub fn load_tokenizer(dir: &ModelDir) -> Result<ClipTokenizer> {
    let tokenizer = ClipTokenizer::from_files(&dir.tokenizer)
        .map_err(|e| SdError::model(format!("{}/tokenizer: {e}", dir.files.describe())))?;
    if tokenizer.max_length() != prompt::CHUNK_TOKENS + 2 {
        return Err(SdError::model(format!(
            "{}/tokenizer/tokenizer_config.json: model_max_length {}; a CLIP text encoder takes {}",
            dir.files.describe(),
            tokenizer.max_length(),
            prompt::CHUNK_TOKENS + 2
        )));
    }
    Ok(tokenizer)
}

/// The Clip skip that applies. Automatic1111 applies it to SD 1.x's CLIP text encoder only:
/// SD 2.x's OpenCLIP encoder always ends at its penultimate layer (where diffusers' export of
/// it already ends) and a Clip skip is ignored; so here, with a warning. OpenCLIP encoders
/// are the ones with `hidden_act` "gelu" (CLIP's is "quick_gelu").
pub fn clip_skip(dir: &ModelDir, req: &GenerateRequest, run: &mut Run) -> Result<usize> {
    if req.clip_skip <= 1 {
        return Ok(1);
    }
    let config = dir.files.read_json_optional("text_encoder/config.json")?;
    if config.as_ref().and_then(|c| c.get("hidden_act")?.as_str()) == Some("gelu") {
        run.warn(format!(
            "«clip_skip» {} is ignored: this is an SD 2.x (OpenCLIP) text encoder, whose penultimate layer is used always, as Automatic1111 does",
            req.clip_skip
        ));
        return Ok(1);
    }
    Ok(req.clip_skip)
}

/// The prompt (and the negative prompt when `guided`) as chunks, to be encoded with
/// `clip_skip` ([`clip_skip`]).
/// Automatic1111's extra-network tags (`<lora:NAME:W>`) are taken out of both prompts first:
/// the front end resolved the LoRAs they name into «loras»; a tag naming none of those is
/// warned about.
pub fn tokenize(
    tokenizer: &ClipTokenizer,
    req: &GenerateRequest,
    guided: bool,
    clip_skip: usize,
    run: &mut Run,
) -> Result<Tokens> {
    let mut chunks = |text: &str| {
        let (text, tags) = prompt::extra_networks(text);
        for tag in tags {
            let name = tag.args.first().map_or("", |n| n.trim());
            if tag.kind != "lora" || !req.loras.iter().any(|l| l.name == name) {
                run.warn(format!("<{}:{}> is ignored: no such LoRA was loaded", tag.kind, tag.args.join(":")));
            }
        }
        prompt::chunks(tokenizer, &text).map_err(SdError::usage)
    };
    let mut cond = chunks(&req.prompt)?;
    let mut uncond = if guided { Some(chunks(req.negative_prompt.as_deref().unwrap_or(""))?) } else { None };
    let mut padded = false;
    if let Some(uncond) = &mut uncond {
        let n = cond.len().max(uncond.len());
        padded = cond.len() != uncond.len();
        for shorter in [&mut cond, uncond] {
            shorter.resize(n, prompt::empty_chunk(tokenizer));
        }
    }
    Ok(Tokens { cond, uncond, clip_skip, padded })
}

/// The text encoder, kept for every request of a job: one per (clip skip, LoRAs merged into
/// it). Every chunk has the same 77 ids.
pub type EncoderSlot = Slot<(usize, LoraKey), TextEncoder>;

pub fn encoder_slot() -> EncoderSlot {
    Slot::new("text encoder")
}

/// One request's embeddings, from the slot's text encoder (loaded on first use).
pub fn encode(
    slot: &mut EncoderSlot,
    files: &dyn ModelFiles,
    tokens: &Tokens,
    loras: &Merges,
    run: &mut Run,
) -> Result<Embeddings> {
    let key = (tokens.clip_skip, loras.key.clone());
    let (encoder, seconds) = slot.get(key, run, |&(clip_skip, _)| {
        TextEncoder::load(files, prompt::CHUNK_TOKENS + 2, clip_skip, &loras.text_encoder)
    })?;
    run.timings.load_text_encoder += seconds;
    let start = run.now();
    let cond = encode_chunks(encoder, &tokens.cond)?;
    let uncond = tokens.uncond.as_ref().map(|chunks| encode_chunks(encoder, chunks)).transpose()?;
    run.tensor("text embeddings (text encoder output, prompt)", &cond)?;
    if let Some(uncond) = &uncond {
        run.tensor("text embeddings (text encoder output, negative prompt)", uncond)?;
    }
    run.timings.text_encoding += run.now() - start;
    let embeddings = Embeddings { cond, uncond };
    embeddings.text_shape()?;
    Ok(embeddings)
}

/// Each chunk through the encoder, weighted, then all of them along the sequence axis.
fn encode_chunks(encoder: &TextEncoder, chunks: &[Chunk]) -> Result<Latents> {
    let encoded = chunks
        .iter()
        .map(|chunk| {
            let mut z = encoder.encode(&chunk.ids)?;
            if chunk.weighted() {
                emphasize(&mut z, &chunk.weights);
            }
            Ok(z)
        })
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<_> = encoded.iter().map(|z| z.view()).collect();
    ndarray::concatenate(Axis(1), &views).map_err(|e| SdError::runtime(format!("text embeddings: {e}")))
}

/// Automatic1111's "Original" emphasis on one chunk's output z [1, tokens, dim]: each token's
/// vector times its weight, then all of z rescaled so that its mean is what it was before.
/// (Weights all 1 leave z as it is, so that case is skipped by the caller.)
pub fn emphasize(z: &mut Latents, weights: &[f32]) {
    let mean = |z: &Latents| z.iter().map(|&v| v as f64).sum::<f64>() / z.len() as f64;
    let original = mean(z);
    for (mut token, &w) in z.axis_iter_mut(Axis(1)).zip(weights) {
        token.mapv_inplace(|v| v * w);
    }
    let restore = (original / mean(z)) as f32;
    z.mapv_inplace(|v| v * restore);
}
