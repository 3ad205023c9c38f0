//! The browser front end (wasm-bindgen, wasm32-unknown-unknown): a thin layer over
//! [`pipeline::generate`] and the [`ModelFiles`] seam. The page's Web Worker (web/worker.js)
//! hands over the model dir as an object that reads byte ranges of Blobs synchronously
//! (FileReaderSync over Cache API entries or picked files), so only the network being loaded
//! is ever in wasm memory, as in the CLI.

use crate::error::{ErrorKind, Result, SdError};
use crate::codecs::png::encode_png;
use crate::model_dir::ModelFiles;
use crate::models::checkpoint::{with_checkpoint, FileRef};
use crate::pipeline::{self, Event, Hooks};
use crate::records::finish;
use crate::request::{GenerateRequest, NoInputs};
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

    /// `{ event(object), cancelled() }` from web/worker.js.
    pub type JsHooks;
    #[wasm_bindgen(method)]
    fn event(this: &JsHooks, event: &JsValue);
    #[wasm_bindgen(method)]
    fn cancelled(this: &JsHooks) -> bool;
}

/// JS reads go through this many bytes at a time, so a large tensor never needs a second
/// full-size copy outside wasm memory.
const READ_CHUNK: usize = 16 << 20;

struct BrowserFiles(JsModelFiles);

// wasm32-unknown-unknown without threads: one thread only, so the JS handle never crosses one.
unsafe impl Send for BrowserFiles {}
unsafe impl Sync for BrowserFiles {}

impl ModelFiles for BrowserFiles {
    fn read_range(&self, rel: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        let size = self.size(rel).ok_or_else(|| SdError::model(format!("{}: missing file {rel}", self.describe())))?;
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
        let size = self.size(rel).unwrap_or(0);
        if offset + buf.len() as u64 > size {
            return Err(SdError::model(format!(
                "{}/{rel} is truncated: {size} bytes, but the model refers to bytes {offset}..{}",
                self.describe(),
                offset + buf.len() as u64
            )));
        }
        let mut at = offset;
        for chunk in buf.chunks_mut(READ_CHUNK) {
            let bytes = self.0.read_range(rel, at as f64, chunk.len() as f64).map_err(|e| {
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
        self.0.size(rel).map(|s| s as u64)
    }

    fn describe(&self) -> String {
        self.0.describe()
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

/// The request from the page: a JSON object of request-table keys (prompt, negative_prompt,
/// seed, steps, guidance_scale, width, height, scheduler, eta, vae, preview_every, …). The seed
/// is required: the page chooses and shows it.
/// Also returns the keys the request gives (a preset fills in only the others).
fn parse_request(json: &str) -> Result<(GenerateRequest, Vec<String>)> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| SdError::usage(format!("the request is not a JSON object ({e})")))?;
    if !object.contains_key("seed") {
        return Err(SdError::usage("the request has no seed"));
    }
    let mut request = GenerateRequest::default();
    request.apply_json(&object, &NoInputs)?;
    Ok((request, object.keys().cloned().collect()))
}

/// A picked or fetched single file, as the checkpoint seam takes it.
fn single_file(file: JsModelFiles, kind: &str) -> Result<FileRef> {
    let name = file.name().ok_or_else(|| SdError::usage(format!("the {kind} file has no name")))?;
    Ok((Arc::new(BrowserFiles(file)), name))
}

/// Generates one picture from the model dir `files`; with `checkpoint` (and `vae`), a
/// single-file checkpoint (and a separate VAE) run with `files` as their template, as the
/// command line's --checkpoint and --vae-file. Resolves to `{ png: Uint8Array, parameters,
/// fileName, metadata }` (metadata: the CLI's JSON sidecar as a string); throws
/// `{ type: "error", kind, message }`.
#[wasm_bindgen]
pub fn generate(
    files: JsModelFiles,
    request_json: &str,
    hooks: JsHooks,
    checkpoint: Option<JsModelFiles>,
    vae: Option<JsModelFiles>,
) -> std::result::Result<JsValue, JsValue> {
    let (mut request, given) = parse_request(request_json).map_err(to_js_error)?;
    let checkpoint = checkpoint.map(|f| single_file(f, "checkpoint")).transpose().map_err(to_js_error)?;
    let vae = vae.map(|f| single_file(f, "VAE")).transpose().map_err(to_js_error)?;
    let files = with_checkpoint(Arc::new(BrowserFiles(files)), checkpoint, vae).map_err(to_js_error)?;
    let dir = crate::model_dir::ModelDir::open(&*files).map_err(to_js_error)?;
    crate::request::apply_preset(&mut request, &dir, &|key| given.iter().any(|g| g == key)).map_err(to_js_error)?;
    let mut hooks = BrowserHooks(hooks);
    let out = pipeline::generate(&*files, &request, &mut hooks).map_err(to_js_error)?;
    let done = finish(&request, &out, None).map_err(to_js_error)?;
    Ok(object(
        "result",
        &[
            ("png", Uint8Array::from(done.png.as_slice()).into()),
            ("parameters", done.parameters.into()),
            ("fileName", done.file_name.into()),
            ("metadata", done.sidecar.to_string().into()),
        ],
    ))
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

#[wasm_bindgen]
pub fn version() -> String {
    crate::VERSION.to_string()
}
