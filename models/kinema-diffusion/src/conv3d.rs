//! Causal 3D convolution built from 2D convolutions over the temporal taps (candle
//! has no conv3d). Time is padded only in front, with zeros (Wan's `WanCausalConv3d`:
//! `2 * pad_t` frames, none behind), or with cached frames of the previous chunk.

use candle_core::{Module, Result, Tensor};

/// Bytes of unfolded input a causal conv lets one conv2d call take (see
/// [`CausalConv3d::forward`]); at least one frame always goes.
pub const UNFOLD_BUDGET_BYTES: usize = 256 << 20;

fn x_dtype_size(x: &Tensor) -> usize {
    x.dtype().size_in_bytes()
}

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
        self.forward_budgeted(x, cache, UNFOLD_BUDGET_BYTES)
    }

    /// [`Self::forward`] with another bound on the unfolded input per conv2d call.
    pub fn forward_budgeted(
        &self,
        x: &Tensor,
        cache: Option<&Tensor>,
        unfold_budget_bytes: usize,
    ) -> Result<Tensor> {
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
        drop(x);
        // Output frames go through conv2d in groups small enough that conv2d's
        // unfolded input (C x k x k values per pixel) stays near the budget: at 480p the
        // VAE's last stage unfolds 1.4 GB per frame.
        let (kh, kw) = self.taps[0].dims4().map(|(_, _, kh, kw)| (kh, kw))?;
        let per_frame = b * c * kh * kw * h * w * x_dtype_size(&xt);
        let group = (unfold_budget_bytes / per_frame.max(1)).clamp(1, t_out);
        let mut outs = Vec::with_capacity(t_out.div_ceil(group));
        let mut j0 = 0;
        while j0 < t_out {
            let n = group.min(t_out - j0);
            let mut acc: Option<Tensor> = None;
            for (k, tap) in self.taps.iter().enumerate() {
                let frames = if self.time_stride == 1 {
                    xt.narrow(1, k + j0, n)?
                } else {
                    let idx: Vec<u32> = (j0..j0 + n)
                        .map(|j| (k + j * self.time_stride) as u32)
                        .collect();
                    let idx = Tensor::new(idx.as_slice(), xt.device())?;
                    xt.index_select(&idx, 1)?
                };
                let frames = frames.reshape((b * n, c, h, w))?;
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
            outs.push(y.reshape((b, n, o, ho, wo))?.permute((0, 2, 1, 3, 4))?);
            j0 += n;
        }
        if outs.len() == 1 {
            outs.remove(0).contiguous()
        } else {
            Tensor::cat(&outs, 2)?.contiguous()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn det(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v = crate::tiny::det_values(&format!("conv3d-test-{seed}"), n, 0.0, 1.0);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn frame_groups_do_not_change_the_result() {
        let w = det(&[4, 3, 3, 3, 3], 1);
        let bias = det(&[4], 2);
        let x = det(&[2, 3, 5, 6, 7], 3);
        let cache = det(&[2, 3, 2, 6, 7], 4);
        for stride in [1, 2] {
            let conv = CausalConv3d::new(&w, Some(bias.clone()), (1, 1), stride).unwrap();
            for c in [None, Some(&cache)] {
                let whole = conv.forward_budgeted(&x, c, usize::MAX).unwrap();
                let framewise = conv.forward_budgeted(&x, c, 1).unwrap();
                assert_eq!(whole.dims(), framewise.dims());
                let diff = (whole - framewise)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "stride {stride}: {diff}");
            }
        }
    }
}
