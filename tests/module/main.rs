//! Tests of the shipped module (dist/sd.wasm, or $SD_WASM / $SD_CWASM from scripts/test.sh)
//! under wasmtime, the way a user runs it. One test binary, so the library and tract are
//! linked once for all of them.

#[path = "../common/mod.rs"]
mod common;

mod artifact;
mod bad_input;
mod checkpoint;
mod cli;
mod families;
mod fan_out;
mod hostile;
mod img2img;
mod kernels;
mod lora;
mod model_variants;
mod parity;
mod presets;
mod pipeline_config;
mod rng;
mod seed_system;
