//! Automatic1111's prompt handling against an independent Python implementation of it
//! (scripts/make_prompt_fixtures.py, run with transformers' CLIPTokenizer and CLIPTextModel:
//! fixtures/tiny-prompts, fixtures/tiny with that text encoder): the parser's output for a table of prompts, the chunks, the weighted and
//! mean-restored embeddings (with the negative prompt padded to the same chunks), clip skip,
//! and the picture of a prompt longer than 77 tokens.

use crate::common::*;
use sd_wasm::codecs::npy::read_npy;
use sd_wasm::model_dir::{DirFiles, ModelDir};
use sd_wasm::pipeline::text::{self, Embeddings, Tokens};
use sd_wasm::pipeline::{generate, Run};
use sd_wasm::prompt::{parse_attention, Fragment};
use sd_wasm::request::GenerateRequest;
use sd_wasm::schedulers::SchedulerKind;
use sd_wasm::tensor::Latents;
use serde_json::Value;

/// The tests' tolerance: max |ours − oracle| / max |oracle|.
const TOLERANCE: f32 = 1e-4;

fn prompts_dir() -> std::path::PathBuf {
    prompts_fixture().join("expected")
}

/// fixtures/tiny with the prompt fixture's text encoder, copied once for all these tests.
fn model() -> &'static std::path::Path {
    static MODEL: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| prompts_model_copy("prompts"))
}

fn oracle_cases() -> Vec<Value> {
    let text = std::fs::read_to_string(prompts_dir().join("cases.json")).unwrap();
    let cases: Value = serde_json::from_str(&text).unwrap();
    cases["cases"].as_array().unwrap().clone()
}

fn request(case: &Value) -> GenerateRequest {
    GenerateRequest {
        prompt: case["prompt"].as_str().unwrap().into(),
        negative_prompt: Some(case["negative_prompt"].as_str().unwrap().into()),
        clip_skip: case["clip_skip"].as_u64().unwrap() as usize,
        ..Default::default()
    }
}

/// Tokens and embeddings of a request as the text stage makes them (with guidance).
fn text_stage(model: &std::path::Path, req: &GenerateRequest) -> sd_wasm::Result<(Tokens, Embeddings)> {
    let files = DirFiles::open(model).unwrap();
    let dir = ModelDir::open(&files).unwrap();
    let tokenizer = text::load_tokenizer(&dir).unwrap();
    let mut hooks = Quiet;
    let mut run = Run::new(&mut hooks);
    let clip_skip = text::clip_skip(&dir, req, &mut run)?;
    let tokens = text::tokenize(&tokenizer, req, true, clip_skip, &mut run)?;
    let embeddings = text::encode(&mut text::encoder_slot(), &files, &tokens, &Default::default(), &mut run)?;
    Ok((tokens, embeddings))
}

fn relative_diff(ours: &Latents, oracle: &Latents) -> f32 {
    assert_eq!(ours.shape(), oracle.shape());
    let scale = oracle.iter().fold(0f32, |m, v| m.max(v.abs()));
    ours.iter().zip(oracle).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn oracle_npy(name: &str) -> Latents {
    read_npy(&std::fs::read(prompts_dir().join(name)).unwrap()).unwrap()
}

fn parse_cases() -> Vec<Value> {
    let table: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/data/prompt_parse_cases.json")).unwrap())
            .unwrap();
    table["cases"].as_array().unwrap().clone()
}

fn random_cases() -> Vec<Value> {
    let lines = std::fs::read_to_string(repo().join("tests/data/prompt_random_cases.jsonl")).unwrap();
    lines.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// The parser's output for a table of prompts (nesting, escapes, unbalanced brackets, BREAK,
/// weights, empty) and for 1000 random ones; a weight that is not a number is an error where
/// Automatic1111's parser raises.
#[test]
fn parser_matches_automatic1111() {
    let (table, random) = (parse_cases(), random_cases());
    for case in table.iter().chain(&random) {
        let prompt = case["prompt"].as_str().unwrap();
        let Some(want) = case["parsed"].as_array() else {
            assert!(parse_attention(prompt).is_err(), "{prompt:?} parses; Automatic1111 raises");
            continue;
        };
        let got = parse_attention(prompt).unwrap();
        assert_eq!(got.len(), want.len(), "{prompt:?}: {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            let (text, weight) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            match g {
                Fragment::Break => assert!(text == "BREAK" && weight == -1.0, "{prompt:?}: {got:?}, want {want:?}"),
                // (serde_json reads floats to within an ulp, not exactly)
                Fragment::Text(t, gw) => {
                    assert!(
                        t == text && (gw - weight).abs() <= 1e-14 * weight.abs(),
                        "{prompt:?}: {got:?}, want {want:?}"
                    )
                }
            }
        }
    }
    eprintln!("parser: {} table and {} random prompts", table.len(), random.len());
}

/// The chunks of 100 random prompts (fixtures/tiny's tokenizer): ids and weights.
#[test]
fn chunks_of_random_prompts_match_automatic1111() {
    let files = DirFiles::open(tiny_model()).unwrap();
    let tokenizer = text::load_tokenizer(&ModelDir::open(&files).unwrap()).unwrap();
    let random = random_cases();
    let chunked: Vec<&Value> = random.iter().filter(|c| c.get("chunks").is_some()).collect();
    assert!(chunked.len() >= 100);
    for case in chunked {
        let prompt = case["prompt"].as_str().unwrap();
        let ours = sd_wasm::prompt::chunks(&tokenizer, prompt).unwrap();
        let want = case["chunks"].as_array().unwrap();
        assert_eq!(ours.len(), want.len(), "{prompt:?}");
        for (chunk, w) in ours.iter().zip(want) {
            let ids: Vec<i64> = w["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(chunk.ids, ids, "{prompt:?}");
            for (a, b) in chunk.weights.iter().zip(w["weights"].as_array().unwrap()) {
                assert!(
                    (*a as f64 - b.as_f64().unwrap()).abs() <= 1e-6 * a.abs() as f64,
                    "{prompt:?}: {:?}",
                    chunk.weights
                );
            }
        }
    }
}

#[test]
fn chunks_and_embeddings_match_automatic1111() {
    for case in oracle_cases() {
        let name = case["name"].as_str().unwrap();
        let (tokens, embeddings) = text_stage(model(), &request(&case)).unwrap();
        for (ours, key) in [(&tokens.cond, "cond_chunks"), (tokens.uncond.as_ref().unwrap(), "uncond_chunks")] {
            let want = case[key].as_array().unwrap();
            assert_eq!(ours.len(), want.len(), "{name} {key}: chunk count");
            for (i, (chunk, w)) in ours.iter().zip(want).enumerate() {
                let ids: Vec<i64> = w["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(chunk.ids, ids, "{name} {key}[{i}]: ids");
                for (a, b) in chunk.weights.iter().zip(w["weights"].as_array().unwrap()) {
                    assert!(
                        (*a as f64 - b.as_f64().unwrap()).abs() < 1e-6,
                        "{name} {key}[{i}]: weights {:?}",
                        chunk.weights
                    );
                }
            }
        }
        let shape: Vec<usize> =
            case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(embeddings.cond.shape(), &shape[..], "{name}");
        let cond = relative_diff(&embeddings.cond, &oracle_npy(&format!("{name}_cond.npy")));
        let uncond = relative_diff(embeddings.uncond.as_ref().unwrap(), &oracle_npy(&format!("{name}_uncond.npy")));
        eprintln!(
            "{name}: {} chunk(s), relative difference {cond:.1e} (prompt), {uncond:.1e} (negative)",
            tokens.cond.len()
        );
        assert!(cond <= TOLERANCE && uncond <= TOLERANCE, "{name}: {cond:e}, {uncond:e}");
    }
}

/// The oracle has power: what the recorded variants (no mean restoration, no weights, chunks
/// cut at 75, clip skip 1) moved is far beyond the tolerance; and here, clip skip 1 against
/// the clip-skip-2 oracle, and the weights dropped, are too.
#[test]
fn the_prompt_fixtures_have_power() {
    for case in oracle_cases() {
        for (what, moved) in case["power"].as_object().unwrap() {
            assert!(moved.as_f64().unwrap() > 10.0 * TOLERANCE as f64, "{}: {what} moves only {moved}", case["name"]);
        }
    }
    let case = oracle_cases().into_iter().find(|c| c["name"] == "clip-skip-2").unwrap();
    let oracle = oracle_npy("clip-skip-2_cond.npy");
    let skip_1 = text_stage(model(), &GenerateRequest { clip_skip: 1, ..request(&case) }).unwrap().1;
    let unweighted = GenerateRequest { prompt: "a lighthouse at dusk, oil painting".into(), ..request(&case) };
    let unweighted = text_stage(model(), &unweighted).unwrap().1;
    let (skip, weights) = (relative_diff(&skip_1.cond, &oracle), relative_diff(&unweighted.cond, &oracle));
    eprintln!("against the clip-skip-2 oracle: clip skip 1 moves {skip:.3}, no emphasis {weights:.3}");
    assert!(skip > 100.0 * TOLERANCE && weights > 100.0 * TOLERANCE, "{skip} {weights}");
}

/// A model dir whose text encoder has no clip_skip_N outputs (fixtures/tiny, exported before
/// them) fails with what to do; one with too few layers says how many it has; clip skip 1
/// still works on the older export.
#[test]
fn clip_skip_on_an_older_export_is_a_clear_error() {
    let req = GenerateRequest { prompt: "a lighthouse".into(), clip_skip: 2, ..Default::default() };
    let err = text_stage(&tiny_model(), &req).err().expect("an error");
    assert_eq!(err.kind, sd_wasm::ErrorKind::Model, "{err}");
    assert!(err.message.contains("no hidden-state outputs") && err.message.contains("convert.py"), "{err}");
    assert!(text_stage(&tiny_model(), &GenerateRequest { clip_skip: 1, ..req.clone() }).is_ok());
    let err = text_stage(model(), &GenerateRequest { clip_skip: 3, ..req }).err().expect("an error");
    assert!(err.message.contains("at most 2"), "{err}");
}

/// Automatic1111 ignores Clip skip on SD 2.x (its OpenCLIP encoder is used at the
/// penultimate layer always): the same embeddings as clip skip 1, and a warning.
#[test]
fn clip_skip_is_ignored_on_sd2_as_automatic1111_does() {
    let sd21 = repo().join("fixtures/tiny-sd21");
    let req = GenerateRequest { prompt: "a (lighthouse:1.2)".into(), clip_skip: 2, ..Default::default() };
    let skipped = text_stage(&sd21, &req).unwrap().1;
    let last = text_stage(&sd21, &GenerateRequest { clip_skip: 1, ..req.clone() }).unwrap().1;
    assert_eq!(skipped.cond, last.cond);
    let out = generate(&DirFiles::open(&sd21).unwrap(), &GenerateRequest { steps: 1, ..req }, &mut Quiet).unwrap();
    assert!(out.warnings.iter().any(|w| w.contains("ignored") && w.contains("SD 2.x")), "{:?}", out.warnings);
}

/// A prompt of two chunks (154 tokens) with emphasis, the negative prompt padded to two: the
/// UNet runs with that text shape and the picture is diffusers' given the oracle's embeddings.
#[test]
fn a_long_weighted_prompt_draws_the_oracles_picture() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(prompts_dir().join("cases.json")).unwrap()).unwrap();
    let picture = &cases["picture"];
    let case = oracle_cases().into_iter().find(|c| c["name"] == picture["case"]).unwrap();
    let args = &picture["args"];
    let req = GenerateRequest {
        steps: args["steps"].as_u64().unwrap() as usize,
        guidance_scale: args["guidance_scale"].as_f64().unwrap() as f32,
        seed: args["seed"].as_u64().unwrap(),
        width: Some(args["width"].as_u64().unwrap() as u32),
        height: Some(args["height"].as_u64().unwrap() as u32),
        scheduler: SchedulerKind::parse(args["scheduler"].as_str().unwrap()),
        ..request(&case)
    };
    let out = generate(&DirFiles::open(model()).unwrap(), &req, &mut Quiet).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let diff = max_pixel_diff(&out.image, &read_png(&prompts_dir().join(picture["png"].as_str().unwrap())));
    eprintln!("long weighted prompt: max pixel difference {diff}/255");
    assert!(diff <= 2, "max pixel difference {diff}");
}

/// A runaway prompt fails with a message (Automatic1111 has no limit, but memory does); a
/// weight that is not a number fails as Automatic1111's parser does (it raises).
#[test]
fn runaway_prompts_and_bad_weights_are_usage_errors() {
    let files = DirFiles::open(model()).unwrap();
    let dir = ModelDir::open(&files).unwrap();
    let tokenizer = text::load_tokenizer(&dir).unwrap();
    let fits = "a lighthouse, ".repeat(sd_wasm::prompt::MAX_CHUNKS * 75 / 3 - 5);
    assert_eq!(sd_wasm::prompt::chunks(&tokenizer, &fits).unwrap().len(), sd_wasm::prompt::MAX_CHUNKS);
    for prompt in [fits.repeat(2), "BREAK ".repeat(40), "(a:1.2.3)".into()] {
        let (mut hooks, req) = (Quiet, GenerateRequest { prompt, ..Default::default() });
        let err = text::tokenize(&tokenizer, &req, true, 1, &mut Run::new(&mut hooks)).err().expect("an error");
        assert_eq!(err.kind, sd_wasm::ErrorKind::Usage, "{err}");
    }
}

/// Prompts of different chunk counts: the shorter is padded, and the record says so as
/// Automatic1111 does ("Pad conds: True"); read back, that key is no setting to repeat.
#[test]
fn padding_is_recorded_as_automatic1111_records_it() {
    let long = "a very detailed painting of a lighthouse on a rocky cliff, ".repeat(8);
    let files = DirFiles::open(tiny_model()).unwrap();
    for (negative, padded) in [("blurry", true), (long.as_str(), false)] {
        let req = GenerateRequest {
            prompt: long.clone(),
            negative_prompt: Some(negative.into()),
            steps: 1,
            ..Default::default()
        };
        let out = generate(&files, &req, &mut Quiet).unwrap();
        let text = sd_wasm::records::parameters::parameters_text(&req, &out);
        assert_eq!(text.contains(", Pad conds: True,"), padded, "{text}");
        let patch = sd_wasm::records::parameters::parse_parameters(&text).unwrap();
        assert!(patch.notes.is_empty(), "{:?}", patch.notes);
    }
}
