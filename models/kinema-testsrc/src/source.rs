//! [`TestSource`]: the [`Pipeline`] implementation tying the stages together.

use kinema_diffusion::{
    Conditioning, GenerationRequest, Latents, Pipeline, PipelineError, StepControl, StepProgress,
    VideoFrames,
};

use crate::canvas::Canvas;
use crate::latent::{self, LatentShape};
use crate::overlay::draw_overlays;
use crate::pattern::Pattern;
use crate::prompt::PromptEncoding;

/// A procedural video **test source**, not a generative model: it renders scrolling
/// colour bars hued by the prompt's hash, with a frame counter and the hash's first
/// 8 hex digits stamped on every frame.
///
/// It runs the same three stages as a diffusion model, with work proportional to the
/// request (so progress, cancellation, failures and timings can be smoke-tested without
/// a GPU or weights), and is deterministic: one request, one bit-identical video.
/// `guidance_scale` is ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestSource;

impl TestSource {
    pub fn new() -> Self {
        Self
    }
}

/// What `denoise` hands to `decode`.
struct TestLatents {
    encoding: PromptEncoding,
    shape: LatentShape,
    data: Vec<f32>,
}

/// Video dimensions from a request, rejected when empty or too large to address.
struct Dims {
    frames: usize,
    height: usize,
    width: usize,
    /// `frames * height * width * 3`.
    values: usize,
}

fn dims(request: &GenerationRequest) -> Result<Dims, PipelineError> {
    let invalid = |what: &str| Err(PipelineError::InvalidRequest(what.to_owned()));
    if request.steps == 0 {
        return invalid("steps must be at least 1");
    }
    if request.width == 0 || request.height == 0 {
        return invalid("width and height must be at least 1");
    }
    if request.num_frames == 0 {
        return invalid("num_frames must be at least 1");
    }
    let (frames, height, width) = (
        request.num_frames as usize,
        request.height as usize,
        request.width as usize,
    );
    let values = frames
        .checked_mul(height)
        .and_then(|n| n.checked_mul(width))
        .and_then(|n| n.checked_mul(3))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>());
    match values {
        Some(values) => Ok(Dims {
            frames,
            height,
            width,
            values,
        }),
        None => invalid("video is too large"),
    }
}

fn latent_shape(d: &Dims) -> LatentShape {
    LatentShape::for_video(d.frames, d.height, d.width)
}

impl Pipeline for TestSource {
    fn encode_prompt(&self, request: &GenerationRequest) -> Result<Conditioning, PipelineError> {
        dims(request)?;
        let encoding = PromptEncoding::new(&request.prompt, &request.negative_prompt);
        Ok(Conditioning(Box::new(encoding)))
    }

    fn denoise(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning,
        on_step: &mut dyn FnMut(StepProgress) -> StepControl,
    ) -> Result<Latents, PipelineError> {
        let shape = latent_shape(&dims(request)?);
        let encoding =
            conditioning
                .0
                .downcast_ref::<PromptEncoding>()
                .ok_or(PipelineError::WrongInput {
                    expected: "testsrc conditioning",
                })?;
        let target = latent::target(shape, request.seed, encoding);
        let mut x = latent::noise(shape, request.seed);
        let total = request.steps;
        for i in 0..total {
            latent::step_toward(&mut x, &target, total - i);
            let step = i + 1;
            if on_step(StepProgress { step, total }) == StepControl::Cancel {
                return Err(PipelineError::Cancelled { step });
            }
        }
        Ok(Latents(Box::new(TestLatents {
            encoding: encoding.clone(),
            shape,
            data: x,
        })))
    }

    fn decode(
        &self,
        request: &GenerationRequest,
        latents: Latents,
    ) -> Result<VideoFrames, PipelineError> {
        let d = dims(request)?;
        let latents =
            latents
                .0
                .downcast::<TestLatents>()
                .map_err(|_| PipelineError::WrongInput {
                    expected: "testsrc latents",
                })?;
        if latents.shape != latent_shape(&d) || latents.data.len() != latents.shape.len() {
            return Err(PipelineError::InvalidRequest(
                "latents were denoised for another video size".to_owned(),
            ));
        }

        let mut data = Vec::new();
        data.try_reserve_exact(d.values)
            .map_err(|_| PipelineError::OutOfMemory(format!("{} bytes of frames", d.values * 4)))?;
        data.resize(d.values, 0.0);

        let pattern = Pattern::new(d.width, d.height, latents.shape, latents.encoding.hue);
        let mut scratch = pattern.scratch();
        let hash = latents.encoding.label();
        let frame_len = d.height * d.width * 3;
        let latent_frames = latents.data.chunks_exact(latents.shape.frame_len());
        for (index, (frame, latent_frame)) in data
            .chunks_exact_mut(frame_len)
            .zip(latent_frames)
            .enumerate()
        {
            pattern.render(index, latent_frame, frame, &mut scratch);
            let mut canvas = Canvas::new(frame, d.width, d.height);
            draw_overlays(&mut canvas, d.width, d.height, index, &hash);
        }

        Ok(VideoFrames {
            num_frames: d.frames,
            height: d.height,
            width: d.width,
            data,
        })
    }
}
