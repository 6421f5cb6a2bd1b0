//! End to end, offline image-to-video: `kinema generate --model-dir DIR --image PNG
//! [--last-image PNG] --init-latents F --save-frames F` on the tiny I2V, FLF2V and Wan
//! 2.2 I2V-A14B fixtures (tests/wan/fixtures/i2v-*, written by make_fixtures_i2v.py;
//! A14B with `--guidance-2`) must reproduce diffusers' `WanImageToVideoPipeline`
//! frames; an image of another size is fitted as the server fits it; missing,
//! undecodable or misdirected images are refused with a clear message.

mod common;

use common::*;

fn case(config: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(wan::fixture(config).join("case.json")).unwrap())
        .unwrap()
}

/// `generate` arguments for a fixture's case (size, frames, steps, guidance, prompts).
fn case_args(config: &str) -> Vec<String> {
    let c = case(config);
    let n = |k: &str| c[k].as_u64().unwrap().to_string();
    [
        "generate",
        "--model-dir",
        wan::fixture(config).join("model").to_str().unwrap(),
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
    .chain(
        c["guidance_scale_2"]
            .as_f64()
            .map(|g| ["--guidance-2".to_string(), g.to_string()])
            .into_iter()
            .flatten(),
    )
    .collect()
}

fn run_case(config: &str) {
    let dir = TestDir::new();
    let want = candle_core::safetensors::load(
        wan::fixture(config).join("pipeline.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let image = dir.path().join("first.png");
    wan::write_png(&want["image"], &image);
    let frames_file = dir.path().join("frames.safetensors");
    let video = dir.path().join("i2v.mp4");
    let mut args = case_args(config);
    let pipeline = wan::fixture(config).join("pipeline.safetensors");
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
        wan::write_png(last, &p);
        args.push("--last-image".into());
        args.push(p.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = wan::kinema_offline(&args, &[]);
    assert!(
        out.status.success(),
        "kinema generate failed:\n{}",
        wan::stderr(&out)
    );

    let diff = wan::saved_frames_max_diff(&frames_file, &want["frames"]);
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
fn offline_two_expert_image_to_video_matches_diffusers() {
    run_case("i2v-a14b");
}

#[test]
fn offline_first_last_frame_matches_diffusers() {
    run_case("i2v-flf2v");
}

#[test]
fn offline_image_to_video_refuses_bad_images() {
    let dir = TestDir::new();
    let want = candle_core::safetensors::load(
        wan::fixture("i2v-tiny").join("pipeline.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let image = dir.path().join("first.png");
    wan::write_png(&want["image"], &image);
    let output = dir.path().join("x.mp4");

    // the image is 80x48: for a 64x48 video it is fitted as the server fits a
    // submitted image (scaled to cover, centre-cropped)
    let mut args = case_args("i2v-tiny");
    let w = args.iter().position(|a| a == "--width").unwrap();
    args[w + 1] = "64".into();
    args.extend(["--image".into(), image.to_str().unwrap().into()]);
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = wan::kinema_offline(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}", wan::stderr(&out));
    let probe = ffprobe(&output);
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(64), Some(48)),
        "{probe}"
    );

    // no image for an image-to-video model
    let mut args = case_args("i2v-tiny");
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = wan::kinema_offline(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!out.status.success());
    assert!(
        wan::stderr(&out).contains("generates from an input image: none was given"),
        "{}",
        wan::stderr(&out)
    );

    // not an image file
    let mut args = case_args("i2v-tiny");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    args.extend(["--image".into(), junk.to_str().unwrap().into()]);
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    let out = wan::kinema_offline(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!out.status.success());
    assert!(
        wan::stderr(&out).contains("--image: the image is not a PNG, JPEG or WebP image"),
        "{}",
        wan::stderr(&out)
    );

    // an image for a text-to-video model
    let t2v = wan::fixture("tiny").join("model");
    let out = wan::kinema_offline(
        &[
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
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        wan::stderr(&out).contains("--image: ")
            && wan::stderr(&out).contains("does not take an input image"),
        "{}",
        wan::stderr(&out)
    );
}
