//! Video geometry and rate, and their validation.

use crate::MediaError;

/// Largest accepted width or height, in pixels.
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest accepted frame rate, in frames per second.
pub const MAX_FPS: u32 = 1_000;

/// Size and frame rate of a video made of packed RGB24 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl VideoSpec {
    /// Checks that this spec can be encoded as H.264 yuv420p: width and height
    /// non-zero, even and at most [`MAX_DIMENSION`]; fps in `1..=MAX_FPS`.
    ///
    /// Other outputs have their own size rules: see
    /// [`crate::VideoOutput::validate`].
    pub fn validate(&self) -> Result<(), MediaError> {
        self.check_geometry()?;
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(MediaError::InvalidSize {
                width: self.width,
                height: self.height,
                reason: "H.264 yuv420p needs even width and height; resize or pad the frames",
            });
        }
        Ok(())
    }

    /// Checks what every output needs: width and height non-zero and at most
    /// [`MAX_DIMENSION`]; fps in `1..=MAX_FPS`.
    pub(crate) fn check_geometry(&self) -> Result<(), MediaError> {
        check_size(self.width, self.height)?;
        if self.fps == 0 || self.fps > MAX_FPS {
            return Err(MediaError::InvalidFps {
                fps: self.fps,
                max: MAX_FPS,
            });
        }
        Ok(())
    }

    /// Bytes in one packed RGB24 frame (`width * height * 3`).
    pub fn frame_len(&self) -> usize {
        rgb_len(self.width, self.height)
    }
}

/// Checks width and height are non-zero and at most [`MAX_DIMENSION`].
pub(crate) fn check_size(width: u32, height: u32) -> Result<(), MediaError> {
    let reason = if width == 0 || height == 0 {
        "width and height must be non-zero"
    } else if width > MAX_DIMENSION || height > MAX_DIMENSION {
        "width and height must be at most 16384"
    } else {
        return Ok(());
    };
    Err(MediaError::InvalidSize {
        width,
        height,
        reason,
    })
}

/// Bytes in a packed RGB24 image; saturates instead of overflowing.
pub(crate) fn rgb_len(width: u32, height: u32) -> usize {
    (width as usize)
        .saturating_mul(height as usize)
        .saturating_mul(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, height: u32, fps: u32) -> VideoSpec {
        VideoSpec { width, height, fps }
    }

    #[test]
    fn accepts_even_sizes() {
        assert!(spec(64, 48, 8).validate().is_ok());
        assert!(spec(2, 2, 1).validate().is_ok());
        assert!(spec(MAX_DIMENSION, 2, MAX_FPS).validate().is_ok());
        assert_eq!(spec(64, 48, 8).frame_len(), 64 * 48 * 3);
    }

    #[test]
    fn rejects_bad_specs() {
        for s in [
            spec(0, 48, 8),
            spec(64, 0, 8),
            spec(63, 48, 8),
            spec(64, 47, 8),
            spec(MAX_DIMENSION + 2, 48, 8),
        ] {
            assert!(
                matches!(s.validate(), Err(MediaError::InvalidSize { .. })),
                "{s:?}"
            );
        }
        for fps in [0, MAX_FPS + 1] {
            assert!(matches!(
                spec(64, 48, fps).validate(),
                Err(MediaError::InvalidFps { .. })
            ));
        }
    }
}
