//! PNG output with generation parameters in a `tEXt` chunk named `parameters`, in the text
//! format Automatic1111's web UI writes, so existing tools (and `--params-from`) read it.

use crate::error::{Result, SdError};

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Encodes the image. No timestamps or other varying data: the same image and text give the
/// same bytes on every platform.
pub fn encode_png(image: &RgbImage, parameters: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // tEXt is Latin-1; prompts with other characters go in an iTXt chunk of the same name.
        let latin1 = parameters.chars().all(|c| (c as u32) < 256);
        let added = if latin1 {
            encoder.add_text_chunk("parameters".into(), parameters.into())
        } else {
            encoder.add_itxt_chunk("parameters".into(), parameters.into())
        };
        added.map_err(|e| SdError::runtime(format!("PNG metadata: {e}")))?;
        let mut writer = encoder.write_header().map_err(|e| SdError::runtime(format!("PNG: {e}")))?;
        writer.write_image_data(&image.pixels).map_err(|e| SdError::runtime(format!("PNG: {e}")))?;
        writer.finish().map_err(|e| SdError::runtime(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// Reads the `parameters` text (tEXt or iTXt) from PNG bytes, if present.
pub fn read_parameters(bytes: &[u8]) -> Result<Option<String>> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|e| SdError::usage(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .map(|c| c.text.clone())
        .or_else(|| {
            info.utf8_text.iter().find(|c| c.keyword == "parameters").and_then(|c| c.get_text().ok())
        });
    Ok(text)
}

/// Decodes an 8-bit RGB PNG (what we write); used by tests and `--params-from`.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| SdError::usage(format!("not a readable PNG: {e}")))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let frame = reader.next_frame(&mut buf).map_err(|e| SdError::usage(format!("PNG: {e}")))?;
    buf.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    let pixels = match channels {
        3 => buf,
        4 => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        1 => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => buf.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        _ => return Err(SdError::usage("unsupported PNG color type")),
    };
    Ok(RgbImage { width: frame.width, height: frame.height, pixels })
}
