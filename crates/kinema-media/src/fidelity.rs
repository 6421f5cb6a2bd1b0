//! Peak signal-to-noise ratio between original and decoded RGB24 frames.

use crate::frames::check_frame;
use crate::MediaError;

/// PSNR of a decoded clip against its source, over all RGB channels (8-bit,
/// peak 255), in decibels. `f64::INFINITY` where identical.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psnr {
    /// From the mean squared error over every sample of every frame.
    pub mean_db: f64,
    /// The lowest per-frame PSNR.
    pub worst_frame_db: f64,
}

/// Compares `decoded` with `reference`, frame by frame: both must hold the
/// same number of `width` x `height` packed RGB24 frames.
pub fn psnr_rgb<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    width: u32,
    height: u32,
    reference: &[A],
    decoded: &[B],
) -> Result<Psnr, MediaError> {
    if reference.len() != decoded.len() || reference.is_empty() {
        return Err(MediaError::FrameCount {
            expected: reference.len(),
            actual: decoded.len(),
        });
    }
    let mut total_error = 0f64;
    let mut total_samples = 0usize;
    let mut worst = f64::INFINITY;
    for (index, (a, b)) in reference.iter().zip(decoded).enumerate() {
        let (a, b) = (a.as_ref(), b.as_ref());
        let index = index as u64;
        check_frame(width, height, index, a)?;
        check_frame(width, height, index, b)?;
        let error: u64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2))
            .sum();
        worst = worst.min(db(error as f64, a.len()));
        total_error += error as f64;
        total_samples += a.len();
    }
    Ok(Psnr {
        mean_db: db(total_error, total_samples),
        worst_frame_db: worst,
    })
}

fn db(squared_error: f64, samples: usize) -> f64 {
    if squared_error == 0.0 {
        return f64::INFINITY;
    }
    let mse = squared_error / samples as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let a = [vec![100u8; 300]];
        assert_eq!(psnr_rgb(10, 10, &a, &a).unwrap().mean_db, f64::INFINITY);
        // Every sample off by 1: MSE 1, PSNR 20*log10(255) = 48.13 dB.
        let b = [vec![101u8; 300]];
        let p = psnr_rgb(10, 10, &a, &b).unwrap();
        assert!((p.mean_db - 48.1308).abs() < 1e-3, "{p:?}");
        // Two frames, one exact and one off by 16: worst is the second.
        let a2 = [vec![0u8; 30], vec![0u8; 30]];
        let b2 = [vec![0u8; 30], vec![16u8; 30]];
        let p = psnr_rgb(5, 2, &a2, &b2).unwrap();
        assert!((p.worst_frame_db - 10.0 * (65025.0f64 / 256.0).log10()).abs() < 1e-9);
        assert!((p.mean_db - 10.0 * (65025.0f64 / 128.0).log10()).abs() < 1e-9);
    }

    #[test]
    fn mismatches_are_errors() {
        let a = [vec![0u8; 3]];
        assert!(matches!(
            psnr_rgb(1, 1, &a, &[vec![0u8; 3], vec![0u8; 3]]),
            Err(MediaError::FrameCount {
                expected: 1,
                actual: 2
            })
        ));
        assert!(matches!(
            psnr_rgb(1, 1, &a, &[vec![0u8; 4]]),
            Err(MediaError::FrameLength {
                index: 0,
                expected: 3,
                actual: 4,
                ..
            })
        ));
    }
}
