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

/// One replay test per fuzz target, named after it.
macro_rules! replay_tests {
    ($($target:ident),*) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), targets::$target);
        }
    )*};
}

replay_tests!(npy, png_input, parameters, prompts, scheduler_config, model_configs, tokenizer, prompt_syntax);
