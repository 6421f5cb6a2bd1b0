use super::*;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;

/// `width` x `height`, the left half red and the right half blue.
fn halves(width: u32, height: u32) -> DecodedImage {
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for _y in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(if x < width / 2 {
                &[255, 0, 0]
            } else {
                &[0, 0, 255]
            });
        }
    }
    DecodedImage { width, height, rgb }
}

fn png_of(image: &DecodedImage) -> Vec<u8> {
    InputImage::encode(image)
        .unwrap()
        .png
        .unwrap()
        .as_ref()
        .to_vec()
}

fn jpeg_of(image: &DecodedImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(
            &image.rgb,
            image.width,
            image.height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// The JPEG with an EXIF APP1 segment (big-endian TIFF, one IFD entry: Orientation)
/// written by hand right after its SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2A");
    tiff.extend_from_slice(&8u32.to_be_bytes()); // first IFD right after the header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padded to 4 bytes
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn pixel(image: &DecodedImage, x: u32, y: u32) -> [u8; 3] {
    let i = (y as usize * image.width as usize + x as usize) * 3;
    [image.rgb[i], image.rgb[i + 1], image.rgb[i + 2]]
}

fn reddish(p: [u8; 3]) -> bool {
    p[0] > 200 && p[2] < 60
}

fn bluish(p: [u8; 3]) -> bool {
    p[2] > 200 && p[0] < 60
}

#[test]
fn png_jpeg_and_webp_decode_to_rgb() {
    let original = halves(32, 16);
    let lossless = [png_of(&original), {
        let mut out = Vec::new();
        WebPEncoder::new_lossless(&mut out)
            .encode(&original.rgb, 32, 16, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }];
    for bytes in lossless {
        assert_eq!(decode(&bytes, &ImageLimits::default()).unwrap(), original);
    }
    let jpeg = decode(&jpeg_of(&original), &ImageLimits::default()).unwrap();
    assert_eq!((jpeg.width, jpeg.height), (32, 16));
    assert!(reddish(pixel(&jpeg, 2, 8)) && bluish(pixel(&jpeg, 29, 8)));
}

#[test]
fn the_exif_orientation_is_applied() {
    let jpeg = jpeg_of(&halves(32, 16));
    // 1: as stored.
    let upright = decode(&with_exif_orientation(&jpeg, 1), &ImageLimits::default()).unwrap();
    assert_eq!((upright.width, upright.height), (32, 16));
    // 6: rotate 90 degrees clockwise to view: the left (red) half comes on top.
    let turned = decode(&with_exif_orientation(&jpeg, 6), &ImageLimits::default()).unwrap();
    assert_eq!((turned.width, turned.height), (16, 32));
    assert!(reddish(pixel(&turned, 8, 2)), "{:?}", pixel(&turned, 8, 2));
    assert!(bluish(pixel(&turned, 8, 29)), "{:?}", pixel(&turned, 8, 29));
    // 8: 90 degrees counter-clockwise: the red half goes to the bottom.
    let other = decode(&with_exif_orientation(&jpeg, 8), &ImageLimits::default()).unwrap();
    assert_eq!((other.width, other.height), (16, 32));
    assert!(bluish(pixel(&other, 8, 2)) && reddish(pixel(&other, 8, 29)));
    // 3: upside down: red on the right.
    let flipped = decode(&with_exif_orientation(&jpeg, 3), &ImageLimits::default()).unwrap();
    assert_eq!((flipped.width, flipped.height), (32, 16));
    assert!(bluish(pixel(&flipped, 2, 8)) && reddish(pixel(&flipped, 29, 8)));
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header claims `width` x `height` and whose pixel data is a few bytes:
/// a decompression bomb's shape (a real one's IDAT inflates to the claimed size).
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    // An empty zlib stream.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn the_caps_are_checked_before_decoding() {
    // 60,000 x 60,000 claimed in a few dozen bytes: refused from the header alone.
    let bomb = png_bomb(60_000, 60_000);
    assert!(bomb.len() < 100);
    assert!(matches!(
        decode(&bomb, &ImageLimits::default()),
        Err(ImageError::TooManyPixels {
            width: 60_000,
            height: 60_000,
            ..
        })
    ));
    let png = png_of(&halves(32, 16));
    let tight = ImageLimits {
        max_bytes: png.len() - 1,
        ..ImageLimits::default()
    };
    assert!(matches!(
        decode(&png, &tight),
        Err(ImageError::TooManyBytes { .. })
    ));
    let few_pixels = ImageLimits {
        max_pixels: 32 * 16 - 1,
        ..ImageLimits::default()
    };
    assert!(matches!(
        decode(&png, &few_pixels),
        Err(ImageError::TooManyPixels { .. })
    ));
    // Exactly at the caps: accepted.
    let exact = ImageLimits {
        max_bytes: png.len(),
        max_pixels: 32 * 16,
    };
    assert!(decode(&png, &exact).is_ok());
}

#[test]
fn undecodable_bytes_are_refused() {
    let limits = ImageLimits::default();
    assert_eq!(decode(&[], &limits), Err(ImageError::Empty));
    assert_eq!(
        decode(b"hello, not an image", &limits),
        Err(ImageError::UnsupportedFormat)
    );
    // A GIF is an image, but not one this server takes.
    assert_eq!(
        decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &limits),
        Err(ImageError::UnsupportedFormat)
    );
    let png = png_of(&halves(32, 16));
    let truncated = &png[..png.len() / 2];
    assert!(matches!(
        decode(truncated, &limits),
        Err(ImageError::Undecodable { format: "PNG", .. })
    ));
    let jpeg = jpeg_of(&halves(32, 16));
    assert!(matches!(
        decode(&jpeg[..40], &limits),
        Err(ImageError::Undecodable { format: "JPEG", .. })
    ));
}

fn wan_480p() -> SizeRule {
    SizeRule {
        area: 832 * 480,
        multiple: 16,
        min_width: 64,
        max_width: 1280,
        min_height: 64,
        max_height: 1280,
    }
}

#[test]
fn the_size_follows_the_image_at_the_model_area() {
    // As diffusers' Wan I2V example computes it (checked with Python):
    // round(sqrt(399360 * 0.5)) = 447 -> 432; round(sqrt(399360 / 0.5)) = 894 -> 880.
    assert_eq!(fit_size(1000, 500, &wan_480p()), (880, 432));
    // Square: sqrt(399360) = 631.9 -> 632 -> 624.
    assert_eq!(fit_size(512, 512, &wan_480p()), (624, 624));
    // Portrait 9:16.
    assert_eq!(fit_size(900, 1600, &wan_480p()), (464, 832));
    // A sliver is clamped into the limits, on multiples.
    assert_eq!(fit_size(4000, 10, &wan_480p()), (1280, 64));
    let odd_limits = SizeRule {
        min_width: 70,
        max_width: 100,
        min_height: 70,
        max_height: 100,
        ..wan_480p()
    };
    assert_eq!(fit_size(500, 500, &odd_limits), (96, 96));
    assert_eq!(fit_size(4000, 10, &odd_limits), (96, 80));
}

#[test]
fn fit_covers_and_crops_the_centre() {
    // 40x10 covering 8x8: scaled to 32x8, the middle 8 columns kept: red then blue.
    let fitted = fit(&halves(40, 10), 8, 8);
    assert_eq!((fitted.width, fitted.height), (8, 8));
    assert_eq!(fitted.rgb.len(), 8 * 8 * 3);
    assert!(reddish(pixel(&fitted, 1, 4)), "{:?}", pixel(&fitted, 1, 4));
    assert!(bluish(pixel(&fitted, 6, 4)), "{:?}", pixel(&fitted, 6, 4));
    // Upscaling a small image to a larger, differently shaped frame.
    let up = fit(&halves(4, 6), 16, 8);
    assert_eq!((up.width, up.height), (16, 8));
    assert!(reddish(pixel(&up, 1, 4)) && bluish(pixel(&up, 14, 4)));
    // Already the size: unchanged.
    let same = halves(16, 8);
    assert_eq!(fit(&same, 16, 8), same);
}

#[test]
fn stored_images_round_trip_through_png_with_their_hash() {
    let picture = halves(16, 8);
    let stored = InputImage::encode(&picture).unwrap();
    assert_eq!((stored.width, stored.height), (16, 8));
    assert_eq!(stored.sha256.len(), 64);
    assert_eq!(stored.pixels().unwrap().unwrap(), picture);
    // The same picture stores the same bytes (the hash identifies it).
    assert_eq!(InputImage::encode(&picture).unwrap(), stored);
    let shown = InputImage {
        png: None,
        ..stored.clone()
    };
    assert!(shown.pixels().is_none());
    let wrong = InputImage { width: 8, ..stored };
    assert!(wrong.pixels().unwrap().is_err());
}
