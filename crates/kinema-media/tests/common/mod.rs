//! Shared helpers for the integration tests: frame generators, ffprobe and
//! ffmpeg runners, and an MP4 top-level box scanner.
#![allow(dead_code)]

pub mod scene;

use std::path::Path;
use std::process::Command;

pub const FFPROBE: &str = "/usr/bin/ffprobe";
pub const FFMPEG: &str = "/usr/bin/ffmpeg";

/// A smooth RGB gradient that changes over time: red follows x, green
/// follows y, blue follows the frame index. Smooth content keeps H.264 and
/// 4:2:0 chroma losses small, so decoded frames can be compared closely.
pub fn gradient_frame(width: u32, height: u32, index: u32, count: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let blue = if count > 1 {
        (index * 200 / (count - 1) + 28) as u8
    } else {
        128
    };
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            out.push((x * 255 / (w - 1).max(1)) as u8);
            out.push((y * 255 / (h - 1).max(1)) as u8);
            out.push(blue);
        }
    }
    out
}

pub fn gradient_frames(width: u32, height: u32, count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| gradient_frame(width, height, i, count))
        .collect()
}

/// Stream facts as ffprobe reports them after decoding every frame.
#[derive(Debug)]
pub struct Probe {
    pub codec_name: String,
    pub pix_fmt: String,
    pub width: u64,
    pub height: u64,
    pub r_frame_rate: String,
    pub avg_frame_rate: String,
    pub nb_read_frames: u64,
    /// The stream's four-character tag (`avc1`, `hvc1`, `av01`, ...; `[0][0][0][0]` in WebM).
    pub codec_tag_string: String,
    /// The container as ffprobe names it (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`, `gif`).
    pub format_name: String,
    /// Container duration in seconds.
    pub duration: f64,
}

pub fn ffprobe(file: &Path) -> Probe {
    let output = Command::new(FFPROBE)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_tag_string,pix_fmt,width,height,r_frame_rate,avg_frame_rate,nb_read_frames:format=format_name,duration",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe must be installed at /usr/bin/ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "ffprobe reported errors: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ffprobe json");
    let streams = json["streams"].as_array().expect("streams array");
    assert_eq!(streams.len(), 1, "exactly one video stream: {json}");
    let s = &streams[0];
    let text = |key: &str| {
        s[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing: {s}"))
            .to_string()
    };
    Probe {
        codec_name: text("codec_name"),
        pix_fmt: text("pix_fmt"),
        width: s["width"].as_u64().expect("width"),
        height: s["height"].as_u64().expect("height"),
        r_frame_rate: text("r_frame_rate"),
        avg_frame_rate: text("avg_frame_rate"),
        nb_read_frames: text("nb_read_frames").parse().expect("nb_read_frames"),
        codec_tag_string: text("codec_tag_string"),
        format_name: json["format"]["format_name"]
            .as_str()
            .expect("format_name")
            .to_string(),
        duration: json["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("duration"),
    }
}

/// Decodes frames of `file` back to packed RGB24 with the ffmpeg CLI.
/// `max_frames` limits how many (None: all of them).
pub fn decode_rgb(file: &Path, max_frames: Option<u32>) -> Vec<u8> {
    let mut cmd = Command::new(FFMPEG);
    cmd.args(["-nostdin", "-v", "error", "-i"]).arg(file);
    if let Some(n) = max_frames {
        cmd.args(["-frames:v", &n.to_string()]);
    }
    cmd.args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let output = cmd
        .output()
        .expect("ffmpeg must be installed at /usr/bin/ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg decode failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Mean absolute difference of two equally long byte buffers.
pub fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "buffers differ in length");
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// The four-character types of the file's top-level ISO-BMFF boxes, in order.
pub fn top_level_boxes(file: &Path) -> Vec<String> {
    let data = std::fs::read(file).expect("read mp4");
    let mut boxes = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).into_owned();
        let size = match size32 {
            0 => (data.len() - pos) as u64, // box runs to end of file
            1 => {
                assert!(pos + 16 <= data.len(), "truncated largesize box");
                u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap())
            }
            n => n,
        };
        assert!(size >= 8, "box {kind} at {pos} has bogus size {size}");
        boxes.push(kind);
        pos = pos
            .checked_add(usize::try_from(size).unwrap())
            .expect("box size overflow");
    }
    assert_eq!(pos, data.len(), "boxes must tile the file exactly");
    boxes
}

/// Makes glibc fill every fresh heap block with a byte derived from `byte` (and freed
/// ones with another; 0: off again), so code that reads memory it never wrote sees
/// different garbage in each run instead of, by luck, the same.
pub fn perturb_heap(byte: u8) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tuning parameter.
    unsafe {
        libc::mallopt(libc::M_PERTURB, i32::from(byte));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = byte;
}
