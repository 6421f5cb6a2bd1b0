//! A single RGB24 frame as a PNG poster image.

use std::path::Path;

use crate::spec::{check_size, rgb_len};
use crate::MediaError;

/// Writes one packed RGB24 frame (`width * height * 3` bytes, rows top to
/// bottom) to `out` as an 8-bit RGB PNG. Returns the file size in bytes.
///
/// Unlike video, odd sizes are fine here; zero sizes and a buffer of the
/// wrong length are rejected.
pub fn write_poster_png(
    width: u32,
    height: u32,
    rgb: &[u8],
    out: &Path,
) -> Result<u64, MediaError> {
    check_size(width, height)?;
    let expected = rgb_len(width, height);
    if rgb.len() != expected {
        return Err(MediaError::FrameLength {
            index: 0,
            width,
            height,
            expected,
            actual: rgb.len(),
        });
    }

    let png_error = |source| MediaError::Png {
        path: out.to_path_buf(),
        source,
    };
    // Encode in memory (PNG is far smaller than the raw frame), then write
    // the file in one go so that every I/O error is reported.
    let mut encoded = Vec::with_capacity(expected / 4 + 1024);
    {
        let mut encoder = png::Encoder::new(&mut encoded, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(rgb).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
    }

    if let Err(err) = std::fs::write(out, &encoded) {
        let _ = std::fs::remove_file(out);
        return Err(MediaError::io("writing", out)(err));
    }
    tracing::debug!(path = %out.display(), width, height, bytes = encoded.len(), "wrote poster png");
    Ok(encoded.len() as u64)
}
