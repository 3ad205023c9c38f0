//! The command line: flags → [`GenerateRequest`](crate::request::GenerateRequest), progress on
//! stderr, PNG + JSON sidecar out. Shared by the WASI module and the native build (same flags,
//! same output bytes). A thin front end: [`args`] fills the request through the request
//! table, [`jobs`] reads prompt files, [`outputs`] names and writes files, [`progress`] reports.

pub mod args;
pub mod jobs;
pub mod loras;
pub mod outputs;
pub mod progress;

use crate::error::{Result, SdError};
use crate::model_dir::{DirFiles, ModelDir, ModelFiles};
use crate::models::checkpoint;
use crate::pipeline::{bench_network, generate_job, BenchNetwork, Event, Generated, Hooks, JobHooks};
use crate::request::{apply_preset, GenerateRequest};
use args::{parse_args, worded, CliArgs, Command};
use jobs::PromptLine;
use outputs::{check_output_dir, output_paths, preview_base, Written};
use progress::StderrProgress;
use std::sync::Arc;

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
        Command::Bench { network, models, latent, runs, threads } => return bench(network, &models, latent, runs, threads),
        Command::Generate(cli) => *cli,
    };
    crate::models::threads::use_threads(cli.threads)?;
    if cli.prompts_file.is_none() && !cli.seed_given {
        cli.request.seed = clock_seed();
        eprintln!("seed: {} (pass --seed {} to reproduce)", cli.request.seed, cli.request.seed);
    }
    check_output_dir(&cli)?;
    // The command line's request, or this partition's lines of the prompt file (with their
    // line numbers, for messages).
    let (share, line_numbers) = match &cli.prompts_file {
        None => (vec![PromptLine { index: 0, request: cli.request.clone(), keys: Vec::new() }], None),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SdError::usage(format!("--prompts {}: cannot read it ({e})", path.display())))?;
            let lines = jobs::parse_prompts(&text, &cli.request, cli.seed_given.then_some(cli.request.seed))?;
            let total = lines.len();
            let (index, count) = jobs::partition_from_env(|k| std::env::var(k).ok())?;
            let share = jobs::partition(lines, index, count);
            eprintln!("prompts: {} of {total} lines for partition {index} of {count}", share.len());
            let numbers: Vec<usize> = share.iter().map(|line| line.index + 1).collect();
            (share, Some(numbers))
        }
    };
    let files = model_files(&cli)?;
    let dir = ModelDir::open(&*files)?;
    let mut requests = Vec::with_capacity(share.len());
    let mut tagged = loras::tagged_loras(&cli);
    for mut line in share {
        let given = |key: &str| cli.given.contains(&key) || line.keys.iter().any(|k| k == key);
        let at = line_numbers.is_some().then(|| format!("--prompts line {}", line.index + 1));
        apply_preset(&mut line.request, &dir, &given)
            .and_then(|()| tagged.add_to(&mut line.request))
            .map_err(|e| match &at {
                Some(at) => worded(e).context(at),
                None => worded(e),
            })?;
        requests.push(line.request);
    }
    render(&cli, &requests, line_numbers.as_deref(), &*files)
}

/// `--bench NETWORK`: one JSON line with the network's load and run times.
fn bench(network: BenchNetwork, models: &std::path::Path, latent: usize, runs: usize, threads: usize) -> Result<()> {
    crate::models::threads::use_threads(threads)?;
    let files = DirFiles::open(models)?;
    let mut hooks = StderrProgress::new(false, false, None);
    let b = bench_network(&files, network, latent, runs, &mut hooks)?;
    let line = serde_json::json!({
        "network": b.network.name(), "latent": b.latent, "load_s": b.load_seconds, "warmup_s": b.warmup_seconds, "runs_s": b.run_seconds, "threads": threads,
        "peak_memory_bytes": crate::models::memory::peak_bytes(), "weights_per_run": b.weights_per_run,
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

/// The model dir's files; with --checkpoint, the template's with the checkpoint's weights.
fn model_files(cli: &CliArgs) -> Result<Arc<dyn ModelFiles>> {
    checkpoint::files_on_disk(&cli.models, cli.checkpoint.as_deref(), cli.vae_file.as_deref())
}

/// The pictures of every request, as one staged job (each network loaded once): each
/// request's PNGs and sidecars are written as soon as its pictures are decoded. A request that
/// fails (a network, a step, a write) takes back every file it wrote where the host allows,
/// names those it could not, and does not stop the others; the run then fails with the first
/// error. `lines`: the prompt file's line numbers, for messages.
fn render(cli: &CliArgs, requests: &[GenerateRequest], lines: Option<&[usize]>, files: &dyn ModelFiles) -> Result<()> {
    let mut job = CliJob {
        cli,
        requests,
        lines,
        progress: StderrProgress::new(cli.quiet, cli.verbose, None),
        written: (0..requests.len()).map(|_| Written::default()).collect(),
        current: None,
        first_error: None,
    };
    generate_job(files, requests, &mut job);
    job.first_error.map_or(Ok(()), Err)
}

/// The command line's side of a job: progress on stderr, previews and pictures on disk, each
/// request's files kept apart so a failed one takes back only its own.
struct CliJob<'a> {
    cli: &'a CliArgs,
    requests: &'a [GenerateRequest],
    lines: Option<&'a [usize]>,
    progress: StderrProgress,
    written: Vec<Written>,
    /// The request whose events come now (its files are in `progress.written` meanwhile).
    current: Option<usize>,
    first_error: Option<SdError>,
}

impl CliJob<'_> {
    /// Makes `index` the request whose events (previews) come next.
    fn switch_to(&mut self, index: usize) {
        if self.current == Some(index) {
            return;
        }
        if let Some(previous) = self.current.replace(index) {
            std::mem::swap(&mut self.written[previous], &mut self.progress.written);
        }
        std::mem::swap(&mut self.written[index], &mut self.progress.written);
        let request = &self.requests[index];
        self.progress.preview_base = request.preview_every.map(|_| preview_base(self.cli, request.seed));
    }
}

impl Hooks for CliJob<'_> {
    fn event(&mut self, event: &Event) {
        // A prompt file's line is named as its denoising starts.
        if let (Event::Step { index: 1, .. }, Some(lines), Some(current)) = (event, self.lines, self.current) {
            if !self.cli.quiet {
                eprintln!("prompt line {}: {:?} (seed {})", lines[current], self.requests[current].prompt, self.requests[current].seed);
            }
        }
        self.progress.event(event)
    }
    fn now(&self) -> f64 {
        self.progress.now()
    }
}

impl JobHooks for CliJob<'_> {
    fn request(&mut self, index: usize) {
        self.switch_to(index);
    }
    fn finished(&mut self, index: usize, result: Result<Vec<Generated>>) {
        self.switch_to(index);
        let request = &self.requests[index];
        let written = &mut self.progress.written;
        let outcome = result.and_then(|pictures| {
            pictures.iter().try_for_each(|out| write_picture(self.cli, request, out, written))
        });
        let Err(e) = outcome.map_err(|e| written.take_back(e)) else { return };
        if let Some(lines) = self.lines {
            eprintln!("error: prompt line {}: {}", lines[index], worded(e.clone()).message);
        }
        self.first_error.get_or_insert(e);
    }
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
