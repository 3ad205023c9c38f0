//! Command-line flags → a [`GenerateRequest`] through the request table, plus the command
//! line's own options (model dir, output, prompt files, verbosity, the UNet benchmark).

use crate::codecs::png::read_parameters;
use crate::error::{Result, SdError};
use crate::records::parameters::parse_parameters;
use crate::pipeline::BenchNetwork;
use crate::request::{param_by_flag, GenerateRequest, Inputs, ParamValue, Raw, MAX_SIDE, PARAMS};
use std::path::PathBuf;

/// The command line's options that are not request fields: (flags, value placeholder, help).
const OWN_OPTIONS: &[(&str, &str, &str)] = &[
    ("--prompts", "FILE", "many pictures: one prompt per line, or one JSON object per line with\n\
        request keys ({\"prompt\": …, \"seed\": …, \"steps\": …, \"negative_prompt\",\n\
        \"guidance_scale\", \"width\", \"height\", \"scheduler\", \"eta\", …}); a line\n\
        without a seed uses --seed + its index. Under Bacalhau with Count N,\n\
        execution i renders the lines i, i+N, … (BACALHAU_PARTITION_INDEX/COUNT):\n\
        each line exactly once"),
    ("--params-from", "PNG", "start from the parameters stored in a PNG (ours or Automatic1111's\n\
        `parameters` chunk); flags given as well override them"),
    ("--models, --model", "DIR", "diffusers ONNX model dir (default /models)"),
    ("--checkpoint", "FILE", "a single-file SD 1.x/2.x checkpoint (.safetensors, as Automatic1111 and\n\
        Civitai have them; fp16 or fp32, with or without EMA weights): its\n\
        weights run in the graphs of the model dir, which must then be a\n\
        template of its family (scripts/convert.py --template). Recorded as\n\
        Model and Model hash"),
    ("--vae-file", "FILE", "the VAE for --checkpoint from its own .safetensors file (one without a\n\
        VAE needs it; one with a VAE has it replaced)"),
    ("--lora-dir", "DIR", "where a prompt's <lora:NAME:W> tags find NAME.safetensors (default:\n\
        loras/ beside the model dir, /loras for /models)"),
    ("--output", "PATH", "PNG file or directory (default: /outputs if it exists, else .);\n\
        a JSON sidecar with the same stem is written beside it. With\n\
        --num-images N > 1 a file name gets -<seed> before .png. Files are\n\
        never overwritten: a name that exists (or is a symbolic link) is an\n\
        error (exit 5), checked before any work where the name is known"),
    ("--tokenizer", "NAME", "accepted for the seed system's command lines; the model dir's own\n\
        tokenizer/ is always used"),
    ("--threads", "N", "threads the networks run on (default: all cores). The native build\n\
        only: the wasm module is single-threaded (wasmtime 47+ has no\n\
        wasi-threads, Bacalhau's wazero no threads) and accepts only 1.\n\
        The picture's bytes do not depend on it"),
    ("--quiet", "", "no per-step progress lines"),
    ("--verbose", "", "also summarize each intermediate tensor (mean, std, range, NaNs)"),
    ("--help, --version", "", ""),
    ("--bench", "NETWORK [--latent L] [--runs N]", "time N runs of one network (unet, vae-decoder, taesd-decoder,\n\
        text-encoder) at an LxL latent (default 64, 2 runs) after one warm-up run;\n\
        prints one JSON line\n\
        (scripts/bench.py reads it). --bench-unet: --bench unet"),
];

/// `--help`: the request table's rows, then the command line's own options.
pub fn help() -> String {
    let mut text = String::from(
        "sd.wasm — Stable Diffusion text-to-image, image-to-image and inpainting in one WebAssembly module\n\n\
         USAGE:\n  wasmtime run --dir MODELS::/models --dir OUT::/outputs sd.wasm -- --prompt TEXT [OPTIONS]\n  \
         sd --models DIR --prompt TEXT [OPTIONS]            (native build)\n\nOPTIONS:\n",
    );
    let rows = PARAMS.iter().map(|p| (p.flags.join(", "), p.value, p.help));
    let own = OWN_OPTIONS.iter().map(|&(flags, value, help)| (flags.to_string(), value, help));
    for (flags, value, help) in rows.chain(own) {
        let head = if value.is_empty() { format!("  {flags}") } else { format!("  {flags} {value}") };
        let mut lines = help.lines().map(str::trim);
        match lines.next() {
            Some(first) if head.len() < 27 => text.push_str(&format!("{head:<27}{first}\n")),
            Some(first) => text.push_str(&format!("{head}\n{:27}{first}\n", "")),
            None => text.push_str(&format!("{head}\n")),
        }
        for line in lines {
            text.push_str(&format!("{:27}{line}\n", ""));
        }
    }
    text.push_str("\nEXIT CODES: 0 ok, 2 bad arguments, 3 model dir problem, 4 runtime failure, 5 output not writable.\n");
    text
}

#[derive(Debug, Clone)]
pub struct CliArgs {
    pub request: GenerateRequest,
    pub prompts_file: Option<PathBuf>,
    pub seed_given: bool,
    /// The request fields the user gave (flags and --params-from's record): a preset fills in
    /// only the others.
    pub given: Vec<&'static str>,
    pub models: PathBuf,
    /// `--checkpoint` and `--vae-file`: the weights the model dir (a template) runs with.
    pub checkpoint: Option<PathBuf>,
    pub vae_file: Option<PathBuf>,
    /// Where `<lora:NAME>` tags are looked up (see [`super::loras::lora_dir`]).
    pub lora_dir: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: bool,
    /// `--threads`: a process setting (models::threads), not a request field.
    pub threads: usize,
}

pub enum Command {
    Generate(Box<CliArgs>),
    Bench { network: BenchNetwork, models: PathBuf, latent: usize, runs: usize, threads: usize },
    Help,
    Version,
}

/// Files named on the command line (pictures, latents), read from the filesystem.
pub(super) struct CliInputs;

impl Inputs for CliInputs {
    fn read(&self, path: &str) -> std::result::Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("{path}: cannot read it ({e}); under wasmtime, map its directory with --dir"))
    }
    fn note(&self, text: String) {
        eprintln!("note: {text}");
    }
    fn folder(&self, path: &str) -> std::result::Result<(std::sync::Arc<dyn crate::model_dir::ModelFiles>, String), String> {
        crate::model_dir::DirFiles::file(std::path::Path::new(path))
            .map_err(|e| format!("{e}; under wasmtime, map it with --dir"))
    }
}

/// Parses arguments (without argv[0], which Bacalhau sets to "").
pub fn parse_args(args: &[String]) -> Result<Command> {
    let mut request = GenerateRequest::default();
    let recorded = apply_params_from(args, &mut request)?;
    let mut prompt_given = recorded.iter().any(|(key, _)| *key == "prompt");
    // A seed recorded in --params-from's PNG is given: the clock must not replace it.
    let mut seed_given = recorded.iter().any(|(key, _)| *key == "seed");
    let mut flagged: Vec<&str> = Vec::new();
    let (mut models, mut output, mut quiet, mut verbose) = (PathBuf::from("/models"), None, false, false);
    let (mut bench, mut bench_latent, mut bench_runs) = (None, 64usize, 2usize);
    let (mut prompts_file, mut lora_dir, mut checkpoint, mut vae_file) = (None, None, None, None);
    let mut threads = crate::models::threads::default_threads();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| SdError::usage(format!("{flag} needs a value (see --help)")))
        };
        match flag {
            // wasmtime forwards the `--` that separates its own flags from the module's.
            "--" => {}
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--params-from" => drop(value()?), // applied first, above
            "--prompts" => prompts_file = Some(PathBuf::from(value()?)),
            "--models" | "--model" => models = PathBuf::from(value()?),
            "--lora-dir" => lora_dir = Some(PathBuf::from(value()?)),
            "--checkpoint" => checkpoint = Some(PathBuf::from(value()?)),
            "--vae-file" => vae_file = Some(PathBuf::from(value()?)),
            "--output" | "-o" => output = Some(PathBuf::from(value()?)),
            "--quiet" | "-q" => quiet = true,
            "--verbose" | "-v" => verbose = true,
            "--tokenizer" => drop(value()?),
            "--threads" => threads = number(flag, &value()?)?,
            "--bench-unet" => bench = Some(BenchNetwork::Unet),
            "--bench" => {
                let name = value()?;
                let names = || BenchNetwork::ALL.map(BenchNetwork::name).join(", ");
                bench = Some(BenchNetwork::from_name(&name).ok_or_else(|| {
                    SdError::usage(format!("--bench {name:?}: the networks are {}", names()))
                })?);
            }
            "--latent" => bench_latent = number(flag, &value()?)?,
            "--runs" => bench_runs = number(flag, &value()?)?,
            _ => match param_by_flag(flag) {
                Some(param) => {
                    param.set(&mut request, Raw::Text(&value()?), &CliInputs).map_err(|e| worded(e))?;
                    flagged.push(param.key);
                    prompt_given |= param.key == "prompt";
                    seed_given |= param.key == "seed";
                }
                None if flag.starts_with('-') => return Err(SdError::usage(format!("unknown option {flag} (see --help)"))),
                None => {
                    return Err(SdError::usage(format!(
                        "unexpected argument {flag:?}; put the prompt after --prompt (see --help)"
                    )))
                }
            },
        }
    }
    crate::models::threads::check_threads(threads)?;
    if let Some(network) = bench {
        if bench_latent == 0 || bench_latent > (MAX_SIDE / 8) as usize || bench_runs == 0 {
            return Err(SdError::usage("--bench needs --latent between 1 and 256 and --runs of at least 1"));
        }
        return Ok(Command::Bench { network, models, latent: bench_latent, runs: bench_runs, threads });
    }
    match (prompt_given, &prompts_file) {
        (true, Some(_)) => return Err(SdError::usage("give --prompt or --prompts, not both")),
        (false, None) => return Err(SdError::usage("--prompt is required (see --help)")),
        (false, Some(_)) if output.as_ref().is_some_and(|o: &PathBuf| o.extension().is_some_and(|e| e == "png")) => {
            return Err(SdError::usage("with --prompts, --output must be a directory"))
        }
        _ => {}
    }
    crate::request::validate(&request).map_err(|e| worded_from_png(e, &recorded, &flagged))?;
    let given = recorded.iter().map(|(key, _)| *key).chain(flagged).collect();
    Ok(Command::Generate(Box::new(CliArgs { request, prompts_file, seed_given, given, models, checkpoint, vae_file, lora_dir, output, quiet, verbose, threads })))
}

/// A library error in the command line's terms: fields named by their flags.
pub fn worded(e: SdError) -> SdError {
    let message = e.worded(crate::request::flag_name);
    SdError { message, ..e }
}

/// A whole number for the command line's own options, read as the request table reads one.
fn number(flag: &str, text: &str) -> Result<usize> {
    <usize as ParamValue>::parse(Raw::Text(text), &CliInputs).map_err(|e| SdError::usage(format!("{flag} {e}")))
}

/// The name Automatic1111's `parameters` text gives a field.
fn a1111_key(param: &crate::request::Param) -> String {
    match param.a1111 {
        crate::request::A1111::Head(k) | crate::request::A1111::Field(k) => k.to_string(),
        crate::request::A1111::None => param.key.to_string(),
    }
}

/// A check's error in the command line's terms, where a value the user did not type came from
/// --params-from: named by the PNG's own `Key: value`, not by a flag never given.
fn worded_from_png(e: SdError, from_png: &[(&'static str, String)], flagged: &[&str]) -> SdError {
    let message = e.worded(|key| match from_png.iter().find(|(k, _)| *k == key) {
        Some((_, source)) if !flagged.contains(&key) => format!("{source:?} (from --params-from)"),
        _ => crate::request::flag_name(key),
    });
    SdError { message, ..e }
}

/// `--params-from PNG`: the PNG's recorded parameters, applied before the command line's
/// own flags (which therefore override them, as in the seed system's
/// `--params-from output.png --num-inference-steps 64`). Returns the fields it set, each
/// with the `Key: value` text it came from.
fn apply_params_from(args: &[String], request: &mut GenerateRequest) -> Result<Vec<(&'static str, String)>> {
    let mut from = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--params-from" {
            from = Some(it.next().cloned().ok_or_else(|| SdError::usage("--params-from needs a value (see --help)"))?);
        } else if let Some(v) = arg.strip_prefix("--params-from=") {
            from = Some(v.to_string());
        }
    }
    let Some(path) = from else { return Ok(Vec::new()) };
    let what = format!("--params-from {path}");
    let bytes = std::fs::read(&path).map_err(|e| SdError::usage(format!("{what}: cannot read it ({e})")))?;
    if !bytes.starts_with(b"\x89PNG") {
        return Err(crate::codecs::image::decode_input(&bytes, &what).err().unwrap_or_else(|| SdError::usage(format!("{what}: not a PNG"))));
    }
    let text = read_parameters(&bytes)
        .map_err(|e| SdError::usage(format!("{what}: {}", e.message)))?
        .ok_or_else(|| SdError::usage(format!("{what}: the PNG has no `parameters` text (not made by sd.wasm or Automatic1111)")))?;
    let patch = parse_parameters(&text).map_err(|e| SdError::usage(format!("{what}: {e}")))?;
    for note in &patch.notes {
        eprintln!("note: {what}: {note}");
    }
    // A value the PNG's text gives wrongly is named by its own key there ("Steps"), not a flag.
    patch.apply(request).map_err(|e| {
        let message = e.worded(|key| crate::request::param(key).map_or(key.to_string(), a1111_key));
        SdError { message, ..e }.context(&what)
    })?;
    Ok(patch.values.iter().map(|(param, _, source)| (param.key, source.clone())).collect())
}
