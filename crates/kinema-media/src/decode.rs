//! A video file -> packed RGB24 frames, for checking what an encode produced.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{codec, format, frame, media, software::scaling};

use crate::frames::{alloc_frame, copy_rgb_out};
use crate::init::ensure_ffmpeg;
use crate::output_file::ffmpeg_url;
use crate::MediaError;

/// Every frame of a file's first video stream, as packed RGB24.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedVideo {
    pub width: u32,
    pub height: u32,
    /// FFmpeg's name of the stream's codec (`h264`, `hevc`, `av1`, `vp9`, `gif`, ...).
    pub codec: String,
    /// Each `width * height * 3` bytes, rows top to bottom, in display order.
    pub frames: Vec<Vec<u8>>,
}

/// Decodes the first video stream of `path` with FFmpeg's default decoder for
/// its codec and converts every frame to RGB24 with swscale (BT.601 limited
/// range, as Kinema's encoder tags its streams; chroma interpolated).
pub fn decode_rgb(path: &Path) -> Result<DecodedVideo, MediaError> {
    let url = ffmpeg_url(path)?;
    ensure_ffmpeg()?;
    let mut input = format::input(&url).map_err(MediaError::ffmpeg("opening the input file"))?;
    let stream =
        input
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| MediaError::NoVideoStream {
                path: path.to_path_buf(),
            })?;
    let stream_index = stream.index();
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|context| context.decoder().video())
        .map_err(MediaError::ffmpeg("opening the decoder"))?;
    // The codec's name, not the decoder's (`av1`, not `libdav1d`).
    let codec = decoder.id().name().to_string();

    let mut sink = RgbSink::default();
    for (stream, packet) in input.packets() {
        if stream.index() != stream_index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .map_err(MediaError::ffmpeg("sending a packet to the decoder"))?;
        sink.drain(&mut decoder)?;
    }
    decoder
        .send_eof()
        .map_err(MediaError::ffmpeg("flushing the decoder"))?;
    sink.drain(&mut decoder)?;

    let (width, height) = sink.size.unwrap_or((decoder.width(), decoder.height()));
    Ok(DecodedVideo {
        width,
        height,
        codec,
        frames: sink.frames,
    })
}

/// Converts decoded frames to RGB24, (re)building the converter when the
/// frame format or size changes.
#[derive(Default)]
struct RgbSink {
    scaler: Option<(scaling::Context, (format::Pixel, u32, u32))>,
    size: Option<(u32, u32)>,
    frames: Vec<Vec<u8>>,
}

impl RgbSink {
    fn drain(&mut self, decoder: &mut ffmpeg::decoder::Video) -> Result<(), MediaError> {
        let mut decoded = frame::Video::empty();
        loop {
            match decoder.receive_frame(&mut decoded) {
                Ok(()) => self.push(&decoded)?,
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(MediaError::Ffmpeg {
                        op: "receiving a frame from the decoder",
                        source,
                    })
                }
            }
        }
    }

    fn push(&mut self, decoded: &frame::Video) -> Result<(), MediaError> {
        let (format, width, height) = (decoded.format(), decoded.width(), decoded.height());
        let key = (format, width, height);
        let mut scaler = match self.scaler.take() {
            Some((scaler, built_for)) if built_for == key => scaler,
            _ => scaling::Context::get(
                format,
                width,
                height,
                format::Pixel::RGB24,
                width,
                height,
                scaling::Flags::BICUBIC
                    | scaling::Flags::ACCURATE_RND
                    | scaling::Flags::FULL_CHR_H_INT,
            )
            .map_err(MediaError::ffmpeg("creating the YUV -> RGB24 converter"))?,
        };
        let mut rgb = alloc_frame(format::Pixel::RGB24, width, height)?;
        let converted = scaler.run(decoded, &mut rgb);
        self.scaler = Some((scaler, key));
        converted.map_err(MediaError::ffmpeg("converting a frame to RGB24"))?;
        self.size = Some((width, height));
        self.frames.push(copy_rgb_out(&rgb));
        Ok(())
    }
}
