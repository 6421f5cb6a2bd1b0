//! Flow-matching schedulers.

mod unipc;

pub use unipc::{UniPcConfig, UniPcMultistep};

/// Classifier-free guidance: `uncond + scale * (cond - uncond)`.
pub fn cfg_combine(
    cond: &candle_core::Tensor,
    uncond: &candle_core::Tensor,
    scale: f64,
) -> candle_core::Result<candle_core::Tensor> {
    uncond + ((cond - uncond)? * scale)?
}
