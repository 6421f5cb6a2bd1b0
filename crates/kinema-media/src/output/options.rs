//! [`VideoOutput`]: everything a caller chooses about the encoded file.

use super::{Codec, Container, OutputOptionError, PixelFormat, Preset, VideoEncoder};

/// What video file to produce: codec, container, pixel format, quality and
/// speed, and optionally which encoder to use.
///
/// [`VideoOutput::default()`] is H.264 yuv420p in a fast-start MP4 at CRF 20,
/// preset medium: what [`crate::encode_mp4`] writes, byte for byte.
///
/// The compact text form (see the crate README) is what `Display` writes and
/// `FromStr` reads, and what serde uses, so a models file or a job can carry
/// `"h265:crf=24:pix=yuv420p10le"` as a plain string:
///
/// ```
/// use kinema_media::{Codec, PixelFormat, VideoOutput};
/// let out: VideoOutput = "h265:crf=24:pix=yuv420p10le".parse().unwrap();
/// assert_eq!(out.codec, Codec::H265);
/// assert_eq!(out.pixel_format, PixelFormat::Yuv420p10le);
/// assert_eq!(out.to_string(), "h265:pix=yuv420p10le");
/// assert_eq!(out.mime(), "video/mp4");
/// ```
///
/// Building one field by field is allowed; [`VideoOutput::check`] (called by
/// every validation and encode) refuses inconsistent combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VideoOutput {
    pub codec: Codec,
    /// Must be one of [`Codec::containers`].
    pub container: Container,
    pub pixel_format: PixelFormat,
    /// Constant rate factor: lower is better quality and a larger file. Must
    /// lie in [`Codec::crf_range`].
    pub crf: u8,
    pub preset: Preset,
    /// `None`: the first of [`Codec::encoders`] that is present in this FFmpeg
    /// and can encode the request. `Some`: exactly this one (it must produce
    /// `codec`).
    pub encoder: Option<VideoEncoder>,
}

impl VideoOutput {
    /// `codec` with its defaults: default container, yuv420p, default CRF,
    /// preset medium, encoder chosen automatically.
    pub fn new(codec: Codec) -> Self {
        VideoOutput {
            codec,
            container: codec.default_container(),
            pixel_format: PixelFormat::Yuv420p,
            crf: codec.default_crf(),
            preset: Preset::Medium,
            encoder: None,
        }
    }

    /// MIME type of the file (from the container).
    pub fn mime(&self) -> &'static str {
        self.container.mime()
    }

    /// File extension of the file, without the dot (from the container).
    pub fn extension(&self) -> &'static str {
        self.container.extension()
    }

    /// Checks the choices fit together, whatever FFmpeg is linked: the
    /// container can hold the codec, the CRF is in the codec's range, and an
    /// explicit encoder produces the codec. See [`VideoOutput::validate`] for
    /// the checks against this FFmpeg and a frame size.
    pub fn check(&self) -> Result<(), OutputOptionError> {
        if !self.codec.containers().contains(&self.container) {
            return Err(OutputOptionError::ContainerMismatch {
                codec: self.codec.name(),
                container: self.container.name(),
                allowed: names(self.codec.containers().iter().map(|c| c.name())),
            });
        }
        let range = self.codec.crf_range();
        if !range.contains(&self.crf) {
            return Err(OutputOptionError::CrfOutOfRange {
                codec: self.codec.name(),
                crf: u32::from(self.crf),
                min: *range.start(),
                max: *range.end(),
            });
        }
        if let Some(encoder) = self.encoder {
            if encoder.codec() != self.codec {
                return Err(OutputOptionError::EncoderMismatch {
                    codec: self.codec.name(),
                    encoder: encoder.name(),
                    allowed: names(self.codec.encoders().iter().map(|e| e.name())),
                });
            }
        }
        Ok(())
    }
}

impl Default for VideoOutput {
    /// H.264 yuv420p MP4, CRF 20, preset medium: plays in every browser.
    fn default() -> Self {
        VideoOutput::new(Codec::H264)
    }
}

/// `a, b, c` for error messages.
pub(crate) fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
