//! GELU with the tanh approximation (`gelu_pytorch_tanh`, Wan's FFN and text
//! projection, umT5's gated GELU). candle's CPU kernel calls libm's scalar `tanhf` per
//! element on one thread (about a tenth of a 1.3B forward on CPU); here f32 on CPU runs
//! a rational approximation of tanh that the compiler vectorises (AVX2/FMA when the CPU
//! has them), in parallel. Other devices and dtypes use candle's kernel.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&GeluTanhF32)
    } else {
        x.gelu()
    }
}

struct GeluTanhF32;

/// Elements per parallel task: large enough to amortise rayon's hand-off.
const CHUNK: usize = 1 << 14;

impl CustomOp1 for GeluTanhF32 {
    fn name(&self) -> &'static str {
        "gelu-tanh-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("gelu-tanh-f32 wants a contiguous f32 tensor"),
        };
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| gelu_slice(s, o));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn gelu_slice(src: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { gelu_slice_avx2(src, out) };
        return;
    }
    gelu_slice_generic(src, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(src: &[f32], out: &mut [f32]) {
    gelu_slice_generic(src, out)
}

#[inline(always)]
fn gelu_slice_generic(src: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (o, &x) in out.iter_mut().zip(src) {
        let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
        *o = 0.5 * x * (1.0 + tanh_rational(u));
    }
}

/// tanh as an odd rational function, numerator of degree 13 over a denominator of
/// degree 6 in `x^2`, on `x` clamped to +-7.9053 (beyond it tanh rounds to +-1 in f32).
/// Branch-free so it vectorises; within a few ulp of `tanhf`.
#[inline(always)]
fn tanh_rational(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525_2e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = x2.mul_add(A13, A11);
    let p = x2.mul_add(p, A9);
    let p = x2.mul_add(p, A7);
    let p = x2.mul_add(p, A5);
    let p = x2.mul_add(p, A3);
    let p = x2.mul_add(p, A1);
    let p = x * p;
    let q = x2.mul_add(B6, B4);
    let q = x2.mul_add(q, B2);
    let q = x2.mul_add(q, B0);
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rational_tanh_is_within_a_few_ulp_of_f64_tanh() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let got = tanh_rational(x) as f64;
            let want = (x as f64).tanh();
            worst = worst.max((got - want).abs());
            x += 1.0 / 1024.0;
        }
        // f32 spacing near 1 is 6e-8
        assert!(worst < 3e-7, "max abs error {worst:e}");
    }

    #[test]
    fn gelu_matches_candles_scalar_kernel() {
        let x = Tensor::randn(0f32, 4.0, (3, 50_001), &Device::Cpu).unwrap();
        let got = gelu_tanh(&x).unwrap();
        let want = x.gelu().unwrap();
        let diff = crate::tiny::max_abs_diff(&got, &want).unwrap();
        assert!(diff < 2e-6, "{diff:e}");
        // a strided input is made contiguous first
        let t = Tensor::randn(0f32, 1.0, (40, 30), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let d = crate::tiny::max_abs_diff(&gelu_tanh(&t).unwrap(), &t.gelu().unwrap()).unwrap();
        assert!(d < 1e-6);
    }
}
