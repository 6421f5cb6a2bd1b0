//! End-to-end checks of `encode_mp4` with ffprobe / ffmpeg as the judge.

mod common;

use std::path::Path;

use common::*;
use kinema_media::{encode_mp4, EncodedVideo, MediaError, VideoSpec};

/// Encodes a gradient clip and checks everything a player relies on.
fn encode_and_verify(width: u32, height: u32, fps: u32, count: u32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let frames = gradient_frames(width, height, count);
    let spec = VideoSpec { width, height, fps };

    let encoded = encode_mp4(&spec, frames.iter().map(Vec::as_slice), &out).unwrap();
    let on_disk = std::fs::metadata(&out).unwrap().len();
    assert_eq!(
        encoded,
        EncodedVideo {
            frames: count,
            bytes: on_disk
        }
    );
    assert!(on_disk > 0);

    let probe = ffprobe(&out);
    assert_eq!(probe.codec_name, "h264", "{probe:?}");
    assert_eq!(probe.pix_fmt, "yuv420p", "{probe:?}");
    assert_eq!(probe.width, u64::from(width), "{probe:?}");
    assert_eq!(probe.height, u64::from(height), "{probe:?}");
    assert_eq!(probe.r_frame_rate, format!("{fps}/1"), "{probe:?}");
    assert_eq!(probe.avg_frame_rate, format!("{fps}/1"), "{probe:?}");
    assert_eq!(probe.nb_read_frames, u64::from(count), "{probe:?}");

    assert_faststart(&out);

    // First frame alone: colours and orientation survive.
    let first = decode_rgb(&out, Some(1));
    let err = mean_abs_error(&first, &frames[0]);
    assert!(err < 6.0, "first frame mean abs error {err:.2}");

    // Every frame, in order, none dropped or duplicated.
    let all = decode_rgb(&out, None);
    let frame_len = (width * height * 3) as usize;
    assert_eq!(all.len(), frame_len * count as usize);
    for (i, (decoded, original)) in all.chunks_exact(frame_len).zip(&frames).enumerate() {
        let err = mean_abs_error(decoded, original);
        assert!(err < 6.0, "frame {i}: mean abs error {err:.2}");
    }
}

fn assert_faststart(file: &Path) {
    let boxes = top_level_boxes(file);
    let moov = boxes.iter().position(|b| b == "moov");
    let mdat = boxes.iter().position(|b| b == "mdat");
    assert_eq!(boxes.first().map(String::as_str), Some("ftyp"), "{boxes:?}");
    match (moov, mdat) {
        (Some(moov), Some(mdat)) => assert!(moov < mdat, "moov after mdat: {boxes:?}"),
        _ => panic!("missing moov or mdat: {boxes:?}"),
    }
}

#[test]
fn small_clip_64x48_at_8fps() {
    encode_and_verify(64, 48, 8, 9);
}

#[test]
fn clip_160x96_at_24fps() {
    encode_and_verify(160, 96, 24, 25);
}

#[test]
fn clip_with_odd_rate_and_padded_rows() {
    // 30 px rows (90 bytes) are not a multiple of ffmpeg's line alignment.
    encode_and_verify(30, 22, 30, 40);
}

#[test]
fn single_frame_video() {
    encode_and_verify(64, 48, 8, 1);
}

#[test]
fn output_path_that_looks_like_a_protocol_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pipe:1");
    let frames = gradient_frames(16, 16, 2);
    let spec = VideoSpec {
        width: 16,
        height: 16,
        fps: 4,
    };
    let encoded = encode_mp4(&spec, frames.iter().map(Vec::as_slice), &out).unwrap();
    assert_eq!(encoded.frames, 2);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), encoded.bytes);
}

#[test]
fn overwrites_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    std::fs::write(&out, vec![0xAB; 1 << 20]).unwrap();
    let frames = gradient_frames(32, 32, 3);
    let spec = VideoSpec {
        width: 32,
        height: 32,
        fps: 3,
    };
    let encoded = encode_mp4(&spec, frames.iter().map(Vec::as_slice), &out).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), encoded.bytes);
    assert_eq!(ffprobe(&out).nb_read_frames, 3);
}

#[test]
fn parallel_encodes() {
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|scope| {
        for i in 0..4u32 {
            let out = dir.path().join(format!("clip{i}.mp4"));
            scope.spawn(move || {
                let spec = VideoSpec {
                    width: 48,
                    height: 32,
                    fps: 10 + i,
                };
                let frames = gradient_frames(48, 32, 5 + i);
                let encoded = encode_mp4(&spec, frames.iter().map(Vec::as_slice), &out).unwrap();
                assert_eq!(encoded.frames, 5 + i);
                let probe = ffprobe(&out);
                assert_eq!(probe.nb_read_frames, u64::from(5 + i));
                assert_eq!(probe.r_frame_rate, format!("{}/1", 10 + i));
            });
        }
    });
}

#[test]
fn odd_sizes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (width, height) in [(63, 48), (64, 47), (1, 1)] {
        let out = dir.path().join(format!("odd-{width}x{height}.mp4"));
        let frame = vec![0u8; (width * height * 3) as usize];
        let spec = VideoSpec {
            width,
            height,
            fps: 8,
        };
        let err = encode_mp4(&spec, [frame.as_slice()], &out).unwrap_err();
        assert!(
            matches!(err, MediaError::InvalidSize { width: w, height: h, .. } if w == width && h == height),
            "{err:?}"
        );
        assert!(err.to_string().contains("even"), "{err}");
        assert!(!out.exists(), "no file for a rejected spec");
    }
}

#[test]
fn zero_sizes_and_fps_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zero.mp4");
    let frame = [0u8; 0];
    for spec in [
        VideoSpec {
            width: 0,
            height: 48,
            fps: 8,
        },
        VideoSpec {
            width: 64,
            height: 0,
            fps: 8,
        },
    ] {
        let err = encode_mp4(&spec, [&frame[..]], &out).unwrap_err();
        assert!(matches!(err, MediaError::InvalidSize { .. }), "{err:?}");
    }
    let frame = vec![0u8; 64 * 48 * 3];
    let spec = VideoSpec {
        width: 64,
        height: 48,
        fps: 0,
    };
    let err = encode_mp4(&spec, [frame.as_slice()], &out).unwrap_err();
    assert!(
        matches!(err, MediaError::InvalidFps { fps: 0, .. }),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[test]
fn wrong_frame_length_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let spec = VideoSpec {
        width: 64,
        height: 48,
        fps: 8,
    };
    let good = gradient_frame(64, 48, 0, 1);

    // First frame too short: rejected before anything is written.
    let out = dir.path().join("short.mp4");
    let err = encode_mp4(&spec, [&good[..good.len() - 1]], &out).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::FrameLength {
                index: 0,
                expected,
                actual,
                ..
            } if expected == good.len() && actual == good.len() - 1
        ),
        "{err:?}"
    );
    assert!(!out.exists());

    // A bad frame mid-stream: error names it, partial file is removed.
    let out = dir.path().join("mid.mp4");
    let long = vec![0u8; good.len() + 3];
    let frames: Vec<&[u8]> = vec![&good, &good, &long, &good];
    let err = encode_mp4(&spec, frames, &out).unwrap_err();
    assert!(
        matches!(err, MediaError::FrameLength { index: 2, .. }),
        "{err:?}"
    );
    assert!(!out.exists(), "partial output must be removed");
}

#[test]
fn zero_frames_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty.mp4");
    let spec = VideoSpec {
        width: 64,
        height: 48,
        fps: 8,
    };
    let err = encode_mp4(&spec, std::iter::empty::<&[u8]>(), &out).unwrap_err();
    assert!(matches!(err, MediaError::NoFrames), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/dir/clip.mp4");
    let frame = gradient_frame(16, 16, 0, 1);
    let spec = VideoSpec {
        width: 16,
        height: 16,
        fps: 8,
    };
    let err = encode_mp4(&spec, [frame.as_slice()], &out).unwrap_err();
    match err {
        MediaError::Io { path, source, .. } => {
            assert_eq!(path, out);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn errors_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MediaError>();
}

#[test]
fn saturated_colours_survive() {
    // Four solid quadrants. A mismatch between the RGB->YUV matrix and the
    // colour tags in the stream shows up as large errors on saturated colours.
    const QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    let (width, height) = (64u32, 64u32);
    let mut frame = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let q = usize::from(x >= width / 2) + 2 * usize::from(y >= height / 2);
            frame.extend_from_slice(&QUADRANTS[q]);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quadrants.mp4");
    let spec = VideoSpec {
        width,
        height,
        fps: 5,
    };
    encode_mp4(&spec, [frame.as_slice(), frame.as_slice()], &out).unwrap();

    let decoded = decode_rgb(&out, Some(1));
    // Compare the 8x8 centre of each quadrant, away from chroma edges.
    for (q, expected) in QUADRANTS.iter().enumerate() {
        let x0 = (q % 2) as u32 * width / 2 + 12;
        let y0 = (q / 2) as u32 * height / 2 + 12;
        for y in y0..y0 + 8 {
            for x in x0..x0 + 8 {
                let i = ((y * width + x) * 3) as usize;
                for c in 0..3 {
                    let got = decoded[i + c];
                    assert!(
                        got.abs_diff(expected[c]) <= 8,
                        "quadrant {q} pixel ({x},{y}) channel {c}: got {got}, want {}",
                        expected[c]
                    );
                }
            }
        }
    }
}

/// Frames with fine detail (a hash of position and index), so the encoder has real
/// decisions to make, and rows that need padding in FFmpeg's frame buffers.
fn textured_frames(width: u32, height: u32, count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut frame = gradient_frame(width, height, i, count);
            for (j, px) in frame.iter_mut().enumerate() {
                let h = (j as u32 ^ i.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x85EB_CA6B);
                *px = px.wrapping_add((h >> 28) as u8);
            }
            frame
        })
        .collect()
}

/// Which top-level box of `file` holds byte `offset`.
fn box_at(file: &[u8], offset: usize) -> String {
    let mut pos = 0usize;
    while pos + 8 <= file.len() {
        let size = u32::from_be_bytes(file[pos..pos + 4].try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(&file[pos + 4..pos + 8]).into_owned();
        if size < 8 || offset < pos + size {
            return format!("{name} at {pos}");
        }
        pos += size;
    }
    "past the last box".into()
}

#[test]
fn same_frames_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // 48x32 fills whole macroblocks; 30x22 needs padding everywhere.
    for (width, height, fps, count) in [(48, 32, 16, 17), (30, 22, 24, 9)] {
        let spec = VideoSpec { width, height, fps };
        let frames = textured_frames(width, height, count);
        let outputs: Vec<Vec<u8>> = (0..8u8)
            .map(|run| {
                perturb_heap(run * 29 + 11);
                let out = dir.path().join(format!("{width}x{height}-{run}.mp4"));
                encode_mp4(&spec, frames.iter().map(Vec::as_slice), &out).unwrap();
                std::fs::read(&out).unwrap()
            })
            .collect();
        perturb_heap(0);
        for (run, bytes) in outputs.iter().enumerate().skip(1) {
            let first = &outputs[0];
            if bytes != first {
                let at = first
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(first.len().min(bytes.len()));
                panic!(
                    "{width}x{height}: run {run} differs from run 0 ({} vs {} bytes), first at byte {at}, in {}",
                    bytes.len(),
                    first.len(),
                    box_at(first, at)
                );
            }
        }
    }
}
