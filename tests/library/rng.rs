//! TorchRng against torch.randn on the CPU generator (tests/data/torch_randn.json, from
//! `python3 scripts/make_tokenizer_cases.py --rng`).

use serde_json::Value;
use sd_wasm::rng::TorchRng;

/// torch's f32 path uses SLEEF log/sin/cos (≤1 ulp), we use libm: about 1 value in 6 differs
/// by an ulp or two (|x| < 6, so ≤ ~1e-6). The scalar (< 16 values) path agrees exactly.
fn tol(want: f32) -> f32 {
    (2.5e-7 * want.abs()).max(3e-7)
}

fn data() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch_randn.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read torch_randn.json")).expect("parse")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn close(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= tol(*w), "{what}[{i}]: got {g}, torch {w} (diff {d:e})");
        worst = worst.max(d);
    }
    worst
}

#[test]
fn matches_torch_randn() {
    let data = data();
    let mut worst = 0f32;
    let mut checked = 0;
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let seed = case["seed"].as_u64().unwrap();
        let mut rng = TorchRng::new(seed);
        for (k, draw) in case["draws"].as_array().unwrap().iter().enumerate() {
            let shape: Vec<usize> = draw["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let a = rng.randn(&shape);
            assert_eq!(a.shape(), &shape[..], "{name} draw {k}: shape");
            let got: Vec<f32> = a.iter().copied().collect();
            let what = format!("{name} draw {k} {shape:?}");
            if let Some(values) = draw.get("values") {
                if got.len() < 16 {
                    // torch's scalar path: f64 Box-Muller, same libm results, so bit for bit
                    assert_eq!(got, floats(values), "{what}: scalar path must match exactly");
                }
                worst = worst.max(close(&got, &floats(values), &what));
                checked += got.len();
                continue;
            }
            let head = floats(&draw["head"]);
            let tail = floats(&draw["tail"]);
            worst = worst.max(close(&got[..head.len()], &head, &format!("{what} head")));
            worst = worst.max(close(&got[got.len() - tail.len()..], &tail, &format!("{what} tail")));
            let stride = draw["stride"].as_u64().unwrap() as usize;
            let strided: Vec<f32> = got.iter().step_by(stride).copied().collect();
            worst = worst.max(close(&strided, &floats(&draw["strided"]), &format!("{what} strided")));
            checked += head.len() + tail.len() + strided.len();
            // Sums catch a wrong value anywhere in the middle.
            let sum: f64 = got.iter().map(|&x| x as f64).sum();
            let sum_sq: f64 = got.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let sum_abs: f64 = got.iter().map(|&x| (x as f64).abs()).sum();
            for (label, mine, theirs) in [("sum", sum, &draw["sum"]), ("sum_sq", sum_sq, &draw["sum_sq"]), ("sum_abs", sum_abs, &draw["sum_abs"])] {
                let theirs = theirs.as_f64().unwrap();
                assert!((mine - theirs).abs() < 1e-3, "{what} {label}: got {mine}, torch {theirs}");
            }
        }
    }
    assert!(checked > 2000, "checked only {checked} values");
    eprintln!("worst |diff| vs torch over {checked} values: {worst:e}");
}

#[test]
fn seed_keeps_low_32_bits_like_torch() {
    let a = TorchRng::new((1u64 << 32) + 5).randn(&[1, 4, 8, 8]);
    let b = TorchRng::new(5).randn(&[1, 4, 8, 8]);
    assert_eq!(a, b);
    assert_eq!(TorchRng::new((1u64 << 32) + 5).initial_seed(), (1u64 << 32) + 5);
}

#[test]
fn clones_continue_identically() {
    let mut a = TorchRng::new(3);
    a.randn(&[7]); // leaves a cached Box-Muller value
    let mut b = a.clone();
    assert_eq!(a.randn(&[5]), b.randn(&[5]));
    assert_eq!(a.randn(&[2, 16]), b.randn(&[2, 16]));
}

#[test]
fn noise_source_continues_the_stream() {
    use sd_wasm::tensor::NoiseSource;
    let mut a = TorchRng::new(42);
    let mut b = TorchRng::new(42);
    let noise: &mut dyn NoiseSource = &mut b;
    assert_eq!(a.randn(&[1, 4, 8, 8]), noise.randn(&[1, 4, 8, 8]));
    assert_eq!(a.randn(&[3]), noise.randn(&[3]));
}
