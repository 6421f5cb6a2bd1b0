//! The normalisations Wan uses, computed in f32 and cast back.

use candle_core::{DType, Result, Tensor, D};

/// LayerNorm over the last dimension in f32 (`FP32LayerNorm`), optionally affine.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.to_dtype(DType::F32)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
    }
    y.to_dtype(dtype)
}

/// RMSNorm over the last dimension (`x / sqrt(mean(x^2) + eps) * weight`), in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    y.broadcast_mul(&weight.to_dtype(DType::F32)?)?
        .to_dtype(dtype)
}

/// Wan-VAE's "RMS" norm: L2 normalisation over `dim` (as `F.normalize`, norm clamped
/// at 1e-12), times `sqrt(C)` times `gamma` (shaped to broadcast), in f32.
pub fn l2_channel_norm(x: &Tensor, gamma: &Tensor, dim: usize) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let c = x.dim(dim)? as f64;
    let norm = x
        .sqr()?
        .sum_keepdim(dim)?
        .sqrt()?
        .clamp(1e-12f64, f64::MAX)?;
    let y = (x.broadcast_div(&norm)? * c.sqrt())?;
    y.broadcast_mul(&gamma.to_dtype(DType::F32)?)?
        .to_dtype(dtype)
}
