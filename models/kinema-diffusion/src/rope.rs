//! Wan's 3D rotary position embedding: the head dimension is split into a time part
//! and two equal spatial parts (h = w = 2 * (head_dim / 6), t = the rest), each with
//! 1D RoPE frequencies `1 / theta^(2j / dim)` computed in f64, and rotations applied to
//! interleaved pairs (0/1, 2/3, ...). The tables of the last few grids are kept, per
//! device and dtype, so a denoising loop builds them once instead of every step.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, DeviceLocation, Result, Tensor};

/// Grids whose tables are kept (a worker sees a handful of shapes at most).
const CACHED_GRIDS: usize = 4;

type GridKey = (usize, usize, usize, DeviceLocation, DType);

#[derive(Debug, Clone)]
pub struct Rope3d {
    pub t_dim: usize,
    pub h_dim: usize,
    pub w_dim: usize,
    pub max_seq_len: usize,
    /// Per axis, the `dim / 2` frequencies.
    freqs: [Vec<f64>; 3],
    /// Most recently used last.
    cache: Arc<Mutex<Vec<(GridKey, (Tensor, Tensor))>>>,
}

impl Rope3d {
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64) -> Self {
        let h_dim = 2 * (head_dim / 6);
        let w_dim = h_dim;
        let t_dim = head_dim - h_dim - w_dim;
        let axis = |dim: usize| -> Vec<f64> {
            (0..dim / 2)
                .map(|j| 1.0 / theta.powf((2 * j) as f64 / dim as f64))
                .collect()
        };
        Self {
            t_dim,
            h_dim,
            w_dim,
            max_seq_len,
            freqs: [axis(t_dim), axis(h_dim), axis(w_dim)],
            cache: Arc::default(),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.t_dim + self.h_dim + self.w_dim
    }

    /// [`Self::cos_sin`] in `dtype`, from the cache when this grid was asked for before.
    pub fn cos_sin_cached(
        &self,
        f: usize,
        h: usize,
        w: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let key = (f, h, w, device.location(), dtype);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(i);
            let tables = entry.1.clone();
            cache.push(entry);
            return Ok(tables);
        }
        let (cos, sin) = self.cos_sin(f, h, w, device)?;
        let tables = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        if cache.len() == CACHED_GRIDS {
            cache.remove(0);
        }
        cache.push((key, tables.clone()));
        Ok(tables)
    }

    /// `(cos, sin)`, each `[f * h * w, head_dim / 2]` f32, for the tokens of an
    /// `f x h x w` grid in row-major order (w fastest), as [`rope_interleaved`] wants.
    pub fn cos_sin(
        &self,
        f: usize,
        h: usize,
        w: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        if f > self.max_seq_len || h > self.max_seq_len || w > self.max_seq_len {
            candle_core::bail!(
                "rope grid {f}x{h}x{w} exceeds rope_max_seq_len {}",
                self.max_seq_len
            );
        }
        let half = self.head_dim() / 2;
        let n = f * h * w;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for fi in 0..f {
            for hi in 0..h {
                for wi in 0..w {
                    for (axis, pos) in [(0usize, fi), (1, hi), (2, wi)] {
                        for fr in &self.freqs[axis] {
                            let a = pos as f64 * fr;
                            cos.push(a.cos() as f32);
                            sin.push(a.sin() as f32);
                        }
                    }
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), device)?,
            Tensor::from_vec(sin, (n, half), device)?,
        ))
    }
}

/// Rotates interleaved pairs of `x: [B, H, L, D]` by the angles whose cosines and sines
/// are `cos, sin: [L, D / 2]`: `(x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)`.
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    candle_nn::rotary_emb::rope_i(
        &x.contiguous()?,
        &cos.to_dtype(dtype)?,
        &sin.to_dtype(dtype)?,
    )
}
