//! The Automatic1111-style `parameters` text inside the PNG: written from the request's
//! table rows and the picture as made, and read back as a patch on a request.

use crate::pipeline::Generated;
use crate::request::{param_by_a1111, GenerateRequest, NoInputs, Param, Raw, A1111, PARAMS};
use crate::schedulers::SchedulerKind;

/// The sampler name Automatic1111 writes for one of our schedulers, so its tools recognise it.
fn a1111_sampler_name(scheduler: &str) -> String {
    SchedulerKind::parse(scheduler).map_or_else(|| "unknown".to_string(), SchedulerKind::a1111_name)
}

/// Automatic1111's format: prompt line(s), "Negative prompt: …", then "Key: value, …".
/// Holds nothing that varies between runs (no timings), so PNG bytes are reproducible.
/// The `<lora:…>` tags of a record's prompt and negative prompt, read leniently: a prompt whose
/// tags do not parse gives none, and the other prompt's tags still count.
fn recorded_lora_tags<'a>(prompt: &'a str, negative: Option<&'a str>) -> impl Iterator<Item = crate::prompt::LoraTag> + 'a {
    [Some(prompt), negative].into_iter().flatten().flat_map(|p| crate::prompt::lora_tags(p).unwrap_or_default())
}

/// The head describes the picture as made (steps, sampler, seed, size, model); then every
/// request row that records itself, in table order.
pub fn parameters_text(req: &GenerateRequest, out: &Generated) -> String {
    let mut text = req.prompt.clone();
    // LoRAs given apart from the prompt (`--lora`) as Automatic1111 records every LoRA: a
    // `<lora:NAME:WEIGHT>` tag in the prompt, read back by `--params-from`.
    let tagged: Vec<String> = recorded_lora_tags(&req.prompt, req.negative_prompt.as_deref()).map(|t| t.name).collect();
    for lora in req.loras.iter().filter(|l| !tagged.contains(&l.name)) {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&lora.tag());
    }
    if let Some(neg) = req.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        text.push_str("\nNegative prompt: ");
        text.push_str(neg);
    }
    let mut fields = vec![
        ("Steps", out.steps.to_string()),
        ("Sampler", a1111_sampler_name(out.scheduler)),
        ("CFG scale", format!("{}", req.guidance_scale)),
        ("Seed", out.seed.to_string()),
        ("Size", format!("{}x{}", out.image.width, out.image.height)),
        ("Model hash", out.model_identity.clone()),
        ("Model", out.model_name.clone()),
    ];
    for param in PARAMS {
        if let (A1111::Field(key), Some(value)) = (param.a1111, param.record(req, out.scheduler)) {
            fields.push((key, value));
        }
    }
    if out.padded_conds {
        fields.push(("Pad conds", "True".to_string()));
    }
    if !req.loras.is_empty() {
        let hashes: Vec<String> = req.loras.iter().map(|l| format!("{}: {}", l.name, l.file.short_hash(12))).collect();
        fields.push(("Lora hashes", format!("\"{}\"", hashes.join(", "))));
    }
    fields.push(("Version", format!("sd.wasm {}", crate::VERSION)));
    text.push('\n');
    text.push_str(&fields.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "));
    text
}

/// A `parameters` text read back: values for request fields, to apply over a request
/// (`--params-from`: the command line's own flags then override them).
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// (field, recorded text, the `Key: value` it came from).
    pub values: Vec<(&'static Param, String, String)>,
    /// Keys not used, sampler names we have no scheduler for.
    pub notes: Vec<String>,
}

impl Patch {
    /// Sets each field; an error names the recorded `Key: value` that is wrong.
    pub fn apply(&self, request: &mut GenerateRequest) -> crate::Result<()> {
        for (param, value, source) in &self.values {
            param.set(request, Raw::Text(value), &NoInputs).map_err(|e| e.context(format!("{source:?}")))?;
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str, source: String) {
        let param = crate::request::param(key).expect("a row of the request table");
        self.values.push((param, value.to_string(), source));
    }
}

/// Keys whose values name things of Automatic1111's world (its VAE files, its generators):
/// a value we do not have is a note, not an error.
const NAMES_FROM_ELSEWHERE: [&str; 2] = ["VAE", "RNG"];

/// Reads Automatic1111's format (which we also write): the prompt, an optional
/// "Negative prompt: …" (both may span lines), then one line of `Key: value` pairs separated by
/// commas (values with commas are double-quoted, as recent Automatic1111 versions write them).
pub fn parse_parameters(text: &str) -> Result<Patch, String> {
    let text = text.trim_end();
    let (head, last) = match text.rsplit_once('\n') {
        Some((head, last)) if last.contains("Steps: ") => (head, last),
        _ if text.starts_with("Steps: ") => ("", text),
        _ => return Err("the `parameters` text has no `Steps: …` line (not sd.wasm's or Automatic1111's format)".into()),
    };
    let (prompt, negative) = match head.split_once("\nNegative prompt: ") {
        Some((p, n)) => (p, Some(n)),
        None => match head.strip_prefix("Negative prompt: ") {
            Some(n) => ("", Some(n)),
            None => (head, None),
        },
    };
    let mut patch = Patch::default();
    patch.set("prompt", prompt, "the prompt".into());
    if let Some(n) = negative {
        patch.set("negative_prompt", n, "Negative prompt".into());
    }
    let fields = key_values(last)?;
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    read_scheduler(&get, &mut patch);
    if let Some(size) = get("Size") {
        let (w, h) = size.split_once('x').ok_or_else(|| format!("Size {size:?} is not WxH"))?;
        patch.set("width", w.trim(), format!("Size: {size}"));
        patch.set("height", h.trim(), format!("Size: {size}"));
    }
    // Recorded, but not settings to repeat: the model and our version; and "Pad conds", which
    // is what we always do.
    let mut used = vec!["Scheduler", "Sampler", "Schedule type", "Size", "Model hash", "Model", "Version", "Pad conds"];
    // "Lora hashes" names the files the prompts' <lora:…> tags load (those are found by name).
    if recorded_lora_tags(prompt, negative).next().is_some() {
        used.push("Lora hashes");
    }
    for (key, value) in &fields {
        let Some(param) = param_by_a1111(key).filter(|p| !used.contains(&key.as_str()) && p.a1111 != A1111::Head("prompt")) else {
            continue;
        };
        used.push(key);
        if !param.from_record {
            continue;
        }
        let lenient = NAMES_FROM_ELSEWHERE.contains(&key.as_str());
        if lenient && param.set(&mut GenerateRequest::default(), Raw::Text(value), &NoInputs).is_err() {
            patch.notes.push(format!("{key} {value:?} is not one of ours; the model's own is used"));
            continue;
        }
        patch.values.push((param, value.clone(), format!("{key}: {value}")));
    }
    // A key Automatic1111 omits at its default ("RNG" for its GPU noise) says that default.
    for param in PARAMS {
        let (A1111::Field(key), Some(value)) = (param.a1111, param.a1111_absent) else { continue };
        if !fields.iter().any(|(k, _)| k == key || param.a1111_aliases.contains(&k.as_str())) {
            patch.values.push((param, value.to_string(), format!("no {key} field (Automatic1111's default: {value})")));
        }
    }
    let unused: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).filter(|k| !used.contains(k)).collect();
    if !unused.is_empty() {
        patch.notes.push(format!("not used: {}", unused.join(", ")));
    }
    Ok(patch)
}

/// Our own "Scheduler" names it exactly; else Automatic1111's sampler (plus its schedule type).
fn read_scheduler<'a>(get: &impl Fn(&str) -> Option<&'a str>, patch: &mut Patch) {
    let scheduler = get("Scheduler")
        .and_then(SchedulerKind::parse)
        .or_else(|| SchedulerKind::from_a1111(get("Sampler")?, get("Schedule type")));
    match (scheduler, get("Sampler")) {
        (Some(kind), _) => patch.set("scheduler", kind.cli_name(), format!("Sampler: {}", get("Sampler").unwrap_or(kind.cli_name()))),
        (None, Some(sampler)) => patch.notes.push(format!("sampler {sampler:?} has no scheduler here; the model's own is used")),
        (None, None) => {}
    }
}

/// `Key: value, Key: "quoted, value", …`.
fn key_values(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(": ").ok_or_else(|| format!("cannot read {rest:?} as `Key: value`"))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quote after {key}"))?;
            (quoted[..end].replace("\\\"", "\"").replace("\\\\", "\\"), &quoted[end + 1..])
        } else {
            match after.split_once(", ") {
                Some((v, a)) => (v.to_string(), a),
                None => (after.to_string(), ""),
            }
        };
        out.push((key.trim().to_string(), value.trim().to_string()));
        rest = after.trim_start_matches(',').trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_automatic1111_parameters() {
        let text = "a castle, at night\nwith stars\nNegative prompt: blurry, low quality\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: abc, Model: sd15, Denoising strength: 0.6, Clip skip: 2, Lora hashes: \"a: 1, b: 2\", Version: v1.9.4";
        let p = parse_parameters(text).unwrap();
        let flag = |f: &str| p.values.iter().find(|(param, ..)| param.flag() == f).map(|(_, v, _)| v.as_str());
        assert_eq!(flag("--prompt"), Some("a castle, at night\nwith stars"));
        assert_eq!(flag("--negative-prompt"), Some("blurry, low quality"));
        assert_eq!(flag("--scheduler"), Some("dpm++2m-karras"));
        assert_eq!(flag("--steps"), Some("30"));
        assert_eq!(flag("--guidance-scale"), Some("6.5"));
        assert_eq!(flag("--seed"), Some("1234"));
        assert_eq!((flag("--width"), flag("--height")), (Some("512"), Some("768")));
        assert_eq!(flag("--strength"), Some("0.6"));
        assert_eq!(flag("--clip-skip"), Some("2"));
        let mut request = GenerateRequest::default();
        p.apply(&mut request).unwrap();
        assert_eq!(request.clip_skip, 2);
        assert_eq!(p.notes, vec!["not used: Lora hashes".to_string()], "no <lora:…> tag in the prompt");
        let tagged = text.replace("with stars\n", "with stars <lora:a:1> <lora:b:0.5>\n");
        assert!(parse_parameters(&tagged).unwrap().notes.is_empty());
        // Each prompt's tags count on their own: a tag that does not parse in the negative
        // prompt does not hide the prompt's.
        let bad_negative = tagged.replace("low quality\n", "low quality <lora:c:x>\n");
        assert!(parse_parameters(&bad_negative).unwrap().notes.is_empty());
    }

    /// "Clip skip: N" is written as Automatic1111 writes it: only when it is not 1.
    #[test]
    fn clip_skip_is_recorded_when_not_1() {
        let clip_skip = crate::request::param("clip_skip").unwrap();
        let request = |n| GenerateRequest { clip_skip: n, ..Default::default() };
        assert_eq!(clip_skip.a1111, A1111::Field("Clip skip"));
        assert_eq!(clip_skip.record(&request(2), "euler"), Some("2".to_string()));
        assert_eq!(clip_skip.record(&request(1), "euler"), None);
    }

    /// Our generators are recorded in Automatic1111's words and read back as themselves; a
    /// text without "RNG" is Automatic1111's default, its GPU noise: `cuda`.
    #[test]
    fn rng_is_recorded_as_automatic1111_names_it_and_read_back() {
        use crate::request::RngKind;
        let rng = crate::request::param("rng").unwrap();
        let head = "a cat\nSteps: 5, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 16x16";
        let read = |text: &str| {
            let mut request = GenerateRequest::default();
            parse_parameters(text).unwrap().apply(&mut request).unwrap();
            request.rng
        };
        for kind in RngKind::ALL {
            let recorded = rng.record(&GenerateRequest { rng: kind, ..Default::default() }, "euler-a").unwrap();
            assert_eq!(recorded, kind.a1111_name());
            assert_eq!(read(&format!("{head}, RNG: {recorded}")), kind);
        }
        assert_eq!(GenerateRequest::default().rng, RngKind::Torch);
        assert_eq!(read(head), RngKind::Cuda);
        assert_eq!(read(&format!("{head}, RNG: CPU")), RngKind::Torch);
        assert_eq!(read(&format!("{head}, RNG: NV")), RngKind::Cuda);
        assert_eq!(read(&format!("{head}, RNG: GPU")), RngKind::Cuda);
        // sd.wasm's earlier pictures said "RNG: torch".
        assert_eq!(read(&format!("{head}, RNG: torch, Version: sd.wasm 0.1.0")), RngKind::Torch);
        let patch = parse_parameters(head).unwrap();
        let (_, _, source) = patch.values.iter().find(|(p, ..)| p.key == "rng").unwrap();
        assert_eq!(source, "no RNG field (Automatic1111's default: GPU)");
    }

    #[test]
    fn text_without_a_steps_line_is_refused() {
        assert!(parse_parameters("just a prompt").is_err());
    }
}
