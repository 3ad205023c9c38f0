//! Single-file checkpoints (src/models/checkpoint.rs) against diffusers'
//! `StableDiffusionPipeline.from_single_file` on the same files (fixtures/tiny-checkpoint,
//! scripts/make_checkpoint_fixtures.py): the tiny model as an fp32 file with EMA copies and as
//! an fp16 file without a VAE plus a VAE file, run through a template of its shapes.

use crate::common::*;
use sd_wasm::model_dir::{DirFiles, ModelFiles};
use sd_wasm::models::checkpoint::{self, CheckpointFiles};
use sd_wasm::models::lora::{open_lora, Lora};
use sd_wasm::pipeline::{generate, Generated};
use sd_wasm::request::GenerateRequest;
use sd_wasm::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOLERANCE: u8 = 2;
/// What a change the fixture must show moves the picture by, at least.
const POWER: u8 = 40;

fn fixture() -> PathBuf {
    repo().join("fixtures/tiny-checkpoint")
}

fn folder(dir: &Path) -> Arc<dyn ModelFiles> {
    Arc::new(DirFiles::open(dir).unwrap())
}

/// The template with `file`'s weights (and `vae`'s, when given), files in `dir`.
fn files_in(dir: &Path, file: &str, vae: Option<&str>) -> sd_wasm::Result<CheckpointFiles> {
    let checkpoint = checkpoint::open(folder(dir), file, "checkpoint")?;
    let vae = vae.map(|v| checkpoint::open(folder(dir), v, "VAE")).transpose()?;
    CheckpointFiles::new(folder(&fixture().join("template")), checkpoint, vae)
}

fn checkpoint_files(file: &str, vae: Option<&str>) -> sd_wasm::Result<CheckpointFiles> {
    files_in(&fixture(), file, vae)
}

/// fixtures/tiny-checkpoint/cases.json's run: the model's own PNDM, 12 steps, seed 42, 16×16.
fn picture(files: &dyn ModelFiles, req: &GenerateRequest) -> sd_wasm::Result<Generated> {
    generate(files, req, &mut Quiet)
}

fn cases() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture().join("cases.json")).unwrap()).unwrap()
}

#[test]
fn an_fp32_checkpoint_with_ema_weights_matches_diffusers_from_single_file() {
    let files = checkpoint_files("tiny-fp32-ema.safetensors", None).unwrap();
    let ours = picture(&files, &main_case_request()).unwrap();
    // diffusers on the same file, its weights rounded as the template stores them (fp16 from
    // 256 elements; fp32.png without the rounding is cases.json's fp32_vs_stored_fp16 away).
    let theirs = read_png(&fixture().join("fp32-stored-fp16.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
    // The fixture has power: the EMA copies, had they been read, move the picture far.
    let ema = max_pixel_diff(&ours.image, &read_png(&fixture().join("ema.png")));
    assert!(ema > POWER, "the EMA weights would move the picture only {ema}/255");
    // Recorded as Automatic1111 records a checkpoint: its stem and the whole file's SHA-256.
    let hash = cases()["sha256"]["tiny-fp32-ema.safetensors"].as_str().unwrap()[..10].to_string();
    assert_eq!(ours.model_name, "tiny-fp32-ema");
    assert_eq!(ours.model_identity, hash);
    let text = sd_wasm::records::parameters::parameters_text(&main_case_request(), &ours);
    assert!(text.contains(&format!("Model hash: {hash}, Model: tiny-fp32-ema")), "{text}");
}

#[test]
fn an_fp16_checkpoint_without_a_vae_runs_with_a_vae_file() {
    let files = checkpoint_files("tiny-fp16-novae.safetensors", Some("tiny-vae.safetensors")).unwrap();
    let ours = picture(&files, &main_case_request()).unwrap();
    let theirs = read_png(&fixture().join("fp16.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");

    let e = checkpoint_files("tiny-fp16-novae.safetensors", None).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains("has no VAE") && e.message.contains("--vae-file"), "{e}");
}

#[test]
fn a_lora_merges_into_a_checkpoints_weights() {
    let lora_dir = repo().join("fixtures/tiny-lora");
    let file = open_lora(folder(&lora_dir), "style.safetensors").unwrap();
    let lora = Lora { name: "style".into(), scale: 0.8, file: Arc::new(file) };
    let files = checkpoint_files("tiny-fp32-ema.safetensors", None).unwrap();
    let ours = picture(&files, &GenerateRequest { loras: vec![lora], ..main_case_request() }).unwrap();
    let theirs = read_png(&fixture().join("style-0.8-stored-fp16.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
    let without = max_pixel_diff(&theirs, &read_png(&fixture().join("fp32-stored-fp16.png")));
    assert!(without > POWER, "the LoRA moves the picture only {without}/255");
}

#[test]
fn a_checkpoint_of_another_family_or_size_is_named_before_anything_loads() {
    let dir = scratch("checkpoint-family");
    let tensors = read_safetensors(&fixture().join("tiny-fp32-ema.safetensors"));
    // SD 2.x's text encoder (OpenCLIP) in place of SD 1.x's.
    let sd2: Vec<NamedTensor> = tensors
        .iter()
        .filter(|t| !t.0.starts_with("cond_stage_model."))
        .cloned()
        .chain([("cond_stage_model.model.token_embedding.weight".into(), "F32".into(), vec![2, 2], vec![0; 16])])
        .collect();
    write_safetensors(&dir.join("sd2.safetensors"), &sd2);
    let e = files_in(&dir, "sd2.safetensors", None).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains("SD 2.x") && e.message.contains("SD 1.x"), "{e}");

    // One UNet weight of another size: the key, both sizes, before any network loads.
    let key = "model.diffusion_model.out.2.weight";
    let other: Vec<NamedTensor> = tensors
        .iter()
        .map(|t| if t.0 == key { (t.0.clone(), "F32".into(), vec![2, 2], vec![0; 16]) } else { t.clone() })
        .collect();
    write_safetensors(&dir.join("other.safetensors"), &other);
    let e = files_in(&dir, "other.safetensors", None).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains(key) && e.message.contains("[2, 2]"), "{e}");

    // A UNet weight missing.
    let missing: Vec<NamedTensor> = tensors.iter().filter(|t| t.0 != key).cloned().collect();
    write_safetensors(&dir.join("missing.safetensors"), &missing);
    let e = files_in(&dir, "missing.safetensors", None).err().unwrap();
    assert!(e.message.contains(&format!("no tensor {key}")), "{e}");
}

#[test]
fn a_model_dir_that_is_no_template_and_bad_files_are_errors_of_their_class() {
    let checkpoint = checkpoint::open(folder(&fixture()), "tiny-fp32-ema.safetensors", "checkpoint").unwrap();
    let e = CheckpointFiles::new(folder(&tiny_model()), checkpoint, None).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains("template") && e.message.contains("checkpoint.json"), "{e}");

    let dir = scratch("checkpoint-bad");
    let good = std::fs::read(fixture().join("tiny-vae.safetensors")).unwrap();
    std::fs::write(dir.join("truncated.safetensors"), &good[..good.len() - 10]).unwrap();
    std::fs::write(dir.join("picture.safetensors"), std::fs::read(fixture().join("fp32.png")).unwrap()).unwrap();
    std::fs::write(dir.join("model.ckpt"), b"PK\x03\x04 a zip of pickles").unwrap();
    for (name, says) in [
        ("truncated.safetensors", "truncated"),
        ("picture.safetensors", "not a safetensors file"),
        ("absent.safetensors", "missing"),
        ("model.ckpt", "pickle"),
    ] {
        let e = checkpoint::open(folder(&dir), name, "checkpoint").err().unwrap();
        assert_eq!(e.kind, ErrorKind::Usage, "{name}: {e}");
        assert!(e.message.contains(says) && e.message.contains("checkpoint"), "{name}: {e}");
    }
}

/// SD 2.x: OpenCLIP's fused q/k/v split by rows, v-prediction, a bf16 file.
#[test]
fn an_sd2_bf16_checkpoint_matches_diffusers_and_its_fused_qkv_split_matters() {
    let dir = fixture().join("sd2");
    let template = folder(&dir.join("template"));
    let run_with = |folder_of_file: &Path, file: &str, req: &GenerateRequest| {
        let checkpoint = checkpoint::open(self::folder(folder_of_file), file, "checkpoint").unwrap();
        picture(&CheckpointFiles::new(template.clone(), checkpoint, None).unwrap(), req).unwrap()
    };
    let run = |folder_of_file: &Path, file: &str| run_with(folder_of_file, file, &main_case_request());
    let ours = run(&dir, "tiny-sd2-bf16.safetensors");
    let theirs = read_png(&dir.join("sd2-stored-fp16.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");

    // The fixture has power: k and v rows swapped in every fused projection move the picture far.
    let swapped_dir = scratch("checkpoint-sd2-swapped");
    let tensors: Vec<NamedTensor> = read_safetensors(&dir.join("tiny-sd2-bf16.safetensors"))
        .into_iter()
        .map(|(name, dtype, shape, mut bytes)| {
            if name.ends_with("attn.in_proj_weight") {
                let third = bytes.len() / 3;
                let (k, v) = bytes[third..].split_at_mut(third);
                k.swap_with_slice(v);
            }
            (name, dtype, shape, bytes)
        })
        .collect();
    write_safetensors(&swapped_dir.join("swapped.safetensors"), &tensors);
    let swapped = max_pixel_diff(&run(&swapped_dir, "swapped.safetensors").image, &theirs);
    assert!(swapped > POWER, "swapping k and v moves the picture only {swapped}/255");

    // The template says v-prediction; --prediction-type epsilon (an SD 2.x base model in the
    // same template) is another picture, and recorded.
    let req = GenerateRequest { prediction_type: Some("epsilon".into()), ..main_case_request() };
    let epsilon = run_with(&dir, "tiny-sd2-bf16.safetensors", &req);
    let moved = max_pixel_diff(&epsilon.image, &theirs);
    assert!(moved > POWER, "epsilon instead of v moves the picture only {moved}/255");
    let text = sd_wasm::records::parameters::parameters_text(&req, &epsilon);
    assert!(text.contains("Prediction type: epsilon"), "{text}");
}
