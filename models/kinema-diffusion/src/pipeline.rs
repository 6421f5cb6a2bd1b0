use std::any::Any;

use crate::{RgbImage, VideoFrames};

/// What one generation asks of a model, already validated against its limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    /// The low-noise expert's guidance of a two-expert model (Wan 2.2 A14B); `None`:
    /// `guidance_scale` for both.
    pub guidance_scale_2: Option<f32>,
    pub seed: u64,
    /// The first frame of an image-to-video model.
    pub image: Option<RgbImage>,
    /// The last frame of a first-last-frame model.
    pub last_image: Option<RgbImage>,
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

/// Which requests may share one batched denoise: the same video shape and step count
/// (a model has one scheduler, so the model id completes the key). Requests with equal
/// keys can be handed to [`Pipeline::denoise_batch`] together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub steps: u32,
}

impl BatchKey {
    pub fn of(request: &GenerationRequest) -> Self {
        Self {
            width: request.width,
            height: request.height,
            num_frames: request.num_frames,
            steps: request.steps,
        }
    }

    /// The key as stored with a job: `<model>/<W>x<H>x<F>/<steps>`.
    pub fn for_model(&self, model_id: &str) -> String {
        format!(
            "{model_id}/{}x{}x{}/{}",
            self.width, self.height, self.num_frames, self.steps
        )
    }
}

/// The stored batch key of a request for a model (see [`BatchKey::for_model`]).
pub fn batch_key(model_id: &str, request: &GenerationRequest) -> String {
    BatchKey::of(request).for_model(model_id)
}

/// One member of a batched denoise: its request (own seed, guidance) and its own
/// prompt encoding.
#[derive(Clone, Copy)]
pub struct BatchItem<'a> {
    pub request: &'a GenerationRequest,
    pub conditioning: &'a Conditioning,
}

/// A model's prompt encoding, opaque to the engine (each model downcasts its own).
pub struct Conditioning(pub Box<dyn Any + Send>);

impl Conditioning {
    /// The model's own encoding; [`PipelineError::WrongInput`] naming `expected` when
    /// another model's was handed over.
    pub fn get<T: 'static>(&self, expected: &'static str) -> Result<&T, PipelineError> {
        self.0
            .downcast_ref::<T>()
            .ok_or(PipelineError::WrongInput { expected })
    }
}

/// A model's denoised latents, opaque to the engine.
pub struct Latents(pub Box<dyn Any + Send>);

impl Latents {
    /// The model's own latents; [`PipelineError::WrongInput`] naming `expected` when
    /// another model's were handed over.
    pub fn take<T: 'static>(self, expected: &'static str) -> Result<Box<T>, PipelineError> {
        self.0
            .downcast::<T>()
            .map_err(|_| PipelineError::WrongInput { expected })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
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

    /// How many requests [`Self::denoise_batch`] runs as one batch; 1 means the model
    /// does not batch (its `denoise_batch` runs the items one after another).
    fn max_batch(&self) -> usize {
        1
    }

    /// The device the model computes on (usage records read its peak memory).
    fn device(&self) -> candle_core::Device {
        candle_core::Device::Cpu
    }

    /// Denoises several requests with equal [`BatchKey`]s, each with its own seed,
    /// prompt encoding and guidance. `on_step(item, progress)` is called for every live
    /// item after every step; when it answers [`StepControl::Cancel`] for an item, that
    /// item leaves the batch (its result is [`PipelineError::Cancelled`]) and the others
    /// go on. Returns one result per item, in order. A model error in the shared work
    /// fails every item still running.
    ///
    /// The default runs the items one after another through [`Self::denoise`].
    fn denoise_batch(
        &self,
        items: &[BatchItem<'_>],
        on_step: &mut dyn FnMut(usize, StepProgress) -> StepControl,
    ) -> Vec<Result<Latents, PipelineError>> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.denoise(item.request, item.conditioning, &mut |p| on_step(i, p)))
            .collect()
    }
}

/// Checks that every item of a batch has the first one's [`BatchKey`].
pub fn check_batch(items: &[BatchItem<'_>]) -> Result<(), PipelineError> {
    let Some(first) = items.first() else {
        return Ok(());
    };
    let key = BatchKey::of(first.request);
    match items.iter().find(|i| BatchKey::of(i.request) != key) {
        Some(other) => Err(PipelineError::InvalidRequest(format!(
            "batch mixes {:?} with {:?}",
            key,
            BatchKey::of(other.request)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerationRequest {
        GenerationRequest {
            prompt: "a".into(),
            negative_prompt: "b".into(),
            width: 832,
            height: 480,
            num_frames: 81,
            steps: 50,
            guidance_scale: 5.0,
            seed: 1,
            ..Default::default()
        }
    }

    #[test]
    fn batch_key_ignores_prompt_seed_and_guidance_only() {
        let a = request();
        let b = GenerationRequest {
            prompt: "other".into(),
            negative_prompt: String::new(),
            guidance_scale: 1.0,
            seed: 9,
            ..a.clone()
        };
        assert_eq!(batch_key("wan", &a), batch_key("wan", &b));
        assert_eq!(batch_key("wan", &a), "wan/832x480x81/50");
        assert_ne!(batch_key("wan", &a), batch_key("wan-14b", &a));
        for change in [
            |r: &mut GenerationRequest| r.width = 480,
            |r: &mut GenerationRequest| r.height = 832,
            |r: &mut GenerationRequest| r.num_frames = 49,
            |r: &mut GenerationRequest| r.steps = 30,
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(BatchKey::of(&a), BatchKey::of(&c));
        }
    }
}
