//! Shared helpers for the parity tests against the diffusers fixtures in
//! `tests/wan/fixtures/<config>/` (written by `tests/wan/make_fixtures.py`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};

pub const CONFIGS: [&str; 2] = ["tiny", "wide"];
pub const TOLERANCE: f32 = 1e-3;

pub fn fixture_dir(config: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/wan/fixtures")
        .join(config)
}

pub fn load(config: &str, file: &str) -> HashMap<String, Tensor> {
    let path = fixture_dir(config).join(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn case(config: &str) -> serde_json::Value {
    let path = fixture_dir(config).join("case.json");
    let text = std::fs::read_to_string(&path).expect("case.json");
    serde_json::from_str(&text).expect("case.json parses")
}

static MATERIALIZE: Mutex<()> = Mutex::new(());

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// The Diffusers model folder of a config. Configs that ship their weights are used
/// in place; the others are copied under the test target dir once and their
/// safetensors regenerated from each component's `weights.json`.
pub fn model_dir(config: &str) -> PathBuf {
    let src = fixture_dir(config).join("model");
    let shipped = case(config)["ship_weights"].as_bool().unwrap_or(false);
    if shipped {
        return src;
    }
    let _guard = MATERIALIZE.lock().unwrap_or_else(|e| e.into_inner());
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wan-{config}"));
    let done = dst.join(".complete");
    // the marker records which manifests the copy was made from
    let mut stamp = String::new();
    for comp in ["transformer", "vae", "text_encoder"] {
        let text = std::fs::read_to_string(src.join(comp).join("weights.json")).expect("manifest");
        stamp.push_str(&format!(
            "{comp}:{:016x}\n",
            kinema_diffusion::tiny::fnv1a64(&text)
        ));
    }
    if std::fs::read_to_string(&done).ok().as_deref() == Some(stamp.as_str()) {
        return dst;
    }
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&src, &dst);
    for (comp, file) in [
        ("transformer", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ] {
        let dir = dst.join(comp);
        kinema_diffusion::tiny::materialize(&dir.join("weights.json"), &dir.join(file))
            .unwrap_or_else(|e| panic!("materialize {comp}: {e}"));
    }
    std::fs::write(&done, stamp).expect("marker");
    dst
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    kinema_diffusion::tiny::max_abs_diff(a, b).unwrap()
}

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOLERANCE, "{what}: max abs diff {d} > {TOLERANCE}");
}
