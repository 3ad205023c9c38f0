//! sd.wasm on a real Bacalhau network: Bacalhau v1.9.3 built from the Go module proxy
//! (tools/bacalhau, scripts/build-bacalhau.sh), started here on loopback as one
//! orchestrator + compute node and two more compute nodes (scripts/bacalhau-node.sh), jobs
//! submitted and results fetched with its CLI as a user does. The node is stopped at the end,
//! also when an assertion fails.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Node {
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Node {
    /// Starts `compute_nodes` compute nodes that may mount the repo and `scratch` read-only.
    fn start(dir: &Path, scratch: &Path, compute_nodes: usize) -> Node {
        let script = repo().join("scripts/bacalhau-node.sh");
        let out = Command::new(&script)
            .arg("start")
            .env("BACALHAU_NODE_DIR", dir)
            .env("BACALHAU_COMPUTE_NODES", compute_nodes.to_string())
            .env("BACALHAU_ALLOW_PATHS", format!("{}/**:{}/**", repo().display(), scratch.display()))
            .output()
            .expect("running scripts/bacalhau-node.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the node did not start:\n{stderr}");
        eprint!("{stderr}");
        // Lines of the form: export NAME='value'
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect::<Vec<_>>();
        Node { env, dir: dir.to_path_buf() }
    }

    fn var(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("{name} not in the node's env")).1
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.var("BACALHAU"));
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running the bacalhau CLI");
        assert!(out.status.success(), "bacalhau {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `bacalhau wasm run` with the module and the tiny model as allow-listed local inputs.
    fn submit_wasm(&self, memory: &str, args: &[&str]) -> String {
        let module = format!("file://{}:/app/sd.wasm", sd_wasm_path().display());
        let models = format!("file://{}:/models", tiny_model().display());
        let mut cli = vec!["wasm", "run", &module, "--memory", memory, "-i", &models, "-o", "outputs:/outputs", "--wait=false", "--id-only", "--"];
        cli.extend_from_slice(args);
        job_id(self.cli(&cli))
    }

    fn submit_spec(&self, spec: &Path) -> String {
        job_id(self.cli(&["job", "run", spec.to_str().unwrap(), "--wait=false", "--id-only"]))
    }

    /// Waits for a terminal state; returns `job describe`'s JSON.
    fn wait(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let described: Value = serde_json::from_slice(&self.cli(&["job", "describe", id, "--output", "json"]).stdout).unwrap();
            let state = described["Job"]["State"]["StateType"].as_str().unwrap_or("").to_string();
            if ["Completed", "Failed", "Stopped"].contains(&state.as_str()) {
                eprintln!("job {id}: {state} after {:.1} s", start.elapsed().as_secs_f64());
                return described;
            }
            assert!(start.elapsed() < limit, "job {id} still {state} after {limit:?}: {described}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `bacalhau job get` into a fresh directory: stdout, stderr, exitCode, outputs/.
    fn results(&self, id: &str, into: &Path) {
        std::fs::create_dir_all(into).unwrap();
        self.cli(&["job", "get", id, "--output-dir", into.to_str().unwrap()]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/bacalhau-node.sh")).arg("stop").env("BACALHAU_NODE_DIR", &self.dir).status();
    }
}

fn job_id(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn exit_codes(described: &Value) -> Vec<i64> {
    described["Executions"]["Items"].as_array().unwrap().iter().map(|e| e["RunOutput"]["ExitCode"].as_i64().unwrap()).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sidecar without the fields that measure the run (time, and nothing else may differ).
fn sidecar_without_timings(path: &Path) -> Value {
    let mut v: Value = serde_json::from_str(&read(path)).unwrap();
    v.as_object_mut().unwrap().remove("timings_seconds");
    v
}

#[test]
fn jobs_on_a_real_bacalhau_node() {
    let scratch = scratch("bacalhau");
    let node = Node::start(&scratch.join("node"), &scratch, 3);
    const PICTURE: &[&str] = &["--prompt", "a red cube", "--seed", "1", "--steps", "2"];

    // Submitted together; each is one execution.
    let picture = node.submit_wasm("4GiB", PICTURE);
    let missing_model = node.submit_wasm("4GiB", &[PICTURE, &["--models", "/nowhere"]].concat());
    let too_little_memory = node.submit_wasm("40MiB", PICTURE);
    let spec = scratch.join("one-picture.yaml");
    std::fs::write(&spec, spec_for_this_machine("one-picture.yaml", None)).unwrap();
    let from_spec = node.submit_spec(&spec);

    // One picture: the same PNG bytes as under wasmtime, the sidecar, stdout/stderr, exit 0.
    let described = node.wait(&picture, Duration::from_secs(300));
    assert_eq!(described["Job"]["State"]["StateType"], "Completed", "{described}");
    assert_eq!(exit_codes(&described), [0]);
    let got = scratch.join("picture");
    node.results(&picture, &got);
    let reference = scratch.join("picture-wasmtime");
    std::fs::create_dir_all(&reference).unwrap();
    let run = run_wasm(&tiny_model(), &reference, PICTURE);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (ours, theirs) = (pngs(&got.join("outputs")), pngs(&reference));
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (name, bytes) in &ours {
        assert!(bytes == &theirs[name], "{name}: Bacalhau's picture differs from wasmtime's");
        let sidecar = Path::new(name).with_extension("json");
        assert_eq!(sidecar_without_timings(&got.join("outputs").join(&sidecar)), sidecar_without_timings(&reference.join(&sidecar)));
        assert_eq!(read(&got.join("stdout")).trim(), format!("/outputs/{name}"));
    }
    assert_eq!(read(&got.join("exitCode")).trim(), "0");
    assert!(read(&got.join("stderr")).lines().any(|l| l.starts_with("done: /outputs/sd-1-")), "{}", read(&got.join("stderr")));

    // bacalhau/one-picture.yaml (its steps cut to 2): the same picture as wasmtime's.
    let described = node.wait(&from_spec, Duration::from_secs(300));
    assert_eq!(exit_codes(&described), [0], "{described}");
    let got = scratch.join("one-picture");
    node.results(&from_spec, &got);
    let reference = scratch.join("one-picture-wasmtime");
    std::fs::create_dir_all(&reference).unwrap();
    let args = ["--prompt", "a lighthouse at dusk", "--negative-prompt", "blurry", "--seed", "42", "--steps", "2"];
    assert_eq!(run_wasm(&tiny_model(), &reference, &args).code, 0);
    let (ours, theirs) = (pngs(&got.join("outputs")), pngs(&reference));
    assert_eq!(ours.len(), 1);
    assert!(ours == theirs, "one-picture.yaml's picture differs from wasmtime's");

    // Bad input: our exit code and one-line message come back (Bacalhau v1.9.3 marks a wasm
    // execution that exits non-zero as Completed and reports the code).
    for (id, code, message) in [
        (&missing_model, 3, "error: model dir /nowhere"),
        (&too_little_memory, 4, "error: unet needs about"),
    ] {
        let described = node.wait(id, Duration::from_secs(300));
        assert_eq!(exit_codes(&described), [code], "{described}");
        let got = scratch.join(format!("bad-{code}"));
        node.results(id, &got);
        assert_eq!(read(&got.join("exitCode")).trim(), code.to_string());
        let stderr = read(&got.join("stderr"));
        assert!(stderr.lines().any(|l| l.starts_with(message)), "exit {code}: {stderr}");
        assert!(!stderr.contains("wasm trap") && !stderr.contains("panicked"), "{stderr}");
        assert!(pngs(&got.join("outputs")).is_empty());
    }

    // Fan-out: Count 3 over the three compute nodes renders every line once, each picture
    // byte-identical to its single run.
    let prompts = scratch.join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(prompts.join("prompts.txt"), PROMPTS).unwrap();
    let spec = scratch.join("fan-out.yaml");
    std::fs::write(&spec, spec_for_this_machine("fan-out.yaml", Some(&prompts))).unwrap();
    let fan_out = node.submit_spec(&spec);
    let described = node.wait(&fan_out, Duration::from_secs(600));
    assert_eq!(described["Job"]["State"]["StateType"], "Completed", "{described}");
    assert_eq!(exit_codes(&described), [0, 0, 0]);
    let raw = scratch.join("fan-out");
    std::fs::create_dir_all(&raw).unwrap();
    node.cli(&["job", "get", &fan_out, "--raw", "--output-dir", raw.to_str().unwrap()]);
    let mut union: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let archives = files_in(&raw.join("raw"));
    assert_eq!(archives.len(), 3, "one result archive per execution: {archives:?}");
    for (i, archive) in archives.iter().enumerate() {
        let dir = scratch.join(format!("fan-out-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("tar").arg("xzf").arg(archive).arg("-C").arg(&dir).status().unwrap();
        assert!(status.success());
        for (name, bytes) in pngs(&dir.join("outputs")) {
            assert!(union.insert(name.clone(), bytes).is_none(), "{name} rendered twice");
        }
    }
    let mut singles: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (line, flags) in single_runs().iter().enumerate() {
        let out = scratch.join(format!("single-{line}"));
        std::fs::create_dir_all(&out).unwrap();
        let run = run_wasm(&tiny_model(), &out, flags);
        assert_eq!(run.code, 0, "{}", run.stderr);
        singles.extend(pngs(&out));
    }
    assert_eq!(union.keys().collect::<Vec<_>>(), singles.keys().collect::<Vec<_>>());
    for (name, bytes) in &union {
        assert!(bytes == &singles[name], "{name} differs from the single run's picture");
    }
    drop(node);
    std::fs::remove_dir_all(&scratch).ok();
}

/// A job spec from bacalhau/ with this machine's paths, the tiny model, and 2 steps.
fn spec_for_this_machine(name: &str, prompts: Option<&Path>) -> String {
    let spec = read(&repo().join("bacalhau").join(name));
    let mut replaced = spec
        .replace("/srv/sd-wasm/sd.wasm", sd_wasm_path().to_str().unwrap())
        .replace("/srv/models/sd15", tiny_model().to_str().unwrap())
        .replace(r#""--steps", "20""#, r#""--steps", "2""#)
        .replace(r#""--seed", "1000""#, r#""--seed", "5""#);
    if let Some(prompts) = prompts {
        replaced = replaced.replace("/srv/jobs/lighthouses", prompts.to_str().unwrap());
    }
    assert!(!replaced.contains("/srv/") && replaced.contains(r#""--steps", "2""#), "bacalhau/{name} changed: update this test's substitutions");
    replaced
}
