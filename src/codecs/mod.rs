//! Byte formats: PNG (with its `parameters` text), input pictures (PNG decoding, PIL's Lanczos
//! resize and grayscale), and `.npy` tensors.

pub mod image;
pub mod npy;
pub mod png;
