//! `WanEncoder3d`: video to the latent distribution's moments, one chunk per call (the
//! first frame, then 4 frames at a time).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use kinema_diffusion::attention::AttentionBudget;
use kinema_diffusion::conv3d::CausalConv3d;
use kinema_diffusion::norm::l2_channel_norm;

use super::blocks::{silu, WanMidBlock, WanResidualBlock};
use super::cache::{cached_conv, causal_conv, FeatCache};
use super::resample::{Mode, WanResample};
use super::shortcut::AvgDown3D;
use super::WanVaeConfig;
use crate::error::Result;

/// An entry of `down_blocks`: the reference keeps residual blocks and down-samplers in
/// one flat list (attention blocks would sit there too, but `attn_scales` is empty).
#[derive(Debug, Clone)]
enum DownLayer {
    Residual(WanResidualBlock),
    Resample(WanResample),
    /// Wan 2.2 (`is_residual`): a whole stage with its `AvgDown3D` shortcut.
    ResidualDown(WanResidualDownBlock),
}

/// `WanResidualDownBlock` (Wan 2.2): residual blocks and the optional down-sampler,
/// plus the `AvgDown3D` of the block's input.
#[derive(Debug, Clone)]
struct WanResidualDownBlock {
    avg_shortcut: AvgDown3D,
    resnets: Vec<WanResidualBlock>,
    downsampler: Option<WanResample>,
}

impl WanResidualDownBlock {
    fn new(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        num_res_blocks: usize,
        temperal_downsample: bool,
        down_flag: bool,
    ) -> Result<Self> {
        let avg_shortcut = AvgDown3D::new(
            in_dim,
            out_dim,
            if temperal_downsample { 2 } else { 1 },
            if down_flag { 2 } else { 1 },
        )?;
        let mut resnets = Vec::with_capacity(num_res_blocks);
        let mut cur = in_dim;
        for j in 0..num_res_blocks {
            resnets.push(WanResidualBlock::new(vb.pp("resnets").pp(j), cur, out_dim)?);
            cur = out_dim;
        }
        let downsampler = if down_flag {
            let mode = if temperal_downsample {
                Mode::Downsample3d
            } else {
                Mode::Downsample2d
            };
            Some(WanResample::new(vb.pp("downsampler"), out_dim, mode)?)
        } else {
            None
        };
        Ok(Self {
            avg_shortcut,
            resnets,
            downsampler,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, cache)?;
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h, cache)?;
        }
        Ok((h + self.avg_shortcut.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WanEncoder3d {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    mid_block: WanMidBlock,
    norm_out: Tensor,
    conv_out: CausalConv3d,
}

impl WanEncoder3d {
    /// `z_dim` is twice the latent channels: the output holds the mean and the log
    /// variance.
    pub(crate) fn new(vb: VarBuilder, c: &WanVaeConfig, z_dim: usize) -> Result<Self> {
        let dim = c.base_dim;
        let dims: Vec<usize> = std::iter::once(1)
            .chain(c.dim_mult.iter().copied())
            .map(|m| dim * m)
            .collect();
        let n = c.dim_mult.len();
        let blocks = vb.pp("down_blocks");
        let mut down_blocks = Vec::new();
        for i in 0..n {
            if c.is_residual {
                let last = i == n - 1;
                down_blocks.push(DownLayer::ResidualDown(WanResidualDownBlock::new(
                    blocks.pp(i),
                    dims[i],
                    dims[i + 1],
                    c.num_res_blocks,
                    !last && c.temperal_downsample[i],
                    !last,
                )?));
                continue;
            }
            let (mut in_dim, out_dim) = (dims[i], dims[i + 1]);
            for _ in 0..c.num_res_blocks {
                let vb = blocks.pp(down_blocks.len());
                down_blocks.push(DownLayer::Residual(WanResidualBlock::new(
                    vb, in_dim, out_dim,
                )?));
                in_dim = out_dim;
            }
            if i != n - 1 {
                let mode = if c.temperal_downsample[i] {
                    Mode::Downsample3d
                } else {
                    Mode::Downsample2d
                };
                let vb = blocks.pp(down_blocks.len());
                down_blocks.push(DownLayer::Resample(WanResample::new(vb, out_dim, mode)?));
            }
        }
        let out_dim = dims[n];
        Ok(Self {
            conv_in: causal_conv(vb.pp("conv_in"), c.in_channels, dims[0], (3, 3), (1, 1))?,
            down_blocks,
            mid_block: WanMidBlock::new(vb.pp("mid_block"), out_dim)?,
            norm_out: vb.pp("norm_out").get((out_dim, 1, 1, 1), "gamma")?,
            conv_out: causal_conv(vb.pp("conv_out"), out_dim, z_dim, (3, 3), (1, 1))?,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cache: &mut FeatCache,
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let mut x = cached_conv(&self.conv_in, x, cache)?;
        for layer in &self.down_blocks {
            x = match layer {
                DownLayer::Residual(r) => r.forward(&x, cache)?,
                DownLayer::Resample(r) => r.forward(&x, cache)?,
                DownLayer::ResidualDown(r) => r.forward(&x, cache)?,
            };
        }
        let x = self.mid_block.forward(&x, cache, budget)?;
        let x = silu(&l2_channel_norm(&x, &self.norm_out, 1)?)?;
        cached_conv(&self.conv_out, &x, cache)
    }
}
