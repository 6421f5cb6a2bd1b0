//! The encoder's latent distribution (diffusers' `DiagonalGaussianDistribution`).

use candle_core::Tensor;

use crate::error::{Result, WanError};
use crate::pipeline::seeded_noise;

/// A diagonal Gaussian per latent value: `mean` and `logvar` are `[B, z_dim, T, h, w]`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussianDistribution {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as the reference does.
    pub logvar: Tensor,
}

impl DiagonalGaussianDistribution {
    /// Splits the encoder's moments `[B, 2 z_dim, ...]` into mean and log variance.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let c = moments.dim(1)?;
        if c % 2 != 0 {
            return Err(WanError::Input(format!(
                "latent moments need an even channel count, got {c}"
            )));
        }
        Ok(Self {
            mean: moments.narrow(1, 0, c / 2)?,
            logvar: moments.narrow(1, c / 2, c / 2)?.clamp(-30f32, 20f32)?,
        })
    }

    /// `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// The most likely latents: the mean.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// `mean + std * noise` for given standard normal `noise` of the mean's shape.
    pub fn sample_with_noise(&self, noise: &Tensor) -> Result<Tensor> {
        let noise = noise.to_dtype(self.mean.dtype())?;
        Ok((&self.mean + (self.std()? * noise)?)?)
    }

    /// A sample with noise drawn from `seed` ([`seeded_noise`]; not torch's generator,
    /// so equal seeds do not give diffusers' sample).
    pub fn sample(&self, seed: u64) -> Result<Tensor> {
        let noise = seeded_noise(seed, self.mean.dims(), self.mean.device())?;
        self.sample_with_noise(&noise)
    }
}
