//! Pieces every Kinema model family shares: the [`Pipeline`] trait the engine drives
//! and the [`VideoFrames`] it produces, and the diffusion blocks models are built
//! from: attention, GELU, 3D rotary embeddings, causal 3D convolution, norms,
//! flow-matching schedulers and Diffusers-layout weight loading.

pub mod activation;
pub mod attention;
pub mod conv3d;
pub mod device_memory;
pub mod flash_cpu;
mod frames;
mod image;
pub mod layout_check;
mod mmap_release;
pub mod norm;
mod pipeline;
pub mod rope;
pub mod scheduler;
pub mod tiny;
pub mod weights;

pub use frames::VideoFrames;
pub use image::RgbImage;
pub use pipeline::{
    batch_key, check_batch, BatchItem, BatchKey, Conditioning, GenerationRequest, Latents,
    Pipeline, PipelineError, StepControl, StepProgress,
};
