//! The noise generators. A request's `--rng` names one ([`RngKind`]); each picture gets its
//! own generator seeded with its seed, and every draw of that picture (the initial latents,
//! an init image's encoder sample, a scheduler's per-step noise) continues its stream.
//!
//! * [`TorchRng`] (`torch`, the default): torch's CPU generator, as diffusers uses it.
//! * [`CudaRng`] (`cuda`): `torch.randn` on a CUDA device (Philox4x32-10), the noise of
//!   Automatic1111's default "GPU" source and of its "NV" CPU emulation of it.
//!
//! The rest of the crate sees a generator only as a [`NoiseSource`]: [`RngKind::generator`]
//! is the one place that tells them apart.

mod philox;
mod torch;

pub use philox::{philox4x32_10, CudaRng};
pub use torch::TorchRng;

use crate::tensor::NoiseSource;

/// Which generator a request draws its noise from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RngKind {
    /// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`: diffusers'
    /// pictures, and Automatic1111's with "RNG: CPU".
    #[default]
    Torch,
    /// `torch.randn(shape, generator=torch.Generator("cuda").manual_seed(seed))`:
    /// Automatic1111's pictures with its default GPU noise (no "RNG" field) or "RNG: NV".
    Cuda,
}

impl RngKind {
    pub const ALL: [RngKind; 2] = [RngKind::Torch, RngKind::Cuda];

    /// Our names, and Automatic1111's names for its sources (any case): "CPU" is torch's CPU
    /// generator; "GPU" and "NV" (its CPU emulation of the GPU's) are `cuda`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "torch" | "cpu" => Some(RngKind::Torch),
            "cuda" | "gpu" | "nv" => Some(RngKind::Cuda),
            _ => None,
        }
    }

    /// The name `--rng` takes, the sidecar and prompt files use.
    pub fn name(self) -> &'static str {
        match self {
            RngKind::Torch => "torch",
            RngKind::Cuda => "cuda",
        }
    }

    /// The `RNG` value Automatic1111 writes for the same noise, which it reads back as that
    /// source: "CPU" (torch's CPU generator) or "NV" (its CPU emulation of the GPU's noise,
    /// the same numbers on every machine, where "GPU" depends on the card; see [`CudaRng`]).
    pub fn a1111_name(self) -> &'static str {
        match self {
            RngKind::Torch => "CPU",
            RngKind::Cuda => "NV",
        }
    }

    /// A new generator of this kind, seeded with `seed`.
    pub fn generator(self, seed: u64) -> Box<dyn NoiseSource + Send> {
        match self {
            RngKind::Torch => Box::new(TorchRng::new(seed)),
            RngKind::Cuda => Box::new(CudaRng::new(seed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_the_same_kind() {
        for kind in RngKind::ALL {
            assert_eq!(RngKind::parse(kind.name()), Some(kind));
            assert_eq!(RngKind::parse(kind.a1111_name()), Some(kind));
        }
        assert_eq!(RngKind::parse("GPU"), Some(RngKind::Cuda));
        assert_eq!(RngKind::parse("cpu"), Some(RngKind::Torch));
        assert_eq!(RngKind::parse("mt19937"), None);
    }

    /// Each kind's generator is the one it names, and draws differ between kinds.
    #[test]
    fn generator_draws_from_its_kind() {
        let shape = [1, 4, 8, 8];
        let torch = RngKind::Torch.generator(42).randn(&shape);
        let cuda = RngKind::Cuda.generator(42).randn(&shape);
        assert_eq!(torch, TorchRng::new(42).randn(&shape));
        assert_eq!(cuda, CudaRng::new(42).randn(&shape));
        let differ = torch.iter().zip(cuda.iter()).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 256);
    }
}
