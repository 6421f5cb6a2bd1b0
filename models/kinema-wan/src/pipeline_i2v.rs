//! `WanImageToVideoPipeline` (image-to-video, first-last-frame-to-video and Wan 2.2's
//! two-expert I2V-A14B): the first frame (and the last one, FLF2V) -> [-1, 1] ->
//! the video condition `[image, zeros.., (last_image)]` -> Wan-VAE encode (mode) ->
//! normalised latents + a 4-channel frame mask (20 channels) concatenated to the
//! 16-channel latents at every step; CLIP penultimate hidden states of the image(s)
//! as extra cross-attention tokens (when the transformer has `image_dim`); prompt
//! embeddings and UniPC denoising with two-pass guidance as the text-to-video pipeline;
//! with `boundary_ratio`, steps at `t >= boundary_ratio * num_train_timesteps` run
//! `transformer` with `guidance_scale`, later ones `transformer_2` with
//! `guidance_scale_2`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use kinema_diffusion::scheduler::{cfg_combine, SchedulerConfig};
use kinema_diffusion::weights::read_json;
use kinema_diffusion::{
    Conditioning, GenerationRequest, Latents, Pipeline, PipelineError, RgbImage, StepControl,
    StepProgress, VideoFrames,
};

use crate::clip_vision::ClipVisionModel;
use crate::error::{Result, WanError};
use crate::image_processor::ClipImageProcessor;
use crate::pipeline::{is_high_noise, num_train_timesteps, read_scheduler, report_steps};
use crate::prompt::{PromptTokenizer, MAX_SEQUENCE_LENGTH};
use crate::stages::{self, image_to_tensor, to_pipeline_error};
use crate::text_encoder::Umt5Encoder;
use crate::transformer::WanTransformer3DModel;
use crate::vae::AutoencoderKLWan;
use crate::Precision;

/// `_class_name` of an image-to-video model folder.
pub const I2V_CLASS_NAME: &str = "WanImageToVideoPipeline";

/// What `model_index.json` says about an image-to-video folder.
#[derive(Debug, Clone, PartialEq)]
pub struct I2vModelIndex {
    /// `image_encoder` is not null (Wan 2.1 I2V / FLF2V; Wan 2.2 I2V-A14B has none).
    pub has_image_encoder: bool,
    /// `transformer_2` is not null (Wan 2.2's low-noise expert).
    pub has_transformer_2: bool,
    pub boundary_ratio: Option<f64>,
}

/// Reads `model_index.json`: an error unless it names a `WanImageToVideoPipeline` this
/// crate runs (no `expand_timesteps`, the TI2V-5B mode).
pub fn check_i2v_model_index(model_dir: &Path) -> Result<I2vModelIndex> {
    let v: serde_json::Value = read_json(&model_dir.join("model_index.json"))?;
    let class = v.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
    let bad = |what: &str, message: String| WanError::Config {
        what: format!("model_index.{what}"),
        message,
    };
    if class != I2V_CLASS_NAME {
        return Err(bad(
            "_class_name",
            format!("{class:?} (expected {I2V_CLASS_NAME})"),
        ));
    }
    if v.get("expand_timesteps").and_then(|e| e.as_bool()) == Some(true) {
        return Err(bad(
            "expand_timesteps",
            "the TI2V (expand_timesteps) mode is not supported".into(),
        ));
    }
    // a component is present when its entry is a [library, class] pair, not [null, null]
    let present = |name: &str| {
        v.get(name)
            .and_then(|c| c.as_array())
            .is_some_and(|a| a.iter().all(|x| !x.is_null()) && !a.is_empty())
    };
    let boundary_ratio = v.get("boundary_ratio").and_then(|b| b.as_f64());
    let index = I2vModelIndex {
        has_image_encoder: present("image_encoder"),
        has_transformer_2: present("transformer_2"),
        boundary_ratio,
    };
    if !present("transformer") {
        return Err(bad(
            "transformer",
            "missing (only transformer_2 is not supported)".into(),
        ));
    }
    if index.has_transformer_2 != index.boundary_ratio.is_some() {
        return Err(bad(
            "boundary_ratio",
            "transformer_2 and boundary_ratio come together".into(),
        ));
    }
    if let Some(b) = boundary_ratio {
        if !(0.0..=1.0).contains(&b) {
            return Err(bad("boundary_ratio", format!("{b} outside [0, 1]")));
        }
    }
    Ok(index)
}

/// A loaded image-to-video model folder (Diffusers layout).
pub struct WanImageToVideoPipeline {
    pub model_dir: PathBuf,
    pub tokenizer: PromptTokenizer,
    pub text_encoder: Umt5Encoder,
    /// `image_encoder/` + `image_processor/` (absent in Wan 2.2 I2V-A14B).
    pub image_encoder: Option<(ClipVisionModel, ClipImageProcessor)>,
    pub transformer: WanTransformer3DModel,
    /// Wan 2.2's low-noise expert, used below `boundary_ratio`.
    pub transformer_2: Option<WanTransformer3DModel>,
    pub boundary_ratio: Option<f64>,
    /// The whole VAE (the condition is encoded, the result decoded).
    pub vae: AutoencoderKLWan,
    pub scheduler: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
}

/// Everything a denoise needs besides the initial latents.
pub struct WanI2vConditioning {
    pub prompt_embeds: Tensor,
    /// Present when guidance > 1.
    pub negative_prompt_embeds: Option<Tensor>,
    /// CLIP penultimate hidden states, `[1 or 2, L_img, image_dim]` (2: first and last
    /// frame), when the transformer has an image embedder.
    pub image_embeds: Option<Tensor>,
    /// `[1, 4 + z_dim, T, h, w]`: the frame mask then the normalised VAE latents of the
    /// video condition.
    pub condition: Tensor,
}

/// The 4-channel frame mask `[1, 4, T, h, w]`: ones where a pixel frame is given (the
/// first; and the last with `last`), the first latent frame's value repeated over
/// its 4 temporal slots, then viewed as `[1, T, 4, h, w]` and transposed.
pub fn frame_mask(
    num_frames: usize,
    latent_h: usize,
    latent_w: usize,
    temporal: usize,
    last: bool,
    device: &Device,
) -> Result<Tensor> {
    // per pixel frame: 1 for given frames
    let mut per_frame = vec![0f32; num_frames];
    per_frame[0] = 1.0;
    if last && num_frames > 1 {
        per_frame[num_frames - 1] = 1.0;
    }
    // first frame repeated `temporal` times, then the others: temporal * T values
    let mut seq = vec![per_frame[0]; temporal];
    seq.extend_from_slice(&per_frame[1..]);
    if !seq.len().is_multiple_of(temporal) {
        return Err(WanError::Input(format!(
            "{num_frames} frames are not {temporal}k + 1"
        )));
    }
    let t = seq.len() / temporal;
    let plane = latent_h * latent_w;
    // [1, T, 4, h, w] -> [1, 4, T, h, w]
    let mut data = vec![0f32; temporal * t * plane];
    for (j, &v) in seq.iter().enumerate() {
        let (ti, ci) = (j / temporal, j % temporal);
        let start = (ci * t + ti) * plane;
        data[start..start + plane].fill(v);
    }
    Ok(Tensor::from_vec(
        data,
        (1, temporal, t, latent_h, latent_w),
        device,
    )?)
}

fn model_err(e: candle_core::Error) -> PipelineError {
    PipelineError::Model(e.to_string())
}

impl WanImageToVideoPipeline {
    /// `precision`: as [`crate::pipeline::WanPipeline::load`].
    pub fn load(
        model_dir: &Path,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let Precision {
            model: dtype,
            vae: vae_dtype,
        } = precision.into();
        let index = check_i2v_model_index(model_dir)?;
        let scheduler = read_scheduler(model_dir)?;
        let transformer =
            WanTransformer3DModel::load(&model_dir.join("transformer"), dtype, device)?;
        let transformer_2 = if index.has_transformer_2 {
            Some(WanTransformer3DModel::load(
                &model_dir.join("transformer_2"),
                dtype,
                device,
            )?)
        } else {
            None
        };
        let image_encoder = if index.has_image_encoder {
            let processor_dir = model_dir.join("image_processor");
            let processor = if processor_dir.join("preprocessor_config.json").is_file() {
                ClipImageProcessor::from_dir(&processor_dir)?
            } else {
                ClipImageProcessor::default()
            };
            Some((
                ClipVisionModel::load(&model_dir.join("image_encoder"), dtype, device)?,
                processor,
            ))
        } else {
            None
        };
        let needs_image = transformer.has_image_embedder();
        if needs_image != image_encoder.is_some() {
            return Err(WanError::Config {
                what: "image_encoder".into(),
                message: if needs_image {
                    "the transformer has image_dim but the folder has no image encoder".into()
                } else {
                    "an image encoder for a transformer without image_dim".into()
                },
            });
        }
        if let Some(t2) = &transformer_2 {
            if t2.has_image_embedder() != needs_image
                || t2.config.in_channels != transformer.config.in_channels
            {
                return Err(WanError::Config {
                    what: "transformer_2".into(),
                    message: "differs from transformer in image conditioning or channels".into(),
                });
            }
        }
        Ok(Self {
            tokenizer: PromptTokenizer::load(&model_dir.join("tokenizer"), MAX_SEQUENCE_LENGTH)?,
            text_encoder: Umt5Encoder::load(&model_dir.join("text_encoder"), dtype, device)?,
            image_encoder,
            transformer,
            transformer_2,
            boundary_ratio: index.boundary_ratio,
            vae: AutoencoderKLWan::load(&model_dir.join("vae"), vae_dtype, device)?,
            scheduler,
            model_dir: model_dir.to_path_buf(),
            device: device.clone(),
            dtype,
        })
    }

    /// FLF2V: the image embedder has a `pos_embed` over the two frames' tokens.
    pub fn takes_last_image(&self) -> bool {
        self.transformer.config.pos_embed_seq_len.is_some()
    }

    /// `[1, 512, text_dim]`, as the text-to-video pipeline.
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor> {
        Ok(stages::encode_prompts(
            &self.tokenizer,
            &self.text_encoder,
            &self.device,
            prompt,
            None,
        )?
        .0)
    }

    /// As [`crate::pipeline::WanPipeline::offload_text_encoder`].
    pub fn offload_text_encoder(&mut self) -> Result<()> {
        stages::offload(&mut self.text_encoder)
    }

    /// `encode_image`: the CLIP penultimate hidden states of each image, stacked
    /// (`[N, L_img, image_dim]`). `None` without an image encoder.
    pub fn encode_image(&self, images: &[&RgbImage]) -> Result<Option<Tensor>> {
        let Some((encoder, processor)) = &self.image_encoder else {
            return Ok(None);
        };
        let pixels = images
            .iter()
            .map(|i| processor.preprocess(i, &self.device))
            .collect::<Result<Vec<_>>>()?;
        let pixels = Tensor::cat(&pixels, 0)?.to_dtype(self.dtype)?;
        Ok(Some(encoder.penultimate_hidden_states(&pixels)?))
    }

    /// The latent shape for a video: `[1, z, (F - 1) / 4 + 1, H / 8, W / 8]`.
    pub fn latent_shape(&self, width: u32, height: u32, frames: u32) -> Result<[usize; 5]> {
        // the condition video holds the first frame and zeros (FLF2V: and the last)
        stages::latent_shape(
            &self.vae.config,
            self.transformer.config.patch_size,
            (width, height, frames),
            2,
        )
    }

    /// `prepare_latents`' condition: `[1, 4 + z_dim, T, h, w]`.
    pub fn prepare_condition(
        &self,
        image: &RgbImage,
        last_image: Option<&RgbImage>,
        num_frames: usize,
    ) -> Result<Tensor> {
        let (w, h) = (image.width as usize, image.height as usize);
        if let Some(last) = last_image {
            if (last.width, last.height) != (image.width, image.height) {
                return Err(WanError::Input(format!(
                    "last image {}x{} differs from the first image {w}x{h}",
                    last.width, last.height
                )));
            }
        }
        let first = image_to_tensor(image, &self.device)?.unsqueeze(2)?;
        let zeros = |n: usize| Tensor::zeros((1, 3, n, h, w), DType::F32, &self.device);
        let video = match last_image {
            None => Tensor::cat(&[first, zeros(num_frames - 1)?], 2)?,
            Some(last) => {
                let last = image_to_tensor(last, &self.device)?.unsqueeze(2)?;
                Tensor::cat(&[first, zeros(num_frames - 2)?, last], 2)?
            }
        };
        let posterior = self.vae.encode(&video.to_dtype(self.vae.dtype())?)?;
        let latent = self
            .vae
            .normalize(&posterior.mode().to_dtype(DType::F32)?)?;
        let (_, _, _, lh, lw) = latent.dims5()?;
        let mask = frame_mask(
            num_frames,
            lh,
            lw,
            self.vae.config.scale_factor_temporal,
            last_image.is_some(),
            &self.device,
        )?;
        Ok(Tensor::cat(&[mask, latent], 1)?)
    }

    /// Prompt, image embeddings and the VAE condition of a request (which must carry
    /// `image`, fitted to its size; `last_image` only for FLF2V models).
    pub fn encode(&self, request: &GenerationRequest) -> Result<WanI2vConditioning> {
        let image = request
            .image
            .as_ref()
            .ok_or_else(|| WanError::Input("image-to-video needs an image".into()))?;
        let last = request.last_image.as_ref();
        if last.is_some() && !self.takes_last_image() && self.image_encoder.is_some() {
            return Err(WanError::Input(
                "this model takes no last image (not a first-last-frame model)".into(),
            ));
        }
        if (image.width, image.height) != (request.width, request.height) {
            return Err(WanError::Input(format!(
                "image {}x{} is not the video size {}x{}",
                image.width, image.height, request.width, request.height
            )));
        }
        self.latent_shape(request.width, request.height, request.num_frames)?;
        let guidance = request.guidance_scale;
        let images: Vec<&RgbImage> = std::iter::once(image).chain(last).collect();
        let (prompt_embeds, negative_prompt_embeds) = stages::encode_prompts(
            &self.tokenizer,
            &self.text_encoder,
            &self.device,
            &request.prompt,
            (guidance > 1.0).then_some(request.negative_prompt.as_str()),
        )?;
        Ok(WanI2vConditioning {
            prompt_embeds,
            negative_prompt_embeds,
            image_embeds: self.encode_image(&images)?,
            condition: self.prepare_condition(image, last, request.num_frames as usize)?,
        })
    }

    /// Denoises `latents` (`[1, 16, T, h, w]`, f32) for `steps` scheduler steps;
    /// `on_step(step, total, latents)` may stop the loop.
    pub fn denoise_latents(
        &self,
        cond: &WanI2vConditioning,
        latents: Tensor,
        steps: usize,
        guidance_scale: f32,
        guidance_scale_2: Option<f32>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> StepControl,
    ) -> std::result::Result<Tensor, PipelineError> {
        let mut sched = self
            .scheduler
            .build(steps)
            .map_err(PipelineError::InvalidRequest)?;
        let timesteps = sched.timesteps();
        let total = sched.num_steps();
        let n_train = num_train_timesteps(&self.scheduler);
        let guidance_2 = guidance_scale_2.unwrap_or(guidance_scale);
        // CFG follows guidance_scale alone, as the reference
        let cfg = guidance_scale > 1.0 && cond.negative_prompt_embeds.is_some();
        let mut contexts: [Option<(Tensor, Option<Tensor>)>; 2] = [None, None];
        let mut latents = latents.to_dtype(DType::F32).map_err(model_err)?;
        let condition = cond.condition.to_dtype(DType::F32).map_err(model_err)?;
        for (i, &t) in timesteps.iter().enumerate() {
            let high = is_high_noise(self.boundary_ratio, n_train, t);
            let (model, scale, slot) = match (high, &self.transformer_2) {
                (false, Some(t2)) => (t2, guidance_2, 1),
                _ => (&self.transformer, guidance_scale, 0),
            };
            let pred = (|| -> Result<Tensor> {
                if contexts[slot].is_none() {
                    contexts[slot] = Some(self.embed_contexts(model, cond, cfg)?);
                }
                let Some((ctx, img)) = &contexts[slot] else {
                    return Err(WanError::Input("no context".into()));
                };
                let x = Tensor::cat(&[&latents, &condition], 1)?.to_dtype(self.dtype)?;
                let b = ctx.dim(0)?;
                let x = if b == 2 {
                    Tensor::cat(&[&x, &x], 0)?
                } else {
                    x
                };
                let pred = model.forward_with_contexts(&x, &vec![t; b], ctx, img.as_ref())?;
                let pred = pred.to_dtype(DType::F32)?;
                Ok(if b == 2 {
                    cfg_combine(&pred.narrow(0, 0, 1)?, &pred.narrow(0, 1, 1)?, scale as f64)?
                } else {
                    pred
                })
            })()
            .map_err(to_pipeline_error)?;
            latents = sched.step(&pred, &latents).map_err(model_err)?;
            if on_step(i + 1, total, &latents) == StepControl::Cancel {
                return Err(PipelineError::Cancelled {
                    step: (i + 1) as u32,
                });
            }
        }
        Ok(latents)
    }

    /// One transformer's text context (`[1 or 2, 512, dim]`: the prompt, then the
    /// negative prompt with guidance) and image tokens (repeated alike).
    fn embed_contexts(
        &self,
        model: &WanTransformer3DModel,
        cond: &WanI2vConditioning,
        cfg: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut ctx = vec![model.embed_text(&cond.prompt_embeds)?];
        if cfg {
            if let Some(neg) = &cond.negative_prompt_embeds {
                ctx.push(model.embed_text(neg)?);
            }
        }
        let b = ctx.len();
        let ctx = Tensor::cat(&ctx, 0)?;
        let img = match (&cond.image_embeds, model.has_image_embedder()) {
            (Some(e), true) => {
                let e = model.embed_image(&e.to_dtype(self.dtype)?)?;
                Some(Tensor::cat(&vec![&e; b], 0)?)
            }
            _ => None,
        };
        Ok((ctx, img))
    }

    /// De-normalises and decodes latents to frames `[F, H, W, 3]` in [0, 1].
    pub fn decode_latents(&self, latents: &Tensor) -> Result<VideoFrames> {
        stages::decode_latents(&self.vae, latents)
    }

    /// The initial latents: given ones (checked against the request's shape) or seeded
    /// noise.
    pub fn initial_latents(
        &self,
        request: &GenerationRequest,
        given: Option<Tensor>,
    ) -> std::result::Result<Tensor, PipelineError> {
        let shape = self.latent_shape(request.width, request.height, request.num_frames);
        stages::initial_latents(request, shape, given, &self.device)
    }

    /// The whole run from given initial latents (or seeded noise).
    pub fn generate(
        &self,
        request: &GenerationRequest,
        init_latents: Option<Tensor>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> StepControl,
    ) -> std::result::Result<VideoFrames, PipelineError> {
        let cond = self.encode(request).map_err(to_pipeline_error)?;
        let latents = self.initial_latents(request, init_latents)?;
        let latents = self.denoise_latents(
            &cond,
            latents,
            request.steps as usize,
            request.guidance_scale,
            request.guidance_scale_2,
            on_step,
        )?;
        self.decode_latents(&latents).map_err(to_pipeline_error)
    }
}

impl Pipeline for WanImageToVideoPipeline {
    fn encode_prompt(
        &self,
        request: &GenerationRequest,
    ) -> std::result::Result<Conditioning, PipelineError> {
        let c = self.encode(request).map_err(to_pipeline_error)?;
        Ok(Conditioning(Box::new(c)))
    }

    fn denoise(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning,
        on_step: &mut dyn FnMut(StepProgress) -> StepControl,
    ) -> std::result::Result<Latents, PipelineError> {
        let cond = conditioning.get::<WanI2vConditioning>("WanI2vConditioning")?;
        let latents = self.initial_latents(request, None)?;
        let out = self.denoise_latents(
            cond,
            latents,
            request.steps as usize,
            request.guidance_scale,
            request.guidance_scale_2,
            &mut report_steps(on_step),
        )?;
        Ok(Latents(Box::new(out)))
    }

    /// Image jobs do not batch.
    fn max_batch(&self) -> usize {
        1
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn decode(
        &self,
        _request: &GenerationRequest,
        latents: Latents,
    ) -> std::result::Result<VideoFrames, PipelineError> {
        let latents = latents.take::<Tensor>("Wan latents (candle Tensor)")?;
        self.decode_latents(&latents).map_err(to_pipeline_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_repeats_the_first_frame() {
        let m = frame_mask(9, 1, 1, 4, false, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), &[1, 4, 3, 1, 1]);
        let v: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        // channel c, latent frame t: [c][t]
        assert_eq!(v, vec![1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 0.]);
        let m = frame_mask(9, 1, 1, 4, true, &Device::Cpu).unwrap();
        let v: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        // frames 5..8 -> latent frame 2, slot 3 is frame 8 (the last)
        assert_eq!(v, vec![1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 1.]);
    }
}
