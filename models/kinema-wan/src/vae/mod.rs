//! Wan-VAE (`AutoencoderKLWan`): causal 3D convolutions with a per-conv cache of the
//! last two input frames, so a video encodes (first frame, then 4 frames at a time) and
//! decodes (one latent frame at a time) chunk by chunk in bounded memory, exactly as the
//! reference's `feat_cache` loops.

mod blocks;
mod cache;
mod decoder;
mod distribution;
mod encoder;
mod resample;
mod shortcut;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kinema_diffusion::attention::AttentionBudget;
use kinema_diffusion::conv3d::CausalConv3d;
use kinema_diffusion::weights::{component_var_builder, read_json};

use self::cache::{causal_conv, FeatCache};
use self::decoder::WanDecoder3d;
pub use self::distribution::DiagonalGaussianDistribution;
use self::encoder::WanEncoder3d;
use self::shortcut::{patchify, unpatchify};
use crate::error::{Result, WanError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct WanVaeConfig {
    #[serde(default = "default_base")]
    pub base_dim: usize,
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "default_z")]
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    pub temperal_downsample: Vec<bool>,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default = "default_in")]
    pub in_channels: usize,
    #[serde(default = "default_out")]
    pub out_channels: usize,
    pub patch_size: Option<usize>,
    #[serde(default = "default_tf")]
    pub scale_factor_temporal: usize,
    #[serde(default = "default_sf")]
    pub scale_factor_spatial: usize,
}

fn default_base() -> usize {
    96
}
fn default_z() -> usize {
    16
}
fn default_in() -> usize {
    3
}
fn default_out() -> usize {
    3
}
fn default_tf() -> usize {
    4
}
fn default_sf() -> usize {
    8
}

impl WanVaeConfig {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let c: Self = read_json(&dir.join("config.json"))?;
        let bad = |message: &str| WanError::Config {
            what: "vae".into(),
            message: message.into(),
        };
        let p = c.patch();
        if p == 0 {
            return Err(bad("patch_size must be positive"));
        }
        if !c.in_channels.is_multiple_of(p * p) || !c.out_channels.is_multiple_of(p * p) {
            return Err(bad("in/out_channels must be multiples of patch_size^2"));
        }
        if c.scale_factor_spatial != p << (c.dim_mult.len().max(1) - 1) {
            return Err(bad(
                "scale_factor_spatial must be patch_size x 2^(len(dim_mult) - 1)",
            ));
        }
        if !c.attn_scales.is_empty() {
            return Err(bad("attn_scales must be empty"));
        }
        if c.dim_mult.is_empty() || c.temperal_downsample.len() + 1 != c.dim_mult.len() {
            return Err(bad(
                "temperal_downsample must have one entry less than dim_mult",
            ));
        }
        if c.latents_mean.len() != c.z_dim || c.latents_std.len() != c.z_dim {
            return Err(bad("latents_mean/latents_std must have z_dim entries"));
        }
        Ok(c)
    }

    /// The patchify size (1 for Wan 2.1; 2 for the Wan 2.2 VAE).
    pub fn patch(&self) -> usize {
        self.patch_size.unwrap_or(1)
    }

    /// Pixels per latent cell in space: the down-sampling stages times the patch.
    pub fn spatial_compression(&self) -> usize {
        self.patch() << (self.dim_mult.len().max(1) - 1)
    }
}

/// The encoder half: `WanEncoder3d` and `quant_conv`.
#[derive(Debug, Clone)]
struct EncoderHalf {
    encoder: WanEncoder3d,
    quant_conv: CausalConv3d,
}

#[derive(Debug, Clone)]
pub struct AutoencoderKLWan {
    pub config: WanVaeConfig,
    /// Absent when loaded for decoding only.
    encoder: Option<EncoderHalf>,
    post_quant_conv: CausalConv3d,
    decoder: WanDecoder3d,
    pub budget: AttentionBudget,
    dtype: DType,
}

impl AutoencoderKLWan {
    /// Encoder and decoder, as diffusers loads the model.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = WanVaeConfig::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        Self::new(config, vb)
    }

    /// The decoder only (text-to-video needs no encoder; its weights stay unread).
    pub fn load_decoder(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = WanVaeConfig::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        Self::new_decoder(config, vb)
    }

    pub fn new(config: WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let z2 = 2 * config.z_dim;
        let encoder = EncoderHalf {
            encoder: WanEncoder3d::new(vb.pp("encoder"), &config, z2)?,
            quant_conv: causal_conv(vb.pp("quant_conv"), z2, z2, (1, 1), (0, 0))?,
        };
        let mut vae = Self::new_decoder(config, vb)?;
        vae.encoder = Some(encoder);
        Ok(vae)
    }

    pub fn new_decoder(config: WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let z = config.z_dim;
        Ok(Self {
            encoder: None,
            post_quant_conv: causal_conv(vb.pp("post_quant_conv"), z, z, (1, 1), (0, 0))?,
            decoder: WanDecoder3d::new(vb.pp("decoder"), &config)?,
            budget: AttentionBudget::for_device(vb.device()),
            dtype: vb.dtype(),
            config,
        })
    }

    /// The dtype the weights were loaded in, which the VAE computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The per-channel `(latents_mean, 1 / latents_std)` as `[1, z_dim, 1, 1, 1]`
    /// tensors; `1 / std` in f32, as the reference pipelines compute it.
    fn latent_stats(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.config.z_dim;
        let f = |v: Vec<f32>| -> candle_core::Result<Tensor> {
            Tensor::from_vec(v, (1, z, 1, 1, 1), like.device())?.to_dtype(like.dtype())
        };
        let mean = self.config.latents_mean.iter().map(|&m| m as f32).collect();
        let inv_std = self
            .config
            .latents_std
            .iter()
            .map(|&s| 1.0f32 / s as f32)
            .collect();
        Ok((f(mean)?, f(inv_std)?))
    }

    /// The latent normalisation of the image-to-video pipelines:
    /// `(z - latents_mean) * (1 / latents_std)` per channel.
    pub fn normalize(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, inv_std) = self.latent_stats(z)?;
        Ok(z.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?)
    }

    /// Encodes `x: [B, 3, 1 + 4k, H, W]` (values in [-1, 1], `H` and `W` multiples of
    /// the spatial compression; patchified first when the config has a patch size) chunk by chunk, as the reference: the first
    /// frame, then 4 frames at a time, each causal conv carrying the last frames of the
    /// previous chunk. Each chunk's moments (`[B, 2 z_dim, 1, h, w]`, after
    /// `quant_conv`) go to `on_chunk` as soon as they are ready.
    pub fn encode_chunks(
        &self,
        x: &Tensor,
        on_chunk: &mut dyn FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let half = self
            .encoder
            .as_ref()
            .ok_or_else(|| WanError::Input("this VAE was loaded without its encoder".into()))?;
        let (_, c, t, h, w) = x.dims5()?;
        let p = self.config.patch();
        let spatial = self.config.spatial_compression();
        if c * p * p != self.config.in_channels
            || t % 4 != 1
            || h % spatial != 0
            || w % spatial != 0
            || h == 0
            || w == 0
        {
            return Err(WanError::Input(format!(
                "VAE encode wants [B, {}, 1 + 4k, H, W] with H and W multiples of {spatial}, got {:?}",
                self.config.in_channels / (p * p),
                x.dims()
            )));
        }
        let x = patchify(x, p)?;
        let mut cache = FeatCache::new();
        for i in 0..1 + (t - 1) / 4 {
            let (start, len) = if i == 0 { (0, 1) } else { (1 + 4 * (i - 1), 4) };
            cache.rewind();
            let out = half
                .encoder
                .forward(&x.narrow(2, start, len)?, &mut cache, self.budget)?;
            on_chunk(half.quant_conv.forward(&out, None)?)?;
        }
        Ok(())
    }

    /// Encodes a whole video ([`Self::encode_chunks`]) into its latent distribution,
    /// `[B, z_dim, 1 + k, H / s, W / s]` (`s` the spatial compression; not normalised; see [`Self::normalize`]).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        let mut chunks = Vec::new();
        self.encode_chunks(x, &mut |c| {
            chunks.push(c);
            Ok(())
        })?;
        DiagonalGaussianDistribution::from_moments(&Tensor::cat(&chunks, 2)?)
    }

    /// Undoes the latent normalisation: `z = latents / (1 / std) + mean` per channel.
    pub fn denormalize(&self, latents: &Tensor) -> Result<Tensor> {
        let (mean, inv_std) = self.latent_stats(latents)?;
        Ok(latents.broadcast_div(&inv_std)?.broadcast_add(&mean)?)
    }

    /// Decodes `z: [B, z_dim, T, h, w]` (already de-normalised) one latent frame at a
    /// time, handing each decoded chunk (`[B, 3, 1 or 4, s h, s w]`, unpatchified,
    /// clamped to [-1, 1])
    /// to `on_chunk` as soon as it is ready.
    pub fn decode_chunks(
        &self,
        z: &Tensor,
        on_chunk: &mut dyn FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let x = self.post_quant_conv.forward(z, None)?;
        let t = x.dim(2)?;
        let mut cache = FeatCache::new();
        for i in 0..t {
            cache.rewind();
            let out = self
                .decoder
                .forward(&x.narrow(2, i, 1)?, &mut cache, self.budget, i == 0)?;
            let out = unpatchify(&out, self.config.patch())?;
            on_chunk(out.clamp(-1f32, 1f32)?)?;
        }
        Ok(())
    }

    /// Decodes the whole video: `[B, 3, 1 + 4 (T - 1), s h, s w]` in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut chunks = Vec::new();
        self.decode_chunks(z, &mut |c| {
            chunks.push(c);
            Ok(())
        })?;
        Ok(Tensor::cat(&chunks, 2)?)
    }
}
