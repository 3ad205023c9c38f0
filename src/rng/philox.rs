//! `torch.randn` on a CUDA device, so a seed gives the noise Automatic1111 starts from with its
//! default "GPU" source (and its "NV" source, a CPU emulation of that it documents as giving
//! the same noise), on any machine.
//!
//! torch's CUDA generator is Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy
//! as 1, 2, 3", SC11; the Random123 library) through curand. For a float32 `randn` of `numel`
//! elements, element `i` comes from one Philox block:
//! * key: the seed's low and high 32 bits;
//! * counter: (the generator's offset, 0, `i` low, `i` high): curand_init(seed, subsequence
//!   = i, offset), one thread per element;
//! * of the block's four words the first two, `x` and `y`, feed curand's Box-Muller:
//!   `u = x·2⁻³² + 2⁻³³` (never 0), `v = y·c + c/2` with `c = float32(2⁻³²·2π)`, and the
//!   element is `sqrt(-2 ln u)·sin v` (the sine half; the cosine half and the block's last
//!   two words are what a GPU thread would use for elements beyond the grid, see below).
//!
//! Each `randn` call moves the offset on by one block (torch adds 4 to its offset, counted in
//! 32-bit words), so a generator's second call (a scheduler's per-step noise, drawn from the
//! picture's generator as Automatic1111 does) is its own stream.
//!
//! Arithmetic: the words become f64 exactly, ln/sqrt/sin run in f64 and the result is rounded
//! to f32 once, as Automatic1111's NV source computes it. A GPU computes in f32 with `logf`
//! and `__sincosf`, so its values differ from these by a few f32 ulps (≤ ~3e-7 for the
//! documented seed-0 values; well below anything a picture shows). Our f64 ln and sin are
//! Rust's libm on wasm and the platform's (glibc) natively: both within 1 f64 ulp, so after
//! the rounding to f32 the numbers are the same on wasmtime, wazero, a browser and native
//! builds except in the rare case a result lies within an f64 ulp of an f32 rounding boundary.
//!
//! Where a GPU differs: torch launches at most (SMs × threads per SM) threads; a tensor with
//! more elements than that is drawn in a grid-stride loop, elements beyond the grid taking the
//! other three values of their thread's curand_normal4, so its noise depends on the card. The
//! mapping above (Automatic1111's NV source) is the GPU's whenever every element gets its own
//! thread: 16,384 latents (512×512) on any card with 8 or more SMs at 2048 threads per SM.
//!
//! What this does not make Automatic1111's: its "ENSD" (eta noise seed delta: the per-step
//! noise from a second generator seeded seed + delta) and variation seeds are not read (the
//! record's notes say "not used"), and its image-to-image draws the encoder's sample from
//! torch's global generator, not the picture's.

use ndarray::{ArrayD, IxDyn};

/// Philox4x32's multipliers and key increments (the golden ratio, √3 − 1), from the paper.
const MULTIPLIERS: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const KEY_STEP: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// Philox4x32 with 10 rounds: the block for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(KEY_STEP[0]), k[1].wrapping_add(KEY_STEP[1])];
        }
        let a = u64::from(MULTIPLIERS[0]) * u64::from(c[0]);
        let b = u64::from(MULTIPLIERS[1]) * u64::from(c[2]);
        c = [(b >> 32) as u32 ^ c[1] ^ k[0], b as u32, (a >> 32) as u32 ^ c[3] ^ k[1], a as u32];
    }
    c
}

/// 2⁻³²: curand's `CURAND_2POW32_INV` (2.3283064e-10f) is exactly this.
const U_STEP: f64 = 1.0 / 4_294_967_296.0;
/// curand's `CURAND_2POW32_INV_2PI`, float32(2.3283064e-10 · 6.2831855) = 0x30c90fdb.
const ANGLE_STEP_BITS: u32 = 0x30c9_0fdb;

/// The first (sine) value of curand's Box-Muller for the words `x`, `y`, computed in f64.
fn box_muller_sin(x: u32, y: u32) -> f32 {
    let angle_step = f64::from(f32::from_bits(ANGLE_STEP_BITS));
    let u = f64::from(x) * U_STEP + U_STEP / 2.0;
    let v = f64::from(y) * angle_step + angle_step / 2.0;
    ((-2.0 * crate::math::ln(u)).sqrt() * crate::math::sin(v)) as f32
}

/// A `torch.Generator("cuda")` after `manual_seed(seed)` (the whole 64-bit seed is the key).
/// Successive calls continue one stream, like reusing the generator across `randn` calls.
#[derive(Clone, Debug)]
pub struct CudaRng {
    seed: u64,
    /// `randn` calls so far: the counter's first words.
    offset: u64,
}

impl CudaRng {
    pub fn new(seed: u64) -> Self {
        CudaRng { seed, offset: 0 }
    }

    /// The seed given to [`CudaRng::new`].
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// `torch.randn(numel)` for float32 on CUDA, flat.
    pub fn randn_vec(&mut self, numel: usize) -> Vec<f32> {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let (lo, hi) = (self.offset as u32, (self.offset >> 32) as u32);
        self.offset += 1;
        (0..numel as u64)
            .map(|i| {
                let [x, y, _, _] = philox4x32_10([lo, hi, i as u32, (i >> 32) as u32], key);
                box_muller_sin(x, y)
            })
            .collect()
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float32)` on CUDA.
    pub fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let data = self.randn_vec(shape.iter().product());
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("numel matches shape")
    }
}

impl crate::tensor::NoiseSource for CudaRng {
    fn randn(&mut self, shape: &[usize]) -> crate::tensor::Latents {
        CudaRng::randn(self, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors: the three `philox4x32 10` lines of `tests/kat_vectors`
    /// in github.com/DEShawResearch/random123 (columns: counter ×4, key ×2, expected ×4):
    ///
    /// ```text
    /// philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
    /// philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
    /// philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
    /// ```
    #[test]
    fn philox4x32_10_matches_random123_known_answers() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (counter, key, expected) in kat {
            assert_eq!(philox4x32_10(counter, key), expected, "counter {counter:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn box_muller_constants_are_curands() {
        assert_eq!(U_STEP, 2.3283064e-10f32 as f64);
        assert_eq!(f32::from_bits(ANGLE_STEP_BITS), (2.3283064e-10f64 * 6.2831855f64) as f32);
    }

    /// What Automatic1111's modules/rng_philox.py documents for `Generator(seed=0).randn((3, 4))`
    /// (torch.randn(3, 4, device="cuda") after manual_seed(0) shows the same 4 digits). Not bit
    /// for bit: its printed digits are up to 2.7e-7 from the f64 Box-Muller, a GPU's f32 error.
    #[test]
    fn seed_0_gives_automatic1111s_documented_values() {
        let documented = [
            -0.92466259,
            -0.42534415,
            -2.6438457,
            0.14518388,
            -0.12086647,
            -0.57972564,
            -0.62285122,
            -0.32838709,
            -1.07454231,
            -0.36314407,
            -1.67105067,
            2.26550497,
        ];
        let ours = CudaRng::new(0).randn(&[3, 4]);
        for (i, (a, b)) in ours.iter().zip(documented).enumerate() {
            assert!((f64::from(*a) - b).abs() < 3e-7, "element {i}: {a} vs {b}");
        }
    }

    /// Against tests/data/rng_cuda_cases.json, written by scripts/make_rng_cuda_cases.py: an
    /// independent numpy implementation of the published algorithm (Philox4x32-10 checked there
    /// against Random123's vectors, curand's Box-Muller, torch's counter layout). No GPU is
    /// here, so this is what "same as torch.randn on CUDA" is tested against. Values agree
    /// within 1e-6 (f32 rounding of f64 results from two libms: in practice identical), the
    /// float64 sums over 16,384 values within 1e-4.
    #[test]
    fn matches_the_independent_reference() {
        let text = include_str!("../../tests/data/rng_cuda_cases.json");
        let data: serde_json::Value = serde_json::from_str(text).unwrap();
        let cases = data["cases"].as_array().unwrap();
        assert!(cases.len() >= 9);
        let mut exact = 0usize;
        let mut compared = 0usize;
        for case in cases {
            let seed = case["seed"].as_u64().unwrap();
            let shape: Vec<usize> =
                case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let mut rng = CudaRng::new(seed);
            for (call, want) in case["calls"].as_array().unwrap().iter().enumerate() {
                let got = rng.randn(&shape);
                let flat: Vec<f32> = got.iter().copied().collect();
                let near = |a: f32, b: f64, what: &str| {
                    assert!((f64::from(a) - b).abs() <= 1e-6, "seed {seed} call {call} {what}: {a} vs {b}");
                };
                for (i, w) in want["first"].as_array().unwrap().iter().enumerate() {
                    let w = w.as_f64().unwrap();
                    near(flat[i], w, &format!("element {i}"));
                    compared += 1;
                    exact += usize::from(flat[i] == w as f32); // serde_json may miss an f64's last bit
                }
                for (i, w) in want["at"].as_object().unwrap() {
                    near(flat[i.parse::<usize>().unwrap()], w.as_f64().unwrap(), &format!("element {i}"));
                }
                let sums = [
                    ("sum", flat.iter().map(|&v| f64::from(v)).sum::<f64>()),
                    ("sum_abs", flat.iter().map(|&v| f64::from(v).abs()).sum::<f64>()),
                    ("sum_sq", flat.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()),
                ];
                for (name, ours) in sums {
                    let theirs = want[name].as_f64().unwrap();
                    assert!((ours - theirs).abs() <= 1e-4, "seed {seed} call {call} {name}: {ours} vs {theirs}");
                }
                let min = flat.iter().copied().fold(f32::INFINITY, f32::min);
                let max = flat.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                near(min, want["min"].as_f64().unwrap(), "min");
                near(max, want["max"].as_f64().unwrap(), "max");
            }
        }
        // Bit for bit in practice; the tolerance is for a libm's last f64 bit.
        assert!(exact * 100 >= compared * 99, "only {exact} of {compared} values identical");
    }

    /// A second call is a new block offset, not a continuation of the first call's elements.
    #[test]
    fn successive_calls_advance_the_offset() {
        let mut rng = CudaRng::new(5);
        let first = rng.randn_vec(8);
        let second = rng.randn_vec(8);
        assert_ne!(first, second);
        let [x, y, _, _] = philox4x32_10([1, 0, 3, 0], [5, 0]);
        assert_eq!(second[3], box_muller_sin(x, y));
        let high = CudaRng::new(5 | (7 << 32)).randn_vec(1)[0];
        let [x, y, _, _] = philox4x32_10([0, 0, 0, 0], [5, 7]);
        assert_eq!(high, box_muller_sin(x, y), "the seed's high word is the key's second word");
    }
}
