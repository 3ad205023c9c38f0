//! PyTorch's CPU random stream, so a seed gives the same latents (and the same per-step
//! noise) as `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`
//! in diffusers.
//!
//! torch's CPU generator is MT19937 seeded like `std::mt19937(seed as u32)`. `randn` takes
//! one of two paths, chosen by element count:
//! * numel >= 16 (`normal_fill`): every element gets a 24-bit float uniform, then each
//!   block of 16 is Box-Muller transformed in f32 (first 8 are `1 - u` radii inputs, last
//!   8 angles). A ragged tail is handled by drawing 16 fresh uniforms and overwriting the
//!   last 16 elements.
//! * numel < 16: a serial `normal_distribution<double>` per element, 53-bit uniforms, that
//!   caches its second Box-Muller value in the generator (and so across calls).
//!
//! The scalar path matches torch bit for bit. torch computes the vector path with SLEEF's
//! AVX2 log/sin/cos (≤1 ulp error), so about 1 value in 6 differs from ours by 1-2 ulp
//! (≤ ~5e-7 absolute, |x| < 6); reproducing SLEEF's rounding is not worth it for latents.

use ndarray::{ArrayD, IxDyn};

const MT_N: usize = 624;
const MT_M: usize = 397;

/// MT19937, 32-bit output: identical to `std::mt19937` and torch's `at::mt19937`.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, index: MT_N }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..MT_N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % MT_N] & LOWER);
            let mut v = self.state[(i + MT_M) % MT_N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= MATRIX_A;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// A `torch.Generator("cpu")` after `manual_seed(seed)`. Successive calls continue one
/// stream, like reusing the generator across `randn` calls.
#[derive(Clone)]
pub struct TorchRng {
    seed: u64,
    mt: Mt19937,
    /// torch's `next_double_normal_sample_`: the spare Box-Muller value of the scalar path.
    next_double_normal: Option<f64>,
}

impl TorchRng {
    /// Like `manual_seed(seed)`; torch keeps only the low 32 bits for the engine.
    pub fn new(seed: u64) -> Self {
        TorchRng { seed, mt: Mt19937::new(seed as u32), next_double_normal: None }
    }

    /// The seed given to [`TorchRng::new`] (torch's `initial_seed()`).
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// torch's `random64()`: first word is the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `at::normal_distribution<double>(0, 1)`, including the cached second value.
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * crate::math::ln_1p(-u2)).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * crate::math::sin(theta));
        r * crate::math::cos(theta)
    }

    /// `torch.rand(numel)` for float32, flat.
    pub fn rand_vec(&mut self, numel: usize) -> Vec<f32> {
        (0..numel).map(|_| self.uniform_f32()).collect()
    }

    /// `torch.randn(numel)` for float32, flat.
    pub fn randn_vec(&mut self, numel: usize) -> Vec<f32> {
        if numel < 16 {
            return (0..numel).map(|_| self.normal_f64() as f32).collect();
        }
        let mut d = self.rand_vec(numel);
        for block in d.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !numel.is_multiple_of(16) {
            let tail = &mut d[numel - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        d
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float32)` on CPU.
    pub fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let numel = shape.iter().product();
        let data = self.randn_vec(numel);
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("numel matches shape")
    }

    /// `torch.rand(shape, generator=g, dtype=torch.float32)` on CPU.
    pub fn rand(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let numel = shape.iter().product();
        let data = self.rand_vec(numel);
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("numel matches shape")
    }
}

/// Scheduler noise (e.g. Euler ancestral) continues the generator's stream, as in diffusers.
impl crate::tensor::NoiseSource for TorchRng {
    fn randn(&mut self, shape: &[usize]) -> crate::tensor::Latents {
        TorchRng::randn(self, shape)
    }
}

/// torch's `normal_fill_16` (mean 0, std 1), with its f32 arithmetic. log/cos/sin go through
/// f64 and are rounded once: about as close to SLEEF's ≤1-ulp results as f32 libm; through
/// [`crate::math`], so native, WASI and browser latents agree to the bit.
fn box_muller_16(d: &mut [f32]) {
    const TWO_PI: f32 = 2.0 * std::f32::consts::PI;
    for j in 0..8 {
        let u1 = 1.0f32 - d[j];
        let u2 = d[j + 8];
        let r = (-2.0f32 * (crate::math::ln(u1 as f64) as f32)).sqrt();
        let theta = (TWO_PI * u2) as f64;
        d[j] = r * (crate::math::cos(theta) as f32);
        d[j + 8] = r * (crate::math::sin(theta) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_reference_10000th_output() {
        // The C++ standard requires the 10000th output of default-seeded mt19937 be 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut v = 0;
        for _ in 0..10000 {
            v = mt.next_u32();
        }
        assert_eq!(v, 4_123_659_995);
    }
}
