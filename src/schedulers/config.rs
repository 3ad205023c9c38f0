//! A scheduler config read with diffusers' `from_config` semantics: keys the class accepts
//! override its defaults, keys it does not accept are ignored, keys listed in
//! `_use_default_values` take the class default, and a command-line name may pin some keys.

use serde_json::{Map, Value};

use super::training::MAX_TRAIN_TIMESTEPS;

pub(crate) struct Config<'a> {
    map: &'a Map<String, Value>,
    /// Keys the chosen name forces, overriding the file.
    pinned: Vec<(&'static str, Value)>,
    /// `_use_default_values`: keys diffusers wrote but that were defaults of the saving class.
    use_defaults: Vec<String>,
}

impl<'a> Config<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        let use_defaults = match map.get("_use_default_values") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Config {
            map,
            pinned: Vec::new(),
            use_defaults,
        }
    }

    pub(crate) fn pin(&mut self, key: &'static str, value: Value) {
        self.pinned.push((key, value));
    }

    /// The value for `key`, or None when absent (the class default applies).
    fn get(&self, key: &str) -> Option<&Value> {
        if let Some((_, v)) = self.pinned.iter().find(|(k, _)| *k == key) {
            return Some(v);
        }
        if self.use_defaults.iter().any(|k| k == key) {
            return None;
        }
        self.map.get(key)
    }

    pub(crate) fn f64(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("scheduler config: {key} must be a number, got {v}")),
        }
    }

    /// Optional number (`null` = None, as diffusers' `None` defaults).
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                format!("scheduler config: {key} must be a number or null, got {v}")
            }),
        }
    }

    pub(crate) fn i64(&self, key: &str, default: i64) -> Result<i64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| format!("scheduler config: {key} must be an integer, got {v}")),
        }
    }

    pub(crate) fn usize(&self, key: &str, default: usize) -> Result<usize, String> {
        let v = self.i64(key, default as i64)?;
        usize::try_from(v)
            .map_err(|_| format!("scheduler config: {key} must be non-negative, got {v}"))
    }

    /// Booleans; `null` is falsy as Python's None.
    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!(
                "scheduler config: {key} must be true or false, got {v}"
            )),
        }
    }

    pub(crate) fn string(&self, key: &str, default: &str) -> Result<String, String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(format!("scheduler config: {key} must be a string, got {v}")),
        }
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!(
                "scheduler config: {key} must be a string or null, got {v}"
            )),
        }
    }

    pub(crate) fn opt_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| format!("scheduler config: {key} must hold numbers"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(format!(
                "scheduler config: {key} must be an array of numbers or null, got {v}"
            )),
        }
    }

    /// `steps_offset`, bounded so timestep arithmetic cannot overflow.
    pub(crate) fn steps_offset(&self) -> Result<i64, String> {
        let v = self.i64("steps_offset", 0)?;
        if v.abs() > MAX_TRAIN_TIMESTEPS as i64 {
            return Err(format!(
                "scheduler config: steps_offset {v} is out of range"
            ));
        }
        Ok(v)
    }

    /// `thresholding` (DDIM, LCM, DPM-Solver) is not implemented.
    pub(crate) fn reject_thresholding(&self) -> Result<(), String> {
        self.reject_true(
            "thresholding",
            "dynamic thresholding is only for pixel-space models",
        )
    }

    /// Rejects a key that is set to a value this crate does not implement.
    pub(crate) fn reject_true(&self, key: &str, why: &str) -> Result<(), String> {
        if self.bool(key, false)? {
            return Err(format!(
                "scheduler config: {key}=true is not supported ({why})"
            ));
        }
        Ok(())
    }
}
