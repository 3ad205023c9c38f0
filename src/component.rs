//! The generator as a WebAssembly component (wasm32-wasip2, scripts/build-component.sh):
//! implements `wit/sd.wit`'s world `sd` over [`pipeline::generate`], with the model dir read
//! from a preopened directory through [`DirFiles`], as the command line does.

use crate::error::{ErrorKind, SdError};
use crate::io::metadata::finish;
use crate::io::model_dir::DirFiles;
use crate::io::png::encode_png;
use crate::pipeline::{self, Event, GenerateRequest, Hooks, VaeChoice};

wit_bindgen::generate!({ path: "wit", world: "sd" });

use exports::sd_wasm::generator::generator::Guest;
use sd_wasm::generator::progress;
use sd_wasm::generator::types as wit;

struct Component;

struct HostHooks(std::time::Instant);

impl Hooks for HostHooks {
    fn event(&mut self, event: &Event) {
        let e = match event {
            Event::Loading { network } => wit::Event::Loading(network.to_string()),
            Event::Loaded { network, seconds } => wit::Event::Loaded((network.to_string(), *seconds)),
            Event::Step { index, total, seconds, elapsed } => wit::Event::Step(wit::StepProgress {
                index: *index as u32,
                total: *total as u32,
                seconds: *seconds,
                elapsed: *elapsed,
            }),
            Event::Preview { index, image } => match encode_png(image, "preview") {
                Ok(png) => wit::Event::Preview(wit::Preview { index: *index as u32, png }),
                Err(_) => return,
            },
            Event::Warning(text) => wit::Event::Warning(text.clone()),
            Event::Tensor { .. } => return,
        };
        progress::report(&e);
    }

    fn cancelled(&self) -> bool {
        progress::cancelled()
    }

    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

fn to_wit_error(e: SdError) -> wit::Error {
    match e.kind {
        ErrorKind::Usage => wit::Error::Usage(e.message),
        ErrorKind::Model => wit::Error::Model(e.message),
        ErrorKind::Runtime => wit::Error::Runtime(e.message),
        ErrorKind::Output => wit::Error::Output(e.message),
        ErrorKind::Cancelled => wit::Error::Cancelled,
    }
}

fn request(r: wit::Request) -> GenerateRequest {
    GenerateRequest {
        prompt: r.prompt,
        negative_prompt: r.negative_prompt,
        width: r.width,
        height: r.height,
        steps: r.steps as usize,
        guidance_scale: r.guidance_scale,
        seed: r.seed,
        scheduler: r.scheduler,
        eta: r.eta,
        latents: None,
        vae: match r.vae {
            wit::Vae::Full => VaeChoice::Full,
            wit::Vae::Taesd => VaeChoice::Taesd,
        },
        preview_every: r.preview_every.map(|k| k as usize),
        // Text-to-image, one picture: the interface has no image-to-image or batch fields yet.
        ..GenerateRequest::default()
    }
}

impl Guest for Component {
    fn generate(models: String, req: wit::Request) -> Result<wit::Generated, wit::Error> {
        let req = request(req);
        let files = DirFiles::open(&models).map_err(to_wit_error)?;
        let out = pipeline::generate(&files, &req, &mut HostHooks(std::time::Instant::now())).map_err(to_wit_error)?;
        let done = finish(&req, &out).map_err(to_wit_error)?;
        Ok(wit::Generated {
            png: done.png,
            parameters: done.parameters,
            file_name: done.file_name,
            width: out.image.width,
            height: out.image.height,
            scheduler: out.scheduler.to_string(),
            steps: out.steps as u32,
            seed: req.seed,
            model_name: out.model_name,
            model_identity: out.model_identity,
            metadata_json: done.sidecar.to_string(),
        })
    }
}

export!(Component);
