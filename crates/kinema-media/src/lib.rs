//! Video encoding, previews and poster images for Kinema.
//!
//! * [`encode_video`] turns packed RGB24 frames into a video file in the
//!   codec, container, pixel format and quality a [`VideoOutput`] names
//!   (H.264, H.265, AV1 or VP9; MP4 or WebM). [`VideoOutput::default()`] is
//!   the browser-safe H.264 yuv420p fast-start MP4 that [`encode_mp4`] writes.
//! * [`VideoOutput::validate`] and [`VideoOutput::check_available`] refuse
//!   what the linked FFmpeg cannot do, before anything is written;
//!   [`supported_outputs`] lists what it can.
//! * [`preview`] writes a small looping animated WebP or GIF.
//! * [`write_poster_png`] writes a single RGB24 frame as a PNG.
//! * [`decode_rgb`] and [`psnr_rgb`] read a video back and measure how close
//!   it is to its source.
//!
//! FFmpeg is initialised lazily, once per process, the first time it is
//! needed; its own console logging is limited to errors.

mod decode;
mod encode;
mod error;
mod fidelity;
mod frames;
mod init;
mod mp4;
mod output;
mod output_file;
mod poster;
mod preview;
mod spec;
mod video_writer;

pub use decode::{decode_rgb, DecodedVideo};
pub use encode::{encode_video, EncodedVideo};
pub use error::MediaError;
pub use fidelity::{psnr_rgb, Psnr};
pub use mp4::encode_mp4;
pub use output::{
    supported_outputs, Codec, Container, OutputOptionError, PixelFormat, Preset, SupportedOutput,
    VideoEncoder, VideoOutput,
};
pub use poster::write_poster_png;
pub use preview::{
    preview, EncodedPreview, PreviewFormat, PreviewOptionError, PreviewOptions, MAX_PREVIEW_FPS,
    MAX_PREVIEW_SIDE,
};
pub use spec::{VideoSpec, MAX_DIMENSION, MAX_FPS};
