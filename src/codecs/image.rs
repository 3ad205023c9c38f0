//! Input pictures (`--init-image`, `--mask`): PNG decoding with a clear word for every other
//! kind of file, and the two pixel operations diffusers' VaeImageProcessor applies through PIL:
//! Lanczos resizing and RGB → grayscale ("L"). Both are PIL's integer algorithms, so a resized
//! picture or mask is the one diffusers sees.

use super::png::RgbImage;
use crate::error::{Result, SdError};

/// A decoded input picture and what was done to make it 8-bit RGB.
#[derive(Debug, Clone)]
pub struct InputImage {
    pub image: RgbImage,
    /// E.g. "16-bit samples reduced to 8 bits", "alpha channel ignored".
    pub notes: Vec<String>,
}

/// What a file that is not a PNG looks like, from its first bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(&[0xff, 0xd8, 0xff]) {
        Some("a JPEG")
    } else if starts(b"GIF8") {
        Some("a GIF")
    } else if starts(b"BM") {
        Some("a BMP")
    } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("a WebP")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some("a TIFF")
    } else if bytes.is_empty() {
        Some("an empty file")
    } else {
        None
    }
}

/// Decodes a PNG of any color type and depth into 8-bit RGB. `what` names the flag and
/// file for messages ("--init-image in.jpg").
pub fn decode_input(bytes: &[u8], what: &str) -> Result<InputImage> {
    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(PNG_MAGIC) {
        let kind = sniff(bytes).unwrap_or("not a PNG");
        return Err(SdError::usage(format!(
            "{what}: the file is {kind}; only PNG pictures are read (convert it, e.g. `convert in.jpg in.png` \
             or any image editor's \"export as PNG\")"
        )));
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| SdError::usage(format!("{what}: not a readable PNG ({e})")))?;
    let (source_color, source_depth) = (reader.info().color_type, reader.info().bit_depth);
    let (w, h) = (reader.info().width, reader.info().height);
    if w as u64 * h as u64 > MAX_INPUT_PIXELS {
        return Err(SdError::usage(format!(
            "{what}: the picture is {w}x{h}, more than the {MAX_INPUT_PIXELS} pixels (8192x8192) read here; scale it down first"
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| SdError::usage(format!("{what}: the PNG is too large")))?;
    let mut buf = zeroed(size, what)?;
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| SdError::usage(format!("{what}: the PNG is damaged ({e})")))?;
    buf.truncate(frame.buffer_size());
    let mut notes = Vec::new();
    if source_depth == png::BitDepth::Sixteen {
        notes.push("16-bit samples reduced to 8 bits".to_string());
    }
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        other => {
            return Err(SdError::usage(format!("{what}: PNG color type {other:?} ({source_color:?}) is not supported")))
        }
    };
    if channels % 2 == 0 && buf.chunks(channels).any(|p| p[channels - 1] != 255) {
        notes.push("alpha channel ignored (transparent pixels keep their color)".to_string());
    }
    let pixels = if channels == 3 { buf } else { to_rgb(&buf, channels, what)? };
    if frame.width == 0 || frame.height == 0 {
        return Err(SdError::usage(format!("{what}: the picture is empty")));
    }
    Ok(InputImage { image: RgbImage { width: frame.width, height: frame.height, pixels }, notes })
}

/// The largest input picture read: 8192x8192. Its decoded RGB (200 MB) still fits Bacalhau's
/// default 512 MB next to the module; a larger one would end in a failed allocation (a trap).
pub const MAX_INPUT_PIXELS: u64 = 8192 * 8192;

/// A zeroed buffer whose size comes from the input: refused with a message, never an abort,
/// when memory cannot hold it.
pub fn zeroed(size: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    crate::error::fallible(|| buf.try_reserve_exact(size)).map_err(|_| {
        SdError::runtime(format!(
            "{what}: out of memory for {size} bytes of pixels: {}",
            crate::error::MORE_MEMORY
        ))
    })?;
    buf.resize(size, 0);
    Ok(buf)
}

/// Gray, gray + alpha or RGBA samples → RGB (alpha dropped), into a checked allocation.
fn to_rgb(buf: &[u8], channels: usize, what: &str) -> Result<Vec<u8>> {
    let mut rgb = zeroed(buf.len() / channels * 3, what)?;
    for (out, p) in rgb.chunks_mut(3).zip(buf.chunks(channels)) {
        match channels {
            1 | 2 => out.fill(p[0]),
            _ => out.copy_from_slice(&p[..3]),
        }
    }
    Ok(rgb)
}

/// PIL's RGB → "L": (R·19595 + G·38470 + B·7471 + 2^15) >> 16.
pub fn to_gray(image: &RgbImage) -> Vec<u8> {
    image
        .pixels
        .chunks(3)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect()
}

/// PIL's `Image.resize(size, Image.LANCZOS)` on 8-bit data (Resample.c): separable, the
/// horizontal pass first, coefficients in 22-bit fixed point, each pass rounded and clipped
/// to 8 bits. A pass whose size does not change is skipped, as PIL skips it.
pub fn resize_lanczos(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = (image.width as usize, image.height as usize);
    let (w1, h1) = (width as usize, height as usize);
    let mut pixels = image.pixels.clone();
    if w1 != w0 {
        let taps = coefficients(w0, w1);
        let mut out = vec![0u8; w1 * h0 * 3];
        for y in 0..h0 {
            for (x, (first, k)) in taps.iter().enumerate() {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(1i64 << (PRECISION_BITS - 1), |acc, (i, &k)| {
                        acc + pixels[(y * w0 + first + i) * 3 + c] as i64 * k as i64
                    });
                    out[(y * w1 + x) * 3 + c] = clip8(acc);
                }
            }
        }
        pixels = out;
    }
    if h1 != h0 {
        let taps = coefficients(h0, h1);
        let mut out = vec![0u8; w1 * h1 * 3];
        for (y, (first, k)) in taps.iter().enumerate() {
            for x in 0..w1 {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(1i64 << (PRECISION_BITS - 1), |acc, (i, &k)| {
                        acc + pixels[((first + i) * w1 + x) * 3 + c] as i64 * k as i64
                    });
                    out[(y * w1 + x) * 3 + c] = clip8(acc);
                }
            }
        }
        pixels = out;
    }
    RgbImage { width, height, pixels }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn lanczos(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            crate::math::sin(x) / x
        }
    }
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights (PIL's
/// precompute_coeffs + normalize_coeffs_8bpc).
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    (0..output)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize - xmin;
            let mut k: Vec<f64> = (0..xmax).map(|x| lanczos((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|v| *v /= total);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let scaled = v * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_unchanged_and_gray_is_exact() {
        let img = RgbImage { width: 2, height: 1, pixels: vec![10, 20, 30, 200, 100, 0] };
        assert_eq!(resize_lanczos(&img, 2, 1), img);
        let gray = RgbImage { width: 1, height: 1, pixels: vec![77, 77, 77] };
        assert_eq!(to_gray(&gray), vec![77]);
    }

    #[test]
    fn other_formats_are_named() {
        let err = decode_input(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], "--init-image x.jpg").unwrap_err();
        assert!(err.message.contains("JPEG"), "{}", err.message);
        let err = decode_input(b"hello", "--mask m").unwrap_err();
        assert!(err.message.contains("not a PNG"), "{}", err.message);
    }
}

#[cfg(test)]
mod pil_tests {
    use super::*;

    /// PIL's own resizes (fixtures/tiny-img2img/lanczos.json, scripts/make_img2img_fixtures.py),
    /// up and down, integer and fractional ratios: byte for byte.
    #[test]
    fn lanczos_matches_pil() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-img2img/lanczos.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let image = |v: &serde_json::Value| RgbImage {
            width: v["width"].as_u64().unwrap() as u32,
            height: v["height"].as_u64().unwrap() as u32,
            pixels: v["pixels"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u8).collect(),
        };
        let source = image(&v);
        for want in v["resized"].as_array().unwrap() {
            let want = image(want);
            let got = resize_lanczos(&source, want.width, want.height);
            assert_eq!(got, want, "{}x{}", want.width, want.height);
        }
    }
}
