//! sd.wasm's own numeric kernels, kept in their own crate so the size-optimized `dist`
//! profile can build them at opt-level 3 (Cargo.toml, `[profile.dist.package.sd-kernels]`).
//! Each has a portable version (what native builds and tests run) and, on wasm32 with
//! `simd128`, an explicit SIMD128 one; tests compare both against the reference.

pub mod cast;
pub mod lanes;
pub mod low_rank;
pub mod mmm;
pub mod pack;
pub mod softmax;
pub mod winograd;
