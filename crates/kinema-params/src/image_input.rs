use std::io::Cursor;
use std::sync::Arc;

use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The byte cap on one input image unless the operator sets another
/// (`--max-image-bytes`).
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// The pixel cap on one input image: 4096 x 4096 (16.7 MP), checked from the header.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 4096 * 4096;

/// Caps on an input image as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: usize,
    /// Width x height as the header states it, checked before decoding (a small file
    /// may claim a huge canvas: a decompression bomb).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

/// Why an input image is refused. The server names the request field beside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("is empty")]
    Empty,
    #[error("is {bytes} bytes; at most {max}")]
    TooManyBytes { bytes: usize, max: usize },
    #[error("is {width}x{height} ({pixels} pixels); at most {max} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    #[error("is not a PNG, JPEG or WebP image")]
    UnsupportedFormat,
    #[error("is not a decodable {format} image: {reason}")]
    Undecodable {
        format: &'static str,
        reason: String,
    },
    #[error("could not be stored as PNG: {0}")]
    Encode(String),
}

/// Packed RGB24 pixels, row-major, `width * height * 3` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl DecodedImage {
    fn from_rgb(img: RgbImage) -> DecodedImage {
        DecodedImage {
            width: img.width(),
            height: img.height(),
            rgb: img.into_raw(),
        }
    }

    fn to_rgb_image(&self) -> Option<RgbImage> {
        RgbImage::from_raw(self.width, self.height, self.rgb.clone())
    }
}

fn format_name(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Png => Some("PNG"),
        ImageFormat::Jpeg => Some("JPEG"),
        ImageFormat::WebP => Some("WebP"),
        _ => None,
    }
}

/// Decodes an input image as a client sent it: PNG, JPEG or WebP (told by its
/// signature, not by any name), the byte cap checked first, the pixel cap from the
/// header before any pixel is decoded, the EXIF orientation applied (so a portrait
/// photo taken sideways arrives upright), converted to RGB (alpha dropped).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<DecodedImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| ImageError::UnsupportedFormat)?;
    let format = reader
        .format()
        .and_then(format_name)
        .ok_or(ImageError::UnsupportedFormat)?;
    let undecodable = |e: image::ImageError| ImageError::Undecodable {
        format,
        reason: e.to_string(),
    };
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            max: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::Undecodable {
            format,
            reason: "it has no pixels".into(),
        });
    }
    // A malformed EXIF block is no reason to refuse the picture: it stays as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    image.apply_orientation(orientation);
    Ok(DecodedImage::from_rgb(image.into_rgb8()))
}

/// How a model sizes a video from an image when the request names no size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRule {
    /// The model's default area (its default width x height).
    pub area: u64,
    /// Both sides are multiples of this.
    pub multiple: u32,
    pub min_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub max_height: u32,
}

/// The video size that follows an image's aspect ratio at the model's default area,
/// as diffusers' image-to-video examples compute it:
/// `height = round(sqrt(area * h / w)) // multiple * multiple`, `width =
/// round(sqrt(area * w / h)) // multiple * multiple` (round half to even, as Python
/// does), then each side clamped into the model's limits (on multiples).
pub fn fit_size(image_width: u32, image_height: u32, rule: &SizeRule) -> (u32, u32) {
    let m = rule.multiple.max(1);
    let aspect = image_height.max(1) as f64 / image_width.max(1) as f64;
    let area = rule.area as f64;
    let side = |v: f64| (v.round_ties_even() as u64 / m as u64 * m as u64) as u32;
    let clamp = |v: u32, min: u32, max: u32| {
        let lo = min.div_ceil(m) * m;
        let hi = (max / m * m).max(lo);
        v.clamp(lo.max(m), hi.max(m))
    };
    let height = clamp(
        side((area * aspect).sqrt()),
        rule.min_height,
        rule.max_height,
    );
    let width = clamp(side((area / aspect).sqrt()), rule.min_width, rule.max_width);
    (width, height)
}

/// Scales the image to cover `width` x `height` (Lanczos3, aspect kept) and crops the
/// centre: the result is exactly `width` x `height`. An image already that size is
/// returned as it is.
pub fn fit(image: &DecodedImage, width: u32, height: u32) -> DecodedImage {
    if image.width == width && image.height == height {
        return image.clone();
    }
    let Some(source) = image.to_rgb_image() else {
        // Not a consistent buffer (cannot come from `decode`): a black frame.
        return DecodedImage {
            width,
            height,
            rgb: vec![0; width as usize * height as usize * 3],
        };
    };
    let (w, h) = (image.width.max(1) as f64, image.height.max(1) as f64);
    let scale = (width as f64 / w).max(height as f64 / h);
    let scaled_w = ((w * scale).round() as u32).max(width);
    let scaled_h = ((h * scale).round() as u32).max(height);
    let scaled = imageops::resize(&source, scaled_w, scaled_h, FilterType::Lanczos3);
    let x = (scaled_w - width) / 2;
    let y = (scaled_h - height) / 2;
    let cropped = imageops::crop_imm(&scaled, x, y, width, height).to_image();
    DecodedImage::from_rgb(cropped)
}

/// An input image as stored with its job: the fitted picture (exactly the video's
/// size) as PNG, and the PNG's SHA-256. Reads that only show a job (GetJob, ListJobs)
/// leave `png` out; the worker's lease loads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputImage {
    pub width: u32,
    pub height: u32,
    /// Lowercase hex SHA-256 of the PNG.
    pub sha256: String,
    #[serde(skip)]
    pub png: Option<Arc<[u8]>>,
}

impl InputImage {
    /// Stores a fitted picture: PNG-encodes it and hashes the PNG.
    pub fn encode(image: &DecodedImage) -> Result<InputImage, ImageError> {
        let mut png = Vec::new();
        PngEncoder::new(&mut png)
            .write_image(
                &image.rgb,
                image.width,
                image.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| ImageError::Encode(e.to_string()))?;
        Ok(InputImage {
            width: image.width,
            height: image.height,
            sha256: hex::encode(Sha256::digest(&png)),
            png: Some(png.into()),
        })
    }

    /// The picture's pixels, decoded from the stored PNG; `None` when the bytes were
    /// not loaded. A PNG that does not decode to the recorded size is an error.
    pub fn pixels(&self) -> Option<Result<DecodedImage, ImageError>> {
        let png = self.png.as_ref()?;
        let undecodable = |reason: String| ImageError::Undecodable {
            format: "PNG",
            reason,
        };
        let decoded = image::load_from_memory_with_format(png, ImageFormat::Png)
            .map_err(|e| undecodable(e.to_string()))
            .map(|i| DecodedImage::from_rgb(i.into_rgb8()))
            .and_then(|d| {
                if (d.width, d.height) == (self.width, self.height) {
                    Ok(d)
                } else {
                    Err(undecodable(format!(
                        "stored as {}x{}, recorded as {}x{}",
                        d.width, d.height, self.width, self.height
                    )))
                }
            });
        Some(decoded)
    }
}

#[cfg(test)]
mod tests;
