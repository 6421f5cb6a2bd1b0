//! Pieces every Kinema model family shares. Today: the [`Pipeline`] trait the engine
//! drives and the [`VideoFrames`] it produces. The diffusion blocks (attention, RoPE,
//! causal conv3d, schedulers, weight loading) join this crate with the first real model.

mod frames;
mod pipeline;

pub use frames::VideoFrames;
pub use pipeline::{
    Conditioning, GenerationRequest, Latents, Pipeline, PipelineError, StepControl, StepProgress,
};
