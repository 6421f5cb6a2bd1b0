//! Wan-VAE (`AutoencoderKLWan`) decoder: causal 3D convolutions with a per-conv cache of
//! the last two input frames, so a video decodes one latent frame at a time in bounded
//! memory, exactly as the reference's `feat_cache` loop.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::conv3d::{CausalConv3d, Conv2dSame};
use kinema_diffusion::norm::l2_channel_norm;
use kinema_diffusion::weights::{component_var_builder, read_json};

use crate::error::{Result, WanError};

/// Frames each causal conv keeps from the previous chunk.
const CACHE_T: usize = 2;

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
        if c.is_residual || c.patch_size.is_some() {
            return Err(bad(
                "the Wan 2.2 VAE (residual, patchified) is not supported yet",
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
}

/// What a causal conv remembers between chunks (the reference's `feat_cache` slot).
#[derive(Debug, Clone)]
enum Slot {
    Empty,
    /// First chunk seen by a temporal upsampler: its time conv was skipped.
    Rep,
    Frames(Tensor),
}

/// The decoder's cache: one slot per causal conv, visited in a fixed order per chunk.
#[derive(Debug, Clone)]
pub struct FeatCache {
    slots: Vec<Slot>,
    idx: usize,
}

impl FeatCache {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            idx: 0,
        }
    }

    fn next(&mut self) -> usize {
        if self.idx == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        let i = self.idx;
        self.idx += 1;
        i
    }
}

/// The last `CACHE_T` frames of `x`, topped up with the previous slot's last frame. A
/// copy: a view would keep all of `x` alive until the next chunk (at 480p, GBs over the
/// decoder's convs).
fn cache_frames(x: &Tensor, old: &Slot) -> Result<Tensor> {
    let t = x.dim(2)?;
    let take = t.min(CACHE_T);
    let mut c = x.narrow(2, t - take, take)?;
    if take < 2 {
        match old {
            Slot::Frames(prev) => {
                let pt = prev.dim(2)?;
                c = Tensor::cat(&[&prev.narrow(2, pt - 1, 1)?, &c], 2)?;
            }
            Slot::Rep | Slot::Empty => {}
        }
    }
    Ok(c.contiguous()?)
}

/// A causal conv applied with its cache slot.
fn cached_conv(conv: &CausalConv3d, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
    let i = cache.next();
    let new = cache_frames(x, &cache.slots[i])?;
    let y = match &cache.slots[i] {
        Slot::Frames(prev) => conv.forward(x, Some(prev))?,
        _ => conv.forward(x, None)?,
    };
    cache.slots[i] = Slot::Frames(new);
    Ok(y)
}

fn causal_conv(
    vb: VarBuilder,
    i: usize,
    o: usize,
    k: (usize, usize),
    pad: (usize, usize),
) -> Result<CausalConv3d> {
    let w = vb.get((o, i, k.0, k.1, k.1), "weight")?;
    let b = vb.get(o, "bias")?;
    Ok(CausalConv3d::new(&w, Some(b), pad, 1)?)
}

fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.silu()?)
}

#[derive(Debug, Clone)]
struct WanResidualBlock {
    norm1: Tensor,
    conv1: CausalConv3d,
    norm2: Tensor,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl WanResidualBlock {
    fn new(vb: VarBuilder, i: usize, o: usize) -> Result<Self> {
        Ok(Self {
            norm1: vb.pp("norm1").get((i, 1, 1, 1), "gamma")?,
            conv1: causal_conv(vb.pp("conv1"), i, o, (3, 3), (1, 1))?,
            norm2: vb.pp("norm2").get((o, 1, 1, 1), "gamma")?,
            conv2: causal_conv(vb.pp("conv2"), o, o, (3, 3), (1, 1))?,
            conv_shortcut: if i != o {
                Some(causal_conv(vb.pp("conv_shortcut"), i, o, (1, 1), (0, 0))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let h = match &self.conv_shortcut {
            Some(c) => c.forward(x, None)?,
            None => x.clone(),
        };
        let y = silu(&l2_channel_norm(x, &self.norm1, 1)?)?;
        let y = cached_conv(&self.conv1, &y, cache)?;
        let y = silu(&l2_channel_norm(&y, &self.norm2, 1)?)?;
        let y = cached_conv(&self.conv2, &y, cache)?;
        Ok((y + h)?)
    }
}

/// Single-head spatial self-attention per frame.
#[derive(Debug, Clone)]
struct WanAttentionBlock {
    norm: Tensor,
    to_qkv: Conv2dSame,
    proj: Conv2dSame,
}

impl WanAttentionBlock {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let conv1x1 = |vb: VarBuilder, o: usize| -> Result<Conv2dSame> {
            Ok(Conv2dSame::new(
                vb.get((o, dim, 1, 1), "weight")?,
                Some(vb.get(o, "bias")?),
                0,
            )?)
        };
        Ok(Self {
            norm: vb.pp("norm").get((dim, 1, 1), "gamma")?,
            to_qkv: conv1x1(vb.pp("to_qkv"), 3 * dim)?,
            proj: conv1x1(vb.pp("proj"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, budget: AttentionBudget) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let y = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        let y = l2_channel_norm(&y, &self.norm, 1)?;
        let qkv = self.to_qkv.forward(&y)?;
        // [BT, 3C, HW] -> [BT, 1, HW, 3C]
        let qkv = qkv
            .reshape((b * t, 1, 3 * c, h * w))?
            .permute((0, 1, 3, 2))?
            .contiguous()?;
        let q = qkv.narrow(3, 0, c)?;
        let k = qkv.narrow(3, c, c)?;
        let v = qkv.narrow(3, 2 * c, c)?;
        let o = attention(&q, &k, &v, None, 1.0 / (c as f64).sqrt(), budget)?;
        let o = o
            .squeeze(1)?
            .permute((0, 2, 1))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        let o = self.proj.forward(&o)?;
        let o = o.reshape((b, t, c, h, w))?.permute((0, 2, 1, 3, 4))?;
        Ok((o + x)?)
    }
}

#[derive(Debug, Clone)]
struct WanMidBlock {
    resnets: Vec<WanResidualBlock>,
    attentions: Vec<WanAttentionBlock>,
}

impl WanMidBlock {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            resnets: vec![
                WanResidualBlock::new(vb.pp("resnets").pp(0), dim, dim)?,
                WanResidualBlock::new(vb.pp("resnets").pp(1), dim, dim)?,
            ],
            attentions: vec![WanAttentionBlock::new(vb.pp("attentions").pp(0), dim)?],
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cache: &mut FeatCache,
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, cache)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(&x, budget)?;
            x = resnet.forward(&x, cache)?;
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
struct WanResample {
    /// `upsample3d` when true, else `upsample2d`.
    temporal: bool,
    resample: Conv2dSame,
    time_conv: Option<CausalConv3d>,
}

impl WanResample {
    fn new(vb: VarBuilder, dim: usize, temporal: bool) -> Result<Self> {
        let out = dim / 2;
        let r = vb.pp("resample").pp(1);
        let resample = Conv2dSame::new(
            r.get((out, dim, 3, 3), "weight")?,
            Some(r.get(out, "bias")?),
            1,
        )?;
        let time_conv = if temporal {
            let tc = vb.pp("time_conv");
            let w = tc.get((dim * 2, dim, 3, 1, 1), "weight")?;
            Some(CausalConv3d::new(
                &w,
                Some(tc.get(dim * 2, "bias")?),
                (1, 0),
                1,
            )?)
        } else {
            None
        };
        Ok(Self {
            temporal,
            resample,
            time_conv,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let mut x = x.clone();
        if let (true, Some(time_conv)) = (self.temporal, &self.time_conv) {
            let i = cache.next();
            match cache.slots[i].clone() {
                Slot::Empty => cache.slots[i] = Slot::Rep,
                old => {
                    let mut new = cache_frames(&x, &old)?;
                    if new.dim(2)? < 2 {
                        if let Slot::Rep = old {
                            new = Tensor::cat(&[&new.zeros_like()?, &new], 2)?;
                        }
                    }
                    x = match &old {
                        Slot::Frames(prev) => time_conv.forward(&x, Some(prev))?,
                        _ => time_conv.forward(&x, None)?,
                    };
                    cache.slots[i] = Slot::Frames(new);
                    // [B, 2, C, T, H, W] -> [B, C, T, 2, H, W]: the two halves interleave in time
                    x = x
                        .reshape(vec![b, 2, c, t, h, w])?
                        .permute(vec![0, 2, 3, 1, 4, 5])?
                        .contiguous()?
                        .reshape((b, c, t * 2, h, w))?;
                }
            }
        }
        // nearest 2x upsampling, then the 3x3 conv, on every frame
        Ok(self.resample.forward_frames(&x, 2)?)
    }
}

#[derive(Debug, Clone)]
struct WanUpBlock {
    resnets: Vec<WanResidualBlock>,
    upsampler: Option<WanResample>,
}

impl WanUpBlock {
    fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward(&x, cache)?;
        }
        if let Some(u) = &self.upsampler {
            x = u.forward(&x, cache)?;
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
struct WanDecoder3d {
    conv_in: CausalConv3d,
    mid_block: WanMidBlock,
    up_blocks: Vec<WanUpBlock>,
    norm_out: Tensor,
    conv_out: CausalConv3d,
}

impl WanDecoder3d {
    fn new(vb: VarBuilder, c: &WanVaeConfig) -> Result<Self> {
        let dim = c.decoder_base_dim.unwrap_or(c.base_dim);
        let n = c.dim_mult.len();
        let mut mults = vec![c.dim_mult[n - 1]];
        mults.extend(c.dim_mult.iter().rev());
        let dims: Vec<usize> = mults.iter().map(|m| dim * m).collect();
        let temperal_upsample: Vec<bool> = c.temperal_downsample.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_dim = dims[0];
        for i in 0..n {
            let mut in_dim = dims[i];
            out_dim = dims[i + 1];
            if i > 0 {
                in_dim /= 2;
            }
            let ub = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::with_capacity(c.num_res_blocks + 1);
            let mut cur = in_dim;
            for j in 0..=c.num_res_blocks {
                resnets.push(WanResidualBlock::new(ub.pp("resnets").pp(j), cur, out_dim)?);
                cur = out_dim;
            }
            let upsampler = if i != n - 1 {
                Some(WanResample::new(
                    ub.pp("upsamplers").pp(0),
                    out_dim,
                    temperal_upsample[i],
                )?)
            } else {
                None
            };
            up_blocks.push(WanUpBlock { resnets, upsampler });
        }
        Ok(Self {
            conv_in: causal_conv(vb.pp("conv_in"), c.z_dim, dims[0], (3, 3), (1, 1))?,
            mid_block: WanMidBlock::new(vb.pp("mid_block"), dims[0])?,
            up_blocks,
            norm_out: vb.pp("norm_out").get((out_dim, 1, 1, 1), "gamma")?,
            conv_out: causal_conv(vb.pp("conv_out"), out_dim, c.out_channels, (3, 3), (1, 1))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cache: &mut FeatCache,
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let x = cached_conv(&self.conv_in, x, cache)?;
        let mut x = self.mid_block.forward(&x, cache, budget)?;
        for ub in &self.up_blocks {
            x = ub.forward(&x, cache)?;
        }
        let x = silu(&l2_channel_norm(&x, &self.norm_out, 1)?)?;
        cached_conv(&self.conv_out, &x, cache)
    }
}

#[derive(Debug, Clone)]
pub struct AutoencoderKLWan {
    pub config: WanVaeConfig,
    post_quant_conv: CausalConv3d,
    decoder: WanDecoder3d,
    pub budget: AttentionBudget,
}

impl AutoencoderKLWan {
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = WanVaeConfig::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        Self::new(config, vb)
    }

    pub fn new(config: WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let z = config.z_dim;
        Ok(Self {
            post_quant_conv: causal_conv(vb.pp("post_quant_conv"), z, z, (1, 1), (0, 0))?,
            decoder: WanDecoder3d::new(vb.pp("decoder"), &config)?,
            budget: AttentionBudget::for_device(vb.device()),
            config,
        })
    }

    /// Undoes the latent normalisation: `z = latents * std + mean` per channel.
    pub fn denormalize(&self, latents: &Tensor) -> Result<Tensor> {
        let z = self.config.z_dim;
        let dev = latents.device();
        let dt = latents.dtype();
        let f = |v: &[f64]| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_vec(v, (1, z, 1, 1, 1), dev)?.to_dtype(dt)
        };
        // the reference divides by 1/std; same value in f32 up to rounding
        let inv_std: Vec<f64> = self
            .config
            .latents_std
            .iter()
            .map(|s| (1.0f32 / *s as f32) as f64)
            .collect();
        Ok(latents
            .broadcast_div(&f(&inv_std)?)?
            .broadcast_add(&f(&self.config.latents_mean)?)?)
    }

    /// Decodes `z: [B, z_dim, T, h, w]` (already de-normalised) one latent frame at a
    /// time, handing each decoded chunk (`[B, 3, 1 or 4, 8h, 8w]`, clamped to [-1, 1])
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
            cache.idx = 0;
            let out = self
                .decoder
                .forward(&x.narrow(2, i, 1)?, &mut cache, self.budget)?;
            on_chunk(out.clamp(-1f32, 1f32)?)?;
        }
        Ok(())
    }

    /// Decodes the whole video: `[B, 3, 1 + 4 (T - 1), 8h, 8w]` in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut chunks = Vec::new();
        self.decode_chunks(z, &mut |c| {
            chunks.push(c);
            Ok(())
        })?;
        Ok(Tensor::cat(&chunks, 2)?)
    }
}
