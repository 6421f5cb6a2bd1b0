//! The tiny random Wan 2.1 model the e2e tests serve (tests/wan/fixtures/tiny/model,
//! the weights diffusers' outputs are checked against).

use std::path::{Path, PathBuf};

/// The id the tests serve it under.
pub const TINY_WAN: &str = "wan-tiny";

pub fn tiny_wan_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/wan/fixtures/tiny/model")
        .canonicalize()
        .expect("tests/wan/fixtures/tiny/model")
}

/// Writes the data dir's `models.toml` (read by `kinema serve` at start): the tiny
/// model at 48x32, 5 frames, `steps` steps by default, 4 credits a second.
pub fn write_tiny_wan_models_file(data_dir: &Path, steps: u32) {
    write_tiny_wan_models_file_priced(data_dir, steps, 128);
}

/// The same, with its one price tier ending at `tier_max_side` px (its limits stay
/// 128x128: above the tier a size is allowed but cannot be priced).
pub fn write_tiny_wan_models_file_priced(data_dir: &Path, steps: u32, tier_max_side: u32) {
    let toml = format!(
        r#"[[model]]
id = "{TINY_WAN}"
source = "{}"
description = "tiny random Wan 2.1 (CI)"
[model.defaults]
width = 48
height = 32
frames = 5
fps = 8
steps = {steps}
guidance = 5.0
[model.limits]
max_width = 128
max_height = 128
max_frames = 17
max_steps = 10
[model.price]
default_steps = {steps}
tiers = [{{ tier = "tiny", max_side = {tier_max_side}, credits_per_second = 4 }}]
"#,
        tiny_wan_model().display()
    );
    std::fs::write(data_dir.join("models.toml"), toml).expect("writing models.toml");
}

/// A Wan fixture's folder (tests/wan/fixtures/<name>).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/wan/fixtures")
        .join(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("tests/wan/fixtures/{name}: {e}"))
}

/// Runs `kinema` offline: no server and no models from this environment, with
/// `envs` set.
pub fn kinema_offline(args: &[&str], envs: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(super::KINEMA);
    cmd.args(args)
        .env_remove("KINEMA_SERVER")
        .env_remove("KINEMA_MODELS")
        .env_remove("KINEMA_MODELS_FILE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running kinema")
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The largest absolute difference between the frames `kinema generate --save-frames`
/// wrote to `saved` and `want` (a fixture's `[F, H, W, 3]` frames).
pub fn saved_frames_max_diff(saved: &Path, want: &candle_core::Tensor) -> f32 {
    let got = candle_core::safetensors::load(saved, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    let got = &got["frames"];
    assert_eq!(got.dims(), want.dims(), "saved frames' shape");
    (got - want)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("frames difference")
}

/// Writes a fixture's `[H, W, 3]` uint8 image tensor as a PNG.
pub fn write_png(t: &candle_core::Tensor, path: &Path) {
    let (h, w, _) = t.dims3().expect("[H, W, 3]");
    let data: Vec<u8> = t
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("uint8 image");
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .expect("RGB buffer")
        .save(path)
        .expect("writing the PNG");
}
