//! An open preview file: RGB24 frames go through an FFmpeg filter graph
//! (scale, and for GIF a palette) into the WebP or GIF encoder.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{codec, encoder, filter, format, frame, Dictionary, Packet, Rational};

use super::{PreviewFormat, PreviewOptions};
use crate::frames::{alloc_frame, check_frame, copy_rgb_into};
use crate::{MediaError, VideoSpec};

pub(super) struct PreviewWriter {
    spec: VideoSpec,
    frame_step: u64,
    // `source` and `sink` point into `graph`; none of the three has a
    // destructor that uses the others.
    _graph: filter::Graph,
    source: filter::Context,
    sink: filter::Context,
    output: format::context::Output,
    encoder: encoder::video::Encoder,
    packet: Packet,
    encoder_time_base: Rational,
    stream_time_base: Rational,
    /// Source frames seen.
    seen: u64,
    /// Frames sent to the encoder.
    encoded: u32,
}

impl PreviewWriter {
    pub(super) fn open(
        spec: &VideoSpec,
        options: &PreviewOptions,
        codec: ffmpeg::Codec,
        (width, height): (u32, u32),
        url: &str,
    ) -> Result<Self, MediaError> {
        let (graph, source, sink) = build_graph(spec, options.format, width, height)?;
        // The graph keeps the source's time base: one tick per source frame.
        let time_base = sink_time_base(&sink);

        let (muxer, pixel) = match options.format {
            PreviewFormat::Webp => ("webp", format::Pixel::BGRA),
            PreviewFormat::Gif => ("gif", format::Pixel::PAL8),
        };
        let mut output = format::output_as(url, muxer)
            .map_err(MediaError::ffmpeg("opening the preview file"))?;
        let mut video = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(MediaError::ffmpeg("creating the preview encoder context"))?;
        video.set_width(width);
        video.set_height(height);
        video.set_format(pixel);
        video.set_time_base(time_base);
        let mut encoder_options = Dictionary::new();
        if options.format == PreviewFormat::Webp {
            encoder_options.set("quality", &options.quality.to_string());
            encoder_options.set("lossless", "0");
        }
        let encoder = video
            .open_with(encoder_options)
            .map_err(MediaError::ffmpeg("opening the preview encoder"))?;
        {
            let mut stream = output
                .add_stream(codec)
                .map_err(MediaError::ffmpeg("adding the preview stream"))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(time_base);
        }
        let mut muxer_options = Dictionary::new();
        // WebP's muxer plays once by default; a preview loops.
        muxer_options.set("loop", "0");
        output
            .write_header_with(muxer_options)
            .map_err(MediaError::ffmpeg("writing the preview header"))?;
        let stream_time_base =
            output
                .stream(0)
                .map(|stream| stream.time_base())
                .ok_or(MediaError::Ffmpeg {
                    op: "looking up the preview stream",
                    source: ffmpeg::Error::StreamNotFound,
                })?;
        Ok(PreviewWriter {
            spec: *spec,
            frame_step: u64::from(options.frame_step(spec.fps)),
            _graph: graph,
            source,
            sink,
            output,
            encoder_time_base: encoder.time_base(),
            encoder,
            packet: Packet::empty(),
            stream_time_base,
            seen: 0,
            encoded: 0,
        })
    }

    /// Takes one source frame; every `frame_step`-th goes into the filters.
    pub(super) fn push(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        check_frame(self.spec.width, self.spec.height, self.seen, rgb)?;
        let index = self.seen;
        self.seen += 1;
        if !index.is_multiple_of(self.frame_step) {
            return Ok(());
        }
        // The filter graph takes over the frame's buffer (and, for GIF, holds
        // it until the palette is known), so each frame gets a fresh one.
        let mut frame = alloc_frame(format::Pixel::RGB24, self.spec.width, self.spec.height)?;
        copy_rgb_into(rgb, &mut frame);
        let pts = i64::try_from(index).map_err(|_| MediaError::TooManyFrames { max: u32::MAX })?;
        frame.set_pts(Some(pts));
        self.source
            .source()
            .add(&frame)
            .map_err(MediaError::ffmpeg("sending a frame to the preview filters"))?;
        self.drain_filters()
    }

    /// Encodes every frame the filters have ready.
    fn drain_filters(&mut self) -> Result<(), MediaError> {
        loop {
            let mut filtered = frame::Video::empty();
            match self.sink.sink().frame(&mut filtered) {
                Ok(()) => {
                    self.encoder
                        .send_frame(&filtered)
                        .map_err(MediaError::ffmpeg("sending a frame to the preview encoder"))?;
                    self.encoded += 1;
                    self.write_ready_packets()?;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(MediaError::Ffmpeg {
                        op: "receiving a frame from the preview filters",
                        source,
                    })
                }
            }
        }
    }

    fn write_ready_packets(&mut self) -> Result<(), MediaError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    self.packet.set_stream(0);
                    self.packet
                        .rescale_ts(self.encoder_time_base, self.stream_time_base);
                    self.packet.set_position(-1);
                    self.packet
                        .write_interleaved(&mut self.output)
                        .map_err(MediaError::ffmpeg("writing a preview packet"))?;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(MediaError::Ffmpeg {
                        op: "receiving a packet from the preview encoder",
                        source,
                    })
                }
            }
        }
    }

    /// Flushes filters and encoder, writes the trailer, returns the frame count.
    pub(super) fn finish(mut self) -> Result<u32, MediaError> {
        self.source
            .source()
            .flush()
            .map_err(MediaError::ffmpeg("flushing the preview filters"))?;
        self.drain_filters()?;
        self.encoder
            .send_eof()
            .map_err(MediaError::ffmpeg("flushing the preview encoder"))?;
        self.write_ready_packets()?;
        self.output
            .write_trailer()
            .map_err(MediaError::ffmpeg("writing the preview trailer"))?;
        Ok(self.encoded)
    }
}

/// buffer (RGB24) -> scale (Lanczos) -> BGRA for WebP, or -> palettegen +
/// paletteuse (one palette for the whole clip) for GIF -> buffersink.
fn build_graph(
    spec: &VideoSpec,
    format: PreviewFormat,
    width: u32,
    height: u32,
) -> Result<(filter::Graph, filter::Context, filter::Context), MediaError> {
    let missing = |name: &'static str| MediaError::Ffmpeg {
        op: name,
        source: ffmpeg::Error::FilterNotFound,
    };
    let mut graph = filter::Graph::new();
    let buffer = filter::find("buffer").ok_or_else(|| missing("finding the buffer filter"))?;
    let buffersink =
        filter::find("buffersink").ok_or_else(|| missing("finding the buffersink filter"))?;
    let source_args = format!(
        "video_size={}x{}:pix_fmt=rgb24:time_base=1/{}:pixel_aspect=1/1",
        spec.width, spec.height, spec.fps
    );
    let source = graph
        .add(&buffer, "in", &source_args)
        .map_err(MediaError::ffmpeg("creating the preview filter source"))?;
    let sink = graph
        .add(&buffersink, "out", "")
        .map_err(MediaError::ffmpeg("creating the preview filter sink"))?;
    let scale = format!("scale=w={width}:h={height}:flags=lanczos");
    let chain = match format {
        PreviewFormat::Webp => format!("{scale},format=pix_fmts=bgra"),
        PreviewFormat::Gif => format!(
            "{scale},split[a][b];[a]palettegen=stats_mode=full[p];\
             [b][p]paletteuse=dither=sierra2_4a"
        ),
    };
    graph
        .output("in", 0)
        .and_then(|parser| parser.input("out", 0))
        .and_then(|parser| parser.parse(&chain))
        .map_err(MediaError::ffmpeg("building the preview filters"))?;
    graph
        .validate()
        .map_err(MediaError::ffmpeg("configuring the preview filters"))?;
    Ok((graph, source, sink))
}

fn sink_time_base(sink: &filter::Context) -> Rational {
    // SAFETY: `sink` is a live buffersink context.
    let time_base = unsafe { ffmpeg::ffi::av_buffersink_get_time_base(sink.as_ptr()) };
    Rational::from(time_base)
}
