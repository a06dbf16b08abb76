//! Decoding an image file into float planes: the one place a file's bytes become pixels, for
//! folders, the photo path and every command. A truncated JPEG is an error here, not grey.

use std::fs;
use std::path::Path;

use super::{DataError, DataResult};

/// True when a JPEG byte stream ends its last scan: after the last start-of-scan marker (FF DA)
/// an end-of-image marker (FF D9) follows. The decoder we use is lenient and fills a truncated
/// scan with grey, so truncation must be caught here. Trailing bytes after EOI are allowed;
/// 0xFF inside entropy-coded data is always stuffed, so neither marker can appear there.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(p) => bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Decodes an image file into planes `(c, h, w)` in [0, 1], c = 1 for gray images and 3 for
/// colour (alpha is dropped). 8-bit data is scaled exactly as x / 255.
pub fn decode_planes(path: &Path) -> DataResult<(Vec<f32>, usize, usize, usize)> {
    let bytes = fs::read(path).map_err(|e| DataError::path(path, format!("cannot read: {e}")))?;
    decode_planes_from_bytes(&bytes, path)
}

/// [`decode_planes`] of bytes already read (a bundled sample); `path` names them in errors.
pub fn decode_planes_from_bytes(
    bytes: &[u8],
    path: &Path,
) -> DataResult<(Vec<f32>, usize, usize, usize)> {
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_complete(bytes) {
        return Err(DataError::path(
            path,
            "truncated JPEG (no end-of-image marker)",
        ));
    }
    let img = image::load_from_memory(bytes)
        .map_err(|e| DataError::path(path, format!("cannot decode: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(DataError::path(path, "image has no pixels"));
    }
    let eight_bit = img.color().bytes_per_pixel() == img.color().channel_count();
    let interleaved: Vec<f32> = match (img.color().has_color(), eight_bit) {
        (true, true) => img
            .to_rgb8()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect(),
        (false, true) => img
            .to_luma8()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect(),
        (true, false) => img.to_rgb32f().into_raw(),
        (false, false) => img.to_luma32f().into_raw(),
    }; // (h, w, c)
    let c = if img.color().has_color() { 3 } else { 1 };
    Ok((hwc_to_chw(&interleaved, c, h * w), c, h, w))
}

/// `(hw, c)` interleaved to `(c, hw)` planar.
fn hwc_to_chw(src: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; c * hw]; // (c, hw)
    for (i, px) in src.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * hw + i] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness() {
        assert!(jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9
        ]));
        assert!(jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 1, 0xFF, 0xD9, 0, 0
        ]));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3]));
        // An embedded thumbnail's EOI before the main scan does not count.
        assert!(!jpeg_is_complete(&[0xFF, 0xDA, 0xFF, 0xD9, 0xFF, 0xDA, 7]));
    }

    #[test]
    fn interleaving() {
        assert_eq!(
            hwc_to_chw(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
