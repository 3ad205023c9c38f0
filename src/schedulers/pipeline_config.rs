//! The scheduler config as diffusers' Stable Diffusion pipelines run it, not as it is saved.
//!
//! `StableDiffusionPipeline.__init__` (and Img2Img's, Inpaint's) rewrites the config of the
//! scheduler it is given, for configs saved before these keys mattered: a `steps_offset` other
//! than 1 becomes 1, and `clip_sample: true` becomes false. The rewrite happens once, when the
//! pipeline is built from the model's own scheduler (the config's `_class_name`); what it reaches
//! depends on which scheduler then runs:
//!
//! - the model's own: its config is the loaded class's, with every key the class takes (a key
//!   missing from the file holds the class default: steps_offset 0, DDIM's clip_sample true), so
//!   both rewrites see a value, and the class runs with steps_offset 1 and no clipping.
//! - another one (`pipe.scheduler = XScheduler.from_config(pipe.scheduler.config)`, what
//!   `--scheduler` stands for): `from_config` skips the keys the loaded class filled in with its
//!   defaults (`_use_default_values`), rewritten or not, so only keys the file itself has reach the
//!   new class rewritten; a missing key takes the new class's default (DDIM from a PNDM config
//!   without clip_sample clips, as in diffusers).

use serde_json::{Map, Value};

use super::{scheduler_from_config, Scheduler, SchedulerOptions};

/// The scheduler the pipeline runs: `name` (None: the model's own, from the config's
/// `_class_name`) built from `config`, the model's scheduler_config.json, after the pipeline's
/// rewrite (see the module comment).
pub fn pipeline_scheduler(
    name: Option<&str>,
    config: &Value,
    options: &SchedulerOptions,
) -> Result<Box<dyn Scheduler>, String> {
    scheduler_from_config(name, &pipeline_config(config, name.is_none()), options)
}

/// `config` as the pipeline's rewrite leaves it for the model's own scheduler (`own_class`) or
/// for one built from its config.
fn pipeline_config(config: &Value, own_class: bool) -> Value {
    let mut config = config.clone();
    let Some(map) = config.as_object_mut() else {
        return config;
    };
    // `getattr(scheduler.config, "steps_offset") != 1`: a missing key holds the class default 0.
    let offset_rewritten = match given(map, "steps_offset") {
        Some(v) => v.as_f64() != Some(1.0),
        None => own_class,
    };
    if offset_rewritten {
        set(map, "steps_offset", Value::from(1));
    }
    // `scheduler.config.clip_sample is True`: a missing key holds the class default, true for
    // DDIM; writing false for a class without the key changes nothing.
    let clip_rewritten = match given(map, "clip_sample") {
        Some(v) => *v == Value::Bool(true),
        None => own_class,
    };
    if clip_rewritten {
        set(map, "clip_sample", Value::Bool(false));
    }
    config
}

/// The value the file gives `key` (one listed in `_use_default_values` counts as missing).
fn given<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|_| !defaults_of(map).any(|k| k == key))
}

fn defaults_of(map: &Map<String, Value>) -> impl Iterator<Item = &str> {
    map.get("_use_default_values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Gives `key` the value, no longer listed as a default.
fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_string(), value);
    if let Some(Value::Array(defaults)) = map.get_mut("_use_default_values") {
        defaults.retain(|k| k.as_str() != Some(key));
    }
}

#[cfg(test)]
mod tests {
    use super::pipeline_config;
    use serde_json::json;

    #[test]
    fn own_scheduler_runs_with_offset_1_and_no_clipping() {
        let saved = json!({"_class_name": "DDIMScheduler", "steps_offset": 0});
        let run = pipeline_config(&saved, true);
        assert_eq!(run["steps_offset"], json!(1));
        assert_eq!(run["clip_sample"], json!(false));
        let defaults = json!({"_class_name": "DDIMScheduler", "steps_offset": 0,
            "clip_sample": true, "_use_default_values": ["steps_offset", "clip_sample"]});
        let run = pipeline_config(&defaults, true);
        assert_eq!((&run["steps_offset"], &run["clip_sample"]), (&json!(1), &json!(false)));
        assert_eq!(run["_use_default_values"], json!([]));
    }

    #[test]
    fn another_scheduler_gets_only_the_files_keys_rewritten() {
        let saved = json!({"_class_name": "PNDMScheduler", "steps_offset": 0, "clip_sample": true});
        let run = pipeline_config(&saved, false);
        assert_eq!((&run["steps_offset"], &run["clip_sample"]), (&json!(1), &json!(false)));
        let old = json!({"_class_name": "PNDMScheduler"});
        assert_eq!(pipeline_config(&old, false), old);
        let defaults = json!({"steps_offset": 0, "_use_default_values": ["steps_offset"]});
        assert_eq!(pipeline_config(&defaults, false), defaults);
        let kept = json!({"steps_offset": 1, "clip_sample": false});
        assert_eq!(pipeline_config(&kept, false), kept);
    }
}
