//! Image-to-video against diffusers / transformers (`tests/wan/make_fixtures_i2v.py`):
//! the CLIP image processor (the installed PIL backend, uint8 bicubic resampling) on
//! non-square images, the CLIP vision encoder's penultimate states, the I2V transformer
//! (image embedder, added image keys/values, FLF2V `pos_embed`), the VAE condition and
//! the whole pipeline step by step, for Wan 2.1 I2V, FLF2V and a Wan 2.2 two-expert
//! I2V (no image encoder, `boundary_ratio`). Tolerance 1e-4 (f32, CPU).

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{case, fixture_dir, load, max_abs_diff};
use kinema_diffusion::{GenerationRequest, Pipeline, RgbImage, StepControl};
use kinema_wan::clip_vision::ClipVisionModel;
use kinema_wan::image_processor::ClipImageProcessor;
use kinema_wan::pipeline_i2v::WanImageToVideoPipeline;
use kinema_wan::transformer::WanTransformer3DModel;

const CONFIGS: [&str; 3] = ["i2v-tiny", "i2v-flf2v", "i2v-a14b"];
const TOL: f32 = 1e-4;

fn close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOL, "{what}: max abs diff {d} > {TOL}");
}

fn model(config: &str) -> std::path::PathBuf {
    fixture_dir(config).join("model")
}

/// `[N, H, W, 3]` or `[H, W, 3]` uint8 -> one RgbImage per leading index.
fn images(t: &Tensor) -> Vec<RgbImage> {
    let t = if t.rank() == 3 {
        t.unsqueeze(0).unwrap()
    } else {
        t.clone()
    };
    let (n, h, w, _) = t.dims4().unwrap();
    (0..n)
        .map(|i| {
            let data: Vec<u8> = t.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            RgbImage::new(w as u32, h as u32, Arc::<[u8]>::from(data)).unwrap()
        })
        .collect()
}

fn processor(kw: &serde_json::Value) -> ClipImageProcessor {
    // the same keys as a preprocessor_config.json, other settings transformers' defaults
    let dir = std::env::temp_dir().join(format!(
        "kinema-i2v-proc-{}-{}",
        std::process::id(),
        kw["name"].as_str().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = serde_json::json!({
        "size": kw["size"],
        "crop_size": kw["crop_size"],
        "resample": 3,
    });
    std::fs::write(dir.join("preprocessor_config.json"), cfg.to_string()).unwrap();
    let p = ClipImageProcessor::from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    p
}

#[test]
fn image_processor_matches_transformers() {
    for config in ["i2v-tiny", "i2v-flf2v"] {
        let f = load(config, "processor.safetensors");
        let p = ClipImageProcessor::from_dir(&model(config).join("image_processor")).unwrap();
        let imgs = images(&f["case.image"]);
        let got: Vec<Tensor> = imgs
            .iter()
            .map(|i| p.preprocess(i, &Device::Cpu).unwrap())
            .collect();
        let got = Tensor::cat(&got, 0).unwrap();
        close(
            &format!("{config} pixel values"),
            &got,
            &f["case.pixel_values"],
        );
        for kw in case(config)["processor_cases"].as_array().unwrap() {
            let name = kw["name"].as_str().unwrap();
            let p = processor(kw);
            let img = &images(&f[&format!("{name}.image")])[0];
            let got = p.preprocess(img, &Device::Cpu).unwrap();
            close(
                &format!("{config} processor case {name}"),
                &got,
                &f[&format!("{name}.pixel_values")],
            );
        }
    }
}

#[test]
fn clip_vision_penultimate_matches_transformers() {
    for config in ["i2v-tiny", "i2v-flf2v"] {
        let f = load(config, "clip.safetensors");
        let clip = ClipVisionModel::load(
            &model(config).join("image_encoder"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let got = clip.penultimate_hidden_states(&f["pixel_values"]).unwrap();
        close(
            &format!("{config} CLIP hidden_states[-2]"),
            &got,
            &f["penultimate"],
        );
    }
}

#[test]
fn i2v_transformer_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "transformer.safetensors");
        let t = f["timestep"].to_vec1::<i64>().unwrap()[0] as f32;
        let tr = WanTransformer3DModel::load(
            &model(config).join("transformer"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let got = tr
            .forward_with_image(
                &f["hidden_states"],
                &[t],
                &f["encoder_hidden_states"],
                f.get("encoder_hidden_states_image"),
            )
            .unwrap();
        close(&format!("{config} transformer"), &got, &f["output"]);
        if let Some(want) = f.get("output_2") {
            let tr2 = WanTransformer3DModel::load(
                &model(config).join("transformer_2"),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            let got = tr2
                .forward(&f["hidden_states"], &[t], &f["encoder_hidden_states"])
                .unwrap();
            close(&format!("{config} transformer_2"), &got, want);
        }
    }
}

fn request(config: &str, f: &std::collections::HashMap<String, Tensor>) -> GenerationRequest {
    let c = case(config);
    GenerationRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        width: c["width"].as_u64().unwrap() as u32,
        height: c["height"].as_u64().unwrap() as u32,
        num_frames: c["num_frames"].as_u64().unwrap() as u32,
        steps: c["steps"].as_u64().unwrap() as u32,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        guidance_scale_2: c["guidance_scale_2"].as_f64().map(|g| g as f32),
        seed: 0,
        image: Some(images(&f["image"]).remove(0)),
        last_image: f.get("last_image").map(|t| images(t).remove(0)),
    }
}

#[test]
fn i2v_pipeline_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "pipeline.safetensors");
        let pipe = WanImageToVideoPipeline::load(&model(config), &Device::Cpu, DType::F32).unwrap();
        let req = request(config, &f);
        let want_t: Vec<f32> = f["timesteps"]
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&t| t as f32)
            .collect();
        assert_eq!(
            pipe.scheduler.build(want_t.len()).unwrap().timesteps(),
            want_t,
            "{config}: timesteps"
        );
        let cond = pipe.encode(&req).unwrap();
        close(
            &format!("{config} condition (mask + VAE latents)"),
            &cond.condition,
            &f["condition"],
        );
        let mut per_step: Vec<Tensor> = Vec::new();
        let latents = pipe
            .denoise_latents(
                &cond,
                f["latents"].clone(),
                req.steps as usize,
                req.guidance_scale,
                req.guidance_scale_2,
                &mut |_, _, l| {
                    per_step.push(l.clone());
                    StepControl::Continue
                },
            )
            .unwrap();
        assert_eq!(per_step.len(), want_t.len());
        for (i, l) in per_step.iter().enumerate() {
            close(
                &format!("{config} latents after step {i}"),
                l,
                &f[&format!("latents_after_step_{i}")],
            );
        }
        let frames = pipe.decode_latents(&latents).unwrap();
        let want = &f["frames"];
        let (n, h, w, _) = want.dims4().unwrap();
        assert_eq!((frames.num_frames, frames.height, frames.width), (n, h, w));
        let got = Tensor::from_vec(frames.data, (n, h, w, 3), &Device::Cpu).unwrap();
        close(&format!("{config} frames"), &got, want);
    }
}

#[test]
fn i2v_pipeline_trait_runs_and_refuses_bad_images() {
    let config = "i2v-tiny";
    let f = load(config, "pipeline.safetensors");
    let pipe = WanImageToVideoPipeline::load(&model(config), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(pipe.max_batch(), 1);
    let req = request(config, &f);
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
        (5, 48, 80)
    );

    // no image, an image of another size, a last image for a plain I2V model
    let mut no_image = req.clone();
    no_image.image = None;
    assert!(pipe.encode_prompt(&no_image).is_err());
    let mut wrong = req.clone();
    wrong.width = 64;
    assert!(pipe.encode_prompt(&wrong).is_err());
    let mut last = req.clone();
    last.last_image = req.image.clone();
    assert!(pipe.encode_prompt(&last).is_err());
}

#[test]
fn info_inspects_image_to_video_folders() {
    use kinema_wan::info::{WanModelInfo, WanTask};
    let count = |dir: &std::path::Path| kinema_diffusion::weights::parameter_count(dir).unwrap();

    let i2v = WanModelInfo::inspect(&model("i2v-tiny")).unwrap();
    assert_eq!(i2v.task, WanTask::ImageToVideo { last_image: false });
    assert_eq!(i2v.capabilities(), ["i2v"]);
    assert_eq!(i2v.image_encoder.as_ref().map(|c| c.hidden_size), Some(32));
    assert_eq!(
        i2v.params.image_encoder,
        count(&model("i2v-tiny").join("image_encoder"))
    );
    assert!(i2v.params.image_encoder > 0 && i2v.params.transformer_2 == 0);

    let flf = WanModelInfo::inspect(&model("i2v-flf2v")).unwrap();
    assert_eq!(flf.capabilities(), ["i2v", "flf2v"]);

    let a14b = WanModelInfo::inspect(&model("i2v-a14b")).unwrap();
    assert_eq!(a14b.capabilities(), ["i2v"]);
    assert!(a14b.image_encoder.is_none());
    assert_eq!(a14b.index.boundary_ratio, Some(0.9));
    assert_eq!(a14b.params.transformer_2, a14b.params.transformer);
    let total = a14b.params.total();
    assert_eq!(
        total,
        a14b.params.text_encoder + 2 * a14b.params.transformer + a14b.params.vae
    );
    // both experts are resident: their weights count twice in the estimate
    let est = a14b.memory_estimate(DType::F32, 32, 32, 5);
    assert_eq!(est.weights, total * 4);

    let t2v = WanModelInfo::inspect(&fixture_dir("tiny").join("model")).unwrap();
    assert_eq!(t2v.task, WanTask::TextToVideo);
    assert_eq!(t2v.capabilities(), ["t2v"]);
}
