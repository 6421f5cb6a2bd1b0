//! The whole WanPipeline (prompt text + given initial latents -> frames) against
//! diffusers, step by step, plus the engine-facing Pipeline trait on the tiny model.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, case, load, model_dir, CONFIGS};
use kinema_diffusion::{GenerationRequest, Pipeline, PipelineError, StepControl};
use kinema_wan::pipeline::WanPipeline;

fn request(config: &str) -> GenerationRequest {
    let c = case(config);
    GenerationRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        width: c["width"].as_u64().unwrap() as u32,
        height: c["height"].as_u64().unwrap() as u32,
        num_frames: c["num_frames"].as_u64().unwrap() as u32,
        steps: c["steps"].as_u64().unwrap() as u32,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        seed: 0,
        ..Default::default()
    }
}

#[test]
fn pipeline_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "pipeline.safetensors");
        let pipe = WanPipeline::load(&model_dir(config), &Device::Cpu, DType::F32).unwrap();
        let req = request(config);
        let want_t = f["timesteps"].to_vec1::<i64>().unwrap();
        let sched = pipe.scheduler.build(want_t.len()).unwrap();
        let want_t: Vec<f32> = want_t.iter().map(|&t| t as f32).collect();
        assert_eq!(sched.timesteps(), want_t, "{config}: timesteps");
        let want_sigmas = f["sigmas"].to_vec1::<f32>().unwrap();
        for (a, b) in sched.sigmas().iter().zip(&want_sigmas) {
            assert!((a - b).abs() <= 1e-7, "{config}: sigma {a} vs {b}");
        }
        let mut per_step: Vec<Tensor> = Vec::new();
        let frames = pipe
            .generate(&req, Some(f["latents"].clone()), &mut |_, _, l| {
                per_step.push(l.clone());
                StepControl::Continue
            })
            .unwrap();
        for (i, l) in per_step.iter().enumerate() {
            let want = &f[&format!("latents_after_step_{i}")];
            assert_close(&format!("{config} latents after step {i}"), l, want);
        }
        let want = &f["frames"];
        let (n, h, w, _) = want.dims4().unwrap();
        assert_eq!((frames.num_frames, frames.height, frames.width), (n, h, w));
        let got = Tensor::from_vec(frames.data, (n, h, w, 3), &Device::Cpu).unwrap();
        assert_close(&format!("{config} pipeline frames"), &got, want);
    }
}

#[test]
fn pipeline_trait_runs_reports_progress_and_cancels() {
    let pipe = WanPipeline::load(&model_dir("tiny"), &Device::Cpu, DType::F32).unwrap();
    let req = request("tiny");
    let cond = pipe.encode_prompt(&req).unwrap();
    let mut seen = Vec::new();
    let latents = pipe
        .denoise(&req, &cond, &mut |p| {
            seen.push((p.step, p.total));
            StepControl::Continue
        })
        .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)]);
    let frames = pipe.decode(&req, latents).unwrap();
    assert_eq!(
        (frames.num_frames, frames.height, frames.width),
        (5, 32, 48)
    );
    assert!(frames.data.iter().all(|v| (0.0..=1.0).contains(v)));

    // same seed, same video
    let again = pipe
        .denoise(&req, &cond, &mut |_| StepControl::Continue)
        .unwrap();
    let again = pipe.decode(&req, again).unwrap();
    assert_eq!(frames, again);

    let err = pipe
        .denoise(&req, &cond, &mut |p| {
            if p.step == 2 {
                StepControl::Cancel
            } else {
                StepControl::Continue
            }
        })
        .err()
        .unwrap();
    assert!(matches!(err, PipelineError::Cancelled { step: 2 }));

    let mut bad = req.clone();
    bad.num_frames = 6;
    assert!(matches!(
        pipe.denoise(&bad, &cond, &mut |_| StepControl::Continue)
            .err(),
        Some(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn an_offloaded_text_encoder_gives_the_same_embeddings() {
    let mut pipe = WanPipeline::load(&model_dir("tiny"), &Device::Cpu, DType::F32).unwrap();
    let req = request("tiny");
    let before = pipe.encode(&req.prompt, &req.negative_prompt, 5.0).unwrap();
    let copy = pipe.text_encoder.to_device(&Device::Cpu).unwrap();
    pipe.offload_text_encoder().unwrap();
    assert!(pipe.text_encoder.device().is_cpu());
    let after = pipe.encode(&req.prompt, &req.negative_prompt, 5.0).unwrap();
    let diff = |a: &Tensor, b: &Tensor| kinema_diffusion::tiny::max_abs_diff(a, b).unwrap();
    assert_eq!(diff(&before.prompt_embeds, &after.prompt_embeds), 0.0);
    let (nb, na) = (
        before.negative_prompt_embeds.unwrap(),
        after.negative_prompt_embeds.unwrap(),
    );
    assert_eq!(diff(&nb, &na), 0.0);
    // the copy an offloaded encoder makes for each request encodes the same
    let ids = Tensor::new(&[[5u32, 9, 2, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 0]], &Device::Cpu).unwrap();
    let a = pipe.text_encoder.forward(&ids, &mask).unwrap();
    let b = copy.forward(&ids, &mask).unwrap();
    assert_eq!(diff(&a, &b), 0.0);
}
