//! Wan-VAE decode against diffusers' AutoencoderKLWan.decode.

mod common;

use candle_core::{DType, Device};
use common::{assert_close, load, model_dir, CONFIGS};
use kinema_wan::vae::AutoencoderKLWan;

#[test]
fn vae_decode_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "vae.safetensors");
        let vae = AutoencoderKLWan::load(&model_dir(config).join("vae"), DType::F32, &Device::Cpu)
            .unwrap();
        let got = vae.decode(&f["latents"]).unwrap();
        assert_close(&format!("{config} vae decode"), &got, &f["video"]);
    }
}
