//! Wan 2.1 text-to-video in candle, block for block as the diffusers reference:
//! the umT5 text encoder ([`text_encoder`]), `WanTransformer3DModel`
//! ([`transformer`]), the Wan-VAE ([`vae`]) and the pipeline ([`pipeline`]).

pub mod error;
pub mod info;
pub mod prompt;
pub mod text_encoder;

pub use error::{Result, WanError};
pub mod pipeline;
pub mod transformer;
pub mod vae;
