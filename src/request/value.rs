//! How a request field's value is read from a front end (command-line text, a JSON value) and
//! shown again (Automatic1111 text, JSON). Errors are details; the table adds the field.

use super::preset::Preset;
use super::{RngKind, VaeChoice};
use crate::codecs::png::RgbImage;
use crate::model_dir::ModelFiles;
use crate::models::lora::{open_lora, Lora};
use crate::schedulers::SchedulerKind;
use crate::tensor::Latents;
use serde_json::Value;
use std::sync::Arc;

/// A value as a front end has it.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// Command-line or `parameters` text.
    Text(&'a str),
    /// A JSON value (prompt files, the browser's request).
    Json(&'a Value),
}

impl<'a> Raw<'a> {
    fn text(self) -> Result<&'a str, String> {
        match self {
            Raw::Text(t) => Ok(t),
            Raw::Json(Value::String(s)) => Ok(s),
            Raw::Json(_) => Err("must be a string".into()),
        }
    }
}

/// Where file-valued fields (pictures, latents, LoRAs) come from: the front end's files.
pub trait Inputs {
    /// The bytes of `path`; the error says why not, in the front end's terms.
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
    /// `path` to be read piecewise (a LoRA file, too large to hold): its folder and its name
    /// there.
    fn folder(&self, path: &str) -> Result<(Arc<dyn ModelFiles>, String), String> {
        Err(format!("{path}: files cannot be named here"))
    }
    /// Something was converted on the way in (e.g. a 16-bit PNG reduced to 8 bits).
    fn note(&self, _text: String) {}
}

/// A front end without files (the browser's JSON request).
pub struct NoInputs;

impl Inputs for NoInputs {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        Err(format!("{path}: files cannot be named here"))
    }
}

/// A type a request field can have.
pub trait ParamValue: Sized {
    /// Whether a recorded value (Automatic1111 text) can be read back: a picture is recorded
    /// only as "given".
    const FROM_RECORD: bool = true;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String>;
    /// Stores a parsed value in the field: replaces it (a list adds to it).
    fn assign(field: &mut Self, raw: Raw, inputs: &dyn Inputs) -> Result<(), String> {
        *field = Self::parse(raw, inputs)?;
        Ok(())
    }
    /// Automatic1111 text; None: nothing to record.
    fn to_text(&self) -> Option<String>;
    fn to_json(&self) -> Value;
}

impl ParamValue for String {
    fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
        raw.text().map(str::to_string)
    }
    fn to_text(&self) -> Option<String> {
        Some(self.clone())
    }
    fn to_json(&self) -> Value {
        self.as_str().into()
    }
}

impl<T: ParamValue> ParamValue for Option<T> {
    const FROM_RECORD: bool = T::FROM_RECORD;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String> {
        T::parse(raw, inputs).map(Some)
    }
    fn to_text(&self) -> Option<String> {
        self.as_ref().and_then(T::to_text)
    }
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_json)
    }
}

/// Whole numbers: text or a JSON integer, refused (not wrapped) when out of the type's range.
macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl ParamValue for $t {
            fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
                let wide: u64 = match raw {
                    Raw::Text(t) => t.trim().parse().map_err(|_| format!("takes a number, got {t:?}"))?,
                    Raw::Json(v) => v.as_u64().ok_or_else(|| "must be a whole number".to_string())?,
                };
                <$t>::try_from(wide).map_err(|_| format!("is out of range, got {wide}"))
            }
            fn to_text(&self) -> Option<String> {
                Some(self.to_string())
            }
            fn to_json(&self) -> Value {
                (*self as u64).into()
            }
        }
    )*};
}
whole_number!(u32, u64, usize);

macro_rules! float_number {
    ($($t:ty),*) => {$(
        impl ParamValue for $t {
            fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
                match raw {
                    Raw::Text(t) => t.trim().parse().map_err(|_| format!("takes a number, got {t:?}")),
                    Raw::Json(v) => v.as_f64().map(|f| f as $t).ok_or_else(|| "must be a number".to_string()),
                }
            }
            /// Shortest form that reads back to the same value ("7.5", "7", "0.3").
            fn to_text(&self) -> Option<String> {
                Some(format!("{self}"))
            }
            fn to_json(&self) -> Value {
                serde_json::json!(self)
            }
        }
    )*};
}
float_number!(f32, f64);

impl ParamValue for VaeChoice {
    fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
        let name = raw.text()?;
        VaeChoice::parse(name).ok_or_else(|| format!("{name:?} is not known; choose full or taesd"))
    }
    /// Recorded only when it is not the model's own decoder.
    fn to_text(&self) -> Option<String> {
        (*self != VaeChoice::Full).then(|| self.name().to_string())
    }
    fn to_json(&self) -> Value {
        self.name().into()
    }
}

impl ParamValue for Preset {
    fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
        let name = raw.text()?;
        Preset::parse(name).ok_or_else(|| format!("{name:?} is not known; choose one of {}", Preset::NAMES))
    }
    fn to_text(&self) -> Option<String> {
        Some(self.name().to_string())
    }
    fn to_json(&self) -> Value {
        self.name().into()
    }
}

impl ParamValue for SchedulerKind {
    fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
        let name = raw.text()?;
        SchedulerKind::parse(name)
            .ok_or_else(|| format!("{name:?}: unknown scheduler; choose one of {}", SchedulerKind::cli_names()))
    }
    fn to_text(&self) -> Option<String> {
        Some(self.cli_name().to_string())
    }
    fn to_json(&self) -> Value {
        self.cli_name().into()
    }
}

impl ParamValue for RngKind {
    fn parse(raw: Raw, _: &dyn Inputs) -> Result<Self, String> {
        let name = raw.text()?;
        RngKind::parse(name).ok_or_else(|| format!("{name:?} is not known; choose torch or cuda"))
    }
    /// Automatic1111's name for the same noise ("CPU", "NV"): it reads that back as its own.
    fn to_text(&self) -> Option<String> {
        Some(self.a1111_name().to_string())
    }
    fn to_json(&self) -> Value {
        self.name().into()
    }
}

/// A picture named by its path, decoded from PNG (other formats are refused by name).
impl ParamValue for RgbImage {
    const FROM_RECORD: bool = false;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String> {
        let path = raw.text()?;
        let bytes = inputs.read(path)?;
        let decoded = crate::codecs::image::decode_input(&bytes, path).map_err(|e| e.message)?;
        for note in decoded.notes {
            inputs.note(format!("{path}: {note}"));
        }
        Ok(decoded.image)
    }
    /// The picture itself is not text: the record says it was given.
    fn to_text(&self) -> Option<String> {
        Some("given".into())
    }
    fn to_json(&self) -> Value {
        true.into()
    }
}

/// Latents named by the path of a `.npy` file.
impl ParamValue for Latents {
    const FROM_RECORD: bool = false;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String> {
        let path = raw.text()?;
        let bytes = inputs.read(path)?;
        let latents = crate::codecs::npy::read_npy(&bytes).map_err(|e| format!("{path}: {e}"))?;
        // A NaN or Inf here would run every step and end as a black picture.
        match latents.iter().position(|v| !v.is_finite()) {
            None => Ok(latents),
            Some(i) => Err(format!("{path}: value {i} is {}; latents must be finite numbers", latents.iter().nth(i).copied().unwrap_or(f32::NAN))),
        }
    }
    fn to_text(&self) -> Option<String> {
        Some("given".into())
    }
    fn to_json(&self) -> Value {
        true.into()
    }
}

/// A LoRA named `FILE[:WEIGHT]`: its header read and checked, its content hashed. Its name is
/// the file's stem, as Automatic1111 names LoRAs.
impl ParamValue for Lora {
    const FROM_RECORD: bool = false;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String> {
        let text = raw.text()?;
        let weighted = text.rsplit_once(':').filter(|(path, _)| !path.is_empty());
        let (path, scale) = match weighted.and_then(|(path, w)| Some((path, w.trim().parse::<f32>().ok()?))) {
            Some(weighted) => weighted,
            None => (text, 1.0),
        };
        let (folder, rel) = inputs.folder(path)?;
        let file = open_lora(folder, &rel).map_err(|e| e.message)?;
        Ok(Lora { name: file.stem().to_string(), scale, file: Arc::new(file) })
    }
    fn to_text(&self) -> Option<String> {
        Some(self.tag())
    }
    fn to_json(&self) -> Value {
        serde_json::json!({ "name": self.name, "weight": self.scale, "hash": self.file.short_hash(12) })
    }
}

/// A repeatable field: each value given adds one (a JSON array gives them all).
impl<T: ParamValue> ParamValue for Vec<T> {
    const FROM_RECORD: bool = T::FROM_RECORD;
    fn parse(raw: Raw, inputs: &dyn Inputs) -> Result<Self, String> {
        match raw {
            Raw::Json(Value::Array(items)) => items.iter().map(|v| T::parse(Raw::Json(v), inputs)).collect(),
            _ => T::parse(raw, inputs).map(|one| vec![one]),
        }
    }
    fn assign(field: &mut Self, raw: Raw, inputs: &dyn Inputs) -> Result<(), String> {
        let values = Self::parse(raw, inputs)?;
        match raw {
            Raw::Json(Value::Array(_)) => *field = values,
            _ => field.extend(values),
        }
        Ok(())
    }
    fn to_text(&self) -> Option<String> {
        let texts: Vec<String> = self.iter().filter_map(T::to_text).collect();
        (!texts.is_empty()).then(|| texts.join(" "))
    }
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(T::to_json).collect())
    }
}
