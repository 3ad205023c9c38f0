//! The scheduler config as diffusers' StableDiffusionPipeline runs it (its deprecation rewrite
//! of steps_offset and clip_sample, src/schedulers/pipeline_config.rs), on the scheduler configs
//! of fixtures/tiny-pipeline-config (made by scripts/make_pipeline_config_fixtures.py): the
//! scheduler the pipeline builds against diffusers' (timesteps and a step), and the tiny model's
//! picture from the library and from sd.wasm under wasmtime against diffusers' picture. Without
//! the rewrite (what sd.wasm did before) the scheduler differs and the picture lies far beyond
//! the tolerance, so the fixture can tell the two apart.

use crate::common::*;
use sd_wasm::schedulers::{pipeline_scheduler, scheduler_from_config, Scheduler, SchedulerOptions};
use sd_wasm::tensor::{Latents, NoiseSource};
use serde_json::Value;
use std::path::{Path, PathBuf};

const TOLERANCE: u8 = 2;

fn fixture_dir() -> PathBuf {
    repo().join("fixtures/tiny-pipeline-config")
}

fn read_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn cases() -> Vec<Value> {
    read_json("cases.json").as_array().unwrap().clone()
}

fn case(name: &str) -> Value {
    cases().into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no fixture case {name}"))
}

/// A copy of the tiny model with the case's scheduler config in place (and its class in
/// model_index.json, as save_pretrained would write it).
fn model_for(case: &Value, run: &str) -> PathBuf {
    let name = case["name"].as_str().unwrap();
    let model = tiny_model_copy(&format!("{run}-{name}"));
    let config = fixture_dir().join(case["config"].as_str().unwrap());
    std::fs::copy(&config, model.join("scheduler/scheduler_config.json")).unwrap();
    let class = serde_json::from_str::<Value>(&std::fs::read_to_string(&config).unwrap()).unwrap()["_class_name"].clone();
    let index_path = model.join("model_index.json");
    let mut index: Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["scheduler"][1] = class;
    std::fs::write(&index_path, serde_json::to_string_pretty(&index).unwrap()).unwrap();
    model
}

fn config_of(case: &Value) -> Value {
    let path = fixture_dir().join(case["config"].as_str().unwrap());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct NoNoise;

impl NoiseSource for NoNoise {
    fn randn(&mut self, _shape: &[usize]) -> Latents {
        panic!("these schedulers draw no noise")
    }
}

/// Largest difference between the scheduler's timesteps and first step and diffusers' (None:
/// other timesteps).
fn step_difference(scheduler: &mut dyn Scheduler, case: &Value) -> Option<f32> {
    let want = &case["scheduler"];
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let tensor = |v: &Value| Latents::from_shape_vec(shape.clone(), floats(v).iter().map(|&x| x as f32).collect()).unwrap();
    scheduler.set_timesteps(case["args"]["steps"].as_u64().unwrap() as usize).unwrap();
    if scheduler.timesteps() != floats(&want["timesteps"]).as_slice() {
        return None;
    }
    let t = scheduler.timesteps()[0];
    let prev = scheduler.step(&tensor(&want["model_output"]), t, &tensor(&want["sample"]), &mut NoNoise).unwrap();
    Some(prev.iter().zip(tensor(&want["prev_sample"]).iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
}

/// The scheduler the pipeline builds matches diffusers'; the one built from the config as saved
/// (no rewrite) does not.
fn check_scheduler(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let (scheduler, config) = (case["args"]["scheduler"].as_str(), config_of(case));
    let options = SchedulerOptions::default();
    let mut ours = pipeline_scheduler(scheduler, &config, &options).unwrap();
    let diff = step_difference(ours.as_mut(), case);
    assert!(diff.is_some_and(|d| d <= 1e-4), "case {name}: scheduler differs from diffusers' (timesteps, or step by {diff:?})");
    let mut unrewritten = scheduler_from_config(scheduler, &config, &options).unwrap();
    let before = step_difference(unrewritten.as_mut(), case);
    assert!(before.is_none_or(|d| d > 0.1), "case {name}: without the rewrite the scheduler still matches ({before:?})");
}

/// Our picture against diffusers' (within the tolerance) and against the picture made without
/// the pipeline's rewrite (far beyond it, as the fixture script recorded).
fn check_picture(case: &Value, ours: &sd_wasm::codecs::png::RgbImage, how: &str) {
    let name = case["name"].as_str().unwrap();
    let theirs = read_png(&fixture_dir().join(case["png"].as_str().unwrap()));
    let diff = max_pixel_diff(ours, &theirs);
    assert!(diff <= TOLERANCE, "{how} case {name}: max pixel difference {diff}/255 > {TOLERANCE}/255 from diffusers");
    let sensitivity = read_json("sensitivity.json");
    let threshold = sensitivity["threshold"].as_u64().unwrap() as u8;
    let recorded = sensitivity["moved"][name].as_u64().unwrap();
    assert!(recorded > threshold as u64, "case {name}: the rewrite moves diffusers' picture only {recorded}/255");
    let before = read_png(&fixture_dir().join(case["old_behaviour_png"].as_str().unwrap()));
    let moved = max_pixel_diff(ours, &before);
    assert!(moved > threshold, "{how} case {name}: only {moved}/255 from the picture without the rewrite (want > {threshold})");
}

fn check_wasm(name: &str) {
    let case = case(name);
    let model = model_for(&case, "wasm");
    let out = scratch(&format!("pipeline-config-{name}"));
    let args = case_flags(&case["args"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_wasm(&model, &out, &argv);
    assert_eq!(run.code, 0, "case {name} failed:\n{}", run.stderr);
    let png = files_in(&out).into_iter().find(|p| p.extension().is_some_and(|e| e == "png")).expect("a PNG");
    check_picture(&case, &read_png(&png), "sd.wasm");
    cleanup(&[&model, &out]);
}

struct NoHooks;

impl sd_wasm::pipeline::Hooks for NoHooks {
    fn now(&self) -> f64 {
        0.0
    }
}

fn check_native(name: &str) {
    let case = case(name);
    let model = model_for(&case, "native");
    let a = &case["args"];
    let request = sd_wasm::GenerateRequest {
        prompt: a["prompt"].as_str().unwrap().into(),
        negative_prompt: a["negative_prompt"].as_str().map(String::from),
        width: Some(a["width"].as_u64().unwrap() as u32),
        height: Some(a["height"].as_u64().unwrap() as u32),
        steps: a["steps"].as_u64().unwrap() as usize,
        guidance_scale: a["guidance_scale"].as_f64().unwrap() as f32,
        seed: a["seed"].as_u64().unwrap(),
        scheduler: a["scheduler"].as_str().and_then(sd_wasm::schedulers::SchedulerKind::parse),
        ..Default::default()
    };
    let files = sd_wasm::model_dir::DirFiles::open(&model).unwrap();
    let out = sd_wasm::generate(&files, &request, &mut NoHooks).unwrap();
    check_picture(&case, &out.image, "library");
    cleanup(&[&model]);
}

fn cleanup(dirs: &[&Path]) {
    for d in dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// The scheduler, then (where diffusers' picture is an oracle) the library's picture (cheap), then
/// the shipped module's.
fn check_case(name: &str) {
    check_scheduler(&case(name));
    if !case(name)["png"].is_null() {
        check_native(name);
        check_wasm(name);
    }
}

parity_cases! {
    pndm_saved_ddim => "pndm-saved-ddim",
    pndm_saved_clip_false_ddim => "pndm-saved-clip-false-ddim",
    pndm_saved_own => "pndm-saved-own",
    ddim_saved_own => "ddim-saved-own",
    sd15_clip_true_ddim => "sd15-clip-true-ddim",
}
