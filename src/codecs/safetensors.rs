//! safetensors, read piecewise: an 8-byte little-endian header length, a JSON header naming
//! each tensor's dtype, shape and byte range, then the data. The header is read once and
//! checked (every range inside the file, every size what its shape needs); each tensor is read
//! when it is used, so a file is never in memory whole.

/// Larger headers are refused before they are read. kohya's files carry training metadata
/// (tag frequencies) in the header: a few hundred KB, rarely a few MB.
pub const MAX_HEADER: u64 = 32 << 20;

/// One tensor of the file; `start`..`end` are absolute offsets into the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Header {
    pub tensors: Vec<(String, TensorEntry)>,
    /// Where the data begins (8 + the header's length): what Automatic1111's hash covers.
    pub data_start: u64,
}

/// The header's length from the file's first 8 bytes, checked against the file's size.
pub fn header_len(first: &[u8], file_size: u64) -> Result<u64, String> {
    let bytes: [u8; 8] = first.get(..8).and_then(|b| b.try_into().ok()).ok_or("shorter than a safetensors header")?;
    let len = u64::from_le_bytes(bytes);
    if len > MAX_HEADER {
        return Err(format!("not a safetensors file (its header would be {len} bytes; at most {MAX_HEADER} are read)"));
    }
    if 8 + len > file_size {
        return Err(format!("truncated: its header needs {} bytes, the file has {file_size}", 8 + len));
    }
    Ok(len)
}

/// Bytes per element of the dtypes safetensors defines.
fn element_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Parses the JSON header (`json`, the `len` bytes after the first 8) of a file of `file_size`.
pub fn parse_header(json: &[u8], file_size: u64) -> Result<Header, String> {
    let data_start = 8 + json.len() as u64;
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not a safetensors file (its header is not JSON: {e})"))?;
    let object = value.as_object().ok_or("not a safetensors file (its header is not a JSON object)")?;
    let mut tensors = Vec::with_capacity(object.len());
    for (name, entry) in object {
        if name == "__metadata__" {
            continue;
        }
        let bad = |why: &str| format!("tensor {name:?}: {why}");
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let size = element_size(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype:?}")))?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a dimension is not a whole number"))?;
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .map(|o| o.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        let [begin, end] = offsets[..] else { return Err(bad("data_offsets is not [begin, end]")) };
        let bytes =
            shape.iter().try_fold(size, |n, &d| n.checked_mul(d as u64)).ok_or_else(|| bad("shape too large"))?;
        if end < begin || end - begin != bytes {
            return Err(bad(&format!(
                "{} bytes of data for shape {shape:?} of {dtype} ({bytes} needed)",
                end.saturating_sub(begin)
            )));
        }
        let (start, end) = (data_start.saturating_add(begin), data_start.saturating_add(end));
        if end > file_size {
            return Err(format!("truncated: tensor {name:?} ends at byte {end}, the file has {file_size}"));
        }
        tensors.push((name.clone(), TensorEntry { dtype: dtype.to_string(), shape, start, end }));
    }
    Ok(Header { tensors, data_start })
}

/// A float tensor's little-endian bytes as f32 (F32, F16, BF16, F64).
pub fn to_f32(dtype: &str, bytes: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        "F32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        "F16" => {
            bytes.chunks_exact(2).map(|b| sd_kernels::cast::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()
        }
        "BF16" => {
            bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
        }
        "F64" => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        other => return Err(format!("dtype {other} is not a float type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_headers_are_errors() {
        assert!(header_len(b"\x01\x02", 100).is_err());
        assert!(header_len(&u64::MAX.to_le_bytes(), 100).is_err());
        assert!(header_len(&50u64.to_le_bytes(), 40).is_err());
        let file = |json: &str| parse_header(json.as_bytes(), 8 + json.len() as u64 + 8);
        assert!(file("[]").is_err());
        assert!(file(r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#).is_ok());
        assert!(file(r#"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#).is_err());
        assert!(file(r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#).is_err());
        assert!(file(r#"{"a": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}}"#).is_err());
        assert!(file(r#"{"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}"#).is_err());
    }
}
