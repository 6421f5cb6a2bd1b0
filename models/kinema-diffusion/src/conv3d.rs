//! Causal 3D convolution built from 2D convolutions over the temporal taps (candle
//! has no conv3d). Time is padded only in front, with zeros (Wan's `WanCausalConv3d`:
//! `2 * pad_t` frames, none behind), or with cached frames of the previous chunk.

use candle_core::{Module, Result, Tensor};

#[derive(Debug, Clone)]
pub struct CausalConv3d {
    /// One `[O, I, kh, kw]` kernel per temporal tap.
    taps: Vec<Tensor>,
    bias: Option<Tensor>,
    /// Frames of zero (or cache) padding in front.
    pub time_pad: usize,
    pub spatial_pad: usize,
    pub time_stride: usize,
    pub out_channels: usize,
}

impl CausalConv3d {
    /// `weight: [O, I, kt, kh, kw]` with `kh == kw`; `padding` is the module's
    /// `(pad_t, pad_hw)` as passed to `nn.Conv3d` (time padding becomes `2 * pad_t`).
    pub fn new(
        weight: &Tensor,
        bias: Option<Tensor>,
        padding: (usize, usize),
        time_stride: usize,
    ) -> Result<Self> {
        let (o, _i, kt, kh, kw) = weight.dims5()?;
        if kh != kw {
            candle_core::bail!("causal conv3d wants a square spatial kernel, got {kh}x{kw}");
        }
        let taps = (0..kt)
            .map(|k| weight.narrow(2, k, 1)?.squeeze(2)?.contiguous())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            taps,
            bias,
            time_pad: 2 * padding.0,
            spatial_pad: padding.1,
            time_stride,
            out_channels: o,
        })
    }

    pub fn kernel_t(&self) -> usize {
        self.taps.len()
    }

    /// `x: [B, C, T, H, W]`. With `cache` (`[B, C, Tc, H, W]`) and time padding, the
    /// cached frames replace that many zero frames in front.
    pub fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        let mut pad = self.time_pad;
        if let (Some(c), true) = (cache, pad > 0) {
            let ct = c.dim(2)?;
            x = Tensor::cat(&[c, &x], 2)?;
            pad = pad.saturating_sub(ct);
        }
        if pad > 0 {
            let (b, c, _, h, w) = x.dims5()?;
            let zeros = Tensor::zeros((b, c, pad, h, w), x.dtype(), x.device())?;
            x = Tensor::cat(&[&zeros, &x], 2)?;
        }
        let (b, c, t, h, w) = x.dims5()?;
        let kt = self.kernel_t();
        if t < kt {
            candle_core::bail!("causal conv3d: {t} frames for a {kt}-tap kernel");
        }
        let t_out = (t - kt) / self.time_stride + 1;
        // [B, T, C, H, W] so a run of frames is a batch of images.
        let xt = x.permute((0, 2, 1, 3, 4))?.contiguous()?;
        let mut acc: Option<Tensor> = None;
        for (k, tap) in self.taps.iter().enumerate() {
            let frames = if self.time_stride == 1 {
                xt.narrow(1, k, t_out)?
            } else {
                let idx: Vec<u32> = (0..t_out)
                    .map(|j| (k + j * self.time_stride) as u32)
                    .collect();
                let idx = Tensor::new(idx.as_slice(), x.device())?;
                xt.index_select(&idx, 1)?
            };
            let frames = frames.reshape((b * t_out, c, h, w))?;
            let y = frames.conv2d(tap, self.spatial_pad, 1, 1, 1)?;
            acc = Some(match acc {
                None => y,
                Some(a) => (a + y)?,
            });
        }
        let Some(mut y) = acc else {
            candle_core::bail!("causal conv3d without taps")
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.reshape((1, self.out_channels, 1, 1))?)?;
        }
        let (_, o, ho, wo) = y.dims4()?;
        y.reshape((b, t_out, o, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

/// A plain 2D convolution with bias over `[N, C, H, W]` (square kernel, stride 1).
#[derive(Debug, Clone)]
pub struct Conv2dSame {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub padding: usize,
}

impl Module for Conv2dSame {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, 1, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}
