//! Blocks the Wan-VAE encoder and decoder share: `WanResidualBlock`,
//! `WanAttentionBlock` and `WanMidBlock`.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::conv3d::{CausalConv3d, Conv2dSame};
use kinema_diffusion::norm::l2_channel_norm;

use super::cache::{cached_conv, causal_conv, FeatCache};
use crate::error::Result;

pub(crate) fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.silu()?)
}

#[derive(Debug, Clone)]
pub(crate) struct WanResidualBlock {
    norm1: Tensor,
    conv1: CausalConv3d,
    norm2: Tensor,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl WanResidualBlock {
    pub(crate) fn new(vb: VarBuilder, i: usize, o: usize) -> Result<Self> {
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

    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
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
pub(crate) struct WanAttentionBlock {
    norm: Tensor,
    to_qkv: Conv2dSame,
    proj: Conv2dSame,
}

impl WanAttentionBlock {
    pub(crate) fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
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

    pub(crate) fn forward(&self, x: &Tensor, budget: AttentionBudget) -> Result<Tensor> {
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
pub(crate) struct WanMidBlock {
    resnets: Vec<WanResidualBlock>,
    attentions: Vec<WanAttentionBlock>,
}

impl WanMidBlock {
    pub(crate) fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            resnets: vec![
                WanResidualBlock::new(vb.pp("resnets").pp(0), dim, dim)?,
                WanResidualBlock::new(vb.pp("resnets").pp(1), dim, dim)?,
            ],
            attentions: vec![WanAttentionBlock::new(vb.pp("attentions").pp(0), dim)?],
        })
    }

    pub(crate) fn forward(
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
