//! RGB24 frames -> a video file in the codec, container and quality asked for.

use std::path::Path;

use crate::frames::check_frame;
use crate::output::support::resolve;
use crate::output_file::write_new_file;
use crate::video_writer::VideoWriter;
use crate::{MediaError, VideoOutput, VideoSpec};

/// What [`encode_video`] (or [`crate::encode_mp4`]) wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Number of frames encoded.
    pub frames: u32,
    /// Size of the file, in bytes.
    pub bytes: u64,
}

/// Encodes packed RGB24 frames (each exactly `width * height * 3` bytes, rows
/// top to bottom) as `output` asks, time base 1/fps, a key frame every two
/// seconds, written to `out`. MP4 files have their `moov` atom at the front.
///
/// Everything [`VideoOutput::validate`] checks, and the first frame's length,
/// is checked before `out` is touched: an encoder or pixel format this FFmpeg
/// lacks, a size the format or encoder cannot take, fps 0 or no frames give a
/// [`MediaError`] and no file. `out` is then created or truncated; if encoding
/// fails later (a frame of the wrong length, an FFmpeg error) it is removed
/// again.
pub fn encode_video<'a>(
    spec: &VideoSpec,
    output: &VideoOutput,
    frames: impl IntoIterator<Item = &'a [u8]>,
    out: &Path,
) -> Result<EncodedVideo, MediaError> {
    let resolved = resolve(output, Some(spec))?;
    let mut frames = frames.into_iter();
    let first = frames.next().ok_or(MediaError::NoFrames)?;
    check_frame(spec.width, spec.height, 0, first)?;

    let (frames, bytes) = write_new_file(out, |url| {
        let mut writer = VideoWriter::open(spec, output, &resolved, url)?;
        writer.push(first)?;
        for rgb in frames {
            writer.push(rgb)?;
        }
        writer.finish()
    })?;
    tracing::debug!(
        path = %out.display(),
        output = %output,
        encoder = resolved.encoder.name(),
        width = spec.width,
        height = spec.height,
        fps = spec.fps,
        frames,
        bytes,
        "encoded video"
    );
    Ok(EncodedVideo { frames, bytes })
}
