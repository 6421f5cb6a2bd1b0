//! An open muxer with its encoder: RGB24 frames in, a video file out.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{
    codec, encoder, format, frame, software::scaling, util::color, Dictionary, Packet, Rational,
};

use crate::frames::{alloc_frame, check_frame, copy_rgb_into};
use crate::output::support::Resolved;
use crate::{Codec, Container, MediaError, VideoOutput, VideoSpec};

/// Seconds between forced key frames.
const GOP_SECONDS: u32 = 2;

/// An open muxer with its encoder, scaler and reusable frame buffers.
pub(crate) struct VideoWriter {
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

impl VideoWriter {
    /// Opens `url` for `options`, encoded by the already resolved encoder.
    pub(crate) fn open(
        spec: &VideoSpec,
        options: &VideoOutput,
        resolved: &Resolved,
        url: &str,
    ) -> Result<Self, MediaError> {
        let width = spec.width;
        let height = spec.height;
        let pixel = options.pixel_format.ffmpeg();
        // `check_geometry` capped fps at MAX_FPS, so it fits an i32.
        let fps = i32::try_from(spec.fps).map_err(|_| MediaError::InvalidFps {
            fps: spec.fps,
            max: crate::MAX_FPS,
        })?;
        let time_base = Rational::new(1, fps);
        let frame_rate = Rational::new(fps, 1);

        let mut output = format::output_as(url, options.container.muxer())
            .map_err(MediaError::ffmpeg("opening the output file"))?;
        let global_header = output
            .format()
            .flags()
            .contains(format::Flags::GLOBAL_HEADER);

        let mut video = codec::context::Context::new_with_codec(resolved.codec)
            .encoder()
            .video()
            .map_err(MediaError::ffmpeg("creating the encoder context"))?;
        video.set_width(width);
        video.set_height(height);
        video.set_format(pixel);
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
        if resolved.encoder.clears_bit_rate() {
            video.set_bit_rate(0);
        }

        let mut encoder_options = resolved.encoder.options(options.crf, options.preset);
        encoder_options.set("color_primaries", "smpte170m");
        encoder_options.set("color_trc", "smpte170m");
        if resolved.encoder.auto_threads() {
            encoder_options.set("threads", "auto");
        }
        let encoder = video
            .open_with(encoder_options)
            .map_err(MediaError::ffmpeg("opening the video encoder"))?;

        let stream_index = {
            let mut stream = output
                .add_stream(resolved.codec)
                .map_err(MediaError::ffmpeg("adding the video stream"))?;
            stream.set_parameters(&encoder);
            if options.codec == Codec::H265 && options.container == Container::Mp4 {
                // FFmpeg's default `hev1` tag is refused by Apple's players;
                // `hvc1` (parameter sets only in the sample description) is not.
                // SAFETY: the stream and its codecpar are valid; the muxer
                // has not written anything yet.
                unsafe {
                    (*(*stream.as_mut_ptr()).codecpar).codec_tag = u32::from_le_bytes(*b"hvc1");
                }
            }
            stream.set_time_base(time_base);
            stream.set_rate(frame_rate);
            stream.set_avg_frame_rate(frame_rate);
            stream.index()
        };

        let mut muxer_options = Dictionary::new();
        match options.container {
            Container::Mp4 => muxer_options.set("movflags", "+faststart"),
            // Matroska otherwise writes random segment and track UIDs, so the
            // same frames would never give the same file.
            Container::Webm => muxer_options.set("fflags", "+bitexact"),
        }
        {
            let unused = output
                .write_header_with(muxer_options)
                .map_err(MediaError::ffmpeg("writing the file header"))?;
            for (key, value) in unused.iter() {
                tracing::warn!(key, value, "muxer ignored an option");
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
            pixel,
            width,
            height,
            scaling::Flags::BILINEAR | scaling::Flags::ACCURATE_RND,
        )
        .map_err(MediaError::ffmpeg("creating the RGB24 -> YUV converter"))?;

        Ok(VideoWriter {
            spec: *spec,
            output,
            encoder_time_base: encoder.time_base(),
            encoder,
            scaler,
            rgb: alloc_frame(format::Pixel::RGB24, width, height)?,
            yuv: alloc_frame(pixel, width, height)?,
            packet: Packet::empty(),
            stream_index,
            stream_time_base,
            frames: 0,
        })
    }

    /// Converts and encodes one RGB24 frame, writing any packets that are ready.
    pub(crate) fn push(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        check_frame(
            self.spec.width,
            self.spec.height,
            u64::from(self.frames),
            rgb,
        )?;
        if self.frames == u32::MAX {
            return Err(MediaError::TooManyFrames { max: u32::MAX });
        }
        copy_rgb_into(rgb, &mut self.rgb);

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
            .map_err(MediaError::ffmpeg("converting RGB24 to YUV"))?;
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
    pub(crate) fn finish(mut self) -> Result<u32, MediaError> {
        self.encoder
            .send_eof()
            .map_err(MediaError::ffmpeg("flushing the encoder"))?;
        self.write_ready_packets()?;
        self.output
            .write_trailer()
            .map_err(MediaError::ffmpeg("writing the file trailer"))?;
        Ok(self.frames)
    }
}
