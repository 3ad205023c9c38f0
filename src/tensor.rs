//! The tensor type every layer shares, and the noise source schedulers draw from.

pub type Latents = ndarray::ArrayD<f32>;

/// Source of standard-normal noise; the pipeline passes its RNG (a torch-compatible MT19937
/// generator) so later draws continue the same stream as diffusers' generator.
pub trait NoiseSource {
    fn randn(&mut self, shape: &[usize]) -> Latents;
}
