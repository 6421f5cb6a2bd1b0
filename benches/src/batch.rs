//! Batched vs sequential denoising of a Wan model (by default the tiny test model): N
//! requests with their own seeds and prompts denoised one after another through
//! `Pipeline::denoise`, then together through `Pipeline::denoise_batch`, alternating,
//! with the best and median of each reported and their ratio.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device};
use kinema_diffusion::{BatchItem, Conditioning, GenerationRequest, Pipeline, StepControl};
use kinema_wan::pipeline::WanPipeline;

pub struct BatchBench<'a> {
    pub model_dir: &'a Path,
    pub batch: usize,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub steps: u32,
    pub repeat: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(b: &BatchBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        b.batch >= 1 && b.repeat >= 1,
        "batch and repeat must be >= 1"
    );
    let mut pipe = WanPipeline::load(b.model_dir, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading {}", b.model_dir.display()))?;
    pipe.max_batch = pipe.max_batch.max(b.batch);
    let requests: Vec<GenerationRequest> = (0..b.batch)
        .map(|i| GenerationRequest {
            prompt: format!("a test scene number {i}, moving slowly"),
            negative_prompt: "blurry, static".into(),
            width: b.width,
            height: b.height,
            num_frames: b.frames,
            steps: b.steps,
            guidance_scale: 5.0,
            seed: 1000 + i as u64,
            ..Default::default()
        })
        .collect();
    let conds = requests
        .iter()
        .map(|r| pipe.encode_prompt(r))
        .collect::<Result<Vec<Conditioning>, _>>()?;
    let items: Vec<BatchItem> = requests
        .iter()
        .zip(&conds)
        .map(|(request, conditioning)| BatchItem {
            request,
            conditioning,
        })
        .collect();
    let tr = &pipe.transformer.config;
    println!(
        "Wan {} layers, dim {}; {} requests of {}x{} x {} frames, {} steps, guidance 5; \
         f32 CPU, {} threads; {} rounds",
        tr.num_layers,
        tr.inner_dim(),
        b.batch,
        b.width,
        b.height,
        b.frames,
        b.steps,
        candle_core::utils::get_num_threads(),
        b.repeat
    );
    let (mut sequential, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..b.repeat {
        let t = Instant::now();
        for item in &items {
            pipe.denoise(item.request, item.conditioning, &mut |_| {
                StepControl::Continue
            })?;
        }
        sequential.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for r in pipe.denoise_batch(&items, &mut |_, _| StepControl::Continue) {
            r?;
        }
        batched.push(t.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (seq_best, bat_best) = (best(&sequential), best(&batched));
    let (seq_med, bat_med) = (median(&mut sequential), median(&mut batched));
    println!(
        "sequential: best {:.1} ms, median {:.1} ms for {} requests",
        seq_best * 1e3,
        seq_med * 1e3,
        b.batch
    );
    println!(
        "batched:    best {:.1} ms, median {:.1} ms for {} requests",
        bat_best * 1e3,
        bat_med * 1e3,
        b.batch
    );
    println!(
        "batched throughput / sequential throughput: {:.2} (best), {:.2} (median)",
        seq_best / bat_best,
        seq_med / bat_med
    );
    crate::result(
        "batch",
        serde_json::json!({
            "batch": b.batch,
            "width": b.width, "height": b.height, "frames": b.frames, "steps": b.steps,
            "sequential_best_s": seq_best, "sequential_median_s": seq_med,
            "batched_best_s": bat_best, "batched_median_s": bat_med,
            "throughput_ratio_best": seq_best / bat_best,
            "throughput_ratio_median": seq_med / bat_med,
        }),
    );
    Ok(())
}
