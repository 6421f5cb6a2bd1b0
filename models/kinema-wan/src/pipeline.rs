//! `WanPipeline` (text-to-video): prompt -> umT5 embeddings (512 tokens, masked and
//! zero-padded) -> UniPC flow denoising with classifier-free guidance (two passes) ->
//! de-normalised latents -> Wan-VAE -> frames in [0, 1].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use kinema_diffusion::scheduler::{cfg_combine, FlowScheduler, SchedulerConfig};
use kinema_diffusion::weights::{read_json, LoadError};
use kinema_diffusion::{
    check_batch, BatchItem, Conditioning, GenerationRequest, Latents, Pipeline, PipelineError,
    RgbImage, StepControl, StepProgress, VideoFrames,
};

use crate::error::{Result, WanError};
use crate::prompt::{PromptTokenizer, MAX_SEQUENCE_LENGTH};
use crate::stages::{self, to_pipeline_error};
use crate::text_encoder::Umt5Encoder;
use crate::transformer::{Timesteps, WanTransformer3DModel};
use crate::vae::AutoencoderKLWan;
use crate::Precision;

/// What `model_index.json` says about the pipeline.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// Wan 2.2 A14B: the two experts switch at `boundary_ratio * num_train_timesteps`.
    #[serde(default)]
    pub boundary_ratio: Option<f64>,
    /// Wan 2.2 TI2V: per-token timesteps (the conditioning frame's at 0).
    #[serde(default)]
    pub expand_timesteps: bool,
}

impl ModelIndex {
    /// Two experts (`transformer` and `transformer_2`).
    pub fn two_experts(&self) -> bool {
        self.boundary_ratio.is_some()
    }
}

/// Reads `model_index.json` and checks it names a `WanPipeline` this crate runs: Wan
/// 2.1 T2V, Wan 2.2 TI2V (`expand_timesteps`) or Wan 2.2 T2V-A14B (`boundary_ratio`
/// with a `transformer_2/` folder).
pub fn read_model_index(model_dir: &Path) -> Result<ModelIndex> {
    let index: ModelIndex = read_json(&model_dir.join("model_index.json"))?;
    let bad = |what: &str, message: String| WanError::Config {
        what: what.into(),
        message,
    };
    if index.class_name != "WanPipeline" {
        return Err(bad(
            "model_index._class_name",
            format!("{:?} (only WanPipeline is supported)", index.class_name),
        ));
    }
    if let Some(r) = index.boundary_ratio {
        if !(r > 0.0 && r <= 1.0) {
            return Err(bad(
                "model_index.boundary_ratio",
                format!("{r} (must be in (0, 1])"),
            ));
        }
        if !model_dir.join("transformer_2").is_dir() {
            return Err(bad(
                "model_index.boundary_ratio",
                "set, but the folder has no transformer_2/".into(),
            ));
        }
    }
    Ok(index)
}

/// Checks `model_index.json` names a Wan text-to-video pipeline this crate runs
/// ([`read_model_index`]).
pub fn check_model_index(model_dir: &Path) -> Result<()> {
    read_model_index(model_dir).map(|_| ())
}

/// The two-expert switch of Wan 2.2 A14B: the high-noise `transformer` (with
/// `guidance_scale`) while `t >= boundary_ratio * num_train_timesteps`, the low-noise
/// `transformer_2` (with `guidance_scale_2`) below. Without a boundary, always the
/// first.
pub fn is_high_noise(boundary_ratio: Option<f64>, num_train_timesteps: usize, t: f32) -> bool {
    match boundary_ratio {
        None => true,
        Some(r) => t as f64 >= r * num_train_timesteps as f64,
    }
}

/// The scheduler's `num_train_timesteps`.
pub fn num_train_timesteps(s: &SchedulerConfig) -> usize {
    match s {
        SchedulerConfig::UniPc(c) => c.num_train_timesteps,
        SchedulerConfig::Euler(c) => c.num_train_timesteps,
    }
}

/// The scheduler of `scheduler/scheduler_config.json`.
pub fn read_scheduler(model_dir: &Path) -> Result<SchedulerConfig> {
    let sched_path = model_dir.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&sched_path).map_err(|source| LoadError::Io {
        path: sched_path.clone(),
        source,
    })?;
    SchedulerConfig::from_json(&text).map_err(|message| WanError::Config {
        what: format!("scheduler ({})", sched_path.display()),
        message,
    })
}

/// A loaded Wan `WanPipeline` model directory (Diffusers layout): Wan 2.1 T2V, Wan 2.2
/// TI2V-5B (text- and image-to-video, `expand_timesteps`) or Wan 2.2 T2V-A14B (two
/// experts).
pub struct WanPipeline {
    pub model_dir: PathBuf,
    pub tokenizer: PromptTokenizer,
    pub text_encoder: Umt5Encoder,
    pub transformer: WanTransformer3DModel,
    /// The low-noise expert (Wan 2.2 A14B).
    pub transformer_2: Option<WanTransformer3DModel>,
    pub boundary_ratio: Option<f64>,
    /// Per-token timesteps; a request's image conditions the first latent frame.
    pub expand_timesteps: bool,
    pub vae: AutoencoderKLWan,
    pub scheduler: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
    /// The largest batch [`Pipeline::denoise_batch`] is offered (the engine may use less).
    pub max_batch: usize,
}

/// [`WanPipeline::max_batch`] after `load`.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// Prompt embeddings (and, for Wan 2.2 TI2V image-to-video, the image's latents) the
/// denoiser consumes.
pub struct WanConditioning {
    pub prompt_embeds: Tensor,
    /// Present when guidance > 1.
    pub negative_prompt_embeds: Option<Tensor>,
    /// TI2V with an image: the image encoded as a one-frame video and normalised,
    /// `[1, z_dim, 1, h, w]` f32; it replaces the first latent frame.
    pub image_latents: Option<Tensor>,
}

/// One request of a batched denoise: its conditioning, initial latents
/// (`[1, z_dim, T, h, w]`) and guidance scales (`guidance_2`: the low-noise expert's).
pub struct BatchMember<'a> {
    pub cond: &'a WanConditioning,
    pub latents: Tensor,
    pub guidance: f32,
    pub guidance_2: f32,
}

/// An item still in the batch: its own scheduler state and latents.
struct LiveMember {
    index: usize,
    sched: FlowScheduler,
    latents: Tensor,
    /// The prompt's padded text states (`[1, 512, text_dim]`), embedded by whichever
    /// expert runs (each has its own text embedder).
    text: Tensor,
    neg_text: Option<Tensor>,
    guidance: f32,
    guidance_2: f32,
    image_latents: Option<Tensor>,
}

impl LiveMember {
    /// The transformer's input: the latents with the first frame replaced by the
    /// image's (`(1 - mask) * condition + mask * latents`, mask 0 on the first frame).
    fn model_input(&self) -> candle_core::Result<Tensor> {
        match &self.image_latents {
            None => Ok(self.latents.clone()),
            Some(c) => {
                let t = self.latents.dim(2)?;
                Tensor::cat(&[c, &self.latents.narrow(2, 1, t - 1)?], 2)
            }
        }
    }
}

/// The images a request brings, checked against what the model takes.
fn check_images(request: &GenerationRequest, takes_image: bool) -> Result<()> {
    if request.last_image.is_some() {
        return Err(WanError::Input(
            "last_image: this model takes no last frame".into(),
        ));
    }
    if let Some(img) = &request.image {
        if !takes_image {
            return Err(WanError::Input("image: this model takes no image".into()));
        }
        if (img.width, img.height) != (request.width, request.height) {
            return Err(WanError::Input(format!(
                "image: {}x{} but the video is {}x{}",
                img.width, img.height, request.width, request.height
            )));
        }
    }
    Ok(())
}

/// `[B + G, L_text, dim]`: the live items' contexts, then the negative contexts of
/// those with guidance (all of one length: see [`pad_text`]), through `tr`'s text
/// embedder.
fn stack_contexts(live: &[LiveMember], tr: &WanTransformer3DModel) -> Result<Tensor> {
    let all: Vec<Tensor> = live
        .iter()
        .map(|l| l.text.clone())
        .chain(live.iter().filter_map(|l| l.neg_text.clone()))
        .collect();
    tr.embed_text(&Tensor::cat(&all, 0)?)
}

/// Prompt embeddings `[1, L, text_dim]` zero-padded to [`MAX_SEQUENCE_LENGTH`] tokens
/// (what `encode_text` already gives), so every item of a batch has one text length.
fn pad_text(embeds: &Tensor) -> Result<Tensor> {
    let l = embeds.dim(1)?;
    if l > MAX_SEQUENCE_LENGTH {
        return Err(WanError::Input(format!(
            "prompt embeddings of {l} tokens, at most {MAX_SEQUENCE_LENGTH}"
        )));
    }
    Ok(embeds.pad_with_zeros(1, 0, MAX_SEQUENCE_LENGTH - l)?)
}

/// Deterministic standard normal noise (splitmix64 + Box-Muller). Not torch's
/// generator: parity with diffusers goes through given initial latents.
pub fn seeded_noise(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let (u1, u2) = (next(), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        v.push((r * a.cos()) as f32);
        v.push((r * a.sin()) as f32);
    }
    v.truncate(n);
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl WanPipeline {
    /// `precision`: a `DType` for the encoders and transformers (the VAE then in f32),
    /// or a [`Precision`].
    pub fn load(
        model_dir: &Path,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let Precision {
            model: dtype,
            vae: vae_dtype,
        } = precision.into();
        let index = read_model_index(model_dir)?;
        let scheduler = read_scheduler(model_dir)?;
        let vae_dir = model_dir.join("vae");
        Ok(Self {
            tokenizer: PromptTokenizer::load(&model_dir.join("tokenizer"), MAX_SEQUENCE_LENGTH)?,
            text_encoder: Umt5Encoder::load(&model_dir.join("text_encoder"), dtype, device)?,
            transformer: WanTransformer3DModel::load(
                &model_dir.join("transformer"),
                dtype,
                device,
            )?,
            transformer_2: if index.two_experts() {
                Some(WanTransformer3DModel::load(
                    &model_dir.join("transformer_2"),
                    dtype,
                    device,
                )?)
            } else {
                None
            },
            boundary_ratio: index.boundary_ratio,
            expand_timesteps: index.expand_timesteps,
            // TI2V encodes a request's image: it needs the encoder too
            vae: if index.expand_timesteps {
                AutoencoderKLWan::load(&vae_dir, vae_dtype, device)?
            } else {
                AutoencoderKLWan::load_decoder(&vae_dir, vae_dtype, device)?
            },
            scheduler,
            model_dir: model_dir.to_path_buf(),
            device: device.clone(),
            dtype,
            max_batch: DEFAULT_MAX_BATCH,
        })
    }

    /// `[1, 512, text_dim]`: the encoder output cut to the prompt's true length and
    /// zero-padded back to 512, as `_get_t5_prompt_embeds`.
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor> {
        Ok(self.encode_prompts(prompt, None)?.0)
    }

    fn encode_prompts(
        &self,
        prompt: &str,
        negative: Option<&str>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        stages::encode_prompts(
            &self.tokenizer,
            &self.text_encoder,
            &self.device,
            prompt,
            negative,
        )
    }

    /// Keeps the text encoder in host memory between requests (copied to the device
    /// for each request's prompts): the device then holds it only while encoding.
    pub fn offload_text_encoder(&mut self) -> Result<()> {
        stages::offload(&mut self.text_encoder)
    }

    pub fn encode(&self, prompt: &str, negative: &str, guidance: f32) -> Result<WanConditioning> {
        let (prompt_embeds, negative_prompt_embeds) =
            self.encode_prompts(prompt, (guidance > 1.0).then_some(negative))?;
        Ok(WanConditioning {
            prompt_embeds,
            negative_prompt_embeds,
            image_latents: None,
        })
    }

    /// Whether a request may bring an image (Wan 2.2 TI2V).
    pub fn takes_image(&self) -> bool {
        self.expand_timesteps
    }

    /// A request's conditioning: its prompts and, for TI2V with an image, the image's
    /// latents ([`Self::encode_image`]).
    pub fn encode_request(&self, request: &GenerationRequest) -> Result<WanConditioning> {
        check_images(request, self.takes_image())?;
        let mut c = self.encode(
            &request.prompt,
            &request.negative_prompt,
            request.guidance_scale,
        )?;
        if let Some(img) = &request.image {
            c.image_latents = Some(self.encode_image(img)?);
        }
        Ok(c)
    }

    /// The image as a one-frame video in [-1, 1] (`x / 255 * 2 - 1`, as diffusers'
    /// video processor), VAE-encoded (the distribution's mode) and normalised:
    /// `[1, z_dim, 1, H / s, W / s]` f32.
    pub fn encode_image(&self, image: &RgbImage) -> Result<Tensor> {
        // [1, 3, H, W] -> [1, 3, 1, H, W]
        let x = stages::image_to_tensor(image, &self.device)?
            .unsqueeze(2)?
            .to_dtype(self.vae.dtype())?;
        let posterior = self.vae.encode(&x)?;
        Ok(self.vae.normalize(posterior.mode())?.to_dtype(DType::F32)?)
    }

    /// The expert for timestep `t` ([`is_high_noise`]) and whether it is the
    /// high-noise one.
    fn expert_at(&self, t: f32) -> (&WanTransformer3DModel, bool) {
        let high = is_high_noise(self.boundary_ratio, num_train_timesteps(&self.scheduler), t);
        match (&self.transformer_2, high) {
            (Some(low), false) => (low, false),
            _ => (&self.transformer, true),
        }
    }

    /// The latent shape for a video: `[1, z, (F - 1) / 4 + 1, H / 8, W / 8]`.
    pub fn latent_shape(&self, width: u32, height: u32, frames: u32) -> Result<[usize; 5]> {
        stages::latent_shape(
            &self.vae.config,
            self.transformer.config.patch_size,
            (width, height, frames),
            1,
        )
    }

    /// Denoises `latents` (`[1, z_dim, T, h, w]`, f32) for `steps` UniPC steps.
    /// `guidance_2`: the low-noise expert's guidance (two-expert models). `on_step`
    /// sees (step, total, latents after the step) and may stop the loop.
    pub fn denoise_latents(
        &self,
        cond: &WanConditioning,
        latents: Tensor,
        steps: usize,
        guidance: f32,
        guidance_2: Option<f32>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> StepControl,
    ) -> std::result::Result<Tensor, PipelineError> {
        let member = BatchMember {
            cond,
            latents,
            guidance,
            guidance_2: guidance_2.unwrap_or(guidance),
        };
        let mut out = self.denoise_batch_latents(vec![member], steps, &mut |_, step, total, l| {
            on_step(step, total, l)
        });
        out.pop()
            .unwrap_or_else(|| Err(PipelineError::Model("empty batch result".into())))
    }

    /// Denoises several same-shape latents together: every step runs the transformer
    /// once over `[B + G, 16, T, h, w]` (each item with its own text context, then the
    /// negative contexts of the G items with guidance > 1), combines guidance per item
    /// and advances each item's own scheduler (UniPC keeps a history per item).
    /// `on_step(item, step, total, latents)` is called for each live item after each
    /// step; [`StepControl::Cancel`] drops that item (it returns `Cancelled`) and the
    /// others go on. A transformer error fails every item still running.
    pub fn denoise_batch_latents(
        &self,
        members: Vec<BatchMember<'_>>,
        steps: usize,
        on_step: &mut dyn FnMut(usize, usize, usize, &Tensor) -> StepControl,
    ) -> Vec<std::result::Result<Tensor, PipelineError>> {
        let n = members.len();
        let mut results: Vec<Option<std::result::Result<Tensor, PipelineError>>> = vec![None; n];
        let fail_all = |e: PipelineError| (0..n).map(|_| Err(e.clone())).collect();
        let sched = match self.scheduler.build(steps) {
            Ok(s) => s,
            Err(m) => return fail_all(PipelineError::InvalidRequest(m)),
        };
        if let Some(first) = members.first() {
            let dims = first.latents.dims().to_vec();
            if dims.first() != Some(&1) || members.iter().any(|m| m.latents.dims() != dims) {
                return fail_all(PipelineError::InvalidRequest(format!(
                    "batched latents must all be [1, ...] of one shape (first is {dims:?})"
                )));
            }
        }
        let timesteps = sched.timesteps();
        let total = sched.num_steps();
        let mut live = Vec::with_capacity(n);
        for (index, m) in members.into_iter().enumerate() {
            match self.start_member(index, m, &sched) {
                Ok(l) => live.push(l),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        // the stacked text contexts and the expert they were embedded by, rebuilt when
        // an item leaves or the expert changes
        let mut contexts: Option<(bool, Tensor)> = None;
        for (i, &ts) in timesteps.iter().enumerate() {
            if live.is_empty() {
                break;
            }
            let (tr, high) = self.expert_at(ts);
            let shared = (|| -> std::result::Result<Tensor, WanError> {
                let ctx = match &contexts {
                    Some((h, c)) if *h == high => c.clone(),
                    _ => {
                        let c = stack_contexts(&live, tr)?;
                        contexts = Some((high, c.clone()));
                        c
                    }
                };
                let rows: Vec<&LiveMember> = live
                    .iter()
                    .chain(live.iter().filter(|l| l.neg_text.is_some()))
                    .collect();
                let mut xs = Vec::with_capacity(rows.len());
                for l in &rows {
                    xs.push(l.model_input()?.to_dtype(self.dtype)?);
                }
                let x = Tensor::cat(&xs, 0)?;
                if self.expand_timesteps {
                    // per token: the image's first-frame tokens at 0, the others at t
                    let (_, _, f, h, w) = x.dims5()?;
                    let [pt, ph, pw] = tr.config.patch_size;
                    let per_frame = (h / ph) * (w / pw);
                    let seq = (f / pt) * per_frame;
                    let mut t = Vec::with_capacity(rows.len() * seq);
                    for l in &rows {
                        let first = if l.image_latents.is_some() { 0.0 } else { ts };
                        t.extend(std::iter::repeat_n(first, per_frame.min(seq)));
                        t.extend(std::iter::repeat_n(ts, seq - per_frame.min(seq)));
                    }
                    tr.forward_timesteps(&x, Timesteps::PerToken(&t), &ctx, None)
                } else {
                    let t = vec![ts; xs.len()];
                    tr.forward_with_context(&x, &t, &ctx)
                }
            })();
            let pred = match shared {
                Ok(p) => p,
                Err(e) => {
                    let e = to_pipeline_error(e);
                    for l in live.drain(..) {
                        results[l.index] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut uncond_row = live.len();
            let mut still = Vec::with_capacity(live.len());
            for (row, mut l) in live.drain(..).enumerate() {
                let uncond = l.neg_text.is_some().then(|| {
                    uncond_row += 1;
                    uncond_row - 1
                });
                let guidance = if high { l.guidance } else { l.guidance_2 };
                let stepped = (|| -> candle_core::Result<Tensor> {
                    let cond = pred.narrow(0, row, 1)?;
                    let guided = match uncond {
                        Some(u) => cfg_combine(&cond, &pred.narrow(0, u, 1)?, guidance as f64)?,
                        None => cond,
                    };
                    l.sched.step(&guided.to_dtype(DType::F32)?, &l.latents)
                })();
                match stepped {
                    Ok(next) => l.latents = next,
                    Err(e) => {
                        results[l.index] = Some(Err(PipelineError::Model(e.to_string())));
                        contexts = None;
                        continue;
                    }
                }
                if on_step(l.index, i + 1, total, &l.latents) == StepControl::Cancel {
                    results[l.index] = Some(Err(PipelineError::Cancelled {
                        step: (i + 1) as u32,
                    }));
                    contexts = None;
                } else {
                    still.push(l);
                }
            }
            live = still;
        }
        for l in live {
            // the image's latents replace the first frame at the end too
            results[l.index] = Some(
                l.model_input()
                    .map_err(|e| PipelineError::Model(e.to_string())),
            );
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PipelineError::Model("item left no result".into()))))
            .collect()
    }

    fn start_member(
        &self,
        index: usize,
        m: BatchMember<'_>,
        sched: &FlowScheduler,
    ) -> std::result::Result<LiveMember, PipelineError> {
        let text = pad_text(&m.cond.prompt_embeds).map_err(to_pipeline_error)?;
        let neg_text = match (&m.cond.negative_prompt_embeds, m.guidance > 1.0) {
            (Some(neg), true) => Some(pad_text(neg).map_err(to_pipeline_error)?),
            _ => None,
        };
        let image_latents = match &m.cond.image_latents {
            None => None,
            Some(c) => {
                let (want, got) = (m.latents.dims(), c.dims());
                if got.len() != 5
                    || got[2] != 1
                    || (&want[..2], &want[3..]) != (&got[..2], &got[3..])
                {
                    return Err(PipelineError::InvalidRequest(format!(
                        "image latents {got:?} do not fit latents {want:?}"
                    )));
                }
                Some(
                    c.to_dtype(DType::F32)
                        .map_err(|e| PipelineError::Model(e.to_string()))?,
                )
            }
        };
        Ok(LiveMember {
            index,
            sched: sched.clone(),
            latents: m
                .latents
                .to_dtype(DType::F32)
                .map_err(|e| PipelineError::Model(e.to_string()))?,
            text,
            neg_text,
            guidance: m.guidance,
            guidance_2: m.guidance_2,
            image_latents,
        })
    }

    /// De-normalises and decodes latents to frames `[F, H, W, 3]` in [0, 1].
    pub fn decode_latents(&self, latents: &Tensor) -> Result<VideoFrames> {
        stages::decode_latents(&self.vae, latents)
    }

    /// The whole text-to-video run from given initial latents (or seeded noise).
    pub fn generate(
        &self,
        request: &GenerationRequest,
        init_latents: Option<Tensor>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> StepControl,
    ) -> std::result::Result<VideoFrames, PipelineError> {
        let cond = self.encode_request(request).map_err(to_pipeline_error)?;
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

    fn initial_latents(
        &self,
        request: &GenerationRequest,
        given: Option<Tensor>,
    ) -> std::result::Result<Tensor, PipelineError> {
        let shape = self.latent_shape(request.width, request.height, request.num_frames);
        stages::initial_latents(request, shape, given, &self.device)
    }
}

/// The engine's step callback as the denoising loops call it (step, total, latents).
pub(crate) fn report_steps(
    on_step: &mut dyn FnMut(StepProgress) -> StepControl,
) -> impl FnMut(usize, usize, &Tensor) -> StepControl + '_ {
    move |step, total, _| {
        on_step(StepProgress {
            step: step as u32,
            total: total as u32,
        })
    }
}

impl Pipeline for WanPipeline {
    fn encode_prompt(
        &self,
        request: &GenerationRequest,
    ) -> std::result::Result<Conditioning, PipelineError> {
        let c = self.encode_request(request).map_err(to_pipeline_error)?;
        Ok(Conditioning(Box::new(c)))
    }

    fn denoise(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning,
        on_step: &mut dyn FnMut(StepProgress) -> StepControl,
    ) -> std::result::Result<Latents, PipelineError> {
        let cond = conditioning.get::<WanConditioning>("WanConditioning")?;
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

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn denoise_batch(
        &self,
        items: &[BatchItem<'_>],
        on_step: &mut dyn FnMut(usize, StepProgress) -> StepControl,
    ) -> Vec<std::result::Result<Latents, PipelineError>> {
        if let Err(e) = check_batch(items) {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let Some(first) = items.first() else {
            return Vec::new();
        };
        let mut results: Vec<Option<std::result::Result<Latents, PipelineError>>> =
            items.iter().map(|_| None).collect();
        // members that could start, and the item index of each
        let mut members = Vec::with_capacity(items.len());
        let mut index_of = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let member = item
                .conditioning
                .get::<WanConditioning>("WanConditioning")
                .and_then(|cond| {
                    self.initial_latents(item.request, None)
                        .map(|latents| BatchMember {
                            cond,
                            latents,
                            guidance: item.request.guidance_scale,
                            guidance_2: item
                                .request
                                .guidance_scale_2
                                .unwrap_or(item.request.guidance_scale),
                        })
                });
            match member {
                Ok(m) => {
                    members.push(m);
                    index_of.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let steps = first.request.steps as usize;
        let out = self.denoise_batch_latents(members, steps, &mut |m, step, total, _| {
            on_step(
                index_of[m],
                StepProgress {
                    step: step as u32,
                    total: total as u32,
                },
            )
        });
        for (m, r) in out.into_iter().enumerate() {
            results[index_of[m]] = Some(r.map(|t| Latents(Box::new(t))));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PipelineError::Model("item left no result".into()))))
            .collect()
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
