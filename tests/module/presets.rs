//! `--preset`: what it fills in depends on the model dir, the user's own flags win, and a
//! preset the model is not made for is refused. Checked against diffusers' pictures of the
//! family fixtures (fixtures/tiny-*/expected, scripts/make_family_fixtures.py): each preset
//! run must land on the oracle of the settings it stands for.

use crate::common::*;

const PROMPT: &[&str] = &["--prompt", "a lighthouse at dusk, oil painting", "--seed", "42", "--width", "16", "--height", "16"];

fn fixture(family: &str) -> std::path::PathBuf {
    repo().join("fixtures").join(format!("tiny-{family}"))
}

/// Runs sd.wasm on `family` with PROMPT and `extra`; returns the picture and its parameters text.
fn picture(family: &str, extra: &[&str]) -> (sd_wasm::codecs::png::RgbImage, String) {
    let out = scratch(&format!("preset-{family}-{}", extra.join("_").replace(['-', '+', '.'], "")));
    let run = run_wasm(&fixture(family), &out, &[PROMPT, extra].concat());
    assert_eq!(run.code, 0, "{family} {extra:?}:\n{}", run.stderr);
    let png = files_in(&out).into_iter().find(|p| p.extension().is_some_and(|e| e == "png")).expect("a PNG");
    let bytes = std::fs::read(&png).unwrap();
    let text = sd_wasm::codecs::png::read_parameters(&bytes).unwrap().unwrap_or_default();
    std::fs::remove_dir_all(&out).ok();
    (sd_wasm::codecs::png::decode_rgb(&bytes).unwrap(), text)
}

fn assert_oracle(family: &str, extra: &[&str], oracle: &str) {
    let (ours, _) = picture(family, extra);
    let theirs = read_png(&fixture(family).join("expected").join(oracle));
    let diff = max_pixel_diff(&ours, &theirs);
    assert!(diff <= 2, "{family} {extra:?} vs {oracle}: max pixel difference {diff}/255");
}

#[test]
fn presets_fill_in_what_the_model_declares_and_flags_win() {
    // SD-Turbo (trailing spacing, TAESD in the dir): 1 step, guidance 0, TAESD.
    assert_oracle("sd-turbo", &["--preset", "turbo"], "turbo-1-step-taesd.png");
    // A flag the user gives wins over the preset's.
    assert_oracle("sd-turbo", &["--preset", "turbo", "--vae", "full"], "turbo-1-step.png");
    // SD 1.5 with an LCM-LoRA fused (LCMScheduler config, no TAESD): 4 steps, guidance 1.
    assert_oracle("lcm-lora", &["--preset", "lcm"], "lcm-lora-4-steps-guidance-1.png");
    // An LCM UNet: 4 steps of LCM, guidance given.
    assert_oracle("lcm", &["--preset", "lcm", "--guidance-scale", "8"], "lcm-4-steps-guidance-8.png");
    // Quality on an ordinary model: the same picture as its settings given by hand, recorded.
    let (preset, text) = picture("sd21", &["--preset", "quality"]);
    let explicit = ["--steps", "25", "--scheduler", "dpm++2m-karras", "--guidance-scale", "7.5"];
    let (by_hand, _) = picture("sd21", &explicit);
    assert_eq!(preset.pixels, by_hand.pixels, "--preset quality differs from its settings given by hand");
    assert!(text.contains("Steps: 25") && text.contains("CFG scale: 7.5"), "{text}");
}

#[test]
fn a_preset_the_model_is_not_made_for_is_refused() {
    for (family, preset, hint) in [("sd21", "turbo", "quality"), ("sd-turbo", "lcm", "LCM"), ("lcm", "turbo", "lcm")] {
        let out = scratch(&format!("preset-refused-{family}-{preset}"));
        let run = run_wasm(&fixture(family), &out, &[PROMPT, &["--preset", preset]].concat());
        assert_eq!(run.code, 2, "{family} --preset {preset}:\n{}", run.stderr);
        let error = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
        assert!(error.contains(&format!("--preset {preset}")) && error.contains(hint), "{family}: {error}");
        assert!(files_in(&out).is_empty(), "{family}: a refused run wrote {:?}", files_in(&out));
    }
}
