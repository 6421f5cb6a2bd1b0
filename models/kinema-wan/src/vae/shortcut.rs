//! The Wan 2.2 VAE's parameter-free shortcuts around its residual down and up blocks:
//! `AvgDown3D` (space/time to channels, then a mean over channel groups) and `DupUp3D`
//! (channels repeated, then spread back over space and time).

use candle_core::Tensor;

use crate::error::{Result, WanError};

/// `AvgDown3D`: `[B, C_in, T, H, W]` -> `[B, C_out, T / f_t, H / f_s, W / f_s]`, the time
/// axis first zero-padded in front to a multiple of `f_t`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvgDown3D {
    pub(crate) out_channels: usize,
    pub(crate) factor_t: usize,
    pub(crate) factor_s: usize,
}

impl AvgDown3D {
    pub(crate) fn new(
        in_channels: usize,
        out_channels: usize,
        factor_t: usize,
        factor_s: usize,
    ) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if out_channels == 0 || !(in_channels * factor).is_multiple_of(out_channels) {
            return Err(WanError::Config {
                what: "vae".into(),
                message: format!(
                    "AvgDown3D: {in_channels} channels x factor {factor} not divisible by {out_channels}"
                ),
            });
        }
        Ok(Self {
            out_channels,
            factor_t,
            factor_s,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let t = x.dim(2)?;
        let pad_t = (ft - t % ft) % ft;
        let x = if pad_t > 0 {
            x.pad_with_zeros(2, pad_t, 0)?
        } else {
            x.clone()
        };
        let (b, c, t, h, w) = x.dims5()?;
        let (to, ho, wo) = (t / ft, h / fs, w / fs);
        let factor = ft * fs * fs;
        let group = c * factor / self.out_channels;
        // [B, C, T', ft, H', fs, W', fs] -> [B, C, ft, fs, fs, T', H', W']
        let x = x
            .reshape(vec![b, c, to, ft, ho, fs, wo, fs])?
            .permute(vec![0, 1, 3, 5, 7, 2, 4, 6])?
            .contiguous()?
            .reshape(vec![b, self.out_channels, group, to, ho, wo])?;
        Ok(x.mean(2)?)
    }
}

/// `DupUp3D`: `[B, C_in, T, H, W]` -> `[B, C_out, T f_t, H f_s, W f_s]`; on the first
/// chunk the first `f_t - 1` frames are dropped (the up-sampler's time conv is skipped
/// there, so the main path has one frame per input frame).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DupUp3D {
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) factor_t: usize,
    pub(crate) factor_s: usize,
}

impl DupUp3D {
    pub(crate) fn new(
        in_channels: usize,
        out_channels: usize,
        factor_t: usize,
        factor_s: usize,
    ) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if in_channels == 0 || !(out_channels * factor).is_multiple_of(in_channels) {
            return Err(WanError::Config {
                what: "vae".into(),
                message: format!(
                    "DupUp3D: {out_channels} channels x factor {factor} not divisible by {in_channels}"
                ),
            });
        }
        Ok(Self {
            in_channels,
            out_channels,
            factor_t,
            factor_s,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let (b, c, t, h, w) = x.dims5()?;
        let repeats = self.out_channels * ft * fs * fs / self.in_channels;
        // repeat_interleave over channels: each channel `repeats` times in a row
        let x = x
            .unsqueeze(2)?
            .broadcast_as(vec![b, c, repeats, t, h, w])?
            .contiguous()?
            .reshape(vec![b, self.out_channels, ft, fs, fs, t, h, w])?;
        // -> [B, C_out, T, ft, H, fs, W, fs]
        let x = x
            .permute(vec![0, 1, 5, 2, 6, 3, 7, 4])?
            .contiguous()?
            .reshape((b, self.out_channels, t * ft, h * fs, w * fs))?;
        if first_chunk && ft > 1 {
            Ok(x.narrow(2, ft - 1, t * ft - (ft - 1))?)
        } else {
            Ok(x)
        }
    }
}

/// `patchify`: `[B, C, T, H, W]` -> `[B, C p p, T, H / p, W / p]`, channel index
/// `c p p + p_w p + p_h` (the width offset before the height offset, as the reference).
pub(crate) fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, c, t, h, w) = x.dims5()?;
    if h % p != 0 || w % p != 0 {
        return Err(WanError::Input(format!(
            "height {h} and width {w} must be multiples of the VAE patch size {p}"
        )));
    }
    // [B, C, T, H', p_h, W', p_w] -> [B, C, p_w, p_h, T, H', W']
    Ok(x.reshape(vec![b, c, t, h / p, p, w / p, p])?
        .permute(vec![0, 1, 6, 4, 2, 3, 5])?
        .contiguous()?
        .reshape((b, c * p * p, t, h / p, w / p))?)
}

/// `unpatchify`, the inverse of [`patchify`].
pub(crate) fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, cp, t, h, w) = x.dims5()?;
    let c = cp / (p * p);
    // [B, C, p_w, p_h, T, H, W] -> [B, C, T, H, p_h, W, p_w]
    Ok(x.reshape(vec![b, c, p, p, t, h, w])?
        .permute(vec![0, 1, 4, 5, 3, 6, 2])?
        .contiguous()?
        .reshape((b, c, t, h * p, w * p))?)
}
