//! Many pictures from one file: `--prompts FILE` holds one prompt per line, or one JSON
//! object per line with per-line parameters. A Bacalhau job with `Count: N` runs N executions
//! with BACALHAU_PARTITION_INDEX 0..N and BACALHAU_PARTITION_COUNT N; execution i renders the
//! lines whose index ≡ i (mod N), so every line is rendered exactly once across the job, and
//! each picture is the one a single run with that line's parameters gives.

use crate::error::{Result, SdError};
use crate::request::GenerateRequest;

/// One line of the prompts file, as a complete request.
#[derive(Debug, Clone)]
pub struct PromptLine {
    /// 0-based index among the file's prompt lines (blank and `#` lines are not counted).
    pub index: usize,
    pub request: GenerateRequest,
    /// The request fields the line gives itself (its JSON keys).
    pub keys: Vec<String>,
}

/// Parses the file. A line without its own seed gets `base_seed + index`, so lines differ and
/// every execution of a fanned-out job agrees on every seed.
pub fn parse_prompts(text: &str, base: &GenerateRequest, base_seed: Option<u64>) -> Result<Vec<PromptLine>> {
    let mut lines = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let index = lines.len();
        let at = format!("--prompts line {}", number + 1);
        let (request, keys) = parse_line(line, base, base_seed.map(|b| b.checked_add(index as u64)))
            .map_err(|e| super::args::worded(e.context(&at)))?;
        lines.push(PromptLine { index, request, keys });
    }
    if lines.is_empty() {
        return Err(SdError::usage("--prompts: the file has no prompts"));
    }
    Ok(lines)
}

/// One line: a prompt, or a JSON object of request fields (which must have a "prompt").
/// `default_seed`: None without --seed; Some(None) when --seed + index overflows.
fn parse_line(line: &str, base: &GenerateRequest, default_seed: Option<Option<u64>>) -> Result<(GenerateRequest, Vec<String>)> {
    let mut request = base.clone();
    let mut seeded = false;
    let mut keys = vec!["prompt".to_string()];
    if line.starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| SdError::usage(format!("not a JSON object ({e})")))?;
        if !object.contains_key("prompt") {
            return Err(SdError::usage("has no \"prompt\""));
        }
        request.apply_json(&object, &super::args::CliInputs)?;
        seeded = object.contains_key("seed");
        keys = object.keys().cloned().collect();
    } else {
        request.prompt = line.to_string();
    }
    if !seeded {
        request.seed = match default_seed {
            Some(Some(seed)) => seed,
            Some(None) => return Err(SdError::usage("«seed» + the line's index goes past the largest seed")),
            None => {
                return Err(SdError::usage(
                    "has no seed and no «seed» was given: a fanned-out job needs seeds every execution agrees on",
                ))
            }
        };
    }
    crate::request::validate(&request)?;
    Ok((request, keys))
}

/// The share of `lines` that execution `index` of `count` renders.
pub fn partition(lines: Vec<PromptLine>, index: usize, count: usize) -> Vec<PromptLine> {
    lines.into_iter().filter(|l| l.index % count == index).collect()
}

/// Bacalhau's partition of this execution from its environment: (index, count), (0, 1) alone.
pub fn partition_from_env(get: impl Fn(&str) -> Option<String>) -> Result<(usize, usize)> {
    let read = |name: &str, default: usize| -> Result<usize> {
        match get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| SdError::usage(format!("{name}={v:?} is not a number"))),
        }
    };
    let (index, count) = (read("BACALHAU_PARTITION_INDEX", 0)?, read("BACALHAU_PARTITION_COUNT", 1)?);
    if count == 0 || index >= count {
        return Err(SdError::usage(format!(
            "BACALHAU_PARTITION_INDEX={index} does not fit BACALHAU_PARTITION_COUNT={count}"
        )));
    }
    Ok((index, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_once_across_partitions() {
        let text = "# a comment\nfirst\n\n{\"prompt\": \"second\", \"seed\": 7, \"steps\": 3}\nthird\nfourth\n";
        let lines = parse_prompts(text, &GenerateRequest::default(), Some(100)).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!((lines[1].request.prompt.as_str(), lines[1].request.seed, lines[1].request.steps), ("second", 7, 3));
        assert_eq!(lines[2].request.seed, 102);
        let mut seen: Vec<usize> = (0..3).flat_map(|i| partition(lines.clone(), i, 3)).map(|l| l.index).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3]);
    }

    /// Issue 16: numbers a 32-bit module would wrap, and a seed + index past u64, are errors.
    #[test]
    fn out_of_range_numbers_are_refused_not_wrapped() {
        let base = GenerateRequest::default();
        for (line, field) in [
            (r#"{"prompt": "x", "steps": 4294967298}"#, "steps"),
            (r#"{"prompt": "x", "width": 4294967312}"#, "width"),
            (r#"{"prompt": "x", "seed": 18446744073709551616}"#, "seed"),
        ] {
            let e = parse_prompts(line, &base, Some(1)).unwrap_err();
            assert!(e.message.contains("line 1") && e.message.contains(field), "{}", e.message);
        }
        let e = parse_prompts("a\nb\n", &base, Some(u64::MAX)).unwrap_err();
        assert!(e.message.contains("line 2") && e.message.contains("largest seed"), "{}", e.message);
    }

    #[test]
    fn bad_lines_and_partitions_are_refused() {
        let base = GenerateRequest::default();
        assert!(parse_prompts("a\n", &base, None).unwrap_err().message.contains("no seed"));
        assert!(parse_prompts("{\"prompt\": \"x\", \"colour\": 1}\n", &base, Some(1)).unwrap_err().message.contains("line 1"));
        assert!(parse_prompts("{\"seed\": 1}\n", &base, Some(1)).is_err());
        assert!(parse_prompts("\n# only a comment\n", &base, Some(1)).is_err());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(partition_from_env(env(&[])).unwrap(), (0, 1));
        assert_eq!(partition_from_env(env(&[("BACALHAU_PARTITION_INDEX", "2"), ("BACALHAU_PARTITION_COUNT", "3")])).unwrap(), (2, 3));
        assert!(partition_from_env(env(&[("BACALHAU_PARTITION_INDEX", "3"), ("BACALHAU_PARTITION_COUNT", "3")])).is_err());
    }
}
