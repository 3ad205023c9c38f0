//! NumPy .npy files for latents and noise: read f32/f64 (as f32), write f32.
//! Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

use ndarray::{ArrayD, IxDyn};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a little-endian `<f4` or `<f8` array in C order (f64 is narrowed to f32).
pub fn read_npy(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an .npy file (missing the \\x93NUMPY magic)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    // v1 has a 2-byte header length; v2/v3 a 4-byte one. v3 only adds a UTF-8 header.
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy file: header length cut off".into());
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor} (know 1.0, 2.0, 3.0)")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy file: header cut off")?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| "corrupt .npy header: not UTF-8 text".to_string())?;
    let header = parse_header(header)?;

    let elem = match header.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
                "unsupported .npy dtype '{other}': need little-endian float32 '<f4' or float64 '<f8' \
                 (convert with arr.astype('<f4'))"
            ))
        }
    };
    if header.fortran_order {
        return Err("unsupported .npy layout: fortran_order is True; save a C-ordered array \
                    (np.ascontiguousarray)"
            .into());
    }
    let numel = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("corrupt .npy header: shape overflows")?;
    let data = &bytes[data_start..];
    let need = numel.checked_mul(elem).ok_or("corrupt .npy header: shape overflows")?;
    if data.len() < need {
        return Err(format!(
            "truncated .npy data: shape {:?} needs {need} bytes, file has {}",
            header.shape,
            data.len()
        ));
    }
    let values: Vec<f32> = if elem == 4 {
        data[..need].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        data[..need]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    ArrayD::from_shape_vec(IxDyn(&header.shape), values).map_err(|e| format!("corrupt .npy: {e}"))
}

/// Writes a version 1.0 `<f4` C-order .npy file (what `np.save` writes for float32).
pub fn write_npy(a: &ArrayD<f32>) -> Vec<u8> {
    let shape = match a.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so that the data starts on a 64-byte boundary; the header ends in '\n'.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');

    let mut out = Vec::with_capacity(10 + header.len() + a.len() * 4);
    out.extend_from_slice(MAGIC);
    let v2 = header.len() > u16::MAX as usize;
    if v2 {
        // Only for absurd ranks; keep the 64-byte alignment with the 2 extra length bytes.
        let extra = (64 - (MAGIC.len() + 6 + header.len()) % 64) % 64;
        header.insert_str(header.len() - 1, &" ".repeat(extra));
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    // iter() walks in logical (C) order whatever the memory layout.
    for v in a.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the Python dict literal numpy writes, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 64, 64), }`.
fn parse_header(h: &str) -> Result<Header, String> {
    let bad = |what: &str| format!("corrupt .npy header ({what}): {}", h.trim_end());
    let body = h.trim().strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or_else(|| bad("not a dict"))?;
    let value_of = |key: &str| -> Result<&str, String> {
        let pat_sq = format!("'{key}'");
        let pat_dq = format!("\"{key}\"");
        let at = body.find(&pat_sq).or_else(|| body.find(&pat_dq)).ok_or_else(|| bad(&format!("no '{key}'")))?;
        let rest = body[at + pat_sq.len()..].trim_start();
        rest.strip_prefix(':').map(str::trim_start).ok_or_else(|| bad(&format!("no ':' after '{key}'")))
    };

    let d = value_of("descr")?;
    let quote = d.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| bad("descr is not a string"))?;
    let d = &d[1..];
    let end = d.find(quote).ok_or_else(|| bad("unterminated descr"))?;
    let descr = d[..end].to_string();

    let f = value_of("fortran_order")?;
    let fortran_order = if f.starts_with("True") {
        true
    } else if f.starts_with("False") {
        false
    } else {
        return Err(bad("fortran_order is not True/False"));
    };

    let s = value_of("shape")?;
    let s = s.strip_prefix('(').ok_or_else(|| bad("shape is not a tuple"))?;
    let end = s.find(')').ok_or_else(|| bad("unterminated shape"))?;
    let shape = s[..end]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('L').parse::<usize>().map_err(|_| bad("shape has a non-integer")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header { descr, fortran_order, shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by numpy 2.4 (np.save / numpy.lib.format.write_array), see each name.
    const F4_2X3: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                          \x0a\x00\x00\x00\x00\x00\x00\x00?\x00\x00\x80?\x00\x00\xc0?\x00\x00\x00@\x00\x00 @";
    const F8_3: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }                                                            \x0a\x00\x00\x00\x00\x00\x00\xf8?\x00\x00\x00\x00\x00\x00\x02\xc0\xfc\xa9\xf1\xd2MbP?";
    const F4_V2: &[u8] = b"\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }                                                        \x0a\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x00\x00\x80@";
    const F4_V3: &[u8] = b"\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }                                                          \x0a\x00\x00\xe0@";
    const F4_SCALAR: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (), }                                                              \x0a\x00\x00`@";
    const F4_EMPTY: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }                                                          \x0a";
    const F4_FORTRAN: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }                                                           \x0a\x00\x00\x00\x00\x00\x00\x00@\x00\x00\x80?\x00\x00@@";
    const BE_F4: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }                                                            \x0a\x00\x00\x00\x00?\x80\x00\x00";
    const I8: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }                                                            \x0a\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00";
    const F16: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }                                                            \x0a\x00\x00\x00<";

    #[test]
    fn reads_f4_v1() {
        // np.arange(6, dtype='<f4').reshape(2, 3) / 2
        let a = read_npy(F4_2X3).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    }

    #[test]
    fn reads_f8_as_f32() {
        let a = read_npy(F8_3).unwrap();
        assert_eq!(a.shape(), &[3]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1.5, -2.25, 1e-3f64 as f32]);
    }

    #[test]
    fn reads_v2_and_v3_headers() {
        let a = read_npy(F4_V2).unwrap();
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0, 4.0]);
        let b = read_npy(F4_V3).unwrap();
        assert_eq!(b.shape(), &[1]);
        assert_eq!(b[[0]], 7.0);
    }

    #[test]
    fn reads_scalar_and_empty() {
        let a = read_npy(F4_SCALAR).unwrap();
        assert_eq!(a.ndim(), 0);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![3.5]);
        let e = read_npy(F4_EMPTY).unwrap();
        assert_eq!(e.shape(), &[0, 4]);
    }

    #[test]
    fn write_matches_numpy_bytes() {
        for bytes in [F4_2X3, F4_SCALAR, F4_EMPTY] {
            let a = read_npy(bytes).unwrap();
            assert_eq!(write_npy(&a), bytes);
        }
    }

    #[test]
    fn roundtrip_non_contiguous_view() {
        let a = ndarray::Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32).into_dyn();
        let t = a.t().to_owned(); // Fortran-ordered memory: must still be written in C order
        let back = read_npy(&write_npy(&t)).unwrap();
        assert_eq!(back, t);
        assert_eq!(write_npy(&t).len() % 64, (t.len() * 4) % 64, "data starts on a 64-byte boundary");
    }

    #[test]
    fn clear_errors() {
        let err = |b: &[u8]| read_npy(b).unwrap_err();
        assert!(err(b"PK\x03\x04 zip").contains("not an .npy file"), "{}", err(b"PK"));
        assert!(err(b"").contains("not an .npy file"));
        let e = err(F4_FORTRAN);
        assert!(e.contains("fortran_order"), "{e}");
        let e = err(BE_F4);
        assert!(e.contains("'>f4'"), "{e}");
        let e = err(I8);
        assert!(e.contains("'<i8'"), "{e}");
        let e = err(F16);
        assert!(e.contains("'<f2'"), "{e}");
        let e = err(&F4_2X3[..F4_2X3.len() - 3]);
        assert!(e.contains("truncated") && e.contains("24 bytes"), "{e}");
        let e = err(&F4_2X3[..40]);
        assert!(e.contains("truncated"), "{e}");
        let mut v9 = F4_2X3.to_vec();
        v9[6] = 9;
        assert!(err(&v9).contains("version 9.0"));
    }
}
