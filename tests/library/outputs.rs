//! The command line's outputs (issue 16, data loss): names that cover every input, no file
//! ever overwritten or written through a symbolic link, --output refused before any work when
//! it cannot be written as asked, and a failed run that takes back what it wrote. Runs the
//! command line in-process (`sd_wasm::cli::run`) on the native filesystem, where renames work;
//! tests/module/hostile.rs runs the same cases against dist/sd.wasm and the write-once mount.

use crate::common::*;
use sd_wasm::codecs::png::{encode_png, RgbImage};
use std::path::{Path, PathBuf};

const OUTPUT: i32 = 5;

fn run(out: &Path, models: &Path, extra: &[&str]) -> i32 {
    let mut args: Vec<String> =
        ["--prompt", "a red cube", "--seed", "1", "--steps", "2", "--width", "16", "--height", "16", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--models".into(), models.display().to_string()]);
    if !extra.contains(&"--output") {
        args.extend(["--output".into(), out.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    sd_wasm::cli::run(&args)
}

fn picture(dir: &Path, name: &str, rgb: [u8; 3]) -> PathBuf {
    let image = RgbImage { width: 16, height: 16, pixels: rgb.repeat(256) };
    let path = dir.join(name);
    std::fs::write(&path, encode_png(&image, "").unwrap()).unwrap();
    path
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_in(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default())).collect()
}

#[test]
fn different_init_pictures_get_different_names() {
    let (inputs, out) = (scratch("lib-init-in"), scratch("lib-init-out"));
    let red = picture(&inputs, "red.png", [200, 20, 20]);
    let blue = picture(&inputs, "blue.png", [20, 20, 200]);
    assert_eq!(run(&out, &tiny_model(), &["--init-image", red.to_str().unwrap()]), 0);
    let first = snapshot(&out);
    assert_eq!(run(&out, &tiny_model(), &["--init-image", blue.to_str().unwrap()]), 0);
    let after = snapshot(&out);
    assert_eq!(after.len(), 4, "two PNGs and two sidecars: {after:?}");
    assert!(first.iter().all(|f| after.contains(f)), "the first run's files changed");
}

#[test]
fn an_existing_output_file_is_refused_and_kept() {
    let out = scratch("lib-exists");
    let target = out.join("pic.png");
    std::fs::write(&target, b"precious").unwrap();
    assert_eq!(run(&out, &tiny_model(), &["--output", target.to_str().unwrap()]), OUTPUT);
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(files_in(&out).len(), 1);
    // A batch file that exists (x-2.png) is refused before any work, too.
    let batch = out.join("x.png");
    std::fs::write(out.join("x-2.png"), b"older").unwrap();
    assert_eq!(run(&out, &tiny_model(), &["--output", batch.to_str().unwrap(), "--num-images", "2"]), OUTPUT);
    assert_eq!(std::fs::read(out.join("x-2.png")).unwrap(), b"older");
    assert_eq!(files_in(&out).len(), 2, "{:?}", files_in(&out));
}

#[test]
fn a_rerun_into_the_same_directory_keeps_the_first_files() {
    let out = scratch("lib-rerun");
    assert_eq!(run(&out, &tiny_model(), &[]), 0);
    let first = snapshot(&out);
    assert_eq!(run(&out, &tiny_model(), &[]), OUTPUT);
    assert_eq!(snapshot(&out), first, "no temporary file left, nothing changed");
}

#[test]
fn output_names_that_cannot_be_written_are_refused_before_any_work() {
    let out = scratch("lib-bad-output");
    let prompts = out.join("prompts.txt");
    std::fs::write(&prompts, "one\ntwo\n").unwrap();
    let json = out.join("pic.json");
    let slash = format!("{}/", out.join("missing").display());
    let result = out.join("result");
    let missing = out.join("no/such/x.png");
    let cases: [&[&str]; 4] = [
        &["--output", json.to_str().unwrap()],
        &["--output", slash.as_str()],
        &["--output", missing.to_str().unwrap()],
        &["--output", result.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()],
    ];
    for case in cases {
        // --prompts replaces --prompt: give it alone.
        let code = if case.contains(&"--prompts") { run_prompts(case) } else { run(&out, &tiny_model(), case) };
        assert_eq!(code, OUTPUT, "{case:?}");
        assert_eq!(files_in(&out), [prompts.clone()], "{case:?} left files");
    }
}

fn run_prompts(extra: &[&str]) -> i32 {
    let models = tiny_model().display().to_string();
    let mut args: Vec<&str> =
        vec!["--seed", "1", "--steps", "2", "--width", "16", "--height", "16", "--quiet", "--models", &models];
    args.extend(extra);
    sd_wasm::cli::run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

#[cfg(unix)]
#[test]
fn a_planted_symbolic_link_is_never_written_through() {
    let (out, elsewhere) = (scratch("lib-symlink"), scratch("lib-symlink-victim"));
    let victim = elsewhere.join("victim.txt");
    std::fs::write(&victim, b"do not touch").unwrap();
    // The preview's name is known before the run: plant it, and the picture's own name.
    std::os::unix::fs::symlink(&victim, out.join("sd-1-step-001.png")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("pic.png")).unwrap();
    let pic = out.join("pic.png");
    assert_eq!(run(&out, &tiny_model(), &["--output", pic.to_str().unwrap()]), OUTPUT);
    assert_eq!(run(&out, &tiny_model(), &["--preview-every", "1", "--steps", "3"]), 0);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
}

#[test]
fn a_failed_run_takes_back_its_previews() {
    let out = scratch("lib-failed-previews");
    let m = tiny_model_copy("lib-broken-vae");
    std::fs::write(m.join("vae_decoder/model.onnx"), b"not an onnx file").unwrap();
    assert_ne!(run(&out, &m, &["--preview-every", "1", "--steps", "3"]), 0);
    assert!(files_in(&out).is_empty(), "left: {:?}", files_in(&out));
}

#[test]
fn a_failure_takes_back_every_file_the_run_wrote() {
    use sd_wasm::cli::outputs::{write_new, Written};
    let out = scratch("lib-take-back");
    std::fs::write(out.join("theirs.png"), b"not ours").unwrap();
    let mut written = Written::default();
    written.write(&out.join("a-step-001.png"), b"preview").unwrap();
    written.write(&out.join("a.png"), b"picture").unwrap();
    assert!(written.write(&out.join("theirs.png"), b"over it").is_err());
    assert!(write_new(&out.join("a.png"), b"again").is_err(), "an existing name is refused");
    let error = written.take_back(sd_wasm::SdError::runtime("step 3 failed"));
    assert_eq!(error.message, "step 3 failed", "everything could be removed: nothing to list");
    assert_eq!(files_in(&out), [out.join("theirs.png")], "only the file that was there before stays");
    assert_eq!(std::fs::read(out.join("theirs.png")).unwrap(), b"not ours");
}
