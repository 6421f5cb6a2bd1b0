//! Wan 2.1 text-to-video and image-to-video in candle, block for block as the diffusers
//! reference: the umT5 text encoder ([`text_encoder`]), `WanTransformer3DModel`
//! ([`transformer`]), the Wan-VAE ([`vae`]), the CLIP vision encoder and its image
//! processor ([`clip_vision`], [`image_processor`]) and the pipelines ([`pipeline`],
//! [`pipeline_i2v`]).

pub mod clip_vision;
pub mod error;
pub mod image_processor;
pub mod info;
pub mod prompt;
pub mod text_encoder;

pub use error::{Result, WanError};
pub use precision::Precision;
pub mod pipeline;
pub mod pipeline_i2v;
mod precision;
mod stages;
pub mod transformer;
pub mod vae;
