//! `--prompts FILE` fanned out the way a Bacalhau job with `Count: 3` runs it: three executions
//! of sd.wasm with BACALHAU_PARTITION_INDEX 0..3 and BACALHAU_PARTITION_COUNT 3. Together they
//! render every line exactly once, and each picture is byte-identical to a single run of that
//! line's parameters, though each execution runs its lines as one job (each network loaded once).

use crate::common::*;
use std::collections::BTreeMap;

#[test]
fn three_partitions_render_every_line_once_and_identically() {
    let mut union: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for index in 0..3 {
        let out = scratch(&format!("fan-out-{index}"));
        std::fs::write(out.join("prompts.txt"), PROMPTS).unwrap();
        let idx = index.to_string();
        let env = [("BACALHAU_PARTITION_INDEX", idx.as_str()), ("BACALHAU_PARTITION_COUNT", "3")];
        let args = ["--prompts", "/outputs/prompts.txt", "--seed", "5", "--steps", "2", "--quiet"];
        let run = run_wasm_with_env(&tiny_model(), &out, &args, &env);
        assert_eq!(run.code, 0, "partition {index}:\n{}", run.stderr);
        // One staged job: each network loads once for all of the partition's lines.
        for network in ["text encoder", "UNet", "VAE decoder"] {
            let loads = run.stderr.matches(&format!("loaded {network} in")).count();
            assert_eq!(loads, 1, "partition {index} loaded the {network} {loads} times:\n{}", run.stderr);
        }
        let written = pngs(&out);
        // Lines 0 and 3 go to partition 0, line 1 to 1, line 2 to 2.
        assert_eq!(written.len(), if index == 0 { 2 } else { 1 }, "partition {index}: {:?}", written.keys());
        for (name, bytes) in written {
            assert!(out.join(&name).with_extension("json").exists(), "{name} has no sidecar");
            assert!(union.insert(name.clone(), bytes).is_none(), "{name} rendered twice");
        }
        std::fs::remove_dir_all(&out).ok();
    }
    let mut singles: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (line, flags) in single_runs().iter().enumerate() {
        let out = scratch(&format!("fan-out-single-{line}"));
        let run = run_wasm(&tiny_model(), &out, flags);
        assert_eq!(run.code, 0, "single run of line {line}:\n{}", run.stderr);
        singles.extend(pngs(&out));
        std::fs::remove_dir_all(&out).ok();
    }
    assert_eq!(union.len(), 4, "{:?}", union.keys());
    assert_eq!(union.keys().collect::<Vec<_>>(), singles.keys().collect::<Vec<_>>(), "file names differ");
    for (name, bytes) in &union {
        assert!(bytes == &singles[name], "{name} differs from the single run's picture");
    }
}

#[test]
fn a_partition_outside_the_count_is_refused() {
    let out = scratch("fan-out-bad");
    std::fs::write(out.join("prompts.txt"), PROMPTS).unwrap();
    let env = [("BACALHAU_PARTITION_INDEX", "3"), ("BACALHAU_PARTITION_COUNT", "3")];
    let run = run_wasm_with_env(&tiny_model(), &out, &["--prompts", "/outputs/prompts.txt", "--seed", "5"], &env);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("BACALHAU_PARTITION_INDEX=3"), "{}", run.stderr);
    assert_eq!(files_in(&out).len(), 1, "only the prompts file: {:?}", files_in(&out));
}
