//! Scaled dot-product attention computed in chunks of queries, so the score matrix
//! never exceeds a memory budget (a full f32 score matrix at Wan's 480p x 81 frames is
//! ~4.3 GB per head). Softmax runs in f32 whatever the input dtype.
//!
//! On CUDA (feature `cuda`), unbiased bf16/f16 attention with a head dimension of 64 or
//! 128 runs fused in cuDNN (kinema-cudnn: flash attention, no score matrix) instead.
//! `KINEMA_ATTENTION=chunked` in the environment (read at each call) or a zero score
//! budget forces the chunked path there, so the two can be compared on one GPU.

use candle_core::{DType, Device, Result, Tensor};

/// The environment variable that picks the CUDA attention kernel: `chunked` forces the
/// chunked path, anything else (or unset) lets fused attention run where it can.
pub const ATTENTION_ENV: &str = "KINEMA_ATTENTION";

/// Score-matrix memory allowed per chunk, in bytes, when the caller gives none.
pub const DEFAULT_SCORE_BUDGET_BYTES: usize = 256 << 20;

/// The CPU default: chunks below glibc's largest mmap threshold (32 MiB), so the
/// allocator reuses their buffers instead of mapping (and the kernel zeroing) fresh
/// pages for every chunk. Measured on one 1.3B block at 9,360 tokens: 20% less CPU
/// time than with 256 MiB chunks, the same peak memory.
pub const CPU_SCORE_BUDGET_BYTES: usize = 24 << 20;

/// How [`attention`] bounds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionBudget {
    /// Upper bound for one chunk's f32 score matrix `[B, H, chunk, Lk]`, in bytes.
    /// (Unbiased f32 attention on CPU, and fused attention on CUDA, materialise no
    /// scores and ignore it, unless it is 0, which forces the chunked path.)
    pub score_bytes: usize,
}

impl Default for AttentionBudget {
    fn default() -> Self {
        Self {
            score_bytes: DEFAULT_SCORE_BUDGET_BYTES,
        }
    }
}

impl AttentionBudget {
    /// The default budget for a device: [`CPU_SCORE_BUDGET_BYTES`] on CPU, else
    /// [`DEFAULT_SCORE_BUDGET_BYTES`].
    pub fn for_device(device: &Device) -> Self {
        Self {
            score_bytes: if device.is_cpu() {
                CPU_SCORE_BUDGET_BYTES
            } else {
                DEFAULT_SCORE_BUDGET_BYTES
            },
        }
    }

    /// Number of query rows per chunk for `batch_heads` (batch x heads) rows of `kv_len` keys.
    pub fn query_chunk(&self, batch_heads: usize, kv_len: usize) -> usize {
        let row = batch_heads.max(1) * kv_len.max(1) * 4;
        (self.score_bytes / row).max(1)
    }
}

/// `softmax(q k^T * scale + bias) v` over `q: [B, H, Lq, D]`, `k, v: [B, H, Lk, D]`.
/// `bias` (additive: relative-position bias, padding mask) must broadcast to
/// `[B, H, Lq, Lk]` and have size `Lq` or 1 in its third dimension. Returns
/// `[B, H, Lq, D]` in the dtype of `q`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    budget: AttentionBudget,
) -> Result<Tensor> {
    let (b, h, lq, d) = q.dims4()?;
    let lk = k.dim(2)?;
    let dtype = q.dtype();
    if bias.is_none() && q.device().is_cpu() && dtype == DType::F32 && budget.score_bytes != 0 {
        // No score matrix at all: blocks of queries against blocks of keys.
        let data = |t: &Tensor| t.contiguous()?.flatten_all()?.to_vec1::<f32>();
        let out = crate::flash_cpu::attention_f32(
            &data(q)?,
            &data(k)?,
            &data(v)?,
            (b * h, lq, lk, d),
            scale as f32,
        );
        return Tensor::from_vec(out, (b, h, lq, d), q.device());
    }
    #[cfg(feature = "cuda")]
    {
        if bias.is_none() && q.device().is_cuda() && budget.score_bytes != 0 && fused_allowed() {
            // None: not a shape/dtype/layout for cuDNN's fused kernel; chunked below.
            if let Some(out) = kinema_cudnn::sdpa(q, k, v, scale)? {
                return Ok(out);
            }
        }
    }
    // Scaling q (Lq x D) instead of the scores (Lq x Lk) saves a pass over every chunk.
    let q = if scale != 1.0 {
        (q * scale)?
    } else {
        q.clone()
    };
    let kt = k.transpose(2, 3)?.contiguous()?;
    let v = v.contiguous()?;
    let chunk = budget.query_chunk(b * h, lk).min(lq.max(1));
    let mut outs = Vec::with_capacity(lq.div_ceil(chunk));
    let mut start = 0;
    while start < lq {
        let len = chunk.min(lq - start);
        let qc = q.narrow(2, start, len)?.contiguous()?;
        let mut scores = qc.matmul(&kt)?.to_dtype(DType::F32)?;
        if let Some(bias) = bias {
            let bc = if bias.dim(2)? == 1 {
                bias.clone()
            } else {
                bias.narrow(2, start, len)?
            };
            scores = scores.broadcast_add(&bc.to_dtype(DType::F32)?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        drop(scores);
        outs.push(probs.matmul(&v)?);
        start += len;
    }
    if outs.len() == 1 {
        Ok(outs.remove(0))
    } else {
        Tensor::cat(&outs, 2)
    }
}

/// Whether [`ATTENTION_ENV`] allows fused attention. Read at every call (a lookup, next
/// to a kernel of milliseconds) so one process can compare both paths.
#[cfg(feature = "cuda")]
fn fused_allowed() -> bool {
    fused_allowed_by(std::env::var(ATTENTION_ENV).ok().as_deref())
}

/// [`ATTENTION_ENV`]'s value to a choice: only `chunked` turns fused attention off.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn fused_allowed_by(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some(v) if v.eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::fused_allowed_by;

    #[test]
    fn only_chunked_turns_fused_attention_off() {
        assert!(fused_allowed_by(None));
        assert!(fused_allowed_by(Some("")));
        assert!(fused_allowed_by(Some("fused")));
        assert!(!fused_allowed_by(Some("chunked")));
        assert!(!fused_allowed_by(Some(" Chunked ")));
    }
}
