//! The generator as a WebAssembly component (wasm32-wasip2, scripts/build-component.sh):
//! implements `wit/sd.wit`'s world `sd` over [`pipeline::generate`], with the model dir (and a
//! single-file checkpoint) read from preopened directories, as the command line reads them.

use crate::error::{ErrorKind, SdError};
use crate::codecs::png::encode_png;
use crate::models::checkpoint::files_on_disk;
use std::path::Path;
use crate::pipeline::{self, Event, Hooks};
use crate::records::finish;
use crate::request::{GenerateRequest, NoInputs, VaeChoice};

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
            Event::Warning(text) => wit::Event::Warning(crate::error::word(text, |key| key.replace('_', "-"))),
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

/// A library error in the interface's terms: fields named as the WIT record names them.
fn to_wit_error(e: SdError) -> wit::Error {
    let message = e.worded(|key| key.replace('_', "-"));
    match e.kind {
        ErrorKind::Usage => wit::Error::Usage(message),
        ErrorKind::Model => wit::Error::Model(message),
        ErrorKind::Runtime => wit::Error::Runtime(message),
        ErrorKind::Output => wit::Error::Output(message),
        ErrorKind::Cancelled => wit::Error::Cancelled,
    }
}

/// The WIT record as request-table values: the interface fills the request through the same
/// rows (parse and checks) as every other front end.
fn request(r: wit::Request) -> Result<GenerateRequest, SdError> {
    let vae = match r.vae {
        wit::Vae::Full => VaeChoice::Full,
        wit::Vae::Taesd => VaeChoice::Taesd,
    };
    let fields = serde_json::json!({
        "prompt": r.prompt,
        "negative_prompt": r.negative_prompt,
        "width": r.width,
        "height": r.height,
        "steps": r.steps,
        "guidance_scale": r.guidance_scale,
        "seed": r.seed,
        "scheduler": r.scheduler,
        "eta": r.eta,
        "vae": vae.name(),
        "preview_every": r.preview_every,
        "rng": r.rng,
        "clip_skip": r.clip_skip,
    });
    let mut request = GenerateRequest::default();
    // Absent options keep the table's defaults.
    let given = fields.as_object().into_iter().flatten().filter(|(_, v)| !v.is_null());
    request.apply_json(&given.map(|(k, v)| (k.clone(), v.clone())).collect(), &NoInputs)?;
    Ok(request)
}

impl Guest for Component {
    fn generate(models: String, req: wit::Request) -> Result<wit::Generated, wit::Error> {
        let (checkpoint, vae_file) = (req.checkpoint.clone(), req.vae_file.clone());
        let req = request(req).map_err(to_wit_error)?;
        let files = files_on_disk(Path::new(&models), checkpoint.as_deref().map(Path::new), vae_file.as_deref().map(Path::new))
            .map_err(to_wit_error)?;
        let out = pipeline::generate(&*files, &req, &mut HostHooks(std::time::Instant::now())).map_err(to_wit_error)?;
        let done = finish(&req, &out, None).map_err(to_wit_error)?;
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
