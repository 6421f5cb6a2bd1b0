//! `WanDecoder3d`: latents to video, one latent frame per call.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use kinema_diffusion::attention::AttentionBudget;
use kinema_diffusion::conv3d::CausalConv3d;
use kinema_diffusion::norm::l2_channel_norm;

use super::blocks::{silu, WanMidBlock, WanResidualBlock};
use super::cache::{cached_conv, causal_conv, FeatCache};
use super::resample::{Mode, WanResample};
use super::shortcut::DupUp3D;
use super::WanVaeConfig;
use crate::error::Result;

/// `WanUpBlock` (Wan 2.1, the up-sampler under `upsamplers.0`) or
/// `WanResidualUpBlock` (Wan 2.2, under `upsampler`, with a `DupUp3D` shortcut of the
/// block's input).
#[derive(Debug, Clone)]
struct WanUpBlock {
    resnets: Vec<WanResidualBlock>,
    upsampler: Option<WanResample>,
    avg_shortcut: Option<DupUp3D>,
}

impl WanUpBlock {
    fn forward(&self, x: &Tensor, cache: &mut FeatCache, first_chunk: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, cache)?;
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h, cache)?;
        }
        match &self.avg_shortcut {
            Some(s) => Ok((h + s.forward(x, first_chunk)?)?),
            None => Ok(h),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WanDecoder3d {
    conv_in: CausalConv3d,
    mid_block: WanMidBlock,
    up_blocks: Vec<WanUpBlock>,
    norm_out: Tensor,
    conv_out: CausalConv3d,
}

impl WanDecoder3d {
    pub(crate) fn new(vb: VarBuilder, c: &WanVaeConfig) -> Result<Self> {
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
            if i > 0 && !c.is_residual {
                in_dim /= 2;
            }
            let ub = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::with_capacity(c.num_res_blocks + 1);
            let mut cur = in_dim;
            for j in 0..=c.num_res_blocks {
                resnets.push(WanResidualBlock::new(ub.pp("resnets").pp(j), cur, out_dim)?);
                cur = out_dim;
            }
            let up_flag = i != n - 1;
            let mode = if up_flag && temperal_upsample[i] {
                Mode::Upsample3d
            } else {
                Mode::Upsample2d
            };
            let (upsampler, avg_shortcut) = match (up_flag, c.is_residual) {
                (false, _) => (None, None),
                (true, false) => (
                    Some(WanResample::new(ub.pp("upsamplers").pp(0), out_dim, mode)?),
                    None,
                ),
                (true, true) => (
                    Some(WanResample::with_upsample_out(
                        ub.pp("upsampler"),
                        out_dim,
                        mode,
                        out_dim,
                    )?),
                    Some(DupUp3D::new(
                        in_dim,
                        out_dim,
                        if mode == Mode::Upsample3d { 2 } else { 1 },
                        2,
                    )?),
                ),
            };
            up_blocks.push(WanUpBlock {
                resnets,
                upsampler,
                avg_shortcut,
            });
        }
        Ok(Self {
            conv_in: causal_conv(vb.pp("conv_in"), c.z_dim, dims[0], (3, 3), (1, 1))?,
            mid_block: WanMidBlock::new(vb.pp("mid_block"), dims[0])?,
            up_blocks,
            norm_out: vb.pp("norm_out").get((out_dim, 1, 1, 1), "gamma")?,
            conv_out: causal_conv(vb.pp("conv_out"), out_dim, c.out_channels, (3, 3), (1, 1))?,
        })
    }

    /// `first_chunk`: the video's first latent frame (the residual blocks' `DupUp3D`
    /// then drops its leading frames).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cache: &mut FeatCache,
        budget: AttentionBudget,
        first_chunk: bool,
    ) -> Result<Tensor> {
        let x = cached_conv(&self.conv_in, x, cache)?;
        let mut x = self.mid_block.forward(&x, cache, budget)?;
        for ub in &self.up_blocks {
            x = ub.forward(&x, cache, first_chunk)?;
        }
        let x = silu(&l2_channel_norm(&x, &self.norm_out, 1)?)?;
        cached_conv(&self.conv_out, &x, cache)
    }
}
