//! Wan 2.2 against diffusers (fixtures of `tests/wan/make_fixtures_wan22.py`), within
//! 1e-4 (f32, CPU): the Wan 2.2 VAE (residual, patchified) decode and encode, the
//! transformer with per-token timesteps, TI2V-5B text-to-video (Chinese prompt) and
//! image-to-video (non-square image) from one folder, T2V-A14B with its two experts and
//! two guidance scales, and A14B batching.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{case, fixture_dir, load, max_abs_diff};
use kinema_diffusion::{
    BatchItem, GenerationRequest, Pipeline, PipelineError, RgbImage, StepControl,
};
use kinema_wan::info::WanModelInfo;
use kinema_wan::pipeline::{is_high_noise, WanPipeline};
use kinema_wan::transformer::{Timesteps, WanTransformer3DModel};
use kinema_wan::vae::AutoencoderKLWan;

const TOLERANCE: f32 = 1e-4;
const TI2V: &str = "wan22-ti2v";
const A14B: &str = "wan22-a14b";

fn close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOLERANCE, "{what}: max abs diff {d} > {TOLERANCE}");
}

fn model(config: &str) -> std::path::PathBuf {
    fixture_dir(config).join("model")
}

fn request(c: &serde_json::Value) -> GenerationRequest {
    GenerationRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        width: c["width"].as_u64().unwrap() as u32,
        height: c["height"].as_u64().unwrap() as u32,
        num_frames: c["num_frames"].as_u64().unwrap() as u32,
        steps: c["steps"].as_u64().unwrap() as u32,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        guidance_scale_2: c
            .get("guidance_scale_2")
            .and_then(|g| g.as_f64())
            .map(|g| g as f32),
        seed: 0,
        ..Default::default()
    }
}

/// Runs `generate` from the fixture's initial latents and checks every step's latents
/// and the frames.
fn check_pipeline(
    what: &str,
    pipe: &WanPipeline,
    req: &GenerationRequest,
    file: &str,
    config: &str,
) {
    let f = load(config, file);
    let want_t: Vec<f32> = f["timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&t| t as f32)
        .collect();
    let sched = pipe.scheduler.build(want_t.len()).unwrap();
    assert_eq!(sched.timesteps(), want_t, "{what}: timesteps");
    let mut per_step: Vec<Tensor> = Vec::new();
    let frames = pipe
        .generate(req, Some(f["latents"].clone()), &mut |_, _, l| {
            per_step.push(l.clone());
            StepControl::Continue
        })
        .unwrap();
    assert_eq!(per_step.len(), want_t.len());
    for (i, l) in per_step.iter().enumerate() {
        close(
            &format!("{what} latents after step {i}"),
            l,
            &f[&format!("latents_after_step_{i}")],
        );
    }
    let want = &f["frames"];
    let (n, h, w, _) = want.dims4().unwrap();
    assert_eq!((frames.num_frames, frames.height, frames.width), (n, h, w));
    let got = Tensor::from_vec(frames.data, (n, h, w, 3), &Device::Cpu).unwrap();
    close(&format!("{what} frames"), &got, want);
}

#[test]
fn wan22_vae_decode_matches_reference() {
    let f = load(TI2V, "vae.safetensors");
    let vae = AutoencoderKLWan::load(&model(TI2V).join("vae"), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.config.is_residual);
    assert_eq!(vae.config.spatial_compression(), 16);
    let got = vae.decode(&f["latents"]).unwrap();
    close("wan 2.2 vae decode", &got, &f["video"]);
}

#[test]
fn wan22_vae_encode_matches_reference() {
    let f = load(TI2V, "vae_encoder.safetensors");
    let vae = AutoencoderKLWan::load(&model(TI2V).join("vae"), DType::F32, &Device::Cpu).unwrap();
    let posterior = vae.encode(&f["video"]).unwrap();
    close("wan 2.2 encode mean", &posterior.mean, &f["mean"]);
    close("wan 2.2 encode logvar", &posterior.logvar, &f["logvar"]);
    close(
        "wan 2.2 normalised mode",
        &vae.normalize(posterior.mode()).unwrap(),
        &f["latents_normalized"],
    );
    // 16x in space: 40 is not a multiple
    let bad = Tensor::zeros((1, 3, 1, 40, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        vae.encode(&bad),
        Err(kinema_wan::WanError::Input(_))
    ));
}

#[test]
fn transformer_per_token_timesteps_match_reference() {
    let f = load(TI2V, "transformer.safetensors");
    let tr =
        WanTransformer3DModel::load(&model(TI2V).join("transformer"), DType::F32, &Device::Cpu)
            .unwrap();
    let ts: Vec<f32> = f["timestep"]
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(ts.contains(&0.0) && ts.iter().any(|&t| t > 0.0));
    let got = tr
        .forward_timesteps(
            &f["hidden_states"],
            Timesteps::PerToken(&ts),
            &tr.embed_text(&f["encoder_hidden_states"]).unwrap(),
            None,
        )
        .unwrap();
    close("per-token transformer", &got, &f["output"]);

    // uniform per-token timesteps are the per-item forward
    let t = ts.iter().copied().fold(0f32, f32::max);
    let uniform = vec![t; ts.len()];
    let ctx = tr.embed_text(&f["encoder_hidden_states"]).unwrap();
    let a = tr
        .forward_timesteps(
            &f["hidden_states"],
            Timesteps::PerToken(&uniform),
            &ctx,
            None,
        )
        .unwrap();
    let b = tr
        .forward_with_context(&f["hidden_states"], &[t], &ctx)
        .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(tr
        .forward_timesteps(
            &f["hidden_states"],
            Timesteps::PerToken(&ts[1..]),
            &ctx,
            None
        )
        .is_err());
}

#[test]
fn ti2v_text_to_video_matches_reference() {
    let c = case(TI2V);
    let pipe = WanPipeline::load(&model(TI2V), &Device::Cpu, DType::F32).unwrap();
    assert!(pipe.expand_timesteps && pipe.takes_image());
    let req = request(&c["t2v"]);
    assert!(!req.prompt.is_ascii(), "the t2v case has a Chinese prompt");
    check_pipeline("ti2v t2v", &pipe, &req, "pipeline_t2v.safetensors", TI2V);
}

fn fixture_image(config: &str, file: &str) -> RgbImage {
    let f = load(config, file);
    let px = &f["image"];
    let (h, w, _) = px.dims3().unwrap();
    let data: Vec<u8> = px.flatten_all().unwrap().to_vec1().unwrap();
    RgbImage::new(w as u32, h as u32, data).unwrap()
}

#[test]
fn ti2v_image_to_video_matches_reference() {
    let c = case(TI2V);
    let pipe = WanPipeline::load(&model(TI2V), &Device::Cpu, DType::F32).unwrap();
    let mut req = request(&c["i2v"]);
    assert_ne!(req.width, req.height, "a non-square image");
    req.image = Some(fixture_image(TI2V, "pipeline_i2v.safetensors"));
    check_pipeline("ti2v i2v", &pipe, &req, "pipeline_i2v.safetensors", TI2V);

    // an image of another size than the video is refused
    let mut bad = req.clone();
    bad.image = RgbImage::new(
        req.height,
        req.width,
        vec![0u8; (req.width * req.height * 3) as usize],
    );
    assert!(matches!(
        pipe.encode_prompt(&bad).err(),
        Some(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn a14b_two_experts_match_reference() {
    let c = case(A14B);
    let pipe = WanPipeline::load(&model(A14B), &Device::Cpu, DType::F32).unwrap();
    assert!(pipe.transformer_2.is_some() && !pipe.takes_image());
    let req = request(&c);
    assert!(req.guidance_scale_2.is_some());
    // the boundary falls inside the steps: both experts run
    let ratio = c["boundary_ratio"].as_f64().unwrap();
    let ts = pipe
        .scheduler
        .build(req.steps as usize)
        .unwrap()
        .timesteps();
    assert!(ts.iter().any(|&t| is_high_noise(Some(ratio), 1000, t)));
    assert!(ts.iter().any(|&t| !is_high_noise(Some(ratio), 1000, t)));
    check_pipeline("a14b", &pipe, &req, "pipeline.safetensors", A14B);

    // an image is refused by a text-only model
    let mut bad = req.clone();
    bad.image = RgbImage::new(
        req.width,
        req.height,
        vec![0u8; (req.width * req.height * 3) as usize],
    );
    assert!(matches!(
        pipe.encode_prompt(&bad).err(),
        Some(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn expert_switch() {
    assert!(is_high_noise(None, 1000, 0.0));
    assert!(is_high_noise(Some(0.875), 1000, 875.0));
    assert!(!is_high_noise(Some(0.875), 1000, 874.0));
    assert!(is_high_noise(Some(0.9), 1000, 999.0));
}

#[test]
fn a14b_batch_matches_solo() {
    let c = case(A14B);
    let pipe = WanPipeline::load(&model(A14B), &Device::Cpu, DType::F32).unwrap();
    let base = request(&c);
    let reqs = [
        GenerationRequest {
            seed: 5,
            ..base.clone()
        },
        GenerationRequest {
            prompt: "a red fox in snow".into(),
            guidance_scale: 1.0,
            guidance_scale_2: None,
            seed: 6,
            ..base.clone()
        },
        GenerationRequest {
            prompt: "waves breaking on black rocks at dusk".into(),
            guidance_scale: 3.5,
            guidance_scale_2: Some(1.5),
            seed: 7,
            ..base
        },
    ];
    let conds: Vec<_> = reqs
        .iter()
        .map(|r| pipe.encode_prompt(r).unwrap())
        .collect();
    let solo: Vec<Tensor> = reqs
        .iter()
        .zip(&conds)
        .map(|(r, c)| {
            let l = pipe.denoise(r, c, &mut |_| StepControl::Continue).unwrap();
            *l.0.downcast::<Tensor>().unwrap()
        })
        .collect();
    let items: Vec<BatchItem<'_>> = reqs
        .iter()
        .zip(&conds)
        .map(|(request, conditioning)| BatchItem {
            request,
            conditioning,
        })
        .collect();
    let batched = pipe.denoise_batch(&items, &mut |_, _| StepControl::Continue);
    for (i, (b, s)) in batched.into_iter().zip(&solo).enumerate() {
        let b = *b.unwrap().0.downcast::<Tensor>().unwrap();
        let d = max_abs_diff(&b, s);
        eprintln!("a14b batch item {i}: max abs diff {d:.3e}");
        assert!(d <= TOLERANCE, "item {i}: {d}");
    }
}

#[test]
fn model_info_counts_both_experts() {
    let a14b = WanModelInfo::inspect(&model(A14B)).unwrap();
    assert!(a14b.index.two_experts());
    assert_eq!(a14b.capabilities(), ["t2v"]);
    assert!(a14b.params.transformer_2 > 0);
    assert_eq!(a14b.params.transformer_2, a14b.params.transformer);
    assert_eq!(
        a14b.params.total(),
        a14b.params.text_encoder + 2 * a14b.params.transformer + a14b.params.vae
    );
    let ti2v = WanModelInfo::inspect(&model(TI2V)).unwrap();
    assert!(ti2v.params.transformer_2 == 0);
    assert_eq!(ti2v.capabilities(), ["t2v", "i2v"]);
    assert_eq!(ti2v.size_multiple(), 32);
    let m = ti2v.memory_estimate(DType::F32, 96, 32, 9);
    assert!(m.total() >= ti2v.params.total() * 4);
}

#[test]
fn ti2v_batch_with_and_without_image_matches_solo() {
    let c = case(TI2V);
    let pipe = WanPipeline::load(&model(TI2V), &Device::Cpu, DType::F32).unwrap();
    let base = request(&c["i2v"]);
    let image = fixture_image(TI2V, "pipeline_i2v.safetensors");
    let reqs = [
        GenerationRequest {
            image: Some(image.clone()),
            seed: 5,
            ..base.clone()
        },
        GenerationRequest {
            prompt: "a red fox in snow".into(),
            seed: 6,
            ..base.clone()
        },
        GenerationRequest {
            image: Some(image),
            guidance_scale: 1.0,
            seed: 7,
            ..base
        },
    ];
    let conds: Vec<_> = reqs
        .iter()
        .map(|r| pipe.encode_prompt(r).unwrap())
        .collect();
    let solo: Vec<Tensor> = reqs
        .iter()
        .zip(&conds)
        .map(|(r, c)| {
            let l = pipe.denoise(r, c, &mut |_| StepControl::Continue).unwrap();
            *l.0.downcast::<Tensor>().unwrap()
        })
        .collect();
    let items: Vec<BatchItem<'_>> = reqs
        .iter()
        .zip(&conds)
        .map(|(request, conditioning)| BatchItem {
            request,
            conditioning,
        })
        .collect();
    let batched = pipe.denoise_batch(&items, &mut |_, _| StepControl::Continue);
    for (i, (b, s)) in batched.into_iter().zip(&solo).enumerate() {
        let b = *b.unwrap().0.downcast::<Tensor>().unwrap();
        let d = max_abs_diff(&b, s);
        eprintln!("ti2v batch item {i}: max abs diff {d:.3e}");
        assert!(d <= TOLERANCE, "item {i}: {d}");
    }
    // the image items keep the image's latents as their first frame
    assert_eq!(
        max_abs_diff(
            &solo[0].narrow(2, 0, 1).unwrap(),
            &solo[2].narrow(2, 0, 1).unwrap()
        ),
        0.0
    );
}
