//! The browser front end (wasm-bindgen, wasm32-unknown-unknown): a thin layer over
//! [`pipeline::generate_all`] and the [`ModelFiles`] seam. The page's Web Worker (web/worker.js)
//! hands over the model dir as an object that reads byte ranges of Blobs synchronously
//! (FileReaderSync over Cache API entries or picked files), so only the network being loaded
//! is ever in wasm memory, as in the CLI. Picked pictures (init picture, mask) and LoRA files
//! come the same way and are read through the request's [`Inputs`], as the CLI's files.

use crate::error::{ErrorKind, Result, SdError};
use crate::codecs::png::encode_png;
use crate::model_dir::ModelFiles;
use crate::models::checkpoint::{with_checkpoint, FileRef};
use crate::pipeline::{self, Event, Hooks};
use crate::records::finish;
use crate::request::{GenerateRequest, Inputs, TaggedLoras};
use js_sys::{Object, Reflect, Uint8Array};
use std::sync::Arc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// `{ describe(), size(rel), readRange(rel, offset, len) }` from web/worker.js.
    pub type JsModelFiles;
    #[wasm_bindgen(method)]
    fn describe(this: &JsModelFiles) -> String;
    /// The file's size in bytes, or undefined when the model dir has no such file.
    #[wasm_bindgen(method)]
    fn size(this: &JsModelFiles, rel: &str) -> Option<f64>;
    #[wasm_bindgen(method, catch, js_name = readRange)]
    fn read_range(this: &JsModelFiles, rel: &str, offset: f64, len: f64) -> std::result::Result<Uint8Array, JsValue>;
    /// For a single file (a picked or fetched checkpoint or VAE): its name among `size` and
    /// `readRange`'s, which `describe()` says where it is.
    #[wasm_bindgen(method, getter)]
    fn name(this: &JsModelFiles) -> Option<String>;

    /// `{ checkpoint?, vae?, pictures?, loras? }` from web/worker.js, each a `JsModelFiles`:
    /// a single-file checkpoint and VAE (as --checkpoint, --vae-file), the picked pictures the
    /// request names (init_image, mask) and the picked LoRA files (the CLI's --lora-dir).
    pub type JsExtras;
    #[wasm_bindgen(method, getter)]
    fn checkpoint(this: &JsExtras) -> Option<JsModelFiles>;
    #[wasm_bindgen(method, getter)]
    fn vae(this: &JsExtras) -> Option<JsModelFiles>;
    #[wasm_bindgen(method, getter)]
    fn pictures(this: &JsExtras) -> Option<JsModelFiles>;
    #[wasm_bindgen(method, getter)]
    fn loras(this: &JsExtras) -> Option<JsModelFiles>;

    /// `{ event(object), cancelled() }` from web/worker.js.
    #[derive(Clone)]
    pub type JsHooks;
    #[wasm_bindgen(method)]
    fn event(this: &JsHooks, event: &JsValue);
    #[wasm_bindgen(method)]
    fn cancelled(this: &JsHooks) -> bool;
}

/// JS reads go through this many bytes at a time, so a large tensor never needs a second
/// full-size copy outside wasm memory.
const READ_CHUNK: usize = 16 << 20;

/// Model files read through the worker; a Cancel pressed while a network loads stops the load
/// at the next read of `cancel` (a full-size UNet takes many seconds to read).
struct BrowserFiles {
    files: JsModelFiles,
    cancel: JsHooks,
}

impl BrowserFiles {
    fn new(files: JsModelFiles, cancel: &JsHooks) -> Self {
        BrowserFiles { files, cancel: cancel.clone() }
    }
}

// Only the worker that calls `generate` touches these JS handles: web/pkg has one thread, and the
// threaded build's pool threads (src/web_threads.rs) run tract's kernels, never a read or a hook.
unsafe impl Send for BrowserFiles {}
unsafe impl Sync for BrowserFiles {}

impl ModelFiles for BrowserFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        let size = ModelFiles::size(self, rel).ok_or_else(|| SdError::model(format!("{}: missing file {rel}", self.describe())))?;
        let len = len.unwrap_or(size.saturating_sub(offset));
        let mut buf = Vec::new();
        buf.try_reserve_exact(len as usize).map_err(|_| {
            SdError::runtime(format!("out of memory reading {}/{rel} ({} MB)", self.describe(), len >> 20))
        })?;
        buf.resize(len as usize, 0);
        self.read_into(rel, offset, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let size = ModelFiles::size(self, rel).unwrap_or(0);
        if offset + buf.len() as u64 > size {
            return Err(SdError::model(format!(
                "{}/{rel} is truncated: {size} bytes, but the model refers to bytes {offset}..{}",
                self.describe(),
                offset + buf.len() as u64
            )));
        }
        let mut at = offset;
        for chunk in buf.chunks_mut(READ_CHUNK) {
            if self.cancel.cancelled() {
                return Err(SdError::new(ErrorKind::Cancelled, "cancelled"));
            }
            let bytes = self.files.read_range(rel, at as f64, chunk.len() as f64).map_err(|e| {
                SdError::model(format!("{}/{rel}: read failed ({})", self.describe(), js_message(&e)))
            })?;
            if bytes.length() as usize != chunk.len() {
                return Err(SdError::model(format!(
                    "{}/{rel}: read {} bytes at {at}, expected {}",
                    self.describe(),
                    bytes.length(),
                    chunk.len()
                )));
            }
            bytes.copy_to(chunk);
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn size(&self, rel: &str) -> Option<u64> {
        self.files.size(rel).map(|s| s as u64)
    }

    fn describe(&self) -> String {
        self.files.describe()
    }
}

struct BrowserHooks(JsHooks);

/// `{ type, ...fields }` for the worker to post to the page.
fn object(kind: &str, fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    let _ = Reflect::set(&o, &"type".into(), &kind.into());
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

impl Hooks for BrowserHooks {
    fn event(&mut self, event: &Event) {
        let js = match event {
            Event::Loading { network } => object("loading", &[("network", (*network).into())]),
            Event::Loaded { network, seconds } => {
                object("loaded", &[("network", (*network).into()), ("seconds", (*seconds).into())])
            }
            Event::Step { index, total, seconds, elapsed } => object(
                "step",
                &[
                    ("index", (*index as f64).into()),
                    ("total", (*total as f64).into()),
                    ("seconds", (*seconds).into()),
                    ("elapsed", (*elapsed).into()),
                ],
            ),
            Event::Preview { index, image } => match encode_png(image, "preview") {
                Ok(png) => object(
                    "preview",
                    &[("index", (*index as f64).into()), ("png", Uint8Array::from(png.as_slice()).into())],
                ),
                Err(_) => return,
            },
            Event::Warning(text) => {
                object("warning", &[("message", crate::error::word(text, |key| key.to_string()).into())])
            }
            Event::Tensor { .. } => return,
        };
        self.0.event(&js);
    }

    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }

    fn now(&self) -> f64 {
        js_sys::Date::now() / 1000.0
    }
}

fn js_message(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Usage => "usage",
        ErrorKind::Model => "model",
        ErrorKind::Runtime => "runtime",
        ErrorKind::Output => "output",
        ErrorKind::Cancelled => "cancelled",
    }
}

/// Fields named by their form fields' keys ("width must be a multiple of 8 …").
fn to_js_error(e: SdError) -> JsValue {
    object("error", &[("kind", kind_name(e.kind).into()), ("message", e.to_string().into())])
}

/// The page's picked files as the request's [`Inputs`]: pictures by name ("init_image":
/// "NAME" in the request), LoRA files by name («loras» and `<lora:NAME:W>` tags).
struct PickedFiles {
    pictures: Option<Arc<dyn ModelFiles>>,
    loras: Option<Arc<dyn ModelFiles>>,
}

impl Inputs for PickedFiles {
    fn read(&self, path: &str) -> std::result::Result<Vec<u8>, String> {
        match &self.pictures {
            Some(files) if files.exists(path) => files.read_range(path, 0, None).map_err(|e| e.message),
            _ => Err(format!("{path} was not picked")),
        }
    }

    fn folder(&self, path: &str) -> std::result::Result<(Arc<dyn ModelFiles>, String), String> {
        match &self.loras {
            Some(files) if files.exists(path) => Ok((files.clone(), path.to_string())),
            _ => Err(format!("{path} is not among the LoRA files picked")),
        }
    }
}

/// The request from the page: a JSON object of request-table keys (prompt, negative_prompt,
/// seed, steps, guidance_scale, width, height, scheduler, vae, init_image, mask, strength,
/// num_images, preview_every, …). The seed is required: the page chooses and shows it.
/// Also returns the keys the request gives (a preset fills in only the others).
fn parse_request(json: &str, inputs: &PickedFiles) -> Result<(GenerateRequest, Vec<String>)> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| SdError::usage(format!("the request is not a JSON object ({e})")))?;
    if !object.contains_key("seed") {
        return Err(SdError::usage("the request has no seed"));
    }
    let mut request = GenerateRequest::default();
    request.apply_json(&object, inputs)?;
    Ok((request, object.keys().cloned().collect()))
}

/// A picked or fetched single file, as the checkpoint seam takes it.
fn single_file(file: JsModelFiles, kind: &str, hooks: &JsHooks) -> Result<FileRef> {
    let name = file.name().ok_or_else(|| SdError::usage(format!("the {kind} file has no name")))?;
    Ok((Arc::new(BrowserFiles::new(file, hooks)), name))
}

/// `<lora:NAME:W>` in the prompts loads NAME.safetensors from the LoRA files picked.
fn page_loras(loras: Option<Arc<dyn ModelFiles>>) -> TaggedLoras {
    TaggedLoras::new(
        Box::new(move || loras.clone().ok_or_else(|| SdError::usage("no LoRA files picked"))),
        Box::new(|name| {
            SdError::usage(format!(
                "the prompt names <lora:{name}:…>, but {name}.safetensors is not among the LoRA files picked: pick it too"
            ))
        }),
    )
}

/// Generates the request's pictures (`num_images` of them) from the model dir `files`, with
/// the `extras` the page picked (see [`JsExtras`]). Resolves to `{ pictures: [{ png: Uint8Array,
/// parameters, fileName, metadata }] }` (metadata: the CLI's JSON sidecar as a string, the
/// file name the CLI's default one); throws `{ type: "error", kind, message }`.
#[wasm_bindgen]
pub fn generate(files: JsModelFiles, request_json: &str, hooks: JsHooks, extras: JsExtras) -> std::result::Result<JsValue, JsValue> {
    run(files, request_json, hooks, extras).map_err(to_js_error)
}

fn run(files: JsModelFiles, request_json: &str, hooks: JsHooks, extras: JsExtras) -> Result<JsValue> {
    let picked = |files: Option<JsModelFiles>| files.map(|f| Arc::new(BrowserFiles::new(f, &hooks)) as Arc<dyn ModelFiles>);
    let inputs = PickedFiles { pictures: picked(extras.pictures()), loras: picked(extras.loras()) };
    let (mut request, given) = parse_request(request_json, &inputs)?;
    let checkpoint = extras.checkpoint().map(|f| single_file(f, "checkpoint", &hooks)).transpose()?;
    let vae = extras.vae().map(|f| single_file(f, "VAE", &hooks)).transpose()?;
    let files = with_checkpoint(Arc::new(BrowserFiles::new(files, &hooks)), checkpoint, vae)?;
    let dir = crate::model_dir::ModelDir::open(&*files)?;
    crate::request::apply_preset(&mut request, &dir, &|key| given.iter().any(|g| g == key))?;
    page_loras(inputs.loras.clone()).add_to(&mut request)?;
    let mut hooks = BrowserHooks(hooks);
    let pictures = js_sys::Array::new();
    for out in pipeline::generate_all(&*files, &request, &mut hooks)? {
        let done = finish(&request, &out, None)?;
        pictures.push(&object(
            "picture",
            &[
                ("png", Uint8Array::from(done.png.as_slice()).into()),
                ("parameters", done.parameters.into()),
                ("fileName", done.file_name.into()),
                ("metadata", done.sidecar.to_string().into()),
            ],
        ));
    }
    Ok(object("result", &[("pictures", pictures.into())]))
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Keeps a panic's message: with panic = "abort" the instance traps, and the worker reads it
/// back with [`last_panic`] to say what went wrong in plain words.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = crate::error::panic_message(info);
        LAST_PANIC.with(|p| *p.borrow_mut() = message);
    }));
}

#[wasm_bindgen]
pub fn last_panic() -> String {
    LAST_PANIC.with(|p| p.borrow().clone())
}

/// Starts a per-node profile of every network evaluation (`?profile=1` on the page, for
/// scripts/bench_browser.py --profile): what each kind of op costs in the tab, at any thread count.
#[wasm_bindgen(js_name = profileStart)]
pub fn profile_start() {
    crate::models::profile::start(performance_now);
}

/// The profile collected since [`profile_start`], as the native `examples/profile.rs` prints it.
#[wasm_bindgen(js_name = profileReport)]
pub fn profile_report() -> String {
    crate::models::profile::take().map(|p| p.report(25)).unwrap_or_default()
}

/// `performance.now()` in seconds: microseconds in a worker (Date.now()'s milliseconds would
/// round most nodes to zero).
fn performance_now() -> f64 {
    let global = js_sys::global();
    let now = Reflect::get(&global, &"performance".into())
        .and_then(|performance| Reflect::get(&performance, &"now".into())?.dyn_into::<js_sys::Function>()?.call0(&performance));
    now.ok().and_then(|t| t.as_f64()).unwrap_or_else(js_sys::Date::now) / 1000.0
}

#[wasm_bindgen]
pub fn version() -> String {
    crate::VERSION.to_string()
}
