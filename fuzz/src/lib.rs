//! The fuzz targets' bodies: one function per parser sd.wasm owns, each fed arbitrary bytes.
//! A target passes when it returns (an `Err` is fine); a panic, an abort or a hang is a bug.
//! tests/library/fuzz_corpus.rs includes this file to replay fuzz/corpus/ in CI.
#![allow(dead_code)]

use sd_wasm::model_dir::{MemoryFiles, ModelDir};
use sd_wasm::request::GenerateRequest;
use sd_wasm::tokenizer::{ClipTokenizer, TokenizerFiles};

/// `--latents FILE.npy`.
pub fn npy(data: &[u8]) {
    let _ = sd_wasm::codecs::npy::read_npy(data);
}

/// `--init-image`, `--mask` and `--params-from` pictures: decoding and the text chunk.
pub fn png_input(data: &[u8]) {
    if let Ok(input) = sd_wasm::codecs::image::decode_input(data, "fuzz") {
        let image = &input.image;
        assert_eq!(image.pixels.len(), image.width as usize * image.height as usize * 3);
        let _ = sd_wasm::codecs::image::to_gray(image);
        if image.width <= 64 && image.height <= 64 {
            let _ = sd_wasm::codecs::image::resize_lanczos(image, 16, 8);
        }
    }
    let _ = sd_wasm::codecs::png::read_parameters(data);
}

/// Automatic1111's `parameters` text (`--params-from`), applied to a request and checked.
pub fn parameters(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(patch) = sd_wasm::records::parameters::parse_parameters(text) {
        let mut request = GenerateRequest::default();
        if patch.apply(&mut request).is_ok() {
            let _ = sd_wasm::request::validate(&request);
        }
    }
}

/// `--prompts` files: text lines and JSON objects.
pub fn prompts(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // File-valued keys read the file system (a line naming /dev/zero would never end): not
    // the parser under test. Escapes could spell a key, so lines with one are skipped too.
    if ["image", "mask", "latents", "\\"].iter().any(|k| text.contains(k)) {
        return;
    }
    let base = GenerateRequest { prompt: "base".into(), ..Default::default() };
    for seed in [None, Some(u64::MAX - 1)] {
        if let Ok(lines) = sd_wasm::cli::jobs::parse_prompts(text, &base, seed) {
            for line in lines {
                let _ = sd_wasm::request::validate(&line.request);
            }
        }
    }
}

/// scheduler_config.json: every scheduler it may build, its timesteps and a few steps.
pub fn scheduler_config(data: &[u8]) {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let steps = data.first().map_or(4, |b| 1 + (*b as usize % 30));
    for name in [None, Some("euler-a"), Some("dpm++2m-karras"), Some("lcm")] {
        let options = sd_wasm::schedulers::SchedulerOptions::default();
        let Ok(mut scheduler) = sd_wasm::schedulers::scheduler_from_config(name, &config, &options) else { continue };
        if scheduler.set_timesteps(steps).is_err() {
            continue;
        }
        let mut sample = ndarray::ArrayD::<f32>::ones(vec![1, 1, 2, 2]);
        let output = ndarray::ArrayD::<f32>::zeros(vec![1, 1, 2, 2]);
        for t in scheduler.timesteps().to_vec() {
            let _ = scheduler.scale_model_input(&sample, t);
            match scheduler.step(&output, t, &sample, &mut Zeros) {
                Ok(next) => sample = next,
                Err(_) => break,
            }
        }
    }
}

struct Zeros;

impl sd_wasm::tensor::NoiseSource for Zeros {
    fn randn(&mut self, shape: &[usize]) -> sd_wasm::tensor::Latents {
        ndarray::ArrayD::zeros(shape.to_vec())
    }
}

/// The model dir's configs (model_index, unet, vae, scheduler), as one plan reads them: the
/// same bytes in every config file, split at the first 0 byte into two documents.
pub fn model_configs(data: &[u8]) {
    let (a, b) = match data.iter().position(|&x| x == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let mut files = MemoryFiles { name: "fuzz".into(), ..Default::default() };
    for (path, bytes) in [
        ("model_index.json", a),
        ("unet/config.json", a),
        ("vae_decoder/config.json", b),
        ("scheduler/scheduler_config.json", b),
        ("text_encoder/model.onnx", b""),
        ("unet/model.onnx", b""),
        ("vae_decoder/model.onnx", b""),
        ("tokenizer/tokenizer.json", TINY_TOKENIZER_JSON),
    ] {
        files.files.insert(path.into(), bytes.to_vec());
    }
    let Ok(dir) = ModelDir::open(&files) else { return };
    let request = GenerateRequest { prompt: "x".into(), steps: 2, ..Default::default() };
    if let Ok(plan) = sd_wasm::pipeline::plan::plan(&dir, &request) {
        assert!(plan.width <= sd_wasm::request::MAX_SIDE && plan.height <= sd_wasm::request::MAX_SIDE);
    }
}

/// A minimal CLIP-style tokenizer.json: the fixtures in model_configs need one to open a dir.
const TINY_TOKENIZER_JSON: &[u8] = br#"{"model":{"type":"BPE","vocab":{"<|startoftext|>":0,"<|endoftext|>":1,"a":2,"b":3,"a</w>":4,"b</w>":5,"ab</w>":6,",</w>":7},"merges":["a b</w>"]},"added_tokens":[]}"#;

/// tokenizer/: tokenizer.json, or vocab.json + merges.txt (split at the first 0 byte), then
/// a prompt through it.
pub fn tokenizer(data: &[u8]) {
    let files = match data.iter().position(|&x| x == 0) {
        Some(i) => TokenizerFiles {
            vocab_json: Some(data[..i].to_vec()),
            merges_txt: Some(data[i + 1..].to_vec()),
            ..Default::default()
        },
        None => TokenizerFiles { tokenizer_json: Some(data.to_vec()), ..Default::default() },
    };
    if let Ok(tokenizer) = ClipTokenizer::from_files(&files) {
        let _ = tokenizer.encode_padded("a photo of a cat, ab");
        let _ = tokenizer.encode_unpadded(std::str::from_utf8(data).unwrap_or("ab"));
    }
}

/// Automatic1111's prompt syntax (`--prompt`): the emphasis parser, then the 77-id chunks
/// through a tiny tokenizer (with a comma, for the chunk-boundary rule).
pub fn prompt_syntax(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(fragments) = sd_wasm::prompt::parse_attention(&text) {
        assert!(!fragments.is_empty());
    }
    // Built once: building it per input made the fuzzer ~50 inputs/s.
    static TOKENIZER: std::sync::OnceLock<ClipTokenizer> = std::sync::OnceLock::new();
    let tokenizer = TOKENIZER.get_or_init(|| {
        let files = TokenizerFiles { tokenizer_json: Some(TINY_TOKENIZER_JSON.to_vec()), ..Default::default() };
        ClipTokenizer::from_files(&files).expect("the built-in tokenizer")
    });
    if let Ok(chunks) = sd_wasm::prompt::chunks(tokenizer, &text) {
        assert!((1..=sd_wasm::prompt::MAX_CHUNKS).contains(&chunks.len()));
        assert!(chunks.iter().all(|c| c.ids.len() == 77 && c.weights.len() == 77));
    }
}
