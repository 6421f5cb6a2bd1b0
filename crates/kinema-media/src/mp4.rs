//! RGB24 frames -> H.264 (libx264) yuv420p in a fast-start MP4.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{
    codec, encoder, format, frame, software::scaling, util::color, Dictionary, Packet, Rational,
};

use crate::init::ensure_ffmpeg;
use crate::{MediaError, VideoSpec};

/// x264 constant rate factor: visually near-transparent, compact output.
const CRF: &str = "20";
/// x264 speed/size trade-off.
const PRESET: &str = "medium";
/// Seconds between forced key frames.
const GOP_SECONDS: u32 = 2;

/// Extra x264 settings for this CPU.
///
/// x264's AVX-512 kernels (core 164, as Debian 12 ships it) read memory x264
/// allocated but never wrote: with them the bitstream depends on whatever the heap
/// held before, so the same frames encode to different bytes within one
/// long-running process (a fresh `ffmpeg` process gets zeroed pages and looks
/// deterministic). Every AVX-512 CPU also has AVX2, FMA3, BMI1/2 and LZCNT, so
/// capping x264 at its `AVX2` level there is safe; its output then equals x264's
/// plain-C output. Other CPUs keep x264's own detection.
fn x264_params() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some("asm=AVX2");
    }
    None
}

/// What [`encode_mp4`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Number of frames encoded.
    pub frames: u32,
    /// Size of the MP4 file, in bytes.
    pub bytes: u64,
}

/// Encodes packed RGB24 frames (each exactly `width * height * 3` bytes, rows
/// top to bottom) as MP4: H.264 (libx264), yuv420p, time base 1/fps, the
/// `moov` atom at the front (`movflags=+faststart`), written to `out`.
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
    spec.validate()?;
    let mut frames = frames.into_iter();
    let first = frames.next().ok_or(MediaError::NoFrames)?;
    check_frame(spec, 0, first)?;
    let url = ffmpeg_url(out)?;
    ensure_ffmpeg()?;

    // Create the file ourselves first: a missing directory or a permission
    // problem then surfaces as a typed I/O error naming the path.
    std::fs::File::create(out).map_err(MediaError::io("creating", out))?;

    let encoded = Mp4Writer::open(spec, &url).and_then(|mut writer| {
        writer.push(first)?;
        for rgb in frames {
            writer.push(rgb)?;
        }
        writer.finish()
        // `writer` (and with it the output file handle) is dropped here.
    });
    let result = encoded.and_then(|frames| {
        let bytes = std::fs::metadata(out)
            .map_err(MediaError::io("reading metadata of", out))?
            .len();
        Ok(EncodedVideo { frames, bytes })
    });
    match result {
        Ok(video) => {
            tracing::debug!(
                path = %out.display(),
                width = spec.width,
                height = spec.height,
                fps = spec.fps,
                frames = video.frames,
                bytes = video.bytes,
                "encoded mp4"
            );
            Ok(video)
        }
        Err(err) => {
            // Best effort: do not leave a truncated, unplayable file behind.
            let _ = std::fs::remove_file(out);
            Err(err)
        }
    }
}

/// Checks one frame's length against the spec.
fn check_frame(spec: &VideoSpec, index: u64, rgb: &[u8]) -> Result<(), MediaError> {
    let expected = spec.frame_len();
    if rgb.len() == expected {
        Ok(())
    } else {
        Err(MediaError::FrameLength {
            index,
            width: spec.width,
            height: spec.height,
            expected,
            actual: rgb.len(),
        })
    }
}

/// Turns a filesystem path into an FFmpeg URL that always means "this local
/// file" (a bare `pipe:1` or `http:x` would otherwise select a protocol).
fn ffmpeg_url(out: &Path) -> Result<String, MediaError> {
    let unsupported = |reason| MediaError::UnsupportedPath {
        path: out.to_path_buf(),
        reason,
    };
    let path = out.to_str().ok_or_else(|| unsupported("not valid UTF-8"))?;
    if path.is_empty() {
        return Err(unsupported("empty path"));
    }
    if path.contains('\0') {
        return Err(unsupported("contains a NUL byte"));
    }
    Ok(format!("file:{path}"))
}

/// An open MP4 muxer with its encoder, scaler and reusable frame buffers.
struct Mp4Writer {
    spec: VideoSpec,
    output: format::context::Output,
    encoder: encoder::video::Encoder,
    scaler: scaling::Context,
    rgb: frame::Video,
    yuv: frame::Video,
    packet: Packet,
    stream_index: usize,
    encoder_time_base: Rational,
    stream_time_base: Rational,
    frames: u32,
}

impl Mp4Writer {
    fn open(spec: &VideoSpec, url: &str) -> Result<Self, MediaError> {
        let width = spec.width;
        let height = spec.height;
        // `validate` capped fps at MAX_FPS, so it fits an i32.
        let fps = i32::try_from(spec.fps).map_err(|_| MediaError::InvalidFps {
            fps: spec.fps,
            max: crate::MAX_FPS,
        })?;
        let time_base = Rational::new(1, fps);
        let frame_rate = Rational::new(fps, 1);

        let codec = encoder::find_by_name("libx264")
            .or_else(|| encoder::find(codec::Id::H264))
            .ok_or(MediaError::EncoderNotFound)?;
        let is_x264 = codec.name() == "libx264";

        let mut output =
            format::output_as(url, "mp4").map_err(MediaError::ffmpeg("opening the mp4 output"))?;
        let global_header = output
            .format()
            .flags()
            .contains(format::Flags::GLOBAL_HEADER);

        let mut video = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(MediaError::ffmpeg("creating the H.264 encoder context"))?;
        video.set_width(width);
        video.set_height(height);
        video.set_format(format::Pixel::YUV420P);
        video.set_time_base(time_base);
        video.set_frame_rate(Some(frame_rate));
        video.set_gop(spec.fps.saturating_mul(GOP_SECONDS));
        // swscale converts RGB with BT.601 coefficients into limited range;
        // say so in the bitstream so players convert back the same way.
        video.set_colorspace(color::Space::SMPTE170M);
        video.set_color_range(color::Range::MPEG);
        if global_header {
            video.set_flags(codec::Flags::GLOBAL_HEADER);
        }

        let mut options = Dictionary::new();
        options.set("color_primaries", "smpte170m");
        options.set("color_trc", "smpte170m");
        if is_x264 {
            options.set("preset", PRESET);
            options.set("crf", CRF);
            if let Some(params) = x264_params() {
                options.set("x264-params", params);
            }
        }
        let encoder = video
            .open_with(options)
            .map_err(MediaError::ffmpeg("opening the H.264 encoder"))?;

        let stream_index = {
            let mut stream = output
                .add_stream(codec)
                .map_err(MediaError::ffmpeg("adding the video stream"))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(time_base);
            stream.set_rate(frame_rate);
            stream.set_avg_frame_rate(frame_rate);
            stream.index()
        };

        let mut muxer_options = Dictionary::new();
        muxer_options.set("movflags", "+faststart");
        {
            let unused = output
                .write_header_with(muxer_options)
                .map_err(MediaError::ffmpeg("writing the mp4 header"))?;
            for (key, value) in unused.iter() {
                tracing::warn!(key, value, "mp4 muxer ignored an option");
            }
        }
        // The muxer may pick its own time base for the stream.
        let stream_time_base = output
            .stream(stream_index)
            .map(|stream| stream.time_base())
            .ok_or(MediaError::Ffmpeg {
                op: "looking up the video stream",
                source: ffmpeg::Error::StreamNotFound,
            })?;

        let scaler = scaling::Context::get(
            format::Pixel::RGB24,
            width,
            height,
            format::Pixel::YUV420P,
            width,
            height,
            scaling::Flags::BILINEAR | scaling::Flags::ACCURATE_RND,
        )
        .map_err(MediaError::ffmpeg(
            "creating the RGB24 -> YUV420P converter",
        ))?;

        Ok(Mp4Writer {
            spec: *spec,
            output,
            encoder_time_base: encoder.time_base(),
            encoder,
            scaler,
            rgb: alloc_frame(format::Pixel::RGB24, width, height)?,
            yuv: alloc_frame(format::Pixel::YUV420P, width, height)?,
            packet: Packet::empty(),
            stream_index,
            stream_time_base,
            frames: 0,
        })
    }

    /// Converts and encodes one RGB24 frame, writing any packets that are ready.
    fn push(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        check_frame(&self.spec, u64::from(self.frames), rgb)?;
        if self.frames == u32::MAX {
            return Err(MediaError::TooManyFrames { max: u32::MAX });
        }

        // Copy rows into the (possibly padded) RGB frame.
        let row = self.spec.width as usize * 3;
        let stride = self.rgb.stride(0);
        let plane = self.rgb.data_mut(0);
        for (src, dst) in rgb.chunks_exact(row).zip(plane.chunks_mut(stride)) {
            dst[..row].copy_from_slice(src);
        }

        // The encoder may still hold a reference to the previous frame's
        // buffer; make sure we scale into memory that is ours alone.
        // SAFETY: `self.yuv` wraps a valid, allocated AVFrame.
        let ret = unsafe { ffmpeg::ffi::av_frame_make_writable(self.yuv.as_mut_ptr()) };
        if ret < 0 {
            return Err(MediaError::Ffmpeg {
                op: "making the YUV frame writable",
                source: ffmpeg::Error::from(ret),
            });
        }
        self.scaler
            .run(&self.rgb, &mut self.yuv)
            .map_err(MediaError::ffmpeg("converting RGB24 to YUV420P"))?;
        self.yuv.set_pts(Some(i64::from(self.frames)));

        self.encoder
            .send_frame(&self.yuv)
            .map_err(MediaError::ffmpeg("sending a frame to the encoder"))?;
        self.frames += 1;
        self.write_ready_packets()
    }

    /// Moves every packet the encoder has ready into the muxer.
    fn write_ready_packets(&mut self) -> Result<(), MediaError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    self.packet.set_stream(self.stream_index);
                    self.packet
                        .rescale_ts(self.encoder_time_base, self.stream_time_base);
                    self.packet.set_position(-1);
                    self.packet
                        .write_interleaved(&mut self.output)
                        .map_err(MediaError::ffmpeg("writing a packet"))?;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(MediaError::Ffmpeg {
                        op: "receiving a packet from the encoder",
                        source,
                    })
                }
            }
        }
    }

    /// Flushes the encoder, writes the trailer and returns the frame count.
    fn finish(mut self) -> Result<u32, MediaError> {
        self.encoder
            .send_eof()
            .map_err(MediaError::ffmpeg("flushing the encoder"))?;
        self.write_ready_packets()?;
        self.output
            .write_trailer()
            .map_err(MediaError::ffmpeg("writing the mp4 trailer"))?;
        Ok(self.frames)
    }
}

/// Allocates a frame buffer, reporting allocation failure instead of
/// handing back a frame without planes.
fn alloc_frame(pixel: format::Pixel, width: u32, height: u32) -> Result<frame::Video, MediaError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_always_local_files() {
        assert_eq!(
            ffmpeg_url(Path::new("pipe:1")).unwrap(),
            "file:pipe:1".to_string()
        );
        assert_eq!(
            ffmpeg_url(Path::new("/tmp/a b.mp4")).unwrap(),
            "file:/tmp/a b.mp4".to_string()
        );
        assert!(matches!(
            ffmpeg_url(Path::new("")),
            Err(MediaError::UnsupportedPath { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.mp4"));
        assert!(matches!(
            ffmpeg_url(path),
            Err(MediaError::UnsupportedPath { .. })
        ));
    }
}
