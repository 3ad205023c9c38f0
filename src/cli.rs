//! The command line: flags → [`GenerateRequest`], progress on stderr, PNG + JSON sidecar out.
//! Shared by the WASI module and the native build (same flags, same output bytes).

use crate::error::{Result, SdError};
use crate::io::metadata::{image_file_name, parameters_text, sidecar_json};
use crate::io::model_dir::DirFiles;
use crate::io::png::encode_png;
use crate::io::png::RgbImage;
use crate::pipeline::{bench_unet, generate_all, validate, Event, GenerateRequest, Hooks, InitImage, VaeChoice, MAX_SIDE};
use std::path::{Path, PathBuf};

pub const HELP: &str = "\
sd.wasm — Stable Diffusion text-to-image, image-to-image and inpainting in one WebAssembly module

USAGE:
  wasmtime run --dir MODELS::/models --dir OUT::/outputs sd.wasm -- --prompt TEXT [OPTIONS]
  sd --models DIR --prompt TEXT [OPTIONS]            (native build)

OPTIONS:
  --prompt TEXT            what to draw (required, unless --prompts or --params-from)
  --prompts FILE           many pictures: one prompt per line, or one JSON object per line
                           ({\"prompt\": …, \"seed\": …, \"steps\": …, \"negative_prompt\", \"guidance_scale\",
                           \"width\", \"height\", \"scheduler\", \"eta\"}); a line without a seed uses
                           --seed + its index. Under Bacalhau with Count N, execution i renders the
                           lines i, i+N, … (BACALHAU_PARTITION_INDEX/COUNT): each line exactly once
  --negative-prompt TEXT   what to avoid (default: empty, as diffusers)
  --steps N                denoising steps, 1..1000 (default 20; alias --num-inference-steps)
  --guidance-scale G       classifier-free guidance; <= 1 skips the unconditional pass (default 7.5)
  --seed N                 random seed (default: from the clock, printed and recorded)
  --rng torch              noise generator; `torch` (the only one, and the default) reproduces
                           torch.randn with torch.Generator(\"cpu\").manual_seed(N), so a seed
                           gives the same picture as diffusers
  --width W, --height H    multiples of 8 (default: the UNet's sample_size x VAE scale factor)
  --scheduler NAME         {schedulers}
                           (default: the model's scheduler_config.json)
  --eta E                  DDIM eta in [0, 1] (default 0)
  --latents FILE.npy       initial latents [1, C, H/f, W/f], unscaled (diffusers' latents=)
  --init-image PNG         image-to-image: start from this picture (PNG only; grayscale, RGBA,
                           16-bit are converted to 8-bit RGB). The output takes its size,
                           rounded down to a multiple of 8, unless --width/--height are given;
                           it is resized to the output size (Lanczos, as diffusers/PIL)
  --strength S             in (0, 1]: how far from the init image (default 0.5, as the seed
                           system); int(steps x S) of the steps run, as diffusers
  --mask PNG               inpainting (with --init-image): white = repaint, black = keep
                           (grayscale from 128 up). A regular UNet keeps the init latents
                           outside the mask at every step; a 9-channel inpainting UNet gets
                           the mask and the masked picture. Resized to the output size if needed
  --num-images N           N pictures, seeds S, S+1, ..., S+N-1 (each its own generator and
                           its own PNG; default 1)
  --batch-size B           pictures per UNet evaluation (default 1; memory grows with B)
  --beta-start X, --beta-end X, --beta-schedule linear|scaled_linear|squaredcos_cap_v2
                           override the scheduler config's betas
  --params-from PNG        start from the parameters stored in a PNG (ours or Automatic1111's
                           `parameters` chunk); flags given as well override them
  --tokenizer NAME         accepted for the seed system's command lines; the model dir's own
                           tokenizer/ is always used
  --vae full|taesd         decoder: the model's VAE (default) or TAESD (vae_decoder_taesd/,
                           added by scripts/convert.py --taesd): much faster, slightly softer
  --preview-every K        every K steps write a small preview PNG (latents mapped to RGB)
                           beside the output, named <output stem>-step-<N>.png
  --models DIR             diffusers ONNX model dir (default /models; alias --model)
  --output PATH            PNG file or directory (default: /outputs if it exists, else .);
                           a JSON sidecar with the same stem is written beside it. With
                           --num-images N > 1 a file name gets -<seed> before .png
  --quiet                  no per-step progress lines
  --verbose                also summarize each intermediate tensor (mean, std, range, NaNs)
  --help, --version
  --bench-unet [--latent L] [--runs N]
                           time N UNet evaluations at an LxL latent (default 64, 2 runs);
                           prints one JSON line (scripts/bench.py reads it)

EXIT CODES: 0 ok, 2 bad arguments, 3 model dir problem, 4 runtime failure, 5 output not writable.
";

/// [`HELP`] with the scheduler names filled in.
pub fn help() -> String {
    HELP.replace("{schedulers}", &crate::schedulers::SchedulerKind::cli_names())
}

#[derive(Debug, Clone)]
pub struct CliArgs {
    pub request: GenerateRequest,
    pub prompts_file: Option<PathBuf>,
    pub seed_given: bool,
    pub models: PathBuf,
    pub latents_path: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: bool,
    pub init_image: Option<PathBuf>,
    pub mask: Option<PathBuf>,
    pub strength: Option<f32>,
}

pub enum Command {
    Generate(Box<CliArgs>),
    BenchUnet { models: PathBuf, latent: usize, runs: usize },
    Help,
    Version,
}

/// Parses arguments (without argv[0], which Bacalhau sets to "").
pub fn parse_args(args: &[String]) -> Result<Command> {
    let mut req = GenerateRequest::default();
    let mut prompt = None;
    let (mut seed_given, mut models, mut latents_path, mut output, mut quiet, mut verbose) =
        (false, PathBuf::from("/models"), None, None, false, false);
    let (mut bench, mut bench_latent, mut bench_runs) = (false, 64usize, 2usize);
    let mut prompts_file = None;
    let (mut init_image, mut mask, mut strength): (_, _, Option<f32>) = (None, None, None);
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| SdError::usage(format!("{flag} needs a value (see --help)")))
        };
        match flag {
            // wasmtime forwards the `--` that separates its own flags from the module's.
            "--" => {}
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--prompt" | "-p" => prompt = Some(value()?),
            "--prompts" => prompts_file = Some(PathBuf::from(value()?)),
            "--negative-prompt" => req.negative_prompt = Some(value()?),
            "--steps" | "--num-inference-steps" => req.steps = number(flag, &value()?)?,
            "--guidance-scale" | "--cfg-scale" => req.guidance_scale = number(flag, &value()?)?,
            "--seed" => {
                req.seed = number(flag, &value()?)?;
                seed_given = true;
            }
            "--width" => req.width = Some(number(flag, &value()?)?),
            "--height" => req.height = Some(number(flag, &value()?)?),
            "--scheduler" => req.scheduler = Some(value()?),
            "--eta" => req.eta = number(flag, &value()?)?,
            "--rng" => {
                let v = value()?;
                if v != "torch" {
                    return Err(SdError::usage(format!("--rng {v:?} is not known; the only generator is `torch`")));
                }
            }
            "--latents" => latents_path = Some(PathBuf::from(value()?)),
            "--models" | "--model" => models = PathBuf::from(value()?),
            "--output" | "-o" => output = Some(PathBuf::from(value()?)),
            "--quiet" | "-q" => quiet = true,
            "--verbose" | "-v" => verbose = true,
            "--vae" => {
                let v = value()?;
                req.vae = VaeChoice::parse(&v)
                    .ok_or_else(|| SdError::usage(format!("--vae {v:?} is not known; choose full or taesd")))?;
            }
            "--preview-every" => req.preview_every = Some(number(flag, &value()?)?),
            "--init-image" | "--image" => init_image = Some(PathBuf::from(value()?)),
            "--mask" | "--mask-image" => mask = Some(PathBuf::from(value()?)),
            "--strength" => strength = Some(number(flag, &value()?)?),
            "--num-images" | "--num-images-per-prompt" => req.num_images = number(flag, &value()?)?,
            "--batch-size" => req.batch_size = number(flag, &value()?)?,
            "--beta-start" => req.scheduler_overrides.beta_start = Some(number(flag, &value()?)?),
            "--beta-end" => req.scheduler_overrides.beta_end = Some(number(flag, &value()?)?),
            "--beta-schedule" => req.scheduler_overrides.beta_schedule = Some(value()?),
            "--tokenizer" => {
                value()?;
            }
            "--bench-unet" => bench = true,
            "--latent" => bench_latent = number(flag, &value()?)?,
            "--runs" => bench_runs = number(flag, &value()?)?,
            other if other.starts_with('-') => {
                return Err(SdError::usage(format!("unknown option {other} (see --help)")))
            }
            other => {
                return Err(SdError::usage(format!(
                    "unexpected argument {other:?}; put the prompt after --prompt (see --help)"
                )))
            }
        }
    }
    if bench {
        if bench_latent == 0 || bench_latent > (MAX_SIDE / 8) as usize || bench_runs == 0 {
            return Err(SdError::usage("--bench-unet needs --latent between 1 and 256 and --runs of at least 1"));
        }
        return Ok(Command::BenchUnet { models, latent: bench_latent, runs: bench_runs });
    }
    match (prompt, &prompts_file) {
        (Some(_), Some(_)) => return Err(SdError::usage("give --prompt or --prompts, not both")),
        (None, None) => return Err(SdError::usage("--prompt is required (see --help)")),
        (Some(p), None) => req.prompt = p,
        (None, Some(_)) => {
            if output.as_ref().is_some_and(|o| o.extension().is_some_and(|e| e == "png")) {
                return Err(SdError::usage("with --prompts, --output must be a directory"));
            }
        }
    }
    if init_image.is_none() {
        if mask.is_some() {
            return Err(SdError::usage("--mask needs --init-image (the picture to inpaint)"));
        }
        if let Some(s) = strength {
            return Err(SdError::usage(format!(
                "--strength {s} needs --init-image (image-to-image; with --params-from, the picture came from one)"
            )));
        }
    }
    if let Some(s) = strength {
        if !s.is_finite() || s <= 0.0 || s > 1.0 {
            return Err(SdError::usage(format!("--strength must be in (0, 1], got {s}")));
        }
    }
    validate(&req)?;
    Ok(Command::Generate(Box::new(CliArgs {
        request: req,
        prompts_file,
        seed_given,
        models,
        latents_path,
        output,
        quiet,
        verbose,
        init_image,
        mask,
        strength,
    })))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T> {
    text.trim()
        .parse()
        .map_err(|_| SdError::usage(format!("{flag} takes a number, got {text:?}")))
}

/// A seed from the clock: the module has no entropy source under Bacalhau. Kept below 2^32
/// like other SD tools, so it can be typed back in anywhere.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = nanos as u64 ^ (nanos >> 64) as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x & 0xffff_ffff
}

/// Where pictures go: the file --output names, or a directory (--output's, else /outputs
/// when it exists, as under Bacalhau, else the current directory).
enum OutputTarget {
    File(PathBuf),
    Dir(PathBuf),
}

fn output_target(args: &CliArgs) -> OutputTarget {
    match &args.output {
        Some(p) if p.is_dir() => OutputTarget::Dir(p.clone()),
        Some(p) => OutputTarget::File(p.clone()),
        None if Path::new("/outputs").is_dir() => OutputTarget::Dir(PathBuf::from("/outputs")),
        None => OutputTarget::Dir(PathBuf::new()),
    }
}

/// The PNG and its sidecar: an explicit file, or `sd-<seed>-<hash of parameters>.png` in the
/// output directory. The name depends only on the parameters: a rerun writes the same bytes
/// to the same name.
fn output_paths(args: &CliArgs, seed: u64, parameters: &str) -> (PathBuf, PathBuf) {
    let png = match output_target(args) {
        OutputTarget::File(p) if args.request.num_images > 1 => {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
            p.with_file_name(format!("{stem}-{seed}.{ext}"))
        }
        OutputTarget::File(p) => p,
        OutputTarget::Dir(dir) => dir.join(image_file_name(seed, parameters)),
    };
    let json = png.with_extension("json");
    (png, json)
}

/// Previews are named before the picture's parameters hash is known: from --output's stem
/// when it names a file, else `sd-<seed>`, beside the picture.
fn preview_base(args: &CliArgs, seed: u64) -> (PathBuf, String) {
    match output_target(args) {
        OutputTarget::File(p) => (
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
            p.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
        ),
        OutputTarget::Dir(dir) => (dir, format!("sd-{seed}")),
    }
}

/// Fails early (before minutes of work) when the output's directory does not exist.
fn check_output_dir(args: &CliArgs) -> Result<()> {
    let Some(out) = &args.output else { return Ok(()) };
    if out.is_dir() {
        return Ok(());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(SdError::output(format!(
            "--output {}: directory {} does not exist (create it; under wasmtime, map it with --dir)",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Creates and writes a file in one go: Bacalhau's output mount allows nothing else
/// (no rename, no reopen), and a failed run must leave no file behind.
fn write_once(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        SdError::output(format!(
            "cannot write {} ({e}); check that the directory exists and is writable (under wasmtime, map it with --dir HOST::GUEST)",
            path.display()
        ))
    };
    let mut file = std::fs::File::create(path).map_err(fail)?;
    if let Err(e) = file.write_all(bytes).and_then(|_| file.flush()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(())
}

struct StderrProgress {
    start: std::time::Instant,
    quiet: bool,
    verbose: bool,
    /// Where previews go: `<dir>/<stem>-step-<N>.png`.
    preview_base: Option<(PathBuf, String)>,
}

impl StderrProgress {
    fn write_preview(&self, index: usize, image: &RgbImage) {
        let Some((dir, stem)) = &self.preview_base else { return };
        let path = dir.join(format!("{stem}-step-{index:03}.png"));
        // A preview that cannot be written must not end a long run.
        let written = encode_png(image, "preview").and_then(|png| write_once(&path, &png));
        match written {
            Ok(()) if !self.quiet => eprintln!("preview: {}", path.display()),
            Ok(()) => {}
            Err(e) => eprintln!("warning: preview not written: {}", e.message),
        }
    }
}

impl Hooks for StderrProgress {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Loading { network } if !self.quiet => eprintln!("loading {network}…"),
            Event::Loaded { network, seconds } => eprintln!("loaded {network} in {seconds:.2} s"),
            Event::Step { index, total, seconds, elapsed } if !self.quiet => {
                let eta = elapsed / *index as f64 * (*total - *index) as f64;
                eprintln!("step {index}/{total}  {seconds:.2} s  ETA {eta:.1} s");
            }
            Event::Warning(text) => eprintln!("warning: {text}"),
            Event::Preview { index, image } => self.write_preview(*index, image),
            Event::Tensor { name, stats } if self.verbose => eprintln!(
                "{name}: mean {:.4} std {:.4} min {:.4} max {:.4} non-finite {}",
                stats.mean, stats.std, stats.min, stats.max, stats.non_finite
            ),
            _ => {}
        }
    }
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Runs the command line; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.kind.exit_code()
        }
    }
}

fn run_inner(args: &[String]) -> Result<()> {
    let args = expand_params_from(args)?;
    let mut cli = match parse_args(&args)? {
        Command::Help => {
            print!("{}", help());
            return Ok(());
        }
        Command::Version => {
            println!("sd.wasm {}", crate::VERSION);
            return Ok(());
        }
        Command::BenchUnet { models, latent, runs } => {
            let files = DirFiles::open(&models)?;
            let mut hooks = StderrProgress { start: std::time::Instant::now(), quiet: false, verbose: false, preview_base: None };
            let b = bench_unet(&files, latent, runs, &mut hooks)?;
            let line = serde_json::json!({
                "network": "unet", "latent": b.latent, "load_s": b.load_seconds, "runs_s": b.run_seconds, "threads": 1,
                "peak_memory_bytes": crate::models::memory::peak_bytes(),
            });
            println!("{line}");
            return Ok(());
        }
        Command::Generate(cli) => *cli,
    };
    check_output_dir(&cli)?;
    if let Some(path) = &cli.latents_path {
        let bytes = std::fs::read(path).map_err(|e| {
            SdError::usage(format!("--latents {}: cannot read it ({e})", path.display()))
        })?;
        let latents = crate::io::npy::read_npy(&bytes)
            .map_err(|e| SdError::usage(format!("--latents {}: {e}", path.display())))?;
        cli.request.latents = Some(latents);
    }
    if let Some(path) = &cli.init_image {
        let image = read_picture("--init-image", path)?;
        let mask = cli.mask.as_ref().map(|m| read_picture("--mask", m)).transpose()?;
        let strength = cli.strength.unwrap_or(DEFAULT_STRENGTH);
        cli.request.init = Some(InitImage { image, strength, mask });
        validate(&cli.request)?;
    }
    let Some(prompts_path) = cli.prompts_file.clone() else {
        if !cli.seed_given {
            cli.request.seed = clock_seed();
            eprintln!("seed: {} (pass --seed {} to reproduce)", cli.request.seed, cli.request.seed);
        }
        let files = DirFiles::open(&cli.models)?;
        return render(&cli, &cli.request, &files);
    };
    let text = std::fs::read_to_string(&prompts_path)
        .map_err(|e| SdError::usage(format!("--prompts {}: cannot read it ({e})", prompts_path.display())))?;
    let lines = crate::prompts::parse_prompts(&text, &cli.request, cli.seed_given.then_some(cli.request.seed))?;
    let total = lines.len();
    let (index, count) = crate::prompts::partition_from_env(|k| std::env::var(k).ok())?;
    let share = crate::prompts::partition(lines, index, count);
    eprintln!("prompts: {} of {total} lines for partition {index} of {count}", share.len());
    let files = DirFiles::open(&cli.models)?;
    // One failed line does not stop the others; the run still fails with the first error.
    let mut first_error = None;
    for line in &share {
        eprintln!("prompt line {}: {:?} (seed {})", line.index + 1, line.request.prompt, line.request.seed);
        if let Err(e) = render(&cli, &line.request, &files) {
            eprintln!("error: prompt line {}: {}", line.index + 1, e.message);
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The seed system's default --strength for --init-image.
pub const DEFAULT_STRENGTH: f32 = 0.5;

/// Reads an input picture (PNG), saying what was converted.
fn read_picture(flag: &str, path: &Path) -> Result<RgbImage> {
    let what = format!("{flag} {}", path.display());
    let bytes = std::fs::read(path).map_err(|e| {
        SdError::usage(format!("{what}: cannot read it ({e}); under wasmtime, map its directory with --dir"))
    })?;
    let decoded = crate::io::image::decode_input(&bytes, &what)?;
    for note in &decoded.notes {
        eprintln!("note: {what}: {note}");
    }
    Ok(decoded.image)
}

/// `--params-from PNG`: the flags the PNG's `parameters` text stands for, put before the
/// command line's own (which therefore override them, as in the seed system's
/// `--params-from output.png --num-inference-steps 64`).
pub fn expand_params_from(args: &[String]) -> Result<Vec<String>> {
    let mut rest = Vec::with_capacity(args.len());
    let mut from = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--params-from" {
            from = Some(it.next().cloned().ok_or_else(|| SdError::usage("--params-from needs a value (see --help)"))?);
        } else if let Some(v) = arg.strip_prefix("--params-from=") {
            from = Some(v.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(path) = from else { return Ok(rest) };
    let bytes = std::fs::read(&path)
        .map_err(|e| SdError::usage(format!("--params-from {path}: cannot read it ({e})")))?;
    if !bytes.starts_with(b"\x89PNG") {
        let what = format!("--params-from {path}");
        return Err(crate::io::image::decode_input(&bytes, &what).err().unwrap_or_else(|| SdError::usage(format!("{what}: not a PNG"))));
    }
    let text = crate::io::png::read_parameters(&bytes)
        .map_err(|e| SdError::usage(format!("--params-from {path}: {}", e.message)))?
        .ok_or_else(|| SdError::usage(format!("--params-from {path}: the PNG has no `parameters` text (not made by sd.wasm or Automatic1111)")))?;
    let parsed = crate::io::metadata::parse_parameters(&text)
        .map_err(|e| SdError::usage(format!("--params-from {path}: {e}")))?;
    for note in &parsed.notes {
        eprintln!("note: --params-from {path}: {note}");
    }
    let mut flags: Vec<String> = parsed.flags.into_iter().flat_map(|(f, v)| [f.to_string(), v]).collect();
    flags.extend(rest);
    Ok(flags)
}

/// The pictures of one request: generate, then write each PNG and its sidecar once.
fn render(cli: &CliArgs, request: &GenerateRequest, files: &DirFiles) -> Result<()> {
    let preview_base = request.preview_every.map(|_| preview_base(cli, request.seed));
    let mut hooks = StderrProgress { start: std::time::Instant::now(), quiet: cli.quiet, verbose: cli.verbose, preview_base };
    for out in generate_all(files, request, &mut hooks)? {
        write_picture(cli, request, &out)?;
    }
    Ok(())
}

fn write_picture(cli: &CliArgs, request: &GenerateRequest, out: &crate::pipeline::Generated) -> Result<()> {
    let parameters = parameters_text(request, out);
    let png = encode_png(&out.image, &parameters)?;
    let (png_path, json_path) = output_paths(cli, out.seed, &parameters);
    write_once(&png_path, &png)?;
    let sidecar = sidecar_json(request, out, &png_path.file_name().unwrap_or_default().to_string_lossy());
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| SdError::runtime(e.to_string()))?;
    write_once(&json_path, &json)?;
    let t = &out.timings;
    eprintln!(
        "done: {} (seed {}, {}x{}, {} steps, {}) — load: text encoder {:.2} s, UNet {:.2} s, VAE {:.2} s; \
         {:.3} s/step; decode {:.2} s; total {:.2} s; peak memory {:.2} GiB",
        png_path.display(),
        out.seed,
        out.image.width,
        out.image.height,
        out.denoising_steps,
        out.scheduler,
        t.load_text_encoder,
        t.load_unet,
        t.load_vae,
        t.denoising / (out.denoising_steps * request.num_images.div_ceil(request.batch_size.max(1))).max(1) as f64,
        t.decoding,
        t.total,
        crate::models::memory::peak_bytes().unwrap_or(0) as f64 / (1u64 << 30) as f64
    );
    println!("{}", png_path.display());
    Ok(())
}
