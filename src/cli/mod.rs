//! The command line: flags → [`GenerateRequest`](crate::request::GenerateRequest), progress on
//! stderr, PNG + JSON sidecar out. Shared by the WASI module and the native build (same flags,
//! same output bytes). A thin front end: [`args`] fills the request through the request
//! table, [`jobs`] reads prompt files, [`outputs`] names and writes files, [`progress`] reports.

pub mod args;
pub mod jobs;
pub mod outputs;
pub mod progress;

use crate::error::{Result, SdError};
use crate::model_dir::DirFiles;
use crate::pipeline::{bench_unet, generate_all, Generated};
use crate::request::GenerateRequest;
use args::{parse_args, worded, CliArgs, Command};
use outputs::{check_output_dir, output_paths, preview_base, Written};
use progress::StderrProgress;

/// Runs the command line from the process's arguments (as the OS gives them: a non-UTF-8
/// argument is a usage error, not a panic); returns the process exit code.
pub fn run_os(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    let mut text = Vec::new();
    for (i, arg) in args.enumerate() {
        match arg.into_string() {
            Ok(a) => text.push(a),
            Err(bad) => {
                eprintln!("error: argument {} is not valid UTF-8 ({:?}): give file names and prompts in UTF-8", i + 1, bad);
                return crate::ErrorKind::Usage.exit_code();
            }
        }
    }
    run(&text)
}

/// Runs the command line; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", worded(e.clone()).message);
            e.kind.exit_code()
        }
    }
}

fn run_inner(args: &[String]) -> Result<()> {
    let mut cli = match parse_args(args)? {
        Command::Help => {
            print!("{}", args::help());
            return Ok(());
        }
        Command::Version => {
            println!("sd.wasm {}", crate::VERSION);
            return Ok(());
        }
        Command::BenchUnet { models, latent, runs } => return bench(&models, latent, runs),
        Command::Generate(cli) => *cli,
    };
    let Some(prompts_path) = cli.prompts_file.clone() else {
        if !cli.seed_given {
            cli.request.seed = clock_seed();
            eprintln!("seed: {} (pass --seed {} to reproduce)", cli.request.seed, cli.request.seed);
        }
        check_output_dir(&cli)?;
        let files = DirFiles::open(&cli.models)?;
        return render(&cli, &cli.request, &files);
    };
    check_output_dir(&cli)?;
    let text = std::fs::read_to_string(&prompts_path)
        .map_err(|e| SdError::usage(format!("--prompts {}: cannot read it ({e})", prompts_path.display())))?;
    let lines = jobs::parse_prompts(&text, &cli.request, cli.seed_given.then_some(cli.request.seed))?;
    let total = lines.len();
    let (index, count) = jobs::partition_from_env(|k| std::env::var(k).ok())?;
    let share = jobs::partition(lines, index, count);
    eprintln!("prompts: {} of {total} lines for partition {index} of {count}", share.len());
    let files = DirFiles::open(&cli.models)?;
    // One failed line does not stop the others; the run still fails with the first error.
    let mut first_error = None;
    for line in &share {
        eprintln!("prompt line {}: {:?} (seed {})", line.index + 1, line.request.prompt, line.request.seed);
        if let Err(e) = render(&cli, &line.request, &files) {
            eprintln!("error: prompt line {}: {}", line.index + 1, worded(e.clone()).message);
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `--bench-unet`: one JSON line with the UNet's load and evaluation times.
fn bench(models: &std::path::Path, latent: usize, runs: usize) -> Result<()> {
    let files = DirFiles::open(models)?;
    let mut hooks = StderrProgress::new(false, false, None);
    let b = bench_unet(&files, latent, runs, &mut hooks)?;
    let line = serde_json::json!({
        "network": "unet", "latent": b.latent, "load_s": b.load_seconds, "runs_s": b.run_seconds, "threads": 1,
        "peak_memory_bytes": crate::models::memory::peak_bytes(),
    });
    println!("{line}");
    Ok(())
}

/// A seed from the clock: the module has no entropy source under Bacalhau. Kept below 2^32
/// like other SD tools, so it can be typed back in anywhere.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut x = nanos as u64 ^ (nanos >> 64) as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x & 0xffff_ffff
}

/// The pictures of one request: generate, then write each PNG and its sidecar once. A failure
/// (of a network, a step, a write) takes back every file the request wrote where the host
/// allows, and names those it could not.
fn render(cli: &CliArgs, request: &GenerateRequest, files: &DirFiles) -> Result<()> {
    let preview_base = request.preview_every.map(|_| preview_base(cli, request.seed));
    let mut hooks = StderrProgress::new(cli.quiet, cli.verbose, preview_base);
    let rendered = generate_all(files, request, &mut hooks)
        .and_then(|pictures| pictures.iter().try_for_each(|out| write_picture(cli, request, out, &mut hooks.written)));
    rendered.map_err(|e| hooks.written.take_back(e))
}

fn write_picture(cli: &CliArgs, request: &GenerateRequest, out: &Generated, written: &mut Written) -> Result<()> {
    let parameters = crate::records::parameters::parameters_text(request, out);
    let (png_path, json_path) = output_paths(cli, request, out.seed, &parameters);
    let file_name = png_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let done = crate::records::finish(request, out, Some(file_name))?;
    written.write(&png_path, &done.png)?;
    let json = serde_json::to_vec_pretty(&done.sidecar).map_err(|e| SdError::runtime(e.to_string()))?;
    written.write(&json_path, &json)?;
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
        crate::records::seconds_per_step(request, out),
        t.decoding,
        t.total,
        crate::models::memory::peak_bytes().unwrap_or(0) as f64 / (1u64 << 30) as f64
    );
    println!("{}", png_path.display());
    Ok(())
}
