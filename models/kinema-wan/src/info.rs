//! What a Wan model directory holds, read without loading weights: the component
//! configs, parameter counts (from safetensors headers) and a memory estimate. Model
//! manifests (defaults, limits, memory need) are built from this.

use std::path::{Path, PathBuf};

use candle_core::DType;
use kinema_diffusion::attention::DEFAULT_SCORE_BUDGET_BYTES;
use kinema_diffusion::scheduler::SchedulerConfig;
use kinema_diffusion::weights::{parameter_count, LoadError};

use crate::error::Result;
use crate::pipeline::{read_model_index, read_scheduler, ModelIndex};
use crate::text_encoder::Umt5Config;
use crate::transformer::WanTransformerConfig;
use crate::vae::WanVaeConfig;

/// Parameters of each component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub text_encoder: u64,
    pub transformer: u64,
    /// The low-noise expert of a two-expert model (Wan 2.2 A14B); 0 otherwise. Both
    /// experts stay resident, so both count.
    pub transformer_2: u64,
    pub vae: u64,
}

impl ParamCounts {
    pub fn total(&self) -> u64 {
        self.text_encoder + self.transformer + self.transformer_2 + self.vae
    }
}

/// Bytes a generation needs: resident weights plus the peak of the stages' working
/// memory (stages run one after another, so the largest counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub transformer_activations: u64,
    pub vae_activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.transformer_activations.max(self.vae_activations)
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
}

impl WanModelInfo {
    /// Reads a Diffusers-layout Wan directory's configs and weight headers (Wan 2.1
    /// T2V, Wan 2.2 TI2V-5B, Wan 2.2 T2V-A14B).
    pub fn inspect(dir: &Path) -> Result<Self> {
        let index = read_model_index(dir)?;
        if index.two_experts() {
            // both experts run on the same latents and text: their configs must agree
            let a = WanTransformerConfig::from_dir(&dir.join("transformer"))?;
            let b = WanTransformerConfig::from_dir(&dir.join("transformer_2"))?;
            if (a.in_channels, a.out_channels(), a.patch_size, a.text_dim)
                != (b.in_channels, b.out_channels(), b.patch_size, b.text_dim)
            {
                return Err(crate::error::WanError::Config {
                    what: "transformer_2".into(),
                    message: "channels, patch size or text dim differ from transformer's".into(),
                });
            }
        }
        let count =
            |c: &str| -> std::result::Result<u64, LoadError> { parameter_count(&dir.join(c)) };
        Ok(Self {
            dir: dir.to_path_buf(),
            text_encoder: Umt5Config::from_dir(&dir.join("text_encoder"))?,
            transformer: WanTransformerConfig::from_dir(&dir.join("transformer"))?,
            vae: WanVaeConfig::from_dir(&dir.join("vae"))?,
            scheduler: read_scheduler(dir)?,
            params: ParamCounts {
                text_encoder: count("text_encoder")?,
                transformer: count("transformer")?,
                transformer_2: if index.two_experts() {
                    count("transformer_2")?
                } else {
                    0
                },
                vae: count("vae")?,
            },
            index,
        })
    }

    /// Pixels per latent cell in space and frames per latent frame in time, and the
    /// size multiple a request must respect (VAE factor x patch size).
    pub fn size_multiple(&self) -> u32 {
        let [_, ph, pw] = self.transformer.patch_size;
        (self.vae.scale_factor_spatial * ph.max(pw)) as u32
    }

    /// Wan 2.2 TI2V: a request may bring a first-frame image.
    pub fn takes_image(&self) -> bool {
        self.index.expand_timesteps
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
        dtype: DType,
        width: u32,
        height: u32,
        frames: u32,
    ) -> MemoryEstimate {
        let b = dtype.size_in_bytes() as u64;
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
        let vae_activations = 14 * base * 4 * (height as u64 / p) * (width as u64 / p) * b;
        MemoryEstimate {
            weights: self.params.total() * b,
            transformer_activations,
            vae_activations,
        }
    }
}
