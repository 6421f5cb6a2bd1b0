//! The normalisations Wan uses, computed in f32 and cast back. LayerNorm and RMSNorm
//! run as candle's fused kernels (`candle_nn::ops`: one pass over each row on CPU and
//! CUDA, instead of a chain of element-wise ops and reductions); Wan's adaptive
//! modulation folds into the LayerNorm's affine parameters when it is the same for
//! every token.

use candle_core::{DType, Result, Tensor, D};

fn to_f32(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// LayerNorm over the last dimension in f32 (`FP32LayerNorm`), optionally affine.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let c = x.dim(D::Minus1)?;
    let device = x.device();
    let alpha = match weight {
        Some(w) => to_f32(w)?,
        None => Tensor::ones(c, DType::F32, device)?,
    };
    let beta = match bias {
        Some(b) => to_f32(b)?,
        None => Tensor::zeros(c, DType::F32, device)?,
    };
    fused_layer_norm(&to_f32(x)?, &alpha, &beta, eps)?.to_dtype(dtype)
}

/// `(x - mean) / sqrt(var + eps) * alpha + beta` per row of f32 `x`. On CPU a kernel of
/// its own with a two-pass variance (a row is in L1 by the second pass): candle's
/// computes `E[x^2] - E[x]^2`, which loses digits when a row's mean is large against
/// its spread, and the CPU path keeps f32 parity with the reference. Elsewhere candle's
/// kernel, whose one-pass error is far below bf16's rounding.
fn fused_layer_norm(x: &Tensor, alpha: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        let (alpha, beta) = (alpha.contiguous()?, beta.contiguous()?);
        x.apply_op3_no_bwd(&alpha, &beta, &cpu::LayerNormF32 { eps: eps as f32 })
    } else {
        candle_nn::ops::layer_norm(&x, alpha, beta, eps as f32)
    }
}

/// Wan's modulated norm, `LayerNorm(x) * (1 + scale) + shift` in f32 (no affine of its
/// own), cast to `dtype`. `x: [B, L, C]`; `shift`, `scale`: `[B, 1, C]` or `[B, L, C]`.
/// When `shift` and `scale` are one row for the whole tensor (`B = 1`, or every batch
/// item at the same timestep), the modulation is the fused kernel's affine part.
pub fn modulated_layer_norm(
    x: &Tensor,
    shift: &Tensor,
    scale: &Tensor,
    eps: f64,
    dtype: DType,
) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    let x = to_f32(x)?;
    let shift = to_f32(shift)?;
    let scale = to_f32(scale)?;
    if shift.elem_count() == c && scale.elem_count() == c {
        let alpha = (scale.flatten_all()? + 1.0)?;
        return fused_layer_norm(&x, &alpha, &shift.flatten_all()?, eps)?.to_dtype(dtype);
    }
    let ones = Tensor::ones(c, DType::F32, x.device())?;
    let zeros = Tensor::zeros(c, DType::F32, x.device())?;
    fused_layer_norm(&x, &ones, &zeros, eps)?
        .broadcast_mul(&(scale + 1.0)?)?
        .broadcast_add(&shift)?
        .to_dtype(dtype)
}

/// RMSNorm over the last dimension (`x / sqrt(mean(x^2) + eps) * weight`), in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = to_f32(x)?.contiguous()?;
    candle_nn::ops::rms_norm(&x, &to_f32(weight)?, eps as f32)?.to_dtype(dtype)
}

/// Wan-VAE's "RMS" norm: L2 normalisation over `dim` (as `F.normalize`, norm clamped
/// at 1e-12), times `sqrt(C)` times `gamma` (shaped to broadcast), in f32.
pub fn l2_channel_norm(x: &Tensor, gamma: &Tensor, dim: usize) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = to_f32(x)?;
    let c = x.dim(dim)? as f64;
    let norm = x
        .sqr()?
        .sum_keepdim(dim)?
        .sqrt()?
        .clamp(1e-12f64, f64::MAX)?;
    let y = (x.broadcast_div(&norm)? * c.sqrt())?;
    y.broadcast_mul(&to_f32(gamma)?)?.to_dtype(dtype)
}

mod cpu {
    use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
    use rayon::prelude::*;

    pub struct LayerNormF32 {
        pub eps: f32,
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
            _ => candle_core::bail!("layer norm: {what} must be contiguous f32"),
        }
    }

    impl CustomOp3 for LayerNormF32 {
        fn name(&self) -> &'static str {
            "layer-norm-f32-two-pass"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let x = slice(s1, l1, "x")?;
            let alpha = slice(s2, l2, "alpha")?;
            let beta = slice(s3, l3, "beta")?;
            let n = alpha.len();
            if n == 0 || beta.len() != n || x.len() % n != 0 {
                candle_core::bail!(
                    "layer norm: rows of {} with alpha {n}, beta {}",
                    x.len(),
                    beta.len()
                );
            }
            let mut out = vec![0f32; x.len()];
            let eps = self.eps;
            out.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .for_each(|(o, r)| {
                    let mean = r.iter().sum::<f32>() / n as f32;
                    let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, v), a), b) in o.iter_mut().zip(r).zip(alpha).zip(beta) {
                        *o = (v - mean) * inv * a + b;
                    }
                });
            Ok((CpuStorage::F32(out), l1.shape().clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn reference_layer_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::tiny::max_abs_diff(a, b).unwrap()
    }

    fn input(shape: (usize, usize, usize), offset: f64) -> Tensor {
        let dev = Device::Cpu;
        (Tensor::randn(0f32, 3.0, shape, &dev).unwrap() + offset).unwrap()
    }

    #[test]
    fn fused_layer_norm_matches_the_two_pass_formula() {
        // an offset mean, as the residual stream has, is where one-pass variance loses
        // precision first
        let x = input((2, 7, 96), 20.0);
        let w = Tensor::randn(1f32, 0.1, 96, &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.1, 96, &Device::Cpu).unwrap();
        let got = layer_norm(&x, Some(&w), Some(&b), 1e-6).unwrap();
        let want = reference_layer_norm(&x, 1e-6)
            .unwrap()
            .broadcast_mul(&w)
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
    }

    #[test]
    fn modulation_folded_into_the_norm_equals_the_broadcast_form() {
        let dev = Device::Cpu;
        let x = input((3, 5, 64), 0.5);
        for shape in [(1, 1, 64), (3, 1, 64), (3, 5, 64)] {
            let shift = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let scale = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let got = modulated_layer_norm(&x, &shift, &scale, 1e-6, DType::F32).unwrap();
            let want = reference_layer_norm(&x, 1e-6)
                .unwrap()
                .broadcast_mul(&(&scale + 1.0).unwrap())
                .unwrap()
                .broadcast_add(&shift)
                .unwrap();
            assert!(
                max_diff(&got, &want) < 2e-5,
                "{shape:?}: {}",
                max_diff(&got, &want)
            );
        }
    }

    #[test]
    fn fused_rms_norm_matches_the_formula() {
        let x = input((2, 9, 48), 1.0);
        let w = Tensor::randn(1f32, 0.2, 48, &Device::Cpu).unwrap();
        let got = rms_norm(&x, &w, 1e-6).unwrap();
        let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let want = x
            .broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    }
}
