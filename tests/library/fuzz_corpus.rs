//! Replays the fuzz corpora (fuzz/corpus/<target>/, grown by `cargo +nightly fuzz run`) through
//! the fuzz targets' own bodies: every input that ever crashed or found new code stays a test.
//! Fast (no fuzzing): CI runs it with the other library tests.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let replayed = std::panic::catch_unwind(|| body(&data));
        assert!(replayed.is_ok(), "fuzz target {target} panics on {}", path.display());
        count += 1;
    }
    assert!(count > 0, "{}: an empty corpus", dir.display());
}

#[test]
fn npy() {
    replay("npy", targets::npy);
}

#[test]
fn png_input() {
    replay("png_input", targets::png_input);
}

#[test]
fn parameters() {
    replay("parameters", targets::parameters);
}

#[test]
fn prompts() {
    replay("prompts", targets::prompts);
}

#[test]
fn scheduler_config() {
    replay("scheduler_config", targets::scheduler_config);
}

#[test]
fn model_configs() {
    replay("model_configs", targets::model_configs);
}

#[test]
fn tokenizer() {
    replay("tokenizer", targets::tokenizer);
}
