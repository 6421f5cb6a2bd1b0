//! Measures every output setting this FFmpeg supports on a smooth synthetic
//! scene: PSNR (RGB, all channels) of the decoded file against the source
//! frames, file size and encode time, as a Markdown table; then the same for
//! the animated previews at full size (WebP has no PSNR: FFmpeg 5.1 cannot
//! decode animated WebP).
//!
//! ```text
//! cargo run -p kinema-media --example fidelity --release -- [WIDTHxHEIGHT] [FRAMES] [FPS] [SETTING...]
//! ```
//!
//! Defaults: 160x96, 17 frames, 16 fps (the test size), and a list of
//! settings covering every codec and pixel format.

#[path = "../tests/common/scene.rs"]
mod scene;

use std::time::Instant;

use kinema_media::{
    decode_rgb, encode_video, preview, psnr_rgb, PreviewFormat, PreviewOptions, VideoOutput,
    VideoSpec,
};

const SETTINGS: &[&str] = &[
    "h264",
    "h264:pix=yuv444p",
    "h264:pix=yuv420p10le",
    "h264:pix=yuv444p10le",
    "h264:crf=28",
    "h264:preset=veryslow",
    "h265",
    "h265:pix=yuv444p",
    "h265:pix=yuv420p10le",
    "h265:pix=yuv444p10le",
    "h265:preset=fast",
    "av1",
    "av1:pix=yuv420p10le",
    "av1:container=webm",
    "av1:preset=faster",
    "av1:pix=yuv444p",
    "av1:encoder=libaom-av1:preset=faster",
    "vp9",
    "vp9:pix=yuv444p",
    "vp9:pix=yuv420p10le",
    "vp9:pix=yuv444p10le",
    "vp9:preset=faster",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (width, height) = match args.first() {
        Some(size) => {
            let (w, h) = size.split_once('x').ok_or("size must be WIDTHxHEIGHT")?;
            (w.parse()?, h.parse()?)
        }
        None => (160, 96),
    };
    let count: u32 = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(17);
    let fps: u32 = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(16);
    let settings: Vec<&str> = if args.len() > 3 {
        args[3..].iter().map(String::as_str).collect()
    } else {
        SETTINGS.to_vec()
    };

    let spec = VideoSpec { width, height, fps };
    let frames = scene::scene_frames(width, height, count);
    let dir = std::env::temp_dir().join(format!("kinema-fidelity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    println!(
        "{width}x{height}, {count} frames at {fps} fps; PSNR over RGB (8-bit, all channels)\n"
    );
    println!("| setting | encoder | PSNR dB | worst frame dB | bytes | encode ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for setting in settings {
        let output: VideoOutput = setting.parse()?;
        let encoder = match output.validate(&spec) {
            Ok(encoder) => encoder,
            Err(err) => {
                println!("| `{setting}` | unavailable: {err} | | | | |");
                continue;
            }
        };
        let path = dir.join(format!(
            "{}.{}",
            setting.replace([':', '='], "_"),
            output.extension()
        ));
        let started = Instant::now();
        let encoded = encode_video(&spec, &output, frames.iter().map(Vec::as_slice), &path)?;
        let millis = started.elapsed().as_millis();
        let decoded = decode_rgb(&path)?;
        let psnr = psnr_rgb(width, height, &frames, &decoded.frames)?;
        println!(
            "| `{setting}` | {encoder} | {:.2} | {:.2} | {} | {millis} |",
            psnr.mean_db, psnr.worst_frame_db, encoded.bytes
        );
    }

    println!("\n| preview (full size) | PSNR dB | bytes | encode ms |");
    println!("|---|---:|---:|---:|");
    for text in ["gif", "webp", "webp:q=90"] {
        let options = PreviewOptions {
            max_side: width.max(height),
            max_fps: fps.min(kinema_media::MAX_PREVIEW_FPS),
            ..text.parse::<PreviewOptions>()?
        };
        let path = dir.join(format!("preview.{}", options.format.extension()));
        let started = Instant::now();
        let encoded = preview(&spec, &options, frames.iter().map(Vec::as_slice), &path)?;
        let millis = started.elapsed().as_millis();
        let psnr = match options.format {
            PreviewFormat::Gif => {
                let decoded = decode_rgb(&path)?;
                let kept: Vec<&Vec<u8>> =
                    frames.iter().step_by(encoded.frame_step as usize).collect();
                format!(
                    "{:.2}",
                    psnr_rgb(width, height, &kept, &decoded.frames)?.mean_db
                )
            }
            PreviewFormat::Webp => "n/a".to_string(),
        };
        println!("| `{text}` | {psnr} | {} | {millis} |", encoded.bytes);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
