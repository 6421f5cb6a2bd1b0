//! [`TestSource`]: the [`Pipeline`] implementation tying the stages together.

use kinema_diffusion::{
    check_batch, BatchItem, Conditioning, GenerationRequest, Latents, Pipeline, PipelineError,
    StepControl, StepProgress, VideoFrames,
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
/// `guidance_scale` is ignored. An input image (`request.image`, the video's size) is
/// the first frame and shows through every later one at half weight, under the
/// overlays: image-to-video jobs run end to end, and two images give two videos.
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

/// How much of an input image shows through the frames after the first (the first
/// frame is the image itself, as an image-to-video model's is).
const IMAGE_WEIGHT: f32 = 0.5;

/// Mixes packed RGB24 `image` into an RGB f32 frame of the same size with `weight`.
fn blend_image(frame: &mut [f32], image: &[u8], weight: f32) {
    for (v, &px) in frame.iter_mut().zip(image) {
        *v = *v * (1.0 - weight) + (px as f32 / 255.0) * weight;
    }
}

/// The batch size `denoise_batch` accepts at once.
pub const MAX_BATCH: usize = 8;

/// One request being denoised: its noise walking toward its target.
struct Walk {
    encoding: PromptEncoding,
    shape: LatentShape,
    target: Vec<f32>,
    x: Vec<f32>,
}

impl Walk {
    fn start(
        request: &GenerationRequest,
        conditioning: &Conditioning,
    ) -> Result<Self, PipelineError> {
        let shape = latent_shape(&dims(request)?);
        let encoding = conditioning.get::<PromptEncoding>("testsrc conditioning")?;
        Ok(Self {
            target: latent::target(shape, request.seed, encoding),
            x: latent::noise(shape, request.seed),
            encoding: encoding.clone(),
            shape,
        })
    }

    fn finish(self) -> Latents {
        Latents(Box::new(TestLatents {
            encoding: self.encoding,
            shape: self.shape,
            data: self.x,
        }))
    }
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
        let item = BatchItem {
            request,
            conditioning,
        };
        let mut results = self.denoise_batch(&[item], &mut |_, p| on_step(p));
        results
            .pop()
            .unwrap_or(Err(PipelineError::Model("empty batch result".to_owned())))
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Steps every live item once per round, so progress interleaves as in a real
    /// batched model; a cancelled item leaves at its step.
    fn denoise_batch(
        &self,
        items: &[BatchItem<'_>],
        on_step: &mut dyn FnMut(usize, StepProgress) -> StepControl,
    ) -> Vec<Result<Latents, PipelineError>> {
        if let Err(e) = check_batch(items) {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let mut results: Vec<Option<Result<Latents, PipelineError>>> =
            items.iter().map(|_| None).collect();
        let mut walks: Vec<Option<Walk>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match Walk::start(item.request, item.conditioning) {
                Ok(w) => walks.push(Some(w)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    walks.push(None);
                }
            }
        }
        let total = items.first().map_or(0, |i| i.request.steps);
        for k in 0..total {
            let step = k + 1;
            for (i, slot) in walks.iter_mut().enumerate() {
                let Some(walk) = slot else { continue };
                latent::step_toward(&mut walk.x, &walk.target, total - k);
                if on_step(i, StepProgress { step, total }) == StepControl::Cancel {
                    *slot = None;
                    results[i] = Some(Err(PipelineError::Cancelled { step }));
                }
            }
        }
        for (i, walk) in walks.into_iter().enumerate() {
            if let Some(walk) = walk {
                results[i] = Some(Ok(walk.finish()));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(PipelineError::Model("item left no result".to_owned()))))
            .collect()
    }

    fn decode(
        &self,
        request: &GenerationRequest,
        latents: Latents,
    ) -> Result<VideoFrames, PipelineError> {
        let d = dims(request)?;
        let latents = latents.take::<TestLatents>("testsrc latents")?;
        if latents.shape != latent_shape(&d) || latents.data.len() != latents.shape.len() {
            return Err(PipelineError::InvalidRequest(
                "latents were denoised for another video size".to_owned(),
            ));
        }

        let image = match &request.image {
            Some(image) if (image.width as usize, image.height as usize) == (d.width, d.height) => {
                Some(image)
            }
            Some(image) => {
                return Err(PipelineError::InvalidRequest(format!(
                    "the input image is {}x{}, not the video's {}x{}",
                    image.width, image.height, d.width, d.height
                )))
            }
            None => None,
        };

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
            if let Some(image) = image {
                blend_image(
                    frame,
                    &image.data,
                    if index == 0 { 1.0 } else { IMAGE_WEIGHT },
                );
            }
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
