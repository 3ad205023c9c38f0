//! The tensor type the denoising loop passes around, and where its noise comes from. Lives at
//! the bottom of the crate: the pipeline, the generator and the schedulers all use it.

/// Latents (and every other float tensor the schedulers see): a dynamic-rank f32 array.
pub type Latents = ndarray::ArrayD<f32>;

/// Source of standard-normal noise; the pipeline passes its RNG (a torch-compatible MT19937
/// generator) so later draws continue the same stream as diffusers' generator.
pub trait NoiseSource {
    fn randn(&mut self, shape: &[usize]) -> Latents;
}
