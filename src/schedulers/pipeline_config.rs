//! The scheduler config as diffusers' Stable Diffusion pipelines run it, not as it is saved.
//!
//! `StableDiffusionPipeline.__init__` (and Img2Img's, Inpaint's) rewrites the config of the
//! scheduler it is given, for configs saved before these keys mattered: a `steps_offset` other
//! than 1 becomes 1, and `clip_sample: true` becomes false. The scheduler the pipeline is given
//! is the model's own, or the one `--scheduler` names, built from the model's config
//! (`StableDiffusionPipeline.from_pretrained(dir, scheduler=XScheduler.from_pretrained(dir,
//! subfolder="scheduler"))`): either way the rewrite sees the class's full config, where a key
//! the file lacks holds the class default (steps_offset 0 for every scheduler here, DDIM's
//! clip_sample true). So every scheduler runs with steps_offset 1 and without clipping — DDIM
//! from a saved PNDM config without clip_sample included. (Assigning
//! `pipe.scheduler = XScheduler.from_config(pipe.scheduler.config)` after construction skips
//! the rewrite; sd.wasm follows the pipeline, as Automatic1111 does, which never clips.)

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
    scheduler_from_config(name, &pipeline_config(config), options)
}

/// `config` as the pipeline's rewrite leaves it: `steps_offset` 1 (a missing key holds the
/// class default 0, also rewritten) and no `clip_sample` (writing false for a class without
/// the key changes nothing).
fn pipeline_config(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        set(map, "steps_offset", Value::from(1));
        set(map, "clip_sample", Value::Bool(false));
    }
    config
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
    fn every_scheduler_runs_with_offset_1_and_no_clipping() {
        let saved = json!({"_class_name": "DDIMScheduler", "steps_offset": 0});
        let run = pipeline_config(&saved);
        assert_eq!((&run["steps_offset"], &run["clip_sample"]), (&json!(1), &json!(false)));
        let defaults = json!({"_class_name": "DDIMScheduler", "steps_offset": 0,
            "clip_sample": true, "_use_default_values": ["steps_offset", "clip_sample"]});
        let run = pipeline_config(&defaults);
        assert_eq!((&run["steps_offset"], &run["clip_sample"]), (&json!(1), &json!(false)));
        assert_eq!(run["_use_default_values"], json!([]));
        let old_pndm = json!({"_class_name": "PNDMScheduler"});
        let run = pipeline_config(&old_pndm);
        assert_eq!((&run["steps_offset"], &run["clip_sample"]), (&json!(1), &json!(false)));
    }
}
