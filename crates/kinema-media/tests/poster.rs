//! `write_poster_png` round-trips through the png decoder.

mod common;

use std::fs::File;
use std::path::Path;

use common::gradient_frame;
use kinema_media::{write_poster_png, MediaError};

fn decode_png(path: &Path) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}

#[test]
fn poster_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Odd sizes are fine for PNG.
    for (width, height) in [(64, 48), (33, 17), (1, 1)] {
        let out = dir.path().join(format!("poster-{width}x{height}.png"));
        let rgb = gradient_frame(width, height, 0, 1);
        let bytes = write_poster_png(width, height, &rgb, &out).unwrap();
        assert_eq!(bytes, std::fs::metadata(&out).unwrap().len());

        let (info, pixels) = decode_png(&out);
        assert_eq!((info.width, info.height), (width, height));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert_eq!(pixels, rgb, "pixels must survive exactly");
    }
}

#[test]
fn poster_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.png");

    let err = write_poster_png(4, 4, &[0; 4 * 4 * 3 - 1], &out).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::FrameLength {
                expected: 48,
                actual: 47,
                ..
            }
        ),
        "{err:?}"
    );
    let err = write_poster_png(0, 4, &[], &out).unwrap_err();
    assert!(matches!(err, MediaError::InvalidSize { .. }), "{err:?}");
    assert!(!out.exists());

    let missing = dir.path().join("missing/dir/poster.png");
    let err = write_poster_png(2, 2, &[0; 12], &missing).unwrap_err();
    assert!(matches!(err, MediaError::Io { .. }), "{err:?}");
}
