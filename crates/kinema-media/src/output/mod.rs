//! The choices a caller has about the encoded video, their text form, and
//! their validation against the linked FFmpeg.

mod codec;
mod container;
mod encoder;
mod options;
mod pixel;
mod preset;
pub(crate) mod support;
mod text;

pub use codec::Codec;
pub use container::Container;
pub use encoder::VideoEncoder;
pub use options::VideoOutput;
pub use pixel::PixelFormat;
pub use preset::Preset;
pub use support::{supported_outputs, SupportedOutput};
pub use text::OutputOptionError;
