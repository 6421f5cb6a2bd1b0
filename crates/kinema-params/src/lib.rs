//! One job's generation parameters, carried unchanged from the request to the
//! pipeline: the server resolves a request once into [`GenerationParams`], the ledger
//! quotes them, the store keeps them with the job, the engine hands them to the model.
//!
//! Input images (image-to-video) live here too: [`decode`] takes the bytes a client
//! sent (PNG, JPEG or WebP, EXIF orientation applied, byte and pixel caps checked from
//! the header before any pixel is decoded), [`fit`] gives them the video's exact size,
//! and [`InputImage`] is what is stored (a PNG with its SHA-256) and run.

mod image_input;
mod params;

pub use image_input::{
    decode, fit, fit_size, DecodedImage, ImageError, ImageLimits, InputImage, SizeRule,
    DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS,
};
pub use params::{GenerationParams, ImageSlot};
