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
