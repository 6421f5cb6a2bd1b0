//! Animated previews (WebP or GIF): small, looping, for listings and chat.

mod options;
mod writer;

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{codec::Id, encoder};

use crate::frames::check_frame;
use crate::init::ensure_ffmpeg;
use crate::output_file::write_new_file;
use crate::{MediaError, VideoSpec};
pub use options::{
    PreviewFormat, PreviewOptionError, PreviewOptions, MAX_PREVIEW_FPS, MAX_PREVIEW_SIDE,
};
use writer::PreviewWriter;

/// What [`preview`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedPreview {
    /// Frames in the animation.
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    /// Every `frame_step`-th source frame was kept: the preview runs at
    /// `fps / frame_step` frames per second.
    pub frame_step: u32,
    /// Size of the file, in bytes.
    pub bytes: u64,
}

/// Writes an animated, endlessly looping preview of packed RGB24 frames (each
/// `width * height * 3` bytes) to `out`, scaled and thinned as `options` says
/// (see [`PreviewOptions`]).
///
/// The options, the spec, the encoder's presence and the first frame are
/// checked before `out` is touched; if encoding fails later the file is
/// removed again.
pub fn preview<'a>(
    spec: &VideoSpec,
    options: &PreviewOptions,
    frames: impl IntoIterator<Item = &'a [u8]>,
    out: &Path,
) -> Result<EncodedPreview, MediaError> {
    options.check()?;
    spec.check_geometry()?;
    ensure_ffmpeg()?;
    let codec = preview_encoder(options.format)?;
    let mut frames = frames.into_iter();
    let first = frames.next().ok_or(MediaError::NoFrames)?;
    check_frame(spec.width, spec.height, 0, first)?;

    let (width, height) = options.size_for(spec.width, spec.height);
    let frame_step = options.frame_step(spec.fps);
    let (count, bytes) = write_new_file(out, |url| {
        let mut writer = PreviewWriter::open(spec, options, codec, (width, height), url)?;
        writer.push(first)?;
        for rgb in frames {
            writer.push(rgb)?;
        }
        writer.finish()
    })?;
    tracing::debug!(
        path = %out.display(),
        preview = %options,
        width,
        height,
        frames = count,
        bytes,
        "encoded preview"
    );
    Ok(EncodedPreview {
        frames: count,
        width,
        height,
        frame_step,
        bytes,
    })
}

impl PreviewOptions {
    /// Checks the options and that this FFmpeg has the format's encoder, without
    /// writing anything (what a server does when a request names a preview).
    pub fn check_available(&self) -> Result<(), MediaError> {
        self.check()?;
        ensure_ffmpeg()?;
        preview_encoder(self.format).map(|_| ())
    }
}

/// The FFmpeg encoder for a preview format.
fn preview_encoder(format: PreviewFormat) -> Result<ffmpeg::Codec, MediaError> {
    let (name, id) = match format {
        PreviewFormat::Webp => ("libwebp_anim", Id::WEBP),
        PreviewFormat::Gif => ("gif", Id::GIF),
    };
    encoder::find_by_name(name)
        .filter(|codec| codec.is_video() && codec.id() == id)
        .ok_or_else(|| MediaError::EncoderUnavailable {
            codec: format.name(),
            encoder: name.to_string(),
        })
}
