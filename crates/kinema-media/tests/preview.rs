//! Animated previews: structure (size, frame count, timing, looping) and, for
//! GIF, how close the palettised frames stay to the source.
//!
//! Debian 12's FFmpeg 5.1 cannot decode animated WebP, so WebP files are
//! checked by walking their RIFF chunks instead.

mod common;

use common::scene::scene_frames;
use common::*;
use kinema_media::{
    decode_rgb, preview, psnr_rgb, EncodedPreview, MediaError, PreviewOptionError, PreviewOptions,
    VideoSpec,
};

const WIDTH: u32 = 160;
const HEIGHT: u32 = 96;
const FPS: u32 = 16;
const FRAMES: u32 = 17;

fn spec() -> VideoSpec {
    VideoSpec {
        width: WIDTH,
        height: HEIGHT,
        fps: FPS,
    }
}

/// What an animated WebP's chunks say.
#[derive(Debug)]
struct WebpAnimation {
    canvas: (u32, u32),
    loop_count: u16,
    /// Per frame (ANMF chunk): duration in milliseconds.
    durations_ms: Vec<u32>,
}

fn u24(bytes: &[u8]) -> u32 {
    u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16
}

fn parse_webp(data: &[u8]) -> WebpAnimation {
    assert_eq!(&data[0..4], b"RIFF");
    assert_eq!(&data[8..12], b"WEBP");
    let riff_len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff_len + 8, data.len(), "RIFF size covers the file");
    let mut canvas = None;
    let mut loop_count = None;
    let mut durations_ms = Vec::new();
    let mut pos = 12;
    while pos + 8 <= data.len() {
        let kind = &data[pos..pos + 4];
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &data[pos + 8..pos + 8 + len];
        match kind {
            b"VP8X" => {
                assert!(body[0] & 0x02 != 0, "animation flag set");
                canvas = Some((u24(&body[4..7]) + 1, u24(&body[7..10]) + 1));
            }
            b"ANIM" => loop_count = Some(u16::from_le_bytes(body[4..6].try_into().unwrap())),
            b"ANMF" => {
                durations_ms.push(u24(&body[12..15]));
                let inner = &body[16..20];
                assert!(
                    inner == b"VP8 " || inner == b"VP8L" || inner == b"ALPH",
                    "frame data chunk {inner:?}"
                );
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    assert_eq!(pos, data.len(), "chunks tile the file");
    WebpAnimation {
        canvas: canvas.expect("VP8X chunk"),
        loop_count: loop_count.expect("ANIM chunk"),
        durations_ms,
    }
}

/// Halves each side by averaging 2x2 blocks (the reference for a 1/2 preview).
fn half(frame: &[u8], width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut out = Vec::with_capacity(w * h * 3 / 4);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            for c in 0..3 {
                let at = |xx: usize, yy: usize| u32::from(frame[(yy * w + xx) * 3 + c]);
                let sum = at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1);
                out.push(((sum + 2) / 4) as u8);
            }
        }
    }
    out
}

#[test]
fn webp_keeps_a_small_clip_whole_and_loops() {
    let frames = scene_frames(WIDTH, HEIGHT, FRAMES);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("preview.webp");
    let options = PreviewOptions::default();
    let encoded = preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap();
    let data = std::fs::read(&out).unwrap();
    assert_eq!(
        encoded,
        EncodedPreview {
            frames: FRAMES,
            width: WIDTH,
            height: HEIGHT,
            frame_step: 1,
            bytes: data.len() as u64
        }
    );
    let webp = parse_webp(&data);
    assert_eq!(webp.canvas, (WIDTH, HEIGHT));
    assert_eq!(webp.loop_count, 0, "loops forever");
    assert_eq!(webp.durations_ms.len(), FRAMES as usize, "{webp:?}");
    // 16 fps: 62.5 ms a frame, rounded either way.
    assert!(
        webp.durations_ms.iter().all(|d| (62..=63).contains(d)),
        "{webp:?}"
    );
}

#[test]
fn webp_is_scaled_and_thinned() {
    let frames = scene_frames(WIDTH, HEIGHT, FRAMES);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.webp");
    let options: PreviewOptions = "webp:max=80:fps=8:q=60".parse().unwrap();
    let encoded = preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap();
    // Frames 0, 2, ..., 16 at 8 fps.
    assert_eq!((encoded.width, encoded.height), (80, 48));
    assert_eq!((encoded.frames, encoded.frame_step), (9, 2));
    let webp = parse_webp(&std::fs::read(&out).unwrap());
    assert_eq!(webp.canvas, (80, 48));
    assert_eq!(webp.durations_ms, vec![125; 9], "{webp:?}");
}

#[test]
fn gif_at_full_size_stays_close_to_the_source() {
    let frames = scene_frames(WIDTH, HEIGHT, FRAMES);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("preview.gif");
    let options: PreviewOptions = "gif".parse().unwrap();
    let encoded = preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap();
    assert_eq!(
        (encoded.frames, encoded.width, encoded.height),
        (FRAMES, WIDTH, HEIGHT)
    );

    let probe = ffprobe(&out);
    assert_eq!(probe.codec_name, "gif");
    assert_eq!(probe.format_name, "gif");
    assert_eq!(
        (probe.width, probe.height),
        (u64::from(WIDTH), u64::from(HEIGHT))
    );
    assert_eq!(probe.nb_read_frames, u64::from(FRAMES));
    // 17 frames at 16 fps, in whole hundredths of a second.
    let expected = f64::from(FRAMES) / f64::from(FPS);
    assert!((probe.duration - expected).abs() <= 0.02, "{probe:?}");

    let decoded = decode_rgb(&out).unwrap();
    assert_eq!(decoded.codec, "gif");
    let psnr = psnr_rgb(WIDTH, HEIGHT, &frames, &decoded.frames).unwrap();
    // One 256-colour palette for the whole clip, dithered.
    assert!(psnr.mean_db >= 37.0, "{psnr:?}"); // measured 40.35
}

#[test]
fn gif_is_scaled_and_thinned() {
    let frames = scene_frames(WIDTH, HEIGHT, FRAMES);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.gif");
    let options: PreviewOptions = "gif:max=80:fps=8".parse().unwrap();
    let encoded = preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap();
    assert_eq!((encoded.width, encoded.height, encoded.frames), (80, 48, 9));

    let probe = ffprobe(&out);
    assert_eq!(
        (probe.width, probe.height, probe.nb_read_frames),
        (80, 48, 9)
    );
    assert!((probe.duration - 9.0 / 8.0).abs() <= 0.02, "{probe:?}");

    let decoded = decode_rgb(&out).unwrap();
    let reference: Vec<Vec<u8>> = frames
        .iter()
        .step_by(2)
        .map(|f| half(f, WIDTH, HEIGHT))
        .collect();
    let psnr = psnr_rgb(80, 48, &reference, &decoded.frames).unwrap();
    // Against a 2x2 box average; the preview uses Lanczos.
    assert!(psnr.mean_db >= 38.0, "{psnr:?}"); // measured 41.05
}

#[test]
fn odd_sizes_are_fine() {
    let (width, height) = (101, 61);
    let spec = VideoSpec {
        width,
        height,
        fps: 10,
    };
    let frames = scene_frames(width, height, 4);
    let dir = tempfile::tempdir().unwrap();
    for text in ["gif:max=50", "webp:max=50", "webp"] {
        let options: PreviewOptions = text.parse().unwrap();
        let out = dir
            .path()
            .join(format!("odd.{}", options.format.extension()));
        let encoded = preview(&spec, &options, frames.iter().map(Vec::as_slice), &out)
            .unwrap_or_else(|err| panic!("{text}: {err}"));
        let expected = if text == "webp" { (101, 61) } else { (50, 30) };
        assert_eq!((encoded.width, encoded.height), expected, "{text}");
        assert_eq!(encoded.frames, 4, "{text}");
    }
}

#[test]
fn bad_input_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.gif");
    let frames = scene_frames(WIDTH, HEIGHT, 2);

    let options = PreviewOptions {
        max_fps: 0,
        ..PreviewOptions::default()
    };
    let err = preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::InvalidPreview(PreviewOptionError::OutOfRange { key: "fps", .. })
        ),
        "{err:?}"
    );

    let options = PreviewOptions::default();
    let err = preview(&spec(), &options, std::iter::empty::<&[u8]>(), &out).unwrap_err();
    assert!(matches!(err, MediaError::NoFrames), "{err:?}");
    let err = preview(&spec(), &options, [&frames[0][1..]], &out).unwrap_err();
    assert!(
        matches!(err, MediaError::FrameLength { index: 0, .. }),
        "{err:?}"
    );
    let zero_fps = VideoSpec { fps: 0, ..spec() };
    let err = preview(&zero_fps, &options, frames.iter().map(Vec::as_slice), &out).unwrap_err();
    assert!(matches!(err, MediaError::InvalidFps { .. }), "{err:?}");
    assert!(!out.exists());

    // A bad frame later on: the partial file is removed.
    let short = vec![0u8; 5];
    let err = preview(
        &spec(),
        &options,
        [frames[0].as_slice(), frames[1].as_slice(), short.as_slice()],
        &out,
    )
    .unwrap_err();
    assert!(
        matches!(err, MediaError::FrameLength { index: 2, .. }),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[test]
fn preview_options_serialise_as_their_text_form() {
    let options: PreviewOptions = "gif:max=240".parse().unwrap();
    assert_eq!(serde_json::to_string(&options).unwrap(), "\"gif:max=240\"");
    assert_eq!(options.format.mime(), "image/gif");
    let back: PreviewOptions = serde_json::from_str("\"gif:max=240\"").unwrap();
    assert_eq!(back, options);
    assert!(serde_json::from_str::<PreviewOptions>("\"gif:q=3\"").is_err());
}

#[test]
fn same_frames_give_identical_previews() {
    let frames = scene_frames(WIDTH, HEIGHT, 9);
    let dir = tempfile::tempdir().unwrap();
    for text in ["webp", "gif:max=80"] {
        let options: PreviewOptions = text.parse().unwrap();
        let runs: Vec<Vec<u8>> = (0..3u8)
            .map(|run| {
                perturb_heap(run * 53 + 7);
                let out = dir
                    .path()
                    .join(format!("{run}.{}", options.format.extension()));
                preview(&spec(), &options, frames.iter().map(Vec::as_slice), &out).unwrap();
                std::fs::read(&out).unwrap()
            })
            .collect();
        perturb_heap(0);
        assert!(runs.iter().all(|bytes| bytes == &runs[0]), "{text}");
    }
}
