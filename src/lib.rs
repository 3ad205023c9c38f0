//! sd.wasm: Stable Diffusion on tract, built to run as one WebAssembly module.
//!
//! Library first, layers pointing down: front ends ([`cli`], `web`, `component`) →
//! [`records`] (what a picture records about itself) → [`pipeline`] (stages over plain data) →
//! [`request`] (the parameter table) → [`models`], [`schedulers`], [`tokenizer`], [`prompt`], [`rng`],
//! [`model_dir`] (the one seam between platforms: [`model_dir::ModelFiles`]) → [`codecs`],
//! [`tensor`], [`error`].

pub mod cli;
pub mod codecs;
#[cfg(all(target_os = "wasi", target_env = "p2"))]
pub mod component;
pub mod error;
pub mod math;
pub mod model_dir;
pub mod models;
pub mod pipeline;
pub mod prompt;
pub mod records;
pub mod request;
pub mod rng;
pub mod schedulers;
pub mod tensor;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod web;
#[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
pub mod web_threads;

pub use error::{ErrorKind, Result, SdError};
pub use pipeline::{generate, Generated};
pub use request::GenerateRequest;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
