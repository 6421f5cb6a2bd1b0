//! What a Wan model directory holds, read without loading weights: the component
//! configs, parameter counts (from safetensors headers) and a memory estimate. Model
//! manifests (defaults, limits, memory need) are built from this.

use std::path::{Path, PathBuf};

use kinema_diffusion::attention::DEFAULT_SCORE_BUDGET_BYTES;
use kinema_diffusion::scheduler::SchedulerConfig;
use kinema_diffusion::weights::{parameter_count, LoadError};

use crate::clip_vision::ClipVisionConfig;
use crate::error::{Result, WanError};
use crate::pipeline::{read_model_index, read_scheduler, ModelIndex};
use crate::pipeline_i2v::{check_i2v_model_index, I2V_CLASS_NAME};
use crate::text_encoder::Umt5Config;
use crate::transformer::WanTransformerConfig;
use crate::vae::WanVaeConfig;
use crate::Precision;

/// Parameters of each component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub text_encoder: u64,
    pub transformer: u64,
    /// The low-noise expert of a two-expert model (Wan 2.2 A14B); 0 otherwise. Both
    /// experts stay resident, so both count.
    pub transformer_2: u64,
    /// The CLIP vision encoder of an image-to-video model; 0 otherwise.
    pub image_encoder: u64,
    pub vae: u64,
}

impl ParamCounts {
    pub fn total(&self) -> u64 {
        self.text_encoder + self.transformer + self.transformer_2 + self.image_encoder + self.vae
    }
}

/// What a folder's pipeline generates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanTask {
    /// `WanPipeline`.
    TextToVideo,
    /// `WanImageToVideoPipeline`; `last_image`: a first-last-frame model (FLF2V, the
    /// image embedder has `pos_embed_seq_len`).
    ImageToVideo { last_image: bool },
}

/// Bytes a generation needs: resident weights plus the peak of the stages' working
/// memory (stages run one after another, so the largest counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// The text encoder's share of `weights`.
    pub text_encoder_weights: u64,
    pub transformer_activations: u64,
    pub vae_activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.transformer_activations.max(self.vae_activations)
    }

    /// With the text encoder offloaded to host memory: on the device only while
    /// encoding, a stage of its own before the others.
    pub fn total_with_text_encoder_offloaded(&self) -> u64 {
        self.weights - self.text_encoder_weights
            + self
                .text_encoder_weights
                .max(self.transformer_activations)
                .max(self.vae_activations)
    }
}

#[derive(Debug, Clone)]
pub struct WanModelInfo {
    pub dir: PathBuf,
    pub text_encoder: Umt5Config,
    pub transformer: WanTransformerConfig,
    pub vae: WanVaeConfig,
    pub scheduler: SchedulerConfig,
    pub params: ParamCounts,
    /// `model_index.json`: two experts (`boundary_ratio`), per-token timesteps
    /// (`expand_timesteps`, Wan 2.2 TI2V: text- and image-to-video).
    pub index: ModelIndex,
    pub task: WanTask,
    /// Image-to-video: the CLIP vision encoder's config (absent in Wan 2.2 I2V-A14B).
    pub image_encoder: Option<ClipVisionConfig>,
    /// A two-expert model's low-noise transformer (Wan 2.2 A14B).
    pub transformer_2: Option<WanTransformerConfig>,
}

/// `_class_name` of `model_index.json`.
fn pipeline_class(dir: &Path) -> Result<String> {
    let v: serde_json::Value = kinema_diffusion::weights::read_json(&dir.join("model_index.json"))?;
    Ok(v.get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("")
        .to_string())
}

/// Both experts run on the same latents and text: their configs must agree.
fn check_experts_agree(a: &WanTransformerConfig, b: &WanTransformerConfig) -> Result<()> {
    if (a.in_channels, a.out_channels(), a.patch_size, a.text_dim)
        != (b.in_channels, b.out_channels(), b.patch_size, b.text_dim)
    {
        return Err(WanError::Config {
            what: "transformer_2".into(),
            message: "channels, patch size or text dim differ from transformer's".into(),
        });
    }
    Ok(())
}

impl WanModelInfo {
    /// Reads a Diffusers-layout Wan directory's configs and weight headers: Wan 2.1
    /// T2V, Wan 2.2 TI2V-5B and T2V-A14B (`WanPipeline`), and image-to-video folders
    /// (`WanImageToVideoPipeline`: Wan 2.1 I2V / FLF2V with their `image_encoder/`, Wan
    /// 2.2 I2V-A14B with `transformer_2/`).
    pub fn inspect(dir: &Path) -> Result<Self> {
        let count =
            |c: &str| -> std::result::Result<u64, LoadError> { parameter_count(&dir.join(c)) };
        let transformer = WanTransformerConfig::from_dir(&dir.join("transformer"))?;
        let (index, task, image_encoder, transformer_2) = if pipeline_class(dir)? == I2V_CLASS_NAME
        {
            let i2v = check_i2v_model_index(dir)?;
            let image_encoder = if i2v.has_image_encoder {
                Some(ClipVisionConfig::from_dir(&dir.join("image_encoder"))?)
            } else {
                None
            };
            if image_encoder.is_some() != transformer.image_dim.is_some() {
                return Err(WanError::Config {
                    what: "image_encoder".into(),
                    message: "present exactly when the transformer has image_dim".into(),
                });
            }
            if let (Some(e), Some(d)) = (&image_encoder, transformer.image_dim) {
                if e.hidden_size != d {
                    return Err(WanError::Config {
                        what: "image_encoder".into(),
                        message: format!(
                            "hidden_size {} but the transformer's image_dim is {d}",
                            e.hidden_size
                        ),
                    });
                }
            }
            let index = ModelIndex {
                class_name: I2V_CLASS_NAME.into(),
                boundary_ratio: i2v.boundary_ratio,
                expand_timesteps: false,
            };
            let task = WanTask::ImageToVideo {
                last_image: transformer.pos_embed_seq_len.is_some(),
            };
            (index, task, image_encoder, i2v.has_transformer_2)
        } else {
            let index = read_model_index(dir)?;
            let two = index.two_experts();
            (index, WanTask::TextToVideo, None, two)
        };
        let transformer_2 = if transformer_2 {
            let b = WanTransformerConfig::from_dir(&dir.join("transformer_2"))?;
            check_experts_agree(&transformer, &b)?;
            Some(b)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            text_encoder: Umt5Config::from_dir(&dir.join("text_encoder"))?,
            vae: WanVaeConfig::from_dir(&dir.join("vae"))?,
            scheduler: read_scheduler(dir)?,
            params: ParamCounts {
                text_encoder: count("text_encoder")?,
                transformer: count("transformer")?,
                transformer_2: if transformer_2.is_some() {
                    count("transformer_2")?
                } else {
                    0
                },
                image_encoder: if image_encoder.is_some() {
                    count("image_encoder")?
                } else {
                    0
                },
                vae: count("vae")?,
            },
            transformer,
            index,
            task,
            image_encoder,
            transformer_2,
        })
    }

    /// The manifest's capability words: `t2v`, `i2v` (plus `flf2v` for a
    /// first-last-frame model), or both `t2v` and `i2v` (Wan 2.2 TI2V).
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self.task {
            WanTask::TextToVideo if self.index.expand_timesteps => vec!["t2v", "i2v"],
            WanTask::TextToVideo => vec!["t2v"],
            WanTask::ImageToVideo { last_image: false } => vec!["i2v"],
            WanTask::ImageToVideo { last_image: true } => vec!["i2v", "flf2v"],
        }
    }

    /// Pixels per latent cell in space and frames per latent frame in time, and the
    /// size multiple a request must respect (VAE factor x patch size).
    pub fn size_multiple(&self) -> u32 {
        let [_, ph, pw] = self.transformer.patch_size;
        (self.vae.scale_factor_spatial * ph.max(pw)) as u32
    }

    pub fn frames_modulo(&self) -> u32 {
        self.vae.scale_factor_temporal as u32
    }

    /// An estimate of the memory one generation of `width x height x frames` needs in
    /// `dtype`. Working memory: the transformer's widest moment (the FFN's two
    /// `tokens x ffn` tensors beside the residual stream and attention projections, plus
    /// one attention chunk of scores), for the two rows of a guided step (conditional and
    /// unconditional run as one forward); the VAE decoder at full resolution: its causal
    /// caches and working tensors, ~14 full-resolution tensors of `base_dim` channels x
    /// 4 frames (measured on the real Wan 2.1 VAE at 832x480: 8.1 GB above its weights,
    /// `kinema-bench vae`). Weights count every component, both experts of a
    /// two-expert model included (both stay resident).
    pub fn memory_estimate(
        &self,
        precision: impl Into<Precision>,
        width: u32,
        height: u32,
        frames: u32,
    ) -> MemoryEstimate {
        let precision = precision.into();
        let b = precision.model.size_in_bytes() as u64;
        let vb = precision.vae.size_in_bytes() as u64;
        let t = &self.transformer;
        let [pt, ph, pw] = t.patch_size;
        let sf = self.vae.scale_factor_spatial as u64;
        let tf = self.vae.scale_factor_temporal as u64;
        let lat_t = (frames.max(1) as u64 - 1) / tf + 1;
        let tokens = (lat_t / pt as u64).max(1)
            * (height as u64 / sf / ph as u64).max(1)
            * (width as u64 / sf / pw as u64).max(1);
        let dim = t.inner_dim() as u64;
        let mut transformer_activations =
            2 * tokens * (2 * t.ffn_dim as u64 + 8 * dim) * b + DEFAULT_SCORE_BUDGET_BYTES as u64;
        if self.index.expand_timesteps {
            // per-token modulation: the `[2, tokens, 6, dim]` f32 projection and a block's
            // table + projection beside it
            transformer_activations += 2 * 2 * tokens * 6 * dim * 4;
        }
        let base = self.vae.decoder_base_dim.unwrap_or(self.vae.base_dim) as u64;
        // the decoder runs at the patchified resolution (Wan 2.2: half in each axis)
        let p = self.vae.patch() as u64;
        let vae_activations = 14 * base * 4 * (height as u64 / p) * (width as u64 / p) * vb;
        // image-to-video: the VAE also encodes the condition video (its working set is
        // the decoder's order), and the CLIP tokens are few
        MemoryEstimate {
            // every component stays resident, both experts of a two-expert model included
            weights: (self.params.total() - self.params.vae) * b + self.params.vae * vb,
            text_encoder_weights: self.params.text_encoder * b,
            transformer_activations,
            vae_activations,
        }
    }
}
