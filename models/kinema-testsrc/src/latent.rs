//! The 1/8-resolution "latent": seeded noise, the procedural target it is denoised
//! toward, and the denoising step itself.

use std::f64::consts::TAU;

use crate::prompt::PromptEncoding;
use crate::rng::SplitMix64;

/// Pixels per latent cell along each axis.
pub(crate) const LATENT_SCALE: usize = 8;
/// Latent channels (one per output colour channel).
pub(crate) const CHANNELS: usize = 3;

/// Stream separators, so noise and target draw from unrelated sequences.
const NOISE_STREAM: u64 = 0x6E6F_6973_6500_0001;
const TARGET_STREAM: u64 = 0x7461_7267_6574_0002;

/// A latent's shape, `[frames][height][width][CHANNELS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LatentShape {
    pub(crate) frames: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
}

impl LatentShape {
    /// The latent for a video of this size: 1/8 resolution, rounded up.
    pub(crate) fn for_video(frames: usize, height: usize, width: usize) -> Self {
        Self {
            frames,
            height: height.div_ceil(LATENT_SCALE),
            width: width.div_ceil(LATENT_SCALE),
        }
    }

    pub(crate) fn frame_len(&self) -> usize {
        self.height * self.width * CHANNELS
    }

    pub(crate) fn len(&self) -> usize {
        self.frames * self.frame_len()
    }
}

/// Standard-normal noise determined by `seed`.
pub(crate) fn noise(shape: LatentShape, seed: u64) -> Vec<f32> {
    let len = shape.len();
    let mut rng = SplitMix64::new(seed ^ NOISE_STREAM);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let (a, b) = rng.gaussian_pair();
        out.push(a);
        out.push(b);
    }
    out.truncate(len);
    out
}

/// One travelling sine wave of the target field.
struct Wave {
    freq_u: f64,
    freq_v: f64,
    phase: f64,
    speed: f64,
}

impl Wave {
    fn random(rng: &mut SplitMix64) -> Self {
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        Self {
            freq_u: rng.range(0.5, 2.5),
            freq_v: sign * rng.range(0.5, 2.5),
            phase: rng.range(0.0, TAU),
            speed: rng.range(0.02, 0.08) * TAU,
        }
    }

    fn at(&self, u: f64, v: f64, frame: f64) -> f64 {
        (TAU * (self.freq_u * u + self.freq_v * v) + self.phase + self.speed * frame).sin()
    }
}

/// The procedural target: per channel, two slow travelling waves, in `[0, 1]`.
/// Depends on the seed and the prompt digest.
pub(crate) fn target(shape: LatentShape, seed: u64, encoding: &PromptEncoding) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed ^ encoding.seed_bits() ^ TARGET_STREAM);
    let waves: Vec<[Wave; 2]> = (0..CHANNELS)
        .map(|_| [Wave::random(&mut rng), Wave::random(&mut rng)])
        .collect();
    let mut out = Vec::with_capacity(shape.len());
    for f in 0..shape.frames {
        let frame = f as f64;
        for y in 0..shape.height {
            let v = (y as f64 + 0.5) / shape.height as f64;
            for x in 0..shape.width {
                let u = (x as f64 + 0.5) / shape.width as f64;
                for [a, b] in &waves {
                    let value = 0.5 + 0.25 * (a.at(u, v, frame) + b.at(u, v, frame));
                    out.push(value.clamp(0.0, 1.0) as f32);
                }
            }
        }
    }
    out
}

/// One denoising step: moves `x` a `1/remaining` share of the way to `target`, so the
/// step with `remaining == 1` lands on `target` exactly.
pub(crate) fn step_toward(x: &mut [f32], target: &[f32], remaining: u32) {
    debug_assert_eq!(x.len(), target.len());
    if remaining <= 1 {
        x.copy_from_slice(target);
        return;
    }
    let remaining = remaining as f32;
    for (xi, &ti) in x.iter_mut().zip(target) {
        *xi += (ti - *xi) / remaining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc() -> PromptEncoding {
        PromptEncoding::new("a test", "")
    }

    #[test]
    fn shape_rounds_up() {
        let s = LatentShape::for_video(3, 17, 832);
        assert_eq!((s.frames, s.height, s.width), (3, 3, 104));
        assert_eq!(s.len(), 3 * 3 * 104 * 3);
    }

    #[test]
    fn noise_and_target_have_the_shape_and_are_deterministic() {
        let s = LatentShape::for_video(2, 40, 24);
        let n = noise(s, 5);
        assert_eq!(n.len(), s.len());
        assert_eq!(n, noise(s, 5));
        assert_ne!(n, noise(s, 6));
        let t = target(s, 5, &enc());
        assert_eq!(t.len(), s.len());
        assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(t, target(s, 5, &enc()));
        assert_ne!(t, target(s, 6, &enc()));
        assert_ne!(t, target(s, 5, &PromptEncoding::new("other", "")));
    }

    #[test]
    fn steps_converge_exactly_on_target() {
        let s = LatentShape::for_video(1, 16, 16);
        let mut x = noise(s, 1);
        let t = target(s, 1, &enc());
        let steps = 7;
        let mut last_gap = f32::INFINITY;
        for i in 0..steps {
            step_toward(&mut x, &t, steps - i);
            let gap = x
                .iter()
                .zip(&t)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(gap < last_gap || gap == 0.0);
            last_gap = gap;
        }
        assert_eq!(x, t);
    }
}
