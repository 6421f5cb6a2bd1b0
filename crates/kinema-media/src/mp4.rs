//! The browser-safe default: RGB24 frames -> H.264 (libx264) yuv420p in a
//! fast-start MP4.

use std::path::Path;

use crate::{encode_video, EncodedVideo, MediaError, VideoOutput, VideoSpec};

/// Encodes packed RGB24 frames (each exactly `width * height * 3` bytes, rows
/// top to bottom) as MP4: H.264 (libx264), yuv420p, CRF 20, preset medium,
/// time base 1/fps, the `moov` atom at the front (`movflags=+faststart`),
/// written to `out`. The same as [`encode_video`] with
/// [`VideoOutput::default()`].
///
/// `out` is created or truncated; if encoding fails it is removed again.
/// The spec and every frame are validated: odd or zero sizes, fps 0, a frame
/// of the wrong length or no frames at all give a [`MediaError`], never a
/// panic.
pub fn encode_mp4<'a>(
    spec: &VideoSpec,
    frames: impl IntoIterator<Item = &'a [u8]>,
    out: &Path,
) -> Result<EncodedVideo, MediaError> {
    encode_video(spec, &VideoOutput::default(), frames, out)
}
