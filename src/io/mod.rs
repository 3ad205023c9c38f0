//! Everything that touches bytes outside the process: the model directory (the one seam
//! between files and in-memory bytes), PNG with metadata, input pictures, .npy latents.

pub mod image;
pub mod metadata;
pub mod model_dir;
pub mod npy;
pub mod png;
