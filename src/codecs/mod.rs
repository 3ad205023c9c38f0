//! Byte formats: PNG (with its `parameters` text), input pictures (PNG decoding, PIL's Lanczos
//! resize and grayscale), `.npy` tensors, safetensors (LoRA files) and SHA-256 (their hashes).

pub mod image;
pub mod npy;
pub mod png;
pub mod safetensors;
pub mod sha256;
