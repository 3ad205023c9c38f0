//! ClipTokenizer against transformers' CLIPTokenizer (tests/data/tokenizer_cases.json, from
//! `python3 scripts/make_tokenizer_cases.py`): every id of every prompt, for each config
//! layout, through both vocab.json + merges.txt and tokenizer.json.

use sd_wasm::tokenizer::{ClipTokenizer, TokenizerFiles};
use serde_json::{json, Value};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> Value {
    let path = root().join("tests/data/tokenizer_cases.json");
    serde_json::from_slice(&std::fs::read(&path).expect("read tokenizer_cases.json")).expect("parse")
}

/// vocab.json and merges.txt of the folder the cases were recorded with.
fn vocab_files(cases: &Value) -> (Vec<u8>, Vec<u8>) {
    let dir = root().join(cases["vocab_dir"].as_str().unwrap());
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
    (read("vocab.json"), read("merges.txt"))
}

/// transformers' tokenizer.json: the stored skeleton with vocab and merges put back.
fn tokenizer_json(cases: &Value, vocab: &[u8], merges: &[u8], string_merges: bool) -> Vec<u8> {
    let mut tj: Value = serde_json::from_str(cases["tokenizer_json_skeleton"].as_str().unwrap()).unwrap();
    tj["model"]["vocab"] = serde_json::from_slice(vocab).unwrap();
    let pairs: Vec<Value> = std::str::from_utf8(merges)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("#version"))
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            if string_merges {
                json!(format!("{a} {b}"))
            } else {
                json!([a, b])
            }
        })
        .collect();
    tj["model"]["merges"] = Value::Array(pairs);
    serde_json::to_vec(&tj).unwrap()
}

fn files_for(layout: &Value, vocab_merges: Option<(&[u8], &[u8])>, tj: Option<&[u8]>) -> TokenizerFiles {
    let file = |name: &str| layout["files"].get(name).map(|s| s.as_str().unwrap().as_bytes().to_vec());
    TokenizerFiles {
        tokenizer_json: tj.map(<[u8]>::to_vec),
        vocab_json: vocab_merges.map(|(v, _)| v.to_vec()),
        merges_txt: vocab_merges.map(|(_, m)| m.to_vec()),
        tokenizer_config_json: file("tokenizer_config.json"),
        special_tokens_map_json: file("special_tokens_map.json"),
    }
}

/// Compares every prompt; returns one line per mismatch.
fn check_layout(tok: &ClipTokenizer, cases: &Value, layout: &Value, via_json: bool) -> Vec<String> {
    let name = layout["name"].as_str().unwrap();
    let path = if via_json { "tokenizer.json" } else { "vocab.json+merges.txt" };
    let max_length = layout["max_length"].as_u64().unwrap() as usize;
    let pad_id = layout["pad_id"].as_i64().unwrap();
    assert_eq!(tok.max_length(), max_length, "{name} via {path}: max_length");
    assert_eq!(tok.pad_id() as i64, pad_id, "{name} via {path}: pad id");

    let mut failures = Vec::new();
    for (i, prompt) in cases["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = prompt.as_str().unwrap();
        let key = i.to_string();
        let json_only = if via_json { layout["expected_tokenizer_json"].get(&key) } else { None };
        let exp = json_only.or(layout["expected"].get(&key)).unwrap_or(&cases["expected_base"][i]);
        let mut want: Vec<i64> = exp["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        want.resize(max_length, pad_id);
        let want_removed = exp["removed_text"].as_str();
        let got = match tok.encode_padded(prompt) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name} via {path}, prompt #{i} {prompt:?}: error {e}"));
                continue;
            }
        };
        if got.ids != want {
            failures.push(format!(
                "{name} via {path}, prompt #{i} {prompt:?}:\n   got  {:?}\n   want {:?}",
                got.ids, want
            ));
        }
        if got.removed_text.as_deref() != want_removed || got.truncated != want_removed.is_some() {
            failures.push(format!(
                "{name} via {path}, prompt #{i} {prompt:?}: removed_text got {:?} (truncated {}), want {:?}",
                got.removed_text, got.truncated, want_removed
            ));
        }
    }
    failures
}

#[test]
fn every_id_matches_transformers() {
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    let tj = tokenizer_json(&cases, &vocab, &merges, false);
    let layouts = cases["layouts"].as_array().unwrap();
    let n_prompts = cases["prompts"].as_array().unwrap().len();
    assert!(n_prompts >= 60, "only {n_prompts} prompts");

    let mut failures = Vec::new();
    let mut compared = 0;
    for layout in layouts {
        let name = layout["name"].as_str().unwrap();
        for via_json in [false, true] {
            let files = if via_json {
                files_for(layout, None, Some(&tj))
            } else {
                files_for(layout, Some((&vocab, &merges)), None)
            };
            let tok = ClipTokenizer::from_files(&files).unwrap_or_else(|e| panic!("{name}: {e}"));
            failures.extend(check_layout(&tok, &cases, layout, via_json));
            compared += n_prompts;
        }
    }
    assert!(failures.is_empty(), "{} of {compared} encodings differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn sd2_pad_bang_is_read_from_config() {
    // SD 2.x pads with "!" (id 0); SD 1.x with <|endoftext|> (49407). Nothing is hard-coded.
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    for layout in cases["layouts"].as_array().unwrap() {
        let tok = ClipTokenizer::from_files(&files_for(layout, Some((&vocab, &merges)), None)).unwrap();
        let bang = layout["name"].as_str().unwrap().contains("bang") || layout["name"] == "legacy_sd21";
        assert_eq!(tok.pad_token(), if bang { "!" } else { "<|endoftext|>" }, "{}", layout["name"]);
        let ids = tok.encode_padded("a cat").unwrap().ids;
        assert_eq!(ids.len(), 77);
        assert_eq!(&ids[..4], &[49406, 320, 2368, 49407]);
        assert!(ids[4..].iter().all(|&i| i == if bang { 0 } else { 49407 }));
    }
}

#[test]
fn string_form_merges_in_tokenizer_json() {
    // Older tokenizer.json files store merges as "a b" strings.
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    let tj = tokenizer_json(&cases, &vocab, &merges, true);
    let layout = &cases["layouts"][0];
    let tok = ClipTokenizer::from_files(&files_for(layout, None, Some(&tj))).unwrap();
    let failures = check_layout(&tok, &cases, layout, true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tokenizer_json_wins_over_vocab_and_merges() {
    // transformers reads tokenizer.json when the folder has both; a broken merges.txt next to
    // it must not matter.
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    let tj = tokenizer_json(&cases, &vocab, &merges, false);
    let mut files = files_for(&cases["layouts"][0], None, Some(&tj));
    files.vocab_json = Some(b"{}".to_vec());
    files.merges_txt = Some(b"broken".to_vec());
    let tok = ClipTokenizer::from_files(&files).unwrap();
    assert_eq!(&tok.encode_padded("a cat").unwrap().ids[..4], &[49406, 320, 2368, 49407]);
}

#[test]
fn truncation_reports_removed_text() {
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    let tok = ClipTokenizer::from_files(&files_for(&cases["layouts"][0], Some((&vocab, &merges)), None)).unwrap();
    let fits = tok.encode_padded(&"a ".repeat(75)).unwrap();
    assert!(!fits.truncated && fits.removed_text.is_none());
    assert_eq!(fits.ids[76], 49407);
    let over = tok.encode_padded(&format!("{} the end of it", "a ".repeat(75))).unwrap();
    assert!(over.truncated);
    assert_eq!(over.removed_text.as_deref(), Some("the end of it"));
    assert_eq!(over.ids.len(), 77);
    assert_eq!(over.ids[76], 49407);
}

#[test]
fn clear_errors_for_missing_or_corrupt_files() {
    let cases = cases();
    let (vocab, merges) = vocab_files(&cases);
    let cfg = cases["layouts"][0]["files"]["tokenizer_config.json"].as_str().unwrap().as_bytes().to_vec();
    let err = |files: TokenizerFiles| ClipTokenizer::from_files(&files).unwrap_err();
    let base = || TokenizerFiles {
        vocab_json: Some(vocab.clone()),
        merges_txt: Some(merges.clone()),
        tokenizer_config_json: Some(cfg.clone()),
        ..Default::default()
    };

    let e = err(TokenizerFiles::default());
    assert!(e.contains("need tokenizer.json, or vocab.json and merges.txt"), "{e}");
    let e = err(TokenizerFiles { merges_txt: None, ..base() });
    assert!(e.contains("merges.txt is missing"), "{e}");
    let e = err(TokenizerFiles { vocab_json: None, ..base() });
    assert!(e.contains("vocab.json is missing"), "{e}");
    let e = err(TokenizerFiles { vocab_json: Some(b"{\"a\": 1,".to_vec()), ..base() });
    assert!(e.contains("vocab.json is not valid JSON"), "{e}");
    let e = err(TokenizerFiles { vocab_json: Some(b"[1, 2]".to_vec()), ..base() });
    assert!(e.contains("vocab.json"), "{e}");
    let e = err(TokenizerFiles { merges_txt: Some(b"#version: 0.2\nh e\nbad line here\n".to_vec()), ..base() });
    assert!(e.contains("merges.txt line 3"), "{e}");
    let e = err(TokenizerFiles { merges_txt: Some(b"zzzq qqqz\n".to_vec()), ..base() });
    assert!(e.contains("do not fit"), "{e}");
    let e = err(TokenizerFiles { tokenizer_config_json: Some(b"not json".to_vec()), ..base() });
    assert!(e.contains("tokenizer_config.json is not valid JSON"), "{e}");
    let e = err(TokenizerFiles { special_tokens_map_json: Some(b"[]".to_vec()), ..base() });
    assert!(e.contains("special_tokens_map.json is not a JSON object"), "{e}");
    let e = err(TokenizerFiles { tokenizer_config_json: Some(br#"{"pad_token": "<pad>"}"#.to_vec()), ..base() });
    assert!(e.contains("pad token \"<pad>\" is not in the vocabulary"), "{e}");
    let e = err(TokenizerFiles { tokenizer_json: Some(b"{\"model\": {\"type\": \"Unigram\"}}".to_vec()), ..base() });
    assert!(e.contains("Unigram model; CLIP needs BPE"), "{e}");
    let e = err(TokenizerFiles { tokenizer_json: Some(vec![0xff, 0xfe]), ..base() });
    assert!(e.contains("tokenizer.json is not valid JSON"), "{e}");
}

#[test]
fn fixture_model_dir_tokenizer_matches_its_oracle() {
    // The tiny fixture's own tokenizer/ folder (as the pipeline reads it) against the ids that
    // scripts/make_fixtures.py recorded with transformers.
    let dir = root().join("fixtures/tiny/tokenizer");
    let oracle = root().join("fixtures/tiny/expected/tokens.json");
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let tok = ClipTokenizer::from_files(&TokenizerFiles {
        tokenizer_json: read("tokenizer.json"),
        vocab_json: read("vocab.json"),
        merges_txt: read("merges.txt"),
        tokenizer_config_json: read("tokenizer_config.json"),
        special_tokens_map_json: read("special_tokens_map.json"),
    })
    .expect("fixtures/tiny/tokenizer");
    let oracle: Value = serde_json::from_slice(&std::fs::read(&oracle).expect("tokens.json")).unwrap();
    let ids = oracle["ids"].as_object().unwrap();
    assert!(!ids.is_empty());
    for (prompt, want) in ids {
        let want: Vec<i64> = want.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(tok.encode_padded(prompt).unwrap().ids, want, "{prompt:?}");
    }
}
