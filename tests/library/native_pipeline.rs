//! The library itself (native build) against diffusers: the same pipeline code the wasm module
//! runs, called through its API with in-memory model files (the browser's path).

use crate::common::*;
use sd_wasm::model_dir::{DirFiles, MemoryFiles, ModelFiles};
use sd_wasm::pipeline::{generate, Event, Hooks};
use sd_wasm::request::GenerateRequest;
use sd_wasm::schedulers::SchedulerKind;

struct Recorder {
    steps: usize,
    cancel_after: Option<usize>,
}

impl Hooks for Recorder {
    fn event(&mut self, event: &Event) {
        if let Event::Step { .. } = event {
            self.steps += 1;
        }
    }
    fn cancelled(&self) -> bool {
        self.cancel_after.is_some_and(|n| self.steps >= n)
    }
    fn now(&self) -> f64 {
        0.0
    }
}

/// The main case with euler-a (fixtures/tiny/expected/euler-a.png).
fn euler_a_request() -> GenerateRequest {
    GenerateRequest { scheduler: SchedulerKind::parse("euler-a"), ..main_case_request() }
}

/// All files of a directory, read into memory under their relative paths.
fn memory_files(root: &std::path::Path) -> MemoryFiles {
    let mut files = MemoryFiles { name: "tiny (memory)".into(), ..Default::default() };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                files.files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

#[test]
fn library_matches_diffusers_from_files_and_from_memory() {
    let expected = read_png(&expected_dir().join("euler-a.png"));
    let dir = DirFiles::open(tiny_model()).unwrap();
    let mem = memory_files(&tiny_model());
    for files in [&dir as &dyn ModelFiles, &mem] {
        let mut hooks = Recorder { steps: 0, cancel_after: None };
        let out = generate(files, &euler_a_request(), &mut hooks).unwrap();
        assert_eq!(hooks.steps, 12);
        let diff = max_pixel_diff(&out.image, &expected);
        assert!(diff <= 2, "{}: max pixel difference {diff}", files.describe());
    }
}

/// An LCM UNet (fixtures/tiny-lcm): the guidance embedding, no unconditional pass, the
/// model dir's LCM scheduler; diffusers' LatentConsistencyModelPipeline's picture.
#[test]
fn library_runs_an_lcm_unet_as_diffusers() {
    let lcm = repo().join("fixtures/tiny-lcm");
    let expected = read_png(&lcm.join("expected/lcm-4-steps-guidance-8.png"));
    let req = GenerateRequest {
        steps: 4,
        guidance_scale: 8.0,
        scheduler: None,
        negative_prompt: None,
        ..euler_a_request()
    };
    let out = generate(&DirFiles::open(&lcm).unwrap(), &req, &mut Recorder { steps: 0, cancel_after: None }).unwrap();
    assert_eq!((out.scheduler, out.timings.unet_evaluations), ("lcm", 4));
    let diff = max_pixel_diff(&out.image, &expected);
    assert!(diff <= 2, "tiny-lcm: max pixel difference {diff}");
}

#[test]
fn cancel_stops_within_a_step() {
    let dir = DirFiles::open(tiny_model()).unwrap();
    let mut hooks = Recorder { steps: 0, cancel_after: Some(3) };
    let err = generate(&dir, &euler_a_request(), &mut hooks).unwrap_err();
    assert_eq!(err.kind, sd_wasm::ErrorKind::Cancelled);
    assert_eq!(hooks.steps, 3);
}

/// Inpainting through the library API (regular UNet, mask blending): the same loop,
/// so the same step events and cancel check; the picture matches diffusers' Inpaint pipeline.
#[test]
fn library_inpaints_with_progress_and_cancel() {
    let picture = |name: &str| sd_wasm::codecs::png::decode_rgb(&std::fs::read(img2img_dir().join(name)).unwrap()).unwrap();
    let request = GenerateRequest {
        scheduler: SchedulerKind::parse("pndm"),
        width: None,
        height: None,
        init_image: Some(picture("init.png")),
        strength: Some(0.75),
        mask: Some(picture("mask.png")),
        ..euler_a_request()
    };
    let dir = DirFiles::open(tiny_model()).unwrap();
    let mut hooks = Recorder { steps: 0, cancel_after: None };
    let out = generate(&dir, &request, &mut hooks).unwrap();
    // int(12 × 0.75) = 9 steps, plus PNDM's repeated first timestep.
    assert_eq!((hooks.steps, out.denoising_steps), (10, 10));
    let diff = max_pixel_diff(&out.image, &read_png(&img2img_dir().join("inpaint-pndm-0.75.png")));
    assert!(diff <= 2, "max pixel difference {diff}");

    let mut hooks = Recorder { steps: 0, cancel_after: Some(2) };
    let err = generate(&dir, &request, &mut hooks).unwrap_err();
    assert_eq!((err.kind, hooks.steps), (sd_wasm::ErrorKind::Cancelled, 2));
}

/// A job's hooks: each request's result, and the networks it loaded.
#[derive(Default)]
struct JobRecorder {
    results: std::collections::BTreeMap<usize, sd_wasm::Result<Vec<sd_wasm::Generated>>>,
    loaded: Vec<&'static str>,
}

impl Hooks for JobRecorder {
    fn event(&mut self, event: &Event) {
        if let Event::Loaded { network, .. } = event {
            self.loaded.push(network);
        }
    }
    fn now(&self) -> f64 {
        0.0
    }
}

impl sd_wasm::pipeline::JobHooks for JobRecorder {
    fn finished(&mut self, index: usize, result: sd_wasm::Result<Vec<sd_wasm::Generated>>) {
        assert!(self.results.insert(index, result).is_none(), "request {index} finished twice");
    }
}

/// A staged job loads each network once per shape, whatever the order of its requests; a
/// request that fails leaves the others alone; every picture is the one its request gives alone.
#[test]
fn a_job_loads_each_network_once_per_shape_and_matches_single_runs() {
    let picture = sd_wasm::codecs::png::decode_rgb(&std::fs::read(img2img_dir().join("init.png")).unwrap()).unwrap();
    let base = GenerateRequest { steps: 3, ..euler_a_request() };
    let requests = vec![
        GenerateRequest { prompt: "a red cube".into(), seed: 1, ..base.clone() },
        GenerateRequest { width: Some(24), seed: 2, ..base.clone() },
        // Fails when planned: no TAESD in the tiny model.
        GenerateRequest { vae: sd_wasm::request::VaeChoice::Taesd, ..base.clone() },
        GenerateRequest { prompt: "a blue ball".into(), seed: 3, num_images: 2, batch_size: 2, ..base.clone() },
        GenerateRequest { width: None, height: None, init_image: Some(picture), strength: Some(0.5), seed: 4, ..base.clone() },
        GenerateRequest { prompt: "a green cone".into(), seed: 5, ..base.clone() },
    ];
    let dir = DirFiles::open(tiny_model()).unwrap();
    let mut job = JobRecorder::default();
    sd_wasm::pipeline::generate_job(&dir, &requests, &mut job);
    let count = |network| job.loaded.iter().filter(|&&n| n == network).count();
    assert_eq!(count("text encoder"), 1, "{:?}", job.loaded);
    assert_eq!(count("VAE encoder"), 1, "{:?}", job.loaded);
    // Shapes: 16x16 batch 1 (requests 0, 5), 24x16 (1), 16x16 batch 2 (3), the init picture's size (4).
    let sizes: std::collections::BTreeSet<_> =
        job.results.values().flatten().map(|pics| (pics[0].image.width, pics[0].image.height, pics.len())).collect();
    assert_eq!(count("UNet"), sizes.len(), "{:?} for {sizes:?}", job.loaded);
    assert!(count("VAE decoder") <= sizes.len(), "{:?}", job.loaded);
    assert_eq!(job.results.len(), requests.len());
    let err = job.results[&2].as_ref().unwrap_err();
    assert!(err.message.contains("taesd"), "{}", err.message);
    for (index, request) in requests.iter().enumerate().filter(|&(i, _)| i != 2) {
        let alone = sd_wasm::pipeline::generate_all(&dir, request, &mut Recorder { steps: 0, cancel_after: None }).unwrap();
        let in_job = job.results[&index].as_ref().unwrap();
        assert_eq!(in_job.len(), alone.len());
        for (a, b) in in_job.iter().zip(&alone) {
            assert_eq!((a.seed, &a.image.pixels), (b.seed, &b.image.pixels), "request {index}");
        }
    }
}

/// Prompts of one and of two chunks need two UNet shapes (77 and 154 text tokens): a job
/// loads each once, whatever the order, and each picture is its single run's.
#[test]
fn a_job_groups_requests_by_text_length() {
    let long = "a very detailed painting of a lighthouse on a rocky cliff, ".repeat(8);
    let base = GenerateRequest { steps: 2, ..euler_a_request() };
    let requests: Vec<GenerateRequest> = (0..4)
        .map(|i| GenerateRequest {
            prompt: if i % 2 == 0 { base.prompt.clone() } else { format!("{long}{i}") },
            seed: i,
            ..base.clone()
        })
        .collect();
    let dir = DirFiles::open(tiny_model()).unwrap();
    let mut job = JobRecorder::default();
    sd_wasm::pipeline::generate_job(&dir, &requests, &mut job);
    assert_eq!(job.loaded.iter().filter(|&&n| n == "UNet").count(), 2, "{:?}", job.loaded);
    for (index, request) in requests.iter().enumerate() {
        let alone = generate(&dir, request, &mut Recorder { steps: 0, cancel_after: None }).unwrap();
        assert_eq!(job.results[&index].as_ref().unwrap()[0].image.pixels, alone.image.pixels, "request {index}");
    }
}

/// Model files whose network files take 1,000 s per read on the run's clock (a [`ClockHooks`]);
/// configs (JSON) read in no time.
struct SlowFiles {
    inner: DirFiles,
    clock: std::sync::Arc<std::sync::Mutex<f64>>,
}

impl ModelFiles for SlowFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> sd_wasm::Result<Vec<u8>> {
        if !rel.ends_with(".json") {
            *self.clock.lock().unwrap() += 1000.0;
        }
        self.inner.read_range(rel, offset, len)
    }
    fn size(&self, rel: &str) -> Option<u64> {
        self.inner.size(rel)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Hooks on a clock that only reads move: each step event's `elapsed`, and the previews.
struct ClockHooks {
    clock: std::sync::Arc<std::sync::Mutex<f64>>,
    elapsed: Vec<f64>,
    previews: usize,
}

impl Hooks for ClockHooks {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Step { elapsed, .. } => self.elapsed.push(*elapsed),
            Event::Preview { .. } => self.previews += 1,
            _ => {}
        }
    }
    fn now(&self) -> f64 {
        *self.clock.lock().unwrap()
    }
}

/// Seconds per step are the steps': the UNet's load and a TAESD preview decoder's load, both
/// inside the denoising stage, are timed as loads. Every read of a network's files takes 1,000 s
/// here and nothing else takes time, so the steps must come out at 0 s while the loads take
/// thousands (a 1-step run's "s/step" was its UNet load plus the step).
#[test]
fn seconds_per_step_leave_out_the_loads() {
    let clock = std::sync::Arc::new(std::sync::Mutex::new(0.0));
    let files = SlowFiles { inner: DirFiles::open(repo().join("fixtures/tiny-sd-turbo")).unwrap(), clock: clock.clone() };
    let request = GenerateRequest { steps: 3, guidance_scale: 0.0, preview_every: Some(1), ..euler_a_request() };
    let mut hooks = ClockHooks { clock, elapsed: Vec::new(), previews: 0 };
    let out = generate(&files, &request, &mut hooks).unwrap();
    let t = &out.timings;
    assert!(t.load_unet >= 1000.0 && t.load_vae >= 2000.0, "loads not timed as loads: {t:?}");
    assert_eq!((t.denoising, sd_wasm::records::seconds_per_step(&request, &out)), (0.0, 0.0), "{t:?}");
    assert_eq!((hooks.elapsed, hooks.previews), (vec![0.0; 3], 2));
}
