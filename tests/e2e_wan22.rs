//! Wan 2.2 offline: `kinema generate --model-dir` on the tiny TI2V-5B folder (text-only,
//! Chinese prompt) and the tiny T2V-A14B folder (two experts, `--guidance-2`) with
//! diffusers' initial latents reproduces diffusers' frames
//! (tests/wan/fixtures/wan22-*/, `make_fixtures_wan22.py`) within 1e-4.

mod common;

use common::*;

/// Runs the offline generate for one case of a fixture and compares the saved frames.
fn offline_case(fixture: &str, case: &serde_json::Value, file: &str, extra: &[&str]) {
    let dir = TestDir::new();
    let fx = wan::fixture(fixture);
    let model = fx.join("model");
    let frames_file = dir.path().join("frames.safetensors");
    let video = dir.path().join("offline.mp4");
    let n = |k: &str| case[k].as_u64().unwrap().to_string();
    let (w, h, f, steps) = (n("width"), n("height"), n("num_frames"), n("steps"));
    let guidance = case["guidance_scale"].as_f64().unwrap().to_string();
    let mut args = vec![
        "generate",
        "--model-dir",
        model.to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--negative-prompt",
        case["negative_prompt"].as_str().unwrap(),
        "--width",
        &w,
        "--height",
        &h,
        "--frames",
        &f,
        "--steps",
        &steps,
        "--guidance",
        &guidance,
        "--fps",
        "8",
        "--device",
        "cpu",
        "--quiet",
    ];
    let init = fx.join(file);
    args.extend([
        "--init-latents",
        init.to_str().unwrap(),
        "--save-frames",
        frames_file.to_str().unwrap(),
        "--output",
        video.to_str().unwrap(),
    ]);
    args.extend(extra);
    let out = wan::kinema_offline(&args, &[]);
    assert!(
        out.status.success(),
        "kinema generate failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = candle_core::safetensors::load(&init, &candle_core::Device::Cpu).unwrap();
    let diff = wan::saved_frames_max_diff(&frames_file, &want["frames"]);
    eprintln!("{fixture} {file}: frames max abs diff {diff:.3e}");
    assert!(diff <= 1e-4, "frames differ from diffusers by {diff}");
    assert!(std::fs::metadata(&video)
        .map(|m| m.len() > 0)
        .unwrap_or(false));
}

fn case(fixture: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(wan::fixture(fixture).join("case.json")).unwrap())
        .unwrap()
}

#[test]
fn offline_ti2v_text_to_video_matches_diffusers() {
    let c = case("wan22-ti2v");
    offline_case("wan22-ti2v", &c["t2v"], "pipeline_t2v.safetensors", &[]);
}

/// TI2V with a first frame: a non-square image (32x96) through `--image`, resolved and
/// fitted as the server does (already the video's size, so unchanged).
#[test]
fn offline_ti2v_image_to_video_matches_diffusers() {
    let c = case("wan22-ti2v");
    let dir = TestDir::new();
    let want = candle_core::safetensors::load(
        wan::fixture("wan22-ti2v").join("pipeline_i2v.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let image = dir.path().join("first.png");
    wan::write_png(&want["image"], &image);
    offline_case(
        "wan22-ti2v",
        &c["i2v"],
        "pipeline_i2v.safetensors",
        &["--image", image.to_str().unwrap()],
    );
}

#[test]
fn offline_a14b_matches_diffusers() {
    let c = case("wan22-a14b");
    let g2 = c["guidance_scale_2"].as_f64().unwrap().to_string();
    offline_case(
        "wan22-a14b",
        &c,
        "pipeline.safetensors",
        &["--guidance-2", &g2],
    );
}

#[test]
fn offline_guidance_2_needs_two_experts() {
    let model = wan::fixture("wan22-ti2v").join("model");
    let out = wan::kinema_offline(
        &[
            "generate",
            "--model-dir",
            model.to_str().unwrap(),
            "--prompt",
            "a cat",
            "--width",
            "32",
            "--height",
            "32",
            "--frames",
            "1",
            "--steps",
            "1",
            "--guidance-2",
            "2",
            "--output",
            "/dev/null",
            "--quiet",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--guidance-2"), "{err}");
}
