//! The crate's layers only point down: front ends → records → pipeline → request → models,
//! schedulers, tokenizer, prompt, rng, model dir → codecs, tensors, errors. Reads every source file
//! and fails on a `crate::x` path that names a module of a higher layer.

use std::path::Path;

/// Each top-level module's layer; a module may use its own layer and the ones below.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("tensor", 0),
    ("codecs", 0),
    ("math", 0),
    ("VERSION", 0),
    ("Result", 0),
    ("SdError", 0),
    ("ErrorKind", 0),
    ("models", 1),
    ("schedulers", 1),
    ("tokenizer", 1),
    ("prompt", 1),
    ("rng", 1),
    ("model_dir", 1),
    ("request", 2),
    ("pipeline", 3),
    ("records", 4),
    ("cli", 5),
    ("web", 5),
    ("web_threads", 5),
    ("component", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// `crate::name` paths in code (not comments) of one file.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() && rest.starts_with('{') {
                // `use crate::{a, b::c}`: each name in the group.
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    out.push((number + 1, name));
                }
            } else {
                out.push((number + 1, name));
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_import_points_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let own = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if own == "lib" || own == "main" {
            continue;
        }
        let own_layer = layer(&own).unwrap_or_else(|| panic!("src/{} is in no layer: add it to LAYERS", rel.display()));
        for (line, name) in crate_paths(&std::fs::read_to_string(file).unwrap()) {
            let used = layer(&name).unwrap_or_else(|| panic!("src/{}:{line}: crate::{name} is in no layer", rel.display()));
            if used > own_layer {
                upward.push(format!("src/{}:{line}: {own} (layer {own_layer}) uses crate::{name} (layer {used})", rel.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up:\n{}", upward.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    let paths = crate_paths("use crate::{error::Result, pipeline::Generated};\nlet x = crate::records::image_file_name(1, \"\"); // crate::cli\n");
    let names: Vec<&str> = paths.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["error", "pipeline", "records"]);
    assert!(layer("records").unwrap() > layer("request").unwrap());
}
