//! The generator as a component (dist/sd-component.wasm, wit/sd.wit) under a real host:
//! tests/component/host.mjs (jco + preview2-shim in Node). Its PNG must be byte-identical to
//! sd.wasm's under wasmtime; progress events, cancel and typed errors go through the WIT types.

use crate::common::*;
use std::process::Command;

#[test]
fn component_under_jco_matches_the_cli() {
    let out = scratch("component-cli");
    let cli = run_wasm(&tiny_model(), &out, &[&["--output", "/outputs/cli.png"][..], FRONT_END_PICTURE].concat());
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    let cli_png = std::fs::read(out.join("cli.png")).unwrap();

    let component = std::env::var("SD_COMPONENT").expect("SD_COMPONENT is not set: run the tests with scripts/test.sh");
    let results = scratch("component-host");
    let host = Command::new("node")
        .arg(repo().join("tests/component/host.mjs"))
        .args(["--component", &component, "--models"])
        .arg(tiny_model())
        .arg("--checkpoints")
        .arg(repo().join("fixtures/tiny-checkpoint"))
        .arg("--out")
        .arg(&results)
        .output()
        .expect("running node (scripts/test.sh installs tests/component's packages)");
    assert!(host.status.success(), "host failed: {}", String::from_utf8_lossy(&host.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("results.json")).unwrap()).unwrap();

    assert_eq!(r["first"]["ok"], true, "{}", r["first"]);
    assert!(std::fs::read(results.join("component.png")).unwrap() == cli_png, "the component's PNG differs from the CLI's");
    assert!(std::fs::read(results.join("component-again.png")).unwrap() == cli_png, "a second call differs");
    let parameters = sd_wasm::codecs::png::read_parameters(&cli_png).unwrap().unwrap();
    assert_eq!(r["first"]["value"]["parameters"], parameters.as_str());
    assert_eq!(r["first"]["value"]["modelName"], "models");

    let events = r["first"]["events"].as_array().unwrap();
    let tags = |tag: &str| events.iter().filter(|e| e["tag"] == tag).collect::<Vec<_>>();
    let steps: Vec<u64> = tags("step").iter().map(|e| e["val"]["index"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    assert!(tags("step").iter().all(|e| e["val"]["total"] == 12));
    let loaded: Vec<&str> = tags("loaded").iter().map(|e| e["val"][0].as_str().unwrap()).collect();
    assert_eq!(loaded, ["text encoder", "UNet", "VAE decoder"]);
    let previews: Vec<u64> = tags("preview").iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(previews, [4, 8]);

    // cancelled() turns true after step 3: the run stops before step 4.
    assert_eq!(r["cancel"]["ok"], false);
    assert_eq!(r["cancel"]["error"]["tag"], "cancelled");
    let cancel_steps = r["cancel"]["events"].as_array().unwrap().iter().filter(|e| e["tag"] == "step").count();
    assert_eq!(cancel_steps, 3);

    // The request's rng field reaches the same table row as the CLI's --rng.
    let cli_cuda = run_wasm(&tiny_model(), &out, &[&["--output", "/outputs/cli-cuda.png", "--rng", "cuda"][..], FRONT_END_PICTURE].concat());
    assert_eq!(cli_cuda.code, 0, "{}", cli_cuda.stderr);
    let cli_cuda_png = std::fs::read(out.join("cli-cuda.png")).unwrap();
    assert!(cli_cuda_png != cli_png, "--rng cuda made torch's picture: the comparison below would prove nothing");
    assert_eq!(r["cuda"]["ok"], true, "{}", r["cuda"]);
    assert!(std::fs::read(results.join("component-cuda.png")).unwrap() == cli_cuda_png, "the component's cuda PNG differs from the CLI's");
    assert_eq!(r["badRng"]["error"]["tag"], "usage", "{}", r["badRng"]);

    // The request's checkpoint field: the CLI's --checkpoint bytes, named as the CLI names it.
    let fixture = repo().join("fixtures/tiny-checkpoint");
    let args = [&["--output", "/outputs/cli-checkpoint.png", "--checkpoint", "/ckpt/tiny-fp32-ema.safetensors"][..], FRONT_END_PICTURE].concat();
    let cli_checkpoint = run_wasm_dirs(&[(&fixture.join("template"), "/models"), (&fixture, "/ckpt"), (&out, "/outputs")], &args, 4 << 30, &[]);
    assert_eq!(cli_checkpoint.code, 0, "{}", cli_checkpoint.stderr);
    assert_eq!(r["checkpoint"]["ok"], true, "{}", r["checkpoint"]);
    let cli_checkpoint_png = std::fs::read(out.join("cli-checkpoint.png")).unwrap();
    assert!(std::fs::read(results.join("component-checkpoint.png")).unwrap() == cli_checkpoint_png, "the component's checkpoint PNG differs from the CLI's");
    assert_eq!(r["checkpoint"]["value"]["modelName"], "tiny-fp32-ema");
    assert_eq!(r["vaeFileAlone"]["error"]["tag"], "usage", "{}", r["vaeFileAlone"]);

    assert_eq!(r["missingModel"]["error"]["tag"], "model", "{}", r["missingModel"]);
    assert!(r["missingModel"]["error"]["val"].as_str().unwrap().contains("no-such-dir"));
    assert_eq!(r["badSize"]["error"]["tag"], "usage", "{}", r["badSize"]);
    assert!(r["badSize"]["error"]["val"].as_str().unwrap().contains("multiple of 8"));
}
