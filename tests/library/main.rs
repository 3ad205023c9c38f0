//! Tests that call the library directly (native build): the RNG, the schedulers and the
//! tokenizer against their Python references, and the whole pipeline through its API.
//! One test binary, so the library and tract are linked once for all of them.

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod fuzz_corpus;
mod hostile;
mod layers;
mod lora;
mod native_pipeline;
mod outputs;
mod prompts;
mod resident;
mod rng;
mod schedulers;
mod threads;
mod tokenizer;
