use std::any::Any;

use crate::VideoFrames;

/// What one generation asks of a model, already validated against its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub seed: u64,
}

/// Reported after every denoising step; `step` counts from 1 to `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    pub step: u32,
    pub total: u32,
}

/// The step callback's answer: go on, or stop (the job was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Cancel,
}

/// A model's prompt encoding, opaque to the engine (each model downcasts its own).
pub struct Conditioning(pub Box<dyn Any + Send>);

/// A model's denoised latents, opaque to the engine.
pub struct Latents(pub Box<dyn Any + Send>);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cancelled at step {step}")]
    Cancelled { step: u32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("model error: {0}")]
    Model(String),
    #[error("a {expected} value was handed to another model's pipeline")]
    WrongInput { expected: &'static str },
}

/// One model family's generation, in the three stages of a diffusion video model.
/// Calls block (they are compute); the engine runs them off the async runtime.
pub trait Pipeline: Send + Sync {
    fn encode_prompt(&self, request: &GenerationRequest) -> Result<Conditioning, PipelineError>;

    /// Runs `request.steps` denoising steps, calling `on_step` after each one. When it
    /// answers [`StepControl::Cancel`] the loop stops and returns
    /// [`PipelineError::Cancelled`].
    fn denoise(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning,
        on_step: &mut dyn FnMut(StepProgress) -> StepControl,
    ) -> Result<Latents, PipelineError>;

    fn decode(
        &self,
        request: &GenerationRequest,
        latents: Latents,
    ) -> Result<VideoFrames, PipelineError>;
}
