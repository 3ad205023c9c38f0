//! What a caller asks for: [`GenerateRequest`], defined once by the parameter table below.
//!
//! Each row names a field's type, default, command-line flags, help text, Automatic1111
//! `parameters` key and check. The command line, prompt files, `--params-from`, the browser
//! and the component all fill a request through [`Param::set`], so a field is spelled in its
//! row and where it is used, nowhere else. Errors name the field as `«key»`; each front end
//! words that in its own terms (a flag, a form field, a WIT field) with [`SdError::worded`].

pub mod preset;
mod table;
pub mod tagged_loras;
mod validate;
mod value;

use crate::error::{Result, SdError};
pub use crate::rng::RngKind;
pub use preset::{apply_preset, Preset};
pub use tagged_loras::TaggedLoras;
pub use validate::validate;
pub use value::{Inputs, NoInputs, ParamValue, Raw};

/// Largest side we accept: beyond it the UNet's activations do not fit wasm32 memory.
pub const MAX_SIDE: u32 = 2048;
pub const MAX_STEPS: usize = 1000;
pub const MAX_IMAGES: usize = 10_000;
/// The seed system's default `--strength` for an init image.
pub const DEFAULT_STRENGTH: f32 = 0.5;
pub const BETA_SCHEDULES: [&str; 3] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
pub const PREDICTION_TYPES: [&str; 2] = ["epsilon", "v_prediction"];

/// How a row appears in Automatic1111's `parameters` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum A1111 {
    /// Not recorded.
    None,
    /// Written by the records' fixed head from the resolved picture (prompt, Steps, Seed,
    /// Size…); read back under this key.
    Head(&'static str),
    /// Written after the head, in table order, when the row's `record` gives a value.
    Field(&'static str),
}

/// One request parameter. Built by `request_table!` from one row each.
pub struct Param {
    /// The field's name: JSON key of prompt files and the browser's request.
    pub key: &'static str,
    /// Command-line flags, the canonical one first.
    pub flags: &'static [&'static str],
    /// Placeholder for the value in `--help` ("N", "TEXT", "PNG").
    pub value: &'static str,
    pub help: &'static str,
    pub a1111: A1111,
    /// Other Automatic1111 keys read back into this field (e.g. "Eta DDIM").
    pub a1111_aliases: &'static [&'static str],
    /// What a `parameters` text without this key means, read back as this value: the
    /// default of the Automatic1111 setting it records (its "RNG" is omitted for "GPU").
    pub a1111_absent: Option<&'static str>,
    /// Whether a recorded value can be read back (a picture is recorded only as "given").
    pub from_record: bool,
    set: fn(&mut GenerateRequest, Raw, &dyn Inputs) -> std::result::Result<(), String>,
    check: fn(&GenerateRequest) -> std::result::Result<(), String>,
    /// The value as Automatic1111 text, given the resolved scheduler's name; None: omitted.
    record: fn(&GenerateRequest, &str) -> Option<String>,
    json: fn(&GenerateRequest) -> serde_json::Value,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({})", self.key)
    }
}

impl Param {
    /// Parses and stores one value (checked later, by [`validate`]); the error names the field.
    pub fn set(&self, request: &mut GenerateRequest, raw: Raw, inputs: &dyn Inputs) -> Result<()> {
        (self.set)(request, raw, inputs).map_err(|detail| SdError::field(self.key, &detail))
    }
    /// The row's own check of the request's value.
    pub fn check(&self, request: &GenerateRequest) -> Result<()> {
        (self.check)(request).map_err(|detail| SdError::field(self.key, &detail))
    }
    pub fn record(&self, request: &GenerateRequest, scheduler: &str) -> Option<String> {
        (self.record)(request, scheduler)
    }
    pub fn json(&self, request: &GenerateRequest) -> serde_json::Value {
        (self.json)(request)
    }
    pub fn flag(&self) -> &'static str {
        self.flags[0]
    }
}

/// The row with this JSON key.
pub fn param(key: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.key == key)
}

/// The row with this command-line flag.
pub fn param_by_flag(flag: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.flags.contains(&flag))
}

/// The row Automatic1111's `parameters` text names with `key`.
pub fn param_by_a1111(key: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| match p.a1111 {
        A1111::Head(k) | A1111::Field(k) => k == key || p.a1111_aliases.contains(&key),
        A1111::None => false,
    })
}

/// The command line's name for a field: its first flag.
pub fn flag_name(key: &str) -> String {
    param(key).map_or_else(|| key.to_string(), |p| p.flag().to_string())
}

impl GenerateRequest {
    /// Sets the fields of a JSON object's keys (prompt files, the browser's request).
    pub fn apply_json(&mut self, object: &serde_json::Map<String, serde_json::Value>, inputs: &dyn Inputs) -> Result<()> {
        for (key, value) in object {
            let param = param(key).ok_or_else(|| SdError::usage(format!("unknown key {key:?}")))?;
            param.set(self, Raw::Json(value), inputs)?;
        }
        Ok(())
    }

    /// The strength an init image runs with.
    pub fn strength_or_default(&self) -> f32 {
        self.strength.unwrap_or(DEFAULT_STRENGTH)
    }

    /// `beta_start`, `beta_end`, `beta_schedule`, `prediction_type` as scheduler config keys to write over the
    /// model's scheduler_config.json.
    pub fn scheduler_overrides(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut keys = Vec::new();
        if let Some(v) = self.beta_start {
            keys.push(("beta_start", v.into()));
        }
        if let Some(v) = self.beta_end {
            keys.push(("beta_end", v.into()));
        }
        if let Some(v) = &self.beta_schedule {
            keys.push(("beta_schedule", v.clone().into()));
        }
        if let Some(v) = &self.prediction_type {
            keys.push(("prediction_type", v.clone().into()));
        }
        keys
    }
}

/// Which decoder turns latents into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeChoice {
    /// The model's own VAE decoder (`vae_decoder/`).
    #[default]
    Full,
    /// TAESD (`vae_decoder_taesd/`): a ~2.5M-parameter decoder, far faster and smaller,
    /// slightly softer pictures.
    Taesd,
}

impl VaeChoice {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "full" | "default" | "vae" => Some(VaeChoice::Full),
            "taesd" | "tiny" => Some(VaeChoice::Taesd),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            VaeChoice::Full => "full",
            VaeChoice::Taesd => "taesd",
        }
    }
    /// The model dir's folder for this decoder.
    pub fn dir(self) -> &'static str {
        match self {
            VaeChoice::Full => "vae_decoder",
            VaeChoice::Taesd => "vae_decoder_taesd",
        }
    }
}

pub use table::{GenerateRequest, PARAMS};
