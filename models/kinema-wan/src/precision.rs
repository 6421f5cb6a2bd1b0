//! The dtypes a Wan pipeline computes in.

use candle_core::DType;

/// `model` for the text and image encoders and the transformers; `vae` for the VAE.
/// The VAE defaults to f32 whatever the model's dtype, as the reference keeps it (Wan's
/// and diffusers' examples load `AutoencoderKLWan` in `torch.float32` beside a bf16
/// transformer): its decode is a small share of a job's time, and bf16 there shows as
/// banding in the frames. bf16 halves its activations when memory is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    pub model: DType,
    pub vae: DType,
}

impl Precision {
    pub fn new(model: DType) -> Self {
        Self {
            model,
            vae: DType::F32,
        }
    }

    pub fn with_vae(self, vae: DType) -> Self {
        Self { vae, ..self }
    }
}

impl From<DType> for Precision {
    fn from(model: DType) -> Self {
        Self::new(model)
    }
}
