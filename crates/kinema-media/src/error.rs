//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while encoding a video, a preview or a poster,
/// or decoding a video back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Width or height is zero, too large, or not what the pixel format or
    /// encoder needs (4:2:0 needs even sizes; some encoders have minimums).
    #[error("invalid video size {width}x{height}: {reason}")]
    InvalidSize {
        width: u32,
        height: u32,
        reason: &'static str,
    },

    /// The frame rate is zero or unreasonably large.
    #[error("invalid frame rate {fps}: must be between 1 and {max}")]
    InvalidFps { fps: u32, max: u32 },

    /// A frame buffer does not hold exactly `width * height * 3` bytes.
    #[error(
        "frame {index} is {actual} bytes, but a {width}x{height} RGB24 frame is {expected} bytes"
    )]
    FrameLength {
        /// Zero-based index of the offending frame.
        index: u64,
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },

    /// The frame iterator was empty.
    #[error("no frames to encode")]
    NoFrames,

    /// More frames than the frame counter can hold.
    #[error("too many frames (more than {max})")]
    TooManyFrames { max: u32 },

    /// The output path cannot be handed to FFmpeg (not UTF-8, or contains NUL).
    #[error("output path {path:?} cannot be used: {reason}")]
    UnsupportedPath { path: PathBuf, reason: &'static str },

    /// The output options do not fit together (or did not parse).
    #[error("invalid output: {0}")]
    InvalidOutput(#[from] crate::OutputOptionError),

    /// The preview options do not fit together (or did not parse).
    #[error("invalid preview: {0}")]
    InvalidPreview(#[from] crate::PreviewOptionError),

    /// The linked FFmpeg has no encoder for the codec (`encoder` lists the
    /// names looked for).
    #[error("this FFmpeg build has no {codec} encoder (looked for {encoder})")]
    EncoderUnavailable {
        codec: &'static str,
        encoder: String,
    },

    /// The encoder is present but cannot encode this pixel format.
    #[error("{encoder} in this FFmpeg build cannot encode {codec} in {pix_fmt}")]
    PixelFormatUnsupported {
        codec: &'static str,
        encoder: &'static str,
        pix_fmt: &'static str,
    },

    /// A file to decode has no video stream.
    #[error("{path:?} has no video stream")]
    NoVideoStream { path: PathBuf },

    /// Two frame sequences that should correspond differ in length.
    #[error("expected {expected} frames, got {actual}")]
    FrameCount { expected: usize, actual: usize },

    /// An FFmpeg call failed; `op` names the step.
    #[error("ffmpeg: {op} failed: {source}")]
    Ffmpeg {
        op: &'static str,
        #[source]
        source: ffmpeg_next::Error,
    },

    /// A filesystem operation failed.
    #[error("{op} {path:?} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The PNG encoder rejected the image.
    #[error("PNG encoding of {path:?} failed: {source}")]
    Png {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
}

impl MediaError {
    /// Builds a `map_err` closure that tags an FFmpeg error with the failed step.
    pub(crate) fn ffmpeg(op: &'static str) -> impl FnOnce(ffmpeg_next::Error) -> Self {
        move |source| MediaError::Ffmpeg { op, source }
    }

    /// Builds a `map_err` closure that tags an I/O error with the step and path.
    pub(crate) fn io<'p>(
        op: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'p {
        move |source| MediaError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
