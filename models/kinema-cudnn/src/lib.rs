//! cuDNN's fused scaled dot-product attention (flash attention) for candle CUDA tensors.
//!
//! A small C++ shim (`csrc/sdpa.cpp`) builds cuDNN frontend graphs and caches their
//! execution plans per shape; [`sdpa`] runs it on candle's CUDA stream as a
//! `CustomOp3`. Without the `cuda` feature the crate has no attention, and
//! [`AVAILABLE`] is false. See README.md for versions, build and limits.

/// Whether this build has the cuDNN attention (the crate's `cuda` feature).
pub const AVAILABLE: bool = cfg!(feature = "cuda");

/// Head dimensions [`sdpa`] accepts (cuDNN's flash kernels cover more; these are the
/// ones the models use and the GPU check covers).
pub const HEAD_DIMS: [usize; 2] = [64, 128];

#[cfg(feature = "cuda")]
mod ffi;
#[cfg(feature = "cuda")]
mod op;

#[cfg(feature = "cuda")]
pub use op::sdpa;

/// A failure of the shim, with cuDNN's or CUDA's message.
#[derive(Debug, thiserror::Error)]
pub enum SdpaError {
    #[error("cuDNN attention: {0}")]
    Cudnn(String),
    #[error("cuDNN attention (CUDA): {0}")]
    Cuda(String),
    #[error("cuDNN attention: internal error: {0}")]
    Internal(String),
}
