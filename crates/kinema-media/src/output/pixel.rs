//! The pixel formats a video may be stored in, and the frame sizes each allows.

use ffmpeg_next::format::Pixel;

/// How the encoded picture stores colour: chroma resolution and bit depth.
///
/// The names are FFmpeg's. Frames always arrive as 8-bit RGB and are converted
/// (BT.601, limited range) to this format before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 8-bit, chroma at half width and half height. Plays everywhere; needs an
    /// even width and height.
    Yuv420p,
    /// 8-bit, full-resolution chroma: sharper colour edges, larger files, few
    /// hardware decoders. Any width and height (encoder permitting).
    Yuv444p,
    /// 10-bit 4:2:0: smoother gradients (less banding). Even width and height.
    Yuv420p10le,
    /// 10-bit 4:4:4. Any width and height (encoder permitting).
    Yuv444p10le,
}

impl PixelFormat {
    /// Every pixel format Kinema can produce.
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::Yuv420p,
        PixelFormat::Yuv444p,
        PixelFormat::Yuv420p10le,
        PixelFormat::Yuv444p10le,
    ];

    /// FFmpeg's name for it (`yuv420p`, `yuv444p10le`, ...), as ffprobe shows it.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuv420p => "yuv420p",
            PixelFormat::Yuv444p => "yuv444p",
            PixelFormat::Yuv420p10le => "yuv420p10le",
            PixelFormat::Yuv444p10le => "yuv444p10le",
        }
    }

    /// Parses FFmpeg's name; the 10-bit ones also without the `le` suffix.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "yuv420p" => PixelFormat::Yuv420p,
            "yuv444p" => PixelFormat::Yuv444p,
            "yuv420p10le" | "yuv420p10" => PixelFormat::Yuv420p10le,
            "yuv444p10le" | "yuv444p10" => PixelFormat::Yuv444p10le,
            _ => return None,
        })
    }

    /// Bits per sample: 8 or 10.
    pub fn bit_depth(self) -> u8 {
        match self {
            PixelFormat::Yuv420p | PixelFormat::Yuv444p => 8,
            PixelFormat::Yuv420p10le | PixelFormat::Yuv444p10le => 10,
        }
    }

    /// Whether chroma is stored at half width and height (4:2:0), which needs an
    /// even width and height.
    pub fn subsamples_chroma(self) -> bool {
        matches!(self, PixelFormat::Yuv420p | PixelFormat::Yuv420p10le)
    }

    pub(crate) fn ffmpeg(self) -> Pixel {
        match self {
            PixelFormat::Yuv420p => Pixel::YUV420P,
            PixelFormat::Yuv444p => Pixel::YUV444P,
            PixelFormat::Yuv420p10le => Pixel::YUV420P10LE,
            PixelFormat::Yuv444p10le => Pixel::YUV444P10LE,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for pix in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_name(pix.name()), Some(pix));
        }
        assert_eq!(
            PixelFormat::from_name("yuv420p10"),
            Some(PixelFormat::Yuv420p10le)
        );
        assert_eq!(PixelFormat::from_name("rgb24"), None);
    }
}
