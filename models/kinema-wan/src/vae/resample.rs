//! `WanResample`: the decoder's 2x up- and the encoder's 2x down-sampling in space,
//! optionally with a causal time conv that doubles (up) or halves (down) the frames.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use kinema_diffusion::conv3d::{CausalConv3d, Conv2dSame};

use super::cache::{cache_frames, FeatCache, Slot};
use crate::error::Result;

/// The reference's `mode` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

#[derive(Debug, Clone)]
enum Resample {
    /// Nearest 2x upsampling, then a 3x3 conv (`dim -> dim / 2`).
    Up(Conv2dSame),
    /// Zero padding right and bottom, then a 3x3 conv with stride 2.
    Down { weight: Tensor, bias: Tensor },
}

#[derive(Debug, Clone)]
pub(crate) struct WanResample {
    mode: Mode,
    resample: Resample,
    time_conv: Option<CausalConv3d>,
}

impl WanResample {
    /// The Wan 2.1 resample: up-sampling halves the channels.
    pub(crate) fn new(vb: VarBuilder, dim: usize, mode: Mode) -> Result<Self> {
        Self::with_upsample_out(vb, dim, mode, dim / 2)
    }

    /// `upsample_out_dim`: the up-sampling conv's output channels (the Wan 2.2
    /// residual up blocks keep `dim`).
    pub(crate) fn with_upsample_out(
        vb: VarBuilder,
        dim: usize,
        mode: Mode,
        upsample_out_dim: usize,
    ) -> Result<Self> {
        let r = vb.pp("resample").pp(1);
        let resample = match mode {
            Mode::Upsample2d | Mode::Upsample3d => {
                let out = upsample_out_dim;
                Resample::Up(Conv2dSame::new(
                    r.get((out, dim, 3, 3), "weight")?,
                    Some(r.get(out, "bias")?),
                    1,
                )?)
            }
            Mode::Downsample2d | Mode::Downsample3d => Resample::Down {
                weight: r.get((dim, dim, 3, 3), "weight")?,
                bias: r.get(dim, "bias")?.reshape((1, dim, 1, 1))?,
            },
        };
        let tc = vb.pp("time_conv");
        let time_conv = match mode {
            Mode::Upsample3d => Some(CausalConv3d::new(
                &tc.get((dim * 2, dim, 3, 1, 1), "weight")?,
                Some(tc.get(dim * 2, "bias")?),
                (1, 0),
                1,
            )?),
            Mode::Downsample3d => Some(CausalConv3d::new(
                &tc.get((dim, dim, 3, 1, 1), "weight")?,
                Some(tc.get(dim, "bias")?),
                (0, 0),
                2,
            )?),
            Mode::Upsample2d | Mode::Downsample2d => None,
        };
        Ok(Self {
            mode,
            resample,
            time_conv,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        match (&self.resample, &self.time_conv) {
            (Resample::Up(conv), time_conv) => {
                let x = match (self.mode, time_conv) {
                    (Mode::Upsample3d, Some(tc)) => upsample_time(tc, x, cache)?,
                    _ => x.clone(),
                };
                // nearest 2x upsampling, then the 3x3 conv, on every frame
                Ok(conv.forward_frames(&x, 2)?)
            }
            (Resample::Down { weight, bias }, time_conv) => {
                let x = downsample_space(weight, bias, x)?;
                match (self.mode, time_conv) {
                    (Mode::Downsample3d, Some(tc)) => downsample_time(tc, &x, cache),
                    _ => Ok(x),
                }
            }
        }
    }
}

/// `upsample3d`'s time conv: skipped on the first chunk; afterwards each frame becomes
/// two (the conv's two output halves, interleaved in time).
fn upsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let i = cache.next();
    let old = cache.slots[i].clone();
    if let Slot::Empty = old {
        cache.slots[i] = Slot::Rep;
        return Ok(x.clone());
    }
    let mut new = cache_frames(x, &old)?;
    if new.dim(2)? < 2 {
        if let Slot::Rep = old {
            new = Tensor::cat(&[&new.zeros_like()?, &new], 2)?;
        }
    }
    let y = match &old {
        Slot::Frames(prev) => time_conv.forward(x, Some(prev))?,
        _ => time_conv.forward(x, None)?,
    };
    cache.slots[i] = Slot::Frames(new);
    // [B, 2, C, T, H, W] -> [B, C, T, 2, H, W]: the two halves interleave in time
    Ok(y.reshape(vec![b, 2, c, t, h, w])?
        .permute(vec![0, 2, 3, 1, 4, 5])?
        .contiguous()?
        .reshape((b, c, t * 2, h, w))?)
}

/// `ZeroPad2d((0, 1, 0, 1))` then a stride-2 3x3 conv, one frame at a time (the conv's
/// unfolded input then stays one frame's worth).
fn downsample_space(weight: &Tensor, bias: &Tensor, x: &Tensor) -> Result<Tensor> {
    let t = x.dim(2)?;
    let mut frames = Vec::with_capacity(t);
    for i in 0..t {
        let f = x
            .narrow(2, i, 1)?
            .squeeze(2)?
            .pad_with_zeros(D::Minus1, 0, 1)?
            .pad_with_zeros(D::Minus2, 0, 1)?;
        frames.push(f.conv2d(weight, 0, 2, 1, 1)?.broadcast_add(bias)?);
    }
    Ok(Tensor::stack(&frames, 2)?)
}

/// `downsample3d`'s time conv (3 taps, stride 2, no padding): the first chunk passes
/// through; later chunks are convolved behind the previous chunk's last frame.
fn downsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
    let i = cache.next();
    let t = x.dim(2)?;
    let last = x.narrow(2, t - 1, 1)?.contiguous()?;
    let y = match &cache.slots[i] {
        Slot::Frames(prev) => {
            let pt = prev.dim(2)?;
            let input = Tensor::cat(&[&prev.narrow(2, pt - 1, 1)?, x], 2)?;
            time_conv.forward(&input, None)?
        }
        Slot::Empty | Slot::Rep => x.clone(),
    };
    // only the last frame is ever read back
    cache.slots[i] = Slot::Frames(last);
    Ok(y)
}
