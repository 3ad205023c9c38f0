//! Runs the shipped artifact (dist/sd.wasm, precompiled by scripts/test.sh) under wasmtime,
//! the way a user does, with a model dir mounted at /models and an output dir at /outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("fixtures/tiny")
}

/// diffusers' Img2Img/Inpaint oracles and their inputs (scripts/make_img2img_fixtures.py).
/// The tiny fixture's main case (fixtures/tiny/expected): 12 steps of the model's own
/// scheduler, guidance 7.5, seed 42, 16×16.
pub fn main_case_request() -> sd_wasm::request::GenerateRequest {
    sd_wasm::request::GenerateRequest {
        prompt: "a lighthouse at dusk, oil painting".into(),
        negative_prompt: Some("blurry".into()),
        width: Some(16),
        height: Some(16),
        steps: 12,
        guidance_scale: 7.5,
        seed: 42,
        ..Default::default()
    }
}

/// A PNG whose only content that matters is its `parameters` text (a small black picture
/// carrying it), for --params-from.
pub fn write_parameters_png(path: &Path, text: &str) {
    let picture = sd_wasm::codecs::png::RgbImage { width: 2, height: 2, pixels: vec![0; 12] };
    std::fs::write(path, sd_wasm::codecs::png::encode_png(&picture, text).unwrap()).unwrap();
}

pub fn img2img_dir() -> PathBuf {
    repo().join("fixtures/tiny-img2img")
}

pub fn expected_dir() -> PathBuf {
    tiny_model().join("expected")
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-wasm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the tiny model (without the diffusers oracle in `expected/`) that a test may
/// break or rewrite.
pub fn tiny_model_copy(name: &str) -> PathBuf {
    model_copy(&tiny_model(), name)
}

/// fixtures/tiny-prompts: the oracle of Automatic1111's prompt handling, with its text encoder.
pub fn prompts_fixture() -> PathBuf {
    repo().join("fixtures/tiny-prompts")
}

/// A copy of the tiny model with fixtures/tiny-prompts' text encoder (exported with the
/// clip_skip_N outputs, a trained-like final layer norm) in place of its own.
pub fn prompts_model_copy(name: &str) -> PathBuf {
    let dir = tiny_model_copy(name);
    let from = prompts_fixture().join("text_encoder");
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("text_encoder").join(entry.file_name())).unwrap();
    }
    dir
}

/// A copy of the model dir `model` (without `expected/`) that a test may break or rewrite.
pub fn model_copy(model: &Path, name: &str) -> PathBuf {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                if entry.file_name() != "expected" {
                    copy_dir(&entry.path(), &dest);
                }
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }
    let dir = scratch(&format!("model-{name}"));
    copy_dir(model, &dir);
    dir
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The shipped module under test: $SD_WASM (scripts/test.sh sets it), else dist/sd.wasm.
pub fn sd_wasm_path() -> PathBuf {
    std::env::var("SD_WASM").map(PathBuf::from).unwrap_or_else(|_| repo().join("dist/sd.wasm"))
}

/// wasmtime and the module come from the environment scripts/test.sh sets; without them the
/// test fails (never skips): these tests are the point of the suite.
fn wasmtime_command() -> (String, PathBuf, bool) {
    let wasmtime = std::env::var("WASMTIME").expect("WASMTIME is not set: run the tests with scripts/test.sh");
    if let Ok(cwasm) = std::env::var("SD_CWASM") {
        return (wasmtime, PathBuf::from(cwasm), true);
    }
    let wasm = sd_wasm_path();
    assert!(wasm.exists(), "{} is missing: build it with scripts/build-wasm.sh", wasm.display());
    (wasmtime, wasm, false)
}

/// Runs sd.wasm with `models` at /models and `outputs` at /outputs.
pub fn run_wasm(models: &Path, outputs: &Path, args: &[&str]) -> Run {
    run_wasm_with_memory(models, outputs, args, 4 << 30)
}

/// As [`run_wasm`], with the linear memory capped at `max_memory` bytes (Bacalhau's --memory).
pub fn run_wasm_with_memory(models: &Path, outputs: &Path, args: &[&str], max_memory: u64) -> Run {
    run_wasm_with(models, outputs, args, max_memory, &[])
}

/// As [`run_wasm`], with environment variables (Bacalhau's partition index and count).
pub fn run_wasm_with_env(models: &Path, outputs: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    run_wasm_with(models, outputs, args, 4 << 30, env)
}

fn run_wasm_with(models: &Path, outputs: &Path, args: &[&str], max_memory: u64, env: &[(&str, &str)]) -> Run {
    run_wasm_dirs(&[(models, "/models"), (outputs, "/outputs")], args, max_memory, env)
}

/// sd.wasm with each (host dir, guest path) mapped; a guest path "/" makes the host dir the
/// module's working directory (relative paths resolve there, as on a shell).
pub fn run_wasm_dirs(dirs: &[(&Path, &str)], args: &[&str], max_memory: u64, env: &[(&str, &str)]) -> Run {
    let (wasmtime, module, precompiled) = wasmtime_command();
    let mut cmd = Command::new(wasmtime);
    cmd.arg("run");
    if precompiled {
        cmd.arg("--allow-precompiled");
    }
    cmd.arg("-W").arg(format!("max-memory-size={max_memory}"));
    for (host, guest) in dirs {
        cmd.arg("--dir").arg(format!("{}::{guest}", host.display()));
    }
    for (key, value) in env {
        cmd.arg("--env").arg(format!("{key}={value}"));
    }
    cmd.arg(module).arg("--").args(args);
    cmd.output().expect("running wasmtime").into()
}

/// sd.wasm under wasi-runner (Bacalhau's engine and contract): `models` read-only at /models,
/// `outputs` write-once at /outputs, `memory` as Bacalhau's --memory (default 512 MB).
pub fn wasi_runner(models: &Path, outputs: &Path, memory: Option<&str>, args: &[&str]) -> Run {
    wasi_runner_with_inputs(&[(models, "/models")], outputs, memory, args)
}

pub fn wasi_runner_with_inputs(inputs: &[(&Path, &str)], outputs: &Path, memory: Option<&str>, args: &[&str]) -> Run {
    let runner = std::env::var("WASI_RUNNER").expect("WASI_RUNNER is not set: run the tests with scripts/test.sh");
    let module = sd_wasm_path();
    let mut cmd = Command::new(runner);
    if let Some(m) = memory {
        cmd.args(["--memory", m]);
    }
    for (host, guest) in inputs {
        cmd.arg("-i").arg(format!("{}:{guest}", host.display()));
    }
    cmd.arg("-o").arg(format!("outputs:{}", outputs.display()));
    cmd.arg(module).arg("--").args(args);
    cmd.output().expect("running wasi-runner").into()
}

/// The tiny UNet's external weights file (its only file that is neither .onnx nor .json).
pub fn unet_weights_file(model: &Path) -> PathBuf {
    std::fs::read_dir(model.join("unet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none_or(|e| e != "onnx" && e != "json"))
        .expect("the tiny UNet keeps its weights in an external data file")
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Largest per-channel difference between two same-size images, in 1/255 steps.
pub fn max_pixel_diff(a: &sd_wasm::codecs::png::RgbImage, b: &sd_wasm::codecs::png::RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height), "image sizes differ");
    a.pixels.iter().zip(&b.pixels).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

pub fn read_png(path: &Path) -> sd_wasm::codecs::png::RgbImage {
    sd_wasm::codecs::png::decode_rgb(&std::fs::read(path).unwrap()).unwrap()
}

/// A fixture case's arguments (expected/cases.json) as command-line flags; files are given
/// relative to the mounted model dir. A null scheduler means the model's own.
pub fn case_flags(args: &serde_json::Value) -> Vec<String> {
    let mut v = Vec::new();
    let mut push = |flag: &str, value: String| {
        v.push(flag.to_string());
        v.push(value);
    };
    let num = |x: &serde_json::Value| x.to_string();
    push("--prompt", args["prompt"].as_str().unwrap().to_string());
    if let Some(neg) = args["negative_prompt"].as_str() {
        push("--negative-prompt", neg.to_string());
    }
    push("--seed", num(&args["seed"]));
    push("--steps", num(&args["steps"]));
    push("--guidance-scale", num(&args["guidance_scale"]));
    push("--width", num(&args["width"]));
    push("--height", num(&args["height"]));
    if let Some(scheduler) = args["scheduler"].as_str() {
        push("--scheduler", scheduler.to_string());
    }
    if !args["eta"].is_null() {
        push("--eta", num(&args["eta"]));
    }
    if let Some(latents) = args["latents"].as_str() {
        push("--latents", format!("/models/expected/{latents}"));
    }
    if let Some(vae) = args.get("vae").and_then(|v| v.as_str()) {
        push("--vae", vae.to_string());
    }
    v
}

/// A `--prompts` file for fan-out tests: a comment, a blank line, plain and JSON lines.
pub const PROMPTS: &str = "\
# a comment, then a blank line: neither counts
\n\
a red cube
{\"prompt\": \"a blue ball\", \"seed\": 9, \"steps\": 3}
a green cone
{\"prompt\": \"a yellow star\", \"negative_prompt\": \"blurry\", \"guidance_scale\": 5}
";

/// The single-run flags of each line of [`PROMPTS`] given `--seed 5 --steps 2`.
pub fn single_runs() -> Vec<Vec<&'static str>> {
    vec![
        vec!["--prompt", "a red cube", "--seed", "5", "--steps", "2"],
        vec!["--prompt", "a blue ball", "--seed", "9", "--steps", "3"],
        vec!["--prompt", "a green cone", "--seed", "7", "--steps", "2"],
        vec!["--prompt", "a yellow star", "--negative-prompt", "blurry", "--guidance-scale", "5", "--seed", "8", "--steps", "2"],
    ]
}

/// The PNGs in `dir` by file name.
pub fn pngs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    files_in(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The picture the browser page and the component tests make (their drivers fill in the same
/// values), as the command line's flags: their PNGs must equal the CLI's byte for byte.
pub const FRONT_END_PICTURE: &[&str] = &[
    "--prompt", "a red cube on a table", "--negative-prompt", "blurry", "--steps", "12", "--guidance-scale", "7.5",
    "--seed", "42", "--width", "16", "--height", "16", "--scheduler", "euler", "--quiet",
];

/// One test per fixture case (`check_case(name)` and `cases()` from the calling test file) keeps
/// failures readable; the list is checked against the manifest so a new case cannot go untested.
#[allow(unused_macros)]
macro_rules! parity_cases {
    ($($test:ident => $case:expr),* $(,)?) => {
        $( #[test] fn $test() { check_case($case); } )*
        #[test]
        fn manifest_has_no_untested_case() {
            let tested = [$($case),*];
            for c in cases() {
                let name = c["name"].as_str().unwrap().to_string();
                assert!(tested.contains(&name.as_str()), "fixture case {name} has no test");
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use parity_cases;

/// One tensor of a safetensors file: name, dtype, shape, little-endian bytes.
pub type NamedTensor = (String, String, Vec<usize>, Vec<u8>);

/// A safetensors file of `tensors`.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let entry =
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]});
        header.insert(name.clone(), entry);
        data.extend_from_slice(bytes);
    }
    let json = serde_json::to_vec(&header).unwrap();
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend(json);
    file.extend(data);
    std::fs::write(path, file).unwrap();
}

/// A safetensors file's tensors, sorted by name.
pub fn read_safetensors(path: &Path) -> Vec<NamedTensor> {
    use sd_wasm::codecs::safetensors;
    let bytes = std::fs::read(path).unwrap();
    let len = safetensors::header_len(&bytes, bytes.len() as u64).unwrap() as usize;
    let header = safetensors::parse_header(&bytes[8..8 + len], bytes.len() as u64).unwrap();
    let mut tensors: Vec<_> = header
        .tensors
        .into_iter()
        .map(|(name, e)| (name, e.dtype, e.shape, bytes[e.start as usize..e.end as usize].to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Pipeline hooks that ignore every event: the library tests' `generate(…, &mut Quiet)`.
pub struct Quiet;

impl sd_wasm::pipeline::Hooks for Quiet {
    fn now(&self) -> f64 {
        0.0
    }
}
