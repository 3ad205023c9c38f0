//! LoRAs merged at load (src/models/lora.rs) against diffusers' pictures with the same
//! kohya-format files fused (fixtures/tiny-lora, scripts/make_lora_fixtures.py), the records'
//! `<lora:NAME:W>` round trip, and what a LoRA that does not fit, or a bad file, gives.

use crate::common::*;
use sd_wasm::model_dir::{DirFiles, ModelFiles};
use sd_wasm::models::lora::{open_lora, Lora};
use sd_wasm::pipeline::{generate, Generated, Hooks};
use sd_wasm::request::GenerateRequest;
use sd_wasm::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOLERANCE: u8 = 2;
/// What a change the fixture must show moves the picture by, at least.
const POWER: u8 = 40;

fn lora_dir() -> PathBuf {
    repo().join("fixtures/tiny-lora")
}

fn lora(dir: &Path, file: &str, scale: f32) -> sd_wasm::Result<Lora> {
    let files: Arc<dyn ModelFiles> = Arc::new(DirFiles::open(dir)?);
    let file = open_lora(files, file)?;
    Ok(Lora { name: "test".into(), scale, file: Arc::new(file) })
}

/// fixtures/tiny-lora/cases.json's run: the model's own PNDM, 12 steps, seed 42, 16×16.
fn request(loras: Vec<Lora>) -> GenerateRequest {
    GenerateRequest { loras, ..main_case_request() }
}

fn picture(req: &GenerateRequest) -> sd_wasm::Result<Generated> {
    generate(&DirFiles::open(tiny_model()).unwrap(), req, &mut Quiet)
}

#[test]
fn one_lora_matches_diffusers_fuse_lora() {
    let ours = picture(&request(vec![lora(&lora_dir(), "style.safetensors", 0.8).unwrap()])).unwrap();
    let theirs = read_png(&lora_dir().join("style-0.8.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
    assert!(ours.warnings.is_empty(), "{:?}", ours.warnings);
    // The fixture has power: without the LoRA, or at weight 0, the picture is far from it.
    let plain = picture(&request(vec![])).unwrap();
    let zero = picture(&request(vec![lora(&lora_dir(), "style.safetensors", 0.0).unwrap()])).unwrap();
    assert_eq!(max_pixel_diff(&zero.image, &plain.image), 0, "weight 0 changes nothing");
    let without = max_pixel_diff(&plain.image, &theirs);
    assert!(without > POWER, "without the LoRA the picture moves only {without}/255");
}

#[test]
fn two_loras_stack_with_their_own_weights() {
    let loras = vec![
        lora(&lora_dir(), "style.safetensors", 0.8).unwrap(),
        lora(&lora_dir(), "detail.safetensors", 1.5).unwrap(),
    ];
    let ours = picture(&request(loras)).unwrap();
    let theirs = read_png(&lora_dir().join("style-0.8-detail-1.5.png"));
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= TOLERANCE, "max pixel difference {diff}/255 > {TOLERANCE}/255");
    let style_only = max_pixel_diff(&read_png(&lora_dir().join("style-0.8.png")), &theirs);
    assert!(style_only > POWER, "the second LoRA moves the picture only {style_only}/255");
}

/// style.safetensors' tensors.
fn style_tensors() -> Vec<NamedTensor> {
    read_safetensors(&lora_dir().join("style.safetensors"))
}

#[test]
fn modules_that_match_nothing_are_a_warning_with_their_count() {
    let dir = scratch("lora-unmatched");
    let mut tensors = style_tensors();
    for name in ["lora_unet_down_blocks_7_attentions_0_proj_in", "lora_unet_no_such_layer"] {
        tensors.push((format!("{name}.lora_down.weight"), "F32".into(), vec![1, 1], vec![0; 4]));
        tensors.push((format!("{name}.lora_up.weight"), "F32".into(), vec![1, 1], vec![0; 4]));
    }
    tensors.push(("lora_unet_x.hada_w1_a".into(), "F32".into(), vec![1], vec![0; 4]));
    write_safetensors(&dir.join("extra.safetensors"), &tensors);
    let ours = picture(&request(vec![lora(&dir, "extra.safetensors", 0.8).unwrap()])).unwrap();
    let warning = ours.warnings.iter().find(|w| w.contains("LoRA")).expect("a warning");
    assert!(warning.contains("2 of its 122 modules") && warning.contains("1 other keys"), "{warning}");
    // The modules that match are merged all the same.
    let diff = max_pixel_diff(&ours.image, &read_png(&lora_dir().join("style-0.8.png")));
    assert!(diff <= TOLERANCE, "{diff}");
}

#[test]
fn a_lora_that_matches_nothing_is_a_usage_error() {
    let dir = scratch("lora-nothing");
    let tensors: Vec<_> = style_tensors()
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            (name.replace("lora_unet_", "lora_prior_").replace("lora_te_", "lora_te3_"), dtype, shape, bytes)
        })
        .collect();
    write_safetensors(&dir.join("other.safetensors"), &tensors);
    let e = picture(&request(vec![lora(&dir, "other.safetensors", 1.0).unwrap()])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains("none of its") && e.message.contains("other.safetensors"), "{e}");
}

#[test]
fn a_lora_for_other_shapes_names_the_first_layer_that_differs() {
    let dir = scratch("lora-shapes");
    let tensors: Vec<_> = style_tensors()
        .into_iter()
        .map(|(name, dtype, mut shape, bytes)| {
            if name.starts_with("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up") {
                // [32, 4] → [4, 32]: the same bytes, another family's layer.
                shape.reverse();
            }
            (name, dtype, shape, bytes)
        })
        .collect();
    write_safetensors(&dir.join("sdxl.safetensors"), &tensors);
    let e = picture(&request(vec![lora(&dir, "sdxl.safetensors", 1.0).unwrap()])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
    assert!(e.message.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"), "{e}");
}

#[test]
fn bad_files_are_usage_errors_without_large_allocations() {
    let dir = scratch("lora-bad");
    let good = std::fs::read(lora_dir().join("style.safetensors")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("png.safetensors", std::fs::read(lora_dir().join("style-0.8.png")).unwrap(), "not a safetensors file"),
        ("truncated.safetensors", good[..good.len() - 100].to_vec(), "truncated"),
        ("short.safetensors", good[..5].to_vec(), "shorter than"),
        (
            "huge-header.safetensors",
            [(1u64 << 40).to_le_bytes().to_vec(), vec![b'{'; 64]].concat(),
            "not a safetensors file",
        ),
        ("cut-header.safetensors", good[..200].to_vec(), "truncated"),
        ("empty.safetensors", Vec::new(), "shorter than"),
        ("not-json.safetensors", [4u64.to_le_bytes().to_vec(), b"{{{{".to_vec()].concat(), "not JSON"),
    ];
    for (name, bytes, says) in cases {
        std::fs::write(dir.join(name), bytes).unwrap();
        let e = lora(&dir, name, 1.0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage, "{name}: {e}");
        assert!(e.message.contains(says) && e.message.contains(name), "{name}: {e}");
    }
    let e = lora(&dir, "missing.safetensors", 1.0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage, "{e}");
}

#[test]
fn a_model_dir_converted_before_weight_maps_asks_to_convert_again() {
    let model = tiny_model_copy("lora-no-map");
    std::fs::remove_file(model.join("unet/weights.json")).unwrap();
    let req = request(vec![lora(&lora_dir(), "style.safetensors", 1.0).unwrap()]);
    let e = generate(&DirFiles::open(&model).unwrap(), &req, &mut Quiet).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Model, "{e}");
    assert!(e.message.contains("unet/weights.json") && e.message.contains("convert"), "{e}");
}

fn cli(args: &[&str]) -> i32 {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    sd_wasm::cli::run(&args)
}

fn parameters(png: &Path) -> String {
    sd_wasm::codecs::png::read_parameters(&std::fs::read(png).unwrap()).unwrap().unwrap()
}

/// `--lora FILE:W` is recorded as Automatic1111 records LoRAs (`<lora:NAME:W>` in the prompt,
/// "Lora hashes"); `--params-from` loads it again from the LoRA folder, and a prompt pasted
/// with the tag makes the same picture.
#[test]
fn lora_tags_round_trip_through_the_record() {
    let out = scratch("lora-round-trip");
    let (model, style) = (tiny_model(), lora_dir().join("style.safetensors"));
    let common = ["--models", model.to_str().unwrap(), "--seed", "42", "--steps", "12", "--quiet"];
    let first = out.join("first.png");
    let flag = format!("{}:0.8", style.display());
    let args =
        [&common[..], &["--prompt", "a lighthouse at dusk, oil painting", "--negative-prompt", "blurry"]].concat();
    assert_eq!(cli(&[&args[..], &["--lora", &flag, "--output", first.to_str().unwrap()]].concat()), 0);
    let text = parameters(&first);
    let hash = &open_lora(Arc::new(DirFiles::open(lora_dir()).unwrap()), "style.safetensors").unwrap().hash;
    assert!(text.starts_with("a lighthouse at dusk, oil painting <lora:style:0.8>\n"), "{text}");
    assert!(text.contains(&format!("Lora hashes: \"style: {}\"", &hash[..12])), "{text}");
    let theirs = read_png(&lora_dir().join("style-0.8.png"));
    assert!(max_pixel_diff(&read_png(&first), &theirs) <= TOLERANCE);

    let again = out.join("again.png");
    let lora_dir = lora_dir();
    let read_back = ["--params-from", first.to_str().unwrap(), "--lora-dir", lora_dir.to_str().unwrap()];
    assert_eq!(cli(&[&common[..], &read_back, &["--output", again.to_str().unwrap()]].concat()), 0);
    assert_eq!(read_png(&again).pixels, read_png(&first).pixels);
    assert_eq!(parameters(&again), text);

    // Pasted from Automatic1111: the tag in the prompt.
    let pasted = out.join("pasted.png");
    let prompt = ["--prompt", "a lighthouse at dusk, oil painting <lora:style:0.8>", "--negative-prompt", "blurry"];
    let args =
        [&common[..], &prompt, &["--lora-dir", lora_dir.to_str().unwrap(), "--output", pasted.to_str().unwrap()]]
            .concat();
    assert_eq!(cli(&args), 0);
    assert_eq!(read_png(&pasted).pixels, read_png(&first).pixels);

    // A tag whose file is not in the LoRA folder: a usage error naming where it looked.
    let missing = [&common[..], &["--prompt", "x <lora:nowhere:1>", "--lora-dir", lora_dir.to_str().unwrap()]].concat();
    assert_eq!(cli(&[&missing[..], &["--output", out.join("missing.png").to_str().unwrap()]].concat()), 2);
    assert!(!out.join("missing.png").exists());
}

/// The UNet as scripts/convert.py stores it (fp16 at rest, a Cast in front; fixtures/tiny-lora/
/// unet-fp16): the LoRA is merged in f32 and stored back in fp16. Against the same fp32 oracle,
/// so the tolerance covers every weight rounded to fp16 (measured: 2/255 with the LoRA).
#[test]
fn a_lora_merges_into_fp16_weights_at_rest() {
    let model = tiny_model_copy("lora-fp16");
    for file in ["model.onnx", "model.onnx_data", "weights.json"] {
        std::fs::copy(lora_dir().join("unet-fp16").join(file), model.join("unet").join(file)).unwrap();
    }
    let files = DirFiles::open(&model).unwrap();
    let theirs = read_png(&lora_dir().join("style-0.8.png"));
    let req = request(vec![lora(&lora_dir(), "style.safetensors", 0.8).unwrap()]);
    let ours = generate(&files, &req, &mut Quiet).unwrap();
    let diff = max_pixel_diff(&ours.image, &theirs);
    assert!(diff <= 3, "max pixel difference {diff}/255 > 3/255");
    let plain = generate(&files, &request(vec![]), &mut Quiet).unwrap();
    let without = max_pixel_diff(&plain.image, &theirs);
    assert!(without > POWER, "without the LoRA the picture moves only {without}/255");
}

/// Loads in a job, per network name.
#[derive(Default)]
struct LoadCounter {
    loaded: Vec<&'static str>,
    results: std::collections::BTreeMap<usize, sd_wasm::Result<Vec<Generated>>>,
}

impl Hooks for LoadCounter {
    fn event(&mut self, event: &sd_wasm::pipeline::Event) {
        if let sd_wasm::pipeline::Event::Loaded { network, .. } = event {
            self.loaded.push(network);
        }
    }
    fn now(&self) -> f64 {
        0.0
    }
}

impl sd_wasm::pipeline::JobHooks for LoadCounter {
    fn finished(&mut self, index: usize, result: sd_wasm::Result<Vec<Generated>>) {
        self.results.insert(index, result);
    }
}

/// Requests alternating between a LoRA and none: a job merges each set once per network (the
/// text encoder and the UNet load twice, not four times), and each picture is its single run's.
#[test]
fn a_job_loads_each_network_once_per_set_of_loras() {
    let style = lora(&lora_dir(), "style.safetensors", 0.8).unwrap();
    let requests: Vec<GenerateRequest> = (0..4)
        .map(|i| GenerateRequest { seed: 42 + i, steps: 3, ..request(if i % 2 == 0 { vec![style.clone()] } else { vec![] }) })
        .collect();
    let mut job = LoadCounter::default();
    sd_wasm::pipeline::generate_job(&DirFiles::open(tiny_model()).unwrap(), &requests, &mut job);
    let count = |network| job.loaded.iter().filter(|&&n| n == network).count();
    assert_eq!((count("text encoder"), count("UNet")), (2, 2), "{:?}", job.loaded);
    for (index, req) in requests.iter().enumerate() {
        let alone = picture(req).unwrap();
        assert_eq!(job.results[&index].as_ref().unwrap()[0].image.pixels, alone.image.pixels, "request {index}");
    }
}
