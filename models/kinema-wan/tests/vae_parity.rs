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

#[test]
fn vae_encode_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "vae_encoder.safetensors");
        let vae = AutoencoderKLWan::load(&model_dir(config).join("vae"), DType::F32, &Device::Cpu)
            .unwrap();
        let video = &f["video"];
        let posterior = vae.encode(video).unwrap();
        assert_close(
            &format!("{config} encode mean"),
            &posterior.mean,
            &f["mean"],
        );
        assert_close(
            &format!("{config} encode logvar"),
            &posterior.logvar,
            &f["logvar"],
        );
        assert_close(
            &format!("{config} normalised mode"),
            &vae.normalize(posterior.mode()).unwrap(),
            &f["latents_normalized"],
        );
        assert_close(
            &format!("{config} sample"),
            &posterior.sample_with_noise(&f["noise"]).unwrap(),
            &f["sample"],
        );

        // One chunk per latent frame: the first video frame, then 4 frames each.
        let frames = video.dim(2).unwrap();
        let mut chunks = Vec::new();
        vae.encode_chunks(video, &mut |c| {
            chunks.push(c.dims().to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks.len(), 1 + (frames - 1) / 4, "{config}");
        assert!(chunks.iter().all(|d| d[2] == 1), "{config}: {chunks:?}");

        // Seeded samples: reproducible, and spread around the mean.
        let a = posterior.sample(3).unwrap();
        let b = posterior.sample(3).unwrap();
        let c = posterior.sample(4).unwrap();
        let diff = |x: &candle_core::Tensor, y: &candle_core::Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&a, &b), 0.0, "{config}: same seed, same sample");
        assert!(diff(&a, &c) > 0.0, "{config}: other seed, other sample");
    }
}

#[test]
fn vae_encode_rejects_bad_input() {
    let dir = model_dir("tiny").join("vae");
    let vae = AutoencoderKLWan::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let video =
        |t, h, w| candle_core::Tensor::zeros((1, 3, t, h, w), DType::F32, &Device::Cpu).unwrap();
    // 4 frames is not 1 + 4k; 20 is not a multiple of 8
    for bad in [video(4, 16, 16), video(5, 20, 16)] {
        assert!(
            matches!(vae.encode(&bad), Err(kinema_wan::WanError::Input(_))),
            "{:?}",
            bad.dims()
        );
    }
    let decoder_only = AutoencoderKLWan::load_decoder(&dir, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        decoder_only.encode(&video(1, 16, 16)),
        Err(kinema_wan::WanError::Input(_))
    ));
}
