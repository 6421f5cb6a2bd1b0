//! One-time FFmpeg initialisation.

use std::sync::OnceLock;

use ffmpeg_next as ffmpeg;

use crate::MediaError;

static INIT: OnceLock<Result<(), ffmpeg::Error>> = OnceLock::new();

/// Initialises FFmpeg once per process and quiets its logging to errors.
pub(crate) fn ensure_ffmpeg() -> Result<(), MediaError> {
    INIT.get_or_init(|| {
        ffmpeg::init()?;
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
        Ok(())
    })
    .map_err(MediaError::ffmpeg("initialising ffmpeg"))
}
