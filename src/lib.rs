//! sd.wasm: Stable Diffusion text-to-image on tract, built to run as one WebAssembly module.
//!
//! Library first: [`pipeline::generate`] does the work; the WASI command line (`src/main.rs`
//! over [`cli`]) and the browser build (`web`, wasm-bindgen) are thin front ends. Reading the model dir goes
//! through [`io::model_dir::ModelFiles`], the one seam between platforms.

pub mod cli;
#[cfg(all(target_os = "wasi", target_env = "p2"))]
pub mod component;
pub mod error;
pub mod io;
pub mod models;
pub mod pipeline;
pub mod preview;
pub mod prompts;
pub mod rng;
pub mod schedulers;
pub mod tensor;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod web;

pub use error::{ErrorKind, Result, SdError};
pub use pipeline::{generate, GenerateRequest, Generated};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
