//! End to end, offline image-to-video: `kinema generate --model-dir DIR --image PNG
//! [--last-image PNG] --init-latents F --save-frames F` on the tiny I2V and FLF2V
//! fixtures (tests/wan/fixtures/i2v-*, written by make_fixtures_i2v.py) must reproduce
//! diffusers' `WanImageToVideoPipeline` frames; images of another size than the video,
//! and images for a text-to-video model, are refused with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn fixtures(config: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/wan/fixtures")
        .join(config)
}

fn kinema(args: &[&str]) -> Output {
    std::process::Command::new(KINEMA)
        .args(args)
        .env_remove("KINEMA_SERVER")
        .env_remove("KINEMA_MODELS")
        .env_remove("KINEMA_MODELS_FILE")
        .output()
        .expect("running kinema")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a `[H, W, 3]` uint8 tensor of a fixture as a PNG.
fn write_png(t: &candle_core::Tensor, path: &Path) {
    let (h, w, _) = t.dims3().unwrap();
    let data: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .unwrap()
        .save(path)
        .unwrap();
}

fn case(config: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures(config).join("case.json")).unwrap())
        .unwrap()
}

/// `generate` arguments for a fixture's case (size, frames, steps, guidance, prompts).
fn case_args(config: &str) -> Vec<String> {
    let c = case(config);
    let n = |k: &str| c[k].as_u64().unwrap().to_string();
    [
        "generate",
        "--model-dir",
        fixtures(config).join("model").to_str().unwrap(),
        "--prompt",
        c["prompt"].as_str().unwrap(),
        "--negative-prompt",
        c["negative_prompt"].as_str().unwrap(),
        "--width",
        &n("width"),
        "--height",
        &n("height"),
        "--frames",
        &n("num_frames"),
        "--steps",
        &n("steps"),
        "--guidance",
        &c["guidance_scale"].as_f64().unwrap().to_string(),
        "--fps",
        "8",
        "--device",
        "cpu",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_case(config: &str) {
    let dir = TestDir::new();
    let want = candle_core::safetensors::load(
        fixtures(config).join("pipeline.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let image = dir.path().join("first.png");
    write_png(&want["image"], &image);
    let frames_file = dir.path().join("frames.safetensors");
    let video = dir.path().join("i2v.mp4");
    let mut args = case_args(config);
    let pipeline = fixtures(config).join("pipeline.safetensors");
    for a in [
        "--image",
        image.to_str().unwrap(),
        "--init-latents",
        pipeline.to_str().unwrap(),
        "--save-frames",
        frames_file.to_str().unwrap(),
        "--output",
        video.to_str().unwrap(),
    ] {
        args.push(a.into());
    }
    if let Some(last) = want.get("last_image") {
        let p = dir.path().join("last.png");
        write_png(last, &p);
        args.push("--last-image".into());
        args.push(p.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kinema(&args);
    assert!(
        out.status.success(),
        "kinema generate failed:\n{}",
        stderr(&out)
    );

    let got = candle_core::safetensors::load(&frames_file, &candle_core::Device::Cpu).unwrap();
    let (got, want) = (&got["frames"], &want["frames"]);
    assert_eq!(got.dims(), want.dims());
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("{config}: offline frames vs diffusers: max abs diff {diff:.3e}");
    assert!(
        diff <= 1e-4,
        "{config}: frames differ from diffusers by {diff}"
    );
    let probe = ffprobe(&video);
    assert_eq!(probe["codec_name"], "h264", "{probe}");
    assert_eq!(probe["width"].as_u64(), case(config)["width"].as_u64());
}

#[test]
fn offline_image_to_video_matches_diffusers() {
    run_case("i2v-tiny");
}

#[test]
fn offline_first_last_frame_matches_diffusers() {
    run_case("i2v-flf2v");
}

#[test]
fn offline_image_to_video_refuses_bad_images() {
    let dir = TestDir::new();
    let want = candle_core::safetensors::load(
        fixtures("i2v-tiny").join("pipeline.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let image = dir.path().join("first.png");
    write_png(&want["image"], &image);
    let output = dir.path().join("x.mp4");

    // the image is 80x48: for a 64x48 video it is fitted as the server fits a
    // submitted image (scaled to cover, centre-cropped)
    let mut args = case_args("i2v-tiny");
    let w = args.iter().position(|a| a == "--width").unwrap();
    args[w + 1] = "64".into();
    args.extend(["--image".into(), image.to_str().unwrap().into()]);
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = kinema(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = ffprobe(&output);
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(64), Some(48)),
        "{probe}"
    );

    // no image for an image-to-video model
    let mut args = case_args("i2v-tiny");
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = kinema(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("generates from an input image: none was given"),
        "{}",
        stderr(&out)
    );

    // not an image file
    let mut args = case_args("i2v-tiny");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    args.extend(["--image".into(), junk.to_str().unwrap().into()]);
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = kinema(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--image: the image is not a PNG, JPEG or WebP image"),
        "{}",
        stderr(&out)
    );

    // an image for a text-to-video model
    let t2v = fixtures("tiny").join("model");
    let out = kinema(&[
        "generate",
        "--model-dir",
        t2v.to_str().unwrap(),
        "--prompt",
        "a cat",
        "--width",
        "80",
        "--height",
        "48",
        "--frames",
        "5",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--image",
        image.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--image: ") && stderr(&out).contains("does not take an input image"),
        "{}",
        stderr(&out)
    );
}
