//! Checking and copying packed RGB24 frames into FFmpeg frame buffers.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{format, frame};

use crate::spec::rgb_len;
use crate::MediaError;

/// Checks one frame's length against `width` x `height` RGB24.
pub(crate) fn check_frame(
    width: u32,
    height: u32,
    index: u64,
    rgb: &[u8],
) -> Result<(), MediaError> {
    let expected = rgb_len(width, height);
    if rgb.len() == expected {
        Ok(())
    } else {
        Err(MediaError::FrameLength {
            index,
            width,
            height,
            expected,
            actual: rgb.len(),
        })
    }
}

/// Allocates a frame buffer, reporting allocation failure instead of
/// handing back a frame without planes.
pub(crate) fn alloc_frame(
    pixel: format::Pixel,
    width: u32,
    height: u32,
) -> Result<frame::Video, MediaError> {
    let frame = frame::Video::new(pixel, width, height);
    if frame.planes() == 0 {
        return Err(MediaError::Ffmpeg {
            op: "allocating a frame buffer",
            source: ffmpeg::Error::Other {
                errno: ffmpeg::error::ENOMEM,
            },
        });
    }
    Ok(frame)
}

/// Copies packed RGB24 rows into an RGB24 frame whose rows may be padded.
/// `rgb` must already have been checked against the frame's size.
pub(crate) fn copy_rgb_into(rgb: &[u8], frame: &mut frame::Video) {
    let row = frame.width() as usize * 3;
    let stride = frame.stride(0);
    let plane = frame.data_mut(0);
    for (src, dst) in rgb.chunks_exact(row).zip(plane.chunks_mut(stride)) {
        dst[..row].copy_from_slice(src);
    }
}

/// Copies an RGB24 frame (rows possibly padded) out as packed rows.
pub(crate) fn copy_rgb_out(frame: &frame::Video) -> Vec<u8> {
    let row = frame.width() as usize * 3;
    let stride = frame.stride(0);
    let mut rgb = Vec::with_capacity(row * frame.height() as usize);
    for line in frame.data(0).chunks(stride).take(frame.height() as usize) {
        rgb.extend_from_slice(&line[..row]);
    }
    rgb
}
