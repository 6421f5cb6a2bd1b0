//! Video encoding and poster images for Kinema.
//!
//! * [`encode_mp4`] turns packed RGB24 frames into a web-playable MP4
//!   (H.264 through libx264, yuv420p, `moov` atom at the front).
//! * [`write_poster_png`] writes a single RGB24 frame as a PNG.
//!
//! FFmpeg is initialised lazily, once per process, the first time it is
//! needed; its own console logging is limited to errors.

mod error;
mod init;
mod mp4;
mod poster;
mod spec;

pub use error::MediaError;
pub use mp4::{encode_mp4, EncodedVideo};
pub use poster::write_poster_png;
pub use spec::{VideoSpec, MAX_DIMENSION, MAX_FPS};
