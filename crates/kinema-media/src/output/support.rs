//! Checking a [`VideoOutput`] against the linked FFmpeg (is the encoder there,
//! does it take the pixel format and frame size) and listing what it supports.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::encoder;

use super::options::names;
use super::{Codec, PixelFormat, VideoEncoder, VideoOutput};
use crate::init::ensure_ffmpeg;
use crate::{MediaError, VideoSpec};

/// An output whose encoder has been found and accepts the request.
pub(crate) struct Resolved {
    pub encoder: VideoEncoder,
    pub codec: ffmpeg::Codec,
}

impl VideoOutput {
    /// Checks this output against the linked FFmpeg, for any frame size:
    /// [`VideoOutput::check`], then that an encoder for the codec is present
    /// ([`MediaError::EncoderUnavailable`]) and takes the pixel format
    /// ([`MediaError::PixelFormatUnsupported`]). Returns the encoder that
    /// would be used (the first of [`crate::Codec::encoders`] that qualifies,
    /// unless one was named).
    pub fn check_available(&self) -> Result<VideoEncoder, MediaError> {
        resolve(self, None).map(|resolved| resolved.encoder)
    }

    /// Everything [`crate::encode_video`] checks before it creates a file,
    /// for a video of `spec`'s size and rate: [`VideoOutput::check_available`]
    /// plus the size rules of the pixel format and encoder (4:2:0 needs even
    /// sizes, libx265 even sizes of at least 16, libsvtav1 at least 64x64) and
    /// the rate. Meant for refusing a request at submission.
    pub fn validate(&self, spec: &VideoSpec) -> Result<VideoEncoder, MediaError> {
        resolve(self, Some(spec)).map(|resolved| resolved.encoder)
    }
}

/// Picks the encoder for `output` (and, with a spec, that frame size).
pub(crate) fn resolve(
    output: &VideoOutput,
    spec: Option<&VideoSpec>,
) -> Result<Resolved, MediaError> {
    output.check()?;
    if let Some(spec) = spec {
        spec.check_geometry()?;
    }
    ensure_ffmpeg()?;

    let named;
    let candidates: &[VideoEncoder] = match output.encoder {
        Some(encoder) => {
            named = [encoder];
            &named
        }
        None => output.codec.encoders(),
    };
    // Report why a present encoder refused, rather than that a later one is absent.
    let mut refusal = None;
    for &encoder in candidates {
        match try_encoder(encoder, output.pixel_format, spec) {
            Ok(codec) => return Ok(Resolved { encoder, codec }),
            Err(MediaError::EncoderUnavailable { .. }) => {}
            Err(err) => {
                refusal.get_or_insert(err);
            }
        }
    }
    Err(refusal.unwrap_or_else(|| MediaError::EncoderUnavailable {
        codec: output.codec.name(),
        encoder: names(candidates.iter().map(|e| e.name())),
    }))
}

/// Whether `encoder` is present and can take `pix` (and `spec`'s size).
fn try_encoder(
    encoder: VideoEncoder,
    pix: PixelFormat,
    spec: Option<&VideoSpec>,
) -> Result<ffmpeg::Codec, MediaError> {
    let codec = lookup(encoder.codec(), encoder.name())?;
    let supported = codec
        .video()
        .ok()
        .and_then(|video| video.formats())
        .is_some_and(|mut formats| formats.any(|format| format == pix.ffmpeg()));
    if !supported {
        return Err(MediaError::PixelFormatUnsupported {
            codec: encoder.codec().name(),
            encoder: encoder.name(),
            pix_fmt: pix.name(),
        });
    }
    if let Some(spec) = spec {
        if let Some(reason) = encoder.size_problem(pix, spec.width, spec.height) {
            return Err(MediaError::InvalidSize {
                width: spec.width,
                height: spec.height,
                reason,
            });
        }
    }
    Ok(codec)
}

/// Finds the encoder called `name`, checking it is a video encoder for `codec`.
pub(crate) fn lookup(codec: Codec, name: &str) -> Result<ffmpeg::Codec, MediaError> {
    encoder::find_by_name(name)
        .filter(|found| found.is_video() && found.id() == codec.id())
        .ok_or_else(|| MediaError::EncoderUnavailable {
            codec: codec.name(),
            encoder: name.to_string(),
        })
}

/// One output this FFmpeg can produce, and the encoder that produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedOutput {
    /// Codec defaults for CRF and preset; `encoder` is set only where the
    /// encoder is not the one chosen automatically.
    pub output: VideoOutput,
    pub encoder: VideoEncoder,
}

/// Every codec, container and pixel format combination the linked FFmpeg
/// can encode (for any size the encoder accepts), once per usable encoder:
/// e.g. `av1` (libsvtav1) and `av1:encoder=libaom-av1`. Empty if FFmpeg
/// cannot be initialised.
pub fn supported_outputs() -> Vec<SupportedOutput> {
    let mut supported = Vec::new();
    for codec in Codec::ALL {
        for &container in codec.containers() {
            for pixel_format in PixelFormat::ALL {
                let auto = VideoOutput {
                    container,
                    pixel_format,
                    ..VideoOutput::new(codec)
                };
                let chosen = auto.check_available().ok();
                if let Some(encoder) = chosen {
                    supported.push(SupportedOutput {
                        output: auto,
                        encoder,
                    });
                }
                for &encoder in codec.encoders() {
                    let named = VideoOutput {
                        encoder: Some(encoder),
                        ..auto
                    };
                    if Some(encoder) != chosen && named.check_available().is_ok() {
                        supported.push(SupportedOutput {
                            output: named,
                            encoder,
                        });
                    }
                }
            }
        }
    }
    supported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_encoder_is_a_typed_error() {
        match lookup(Codec::H264, "libkinema-does-not-exist") {
            Err(MediaError::EncoderUnavailable { codec, encoder }) => {
                assert_eq!(codec, "h264");
                assert_eq!(encoder, "libkinema-does-not-exist");
            }
            Err(other) => panic!("expected EncoderUnavailable, got {other:?}"),
            Ok(found) => panic!("found an encoder: {}", found.name()),
        }
        // An encoder that exists but makes another codec is no substitute.
        assert!(matches!(
            lookup(Codec::H265, "libx264"),
            Err(MediaError::EncoderUnavailable { .. })
        ));
        // An audio encoder is not a video encoder, even by name.
        assert!(lookup(Codec::H264, "aac").is_err());
    }
}
