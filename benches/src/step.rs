//! One guided denoising step of a real-size Wan model through the pipeline's own path
//! (`WanPipeline::denoise_latents`: cond and uncond rows as one batch-2 transformer
//! forward, classifier-free guidance, the UniPC update), timed step by step with the
//! device synchronised, plus the attention kernel alone at a given shape.
//!
//! The prompt embeddings are random (`[1, 512, text_dim]`, the counter generator of
//! `kinema_diffusion::tiny`), so the folder's text encoder is never run: `prepare
//! --pipeline-from` puts the tiny fixture's tokenizer and encoder there only so that
//! both `WanPipeline::load` and diffusers' `from_pretrained` accept the folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::StepControl;
use kinema_wan::pipeline::{WanConditioning, WanPipeline};

use crate::device::{dtype_name, median, sync, timed, MemSampler};

/// `name`'s values from the shared counter generator, uniform with std `std`.
pub fn det_std(name: &str, shape: &[usize], std: f64) -> candle_core::Result<Tensor> {
    crate::det(name, shape, std * 3f64.sqrt())
}

pub struct StepArgs {
    pub model_dir: PathBuf,
    pub device: Device,
    pub dtype: DType,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub warmup: usize,
    pub iters: usize,
    pub guidance: f32,
    /// Latents after the first step (`latents_after_step_0`) for diffusers to compare.
    pub save: Option<PathBuf>,
}

pub fn run(a: &StepArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(a.iters >= 1, "--iters must be >= 1");
    let (pipe, load_s) = timed(&a.device, || {
        WanPipeline::load(&a.model_dir, &a.device, a.dtype)
            .with_context(|| format!("loading {}", a.model_dir.display()))
    })?;
    let c = &pipe.transformer.config;
    let shape = pipe.latent_shape(a.width, a.height, a.frames)?;
    let [pt, ph, pw] = c.patch_size;
    let tokens = (shape[2] / pt) * (shape[3] / ph) * (shape[4] / pw);
    let text = |name: &str| -> anyhow::Result<Tensor> {
        Ok(det_std(name, &[1, 512, c.text_dim], 0.3)?
            .to_device(&a.device)?
            .to_dtype(a.dtype)?)
    };
    let cond = WanConditioning {
        prompt_embeds: text("bench.prompt_embeds")?,
        negative_prompt_embeds: Some(text("bench.negative_prompt_embeds")?),
        image_latents: None,
    };
    let latents = det_std("bench.latents", &shape, 1.0)?.to_device(&a.device)?;
    println!(
        "kinema WanPipeline step: {} layers, dim {}, {} heads; {}x{} x {} frames = {tokens} tokens; \
         guidance {} (batch 2); {:?} {}; loaded in {load_s:.2} s",
        c.num_layers,
        c.inner_dim(),
        c.num_attention_heads,
        a.width,
        a.height,
        a.frames,
        a.guidance,
        a.device,
        dtype_name(a.dtype),
    );
    let steps = a.warmup + a.iters;
    let mem = MemSampler::start(&a.device);
    let mut times = Vec::with_capacity(steps);
    let mut first: Option<Tensor> = None;
    let mut sync_err = None;
    sync(&a.device)?;
    let mut last = Instant::now();
    let out = pipe.denoise_latents(&cond, latents, steps, a.guidance, None, &mut |i, n, l| {
        if let Err(e) = sync(&a.device) {
            sync_err = Some(e);
            return StepControl::Cancel;
        }
        let s = last.elapsed().as_secs_f64();
        println!("  step {i}/{n}: {s:.3} s");
        times.push(s);
        if first.is_none() {
            first = Some(l.clone());
        }
        last = Instant::now();
        StepControl::Continue
    });
    let memory = mem.finish();
    if let Some(e) = sync_err {
        return Err(e);
    }
    let latents = out?;
    let timed_steps = &times[a.warmup.min(times.len())..];
    let med = median(timed_steps);
    println!(
        "  median of {} timed step(s): {med:.3} s; memory {memory}",
        timed_steps.len()
    );
    let finite = latents
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    if let (Some(path), Some(l)) = (&a.save, &first) {
        let l = l.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("latents_after_step_0".to_string(), l)]),
            path,
        )?;
    }
    Ok(serde_json::json!({
        "impl": "kinema",
        "tokens": tokens,
        "layers": c.num_layers,
        "latent_shape": shape,
        "dtype": dtype_name(a.dtype),
        "load_s": load_s,
        "warmup": a.warmup,
        "step_s": times,
        "step_median_s": med,
        "finite": finite,
        "memory": memory,
    }))
}

pub struct AttnArgs {
    pub device: Device,
    pub dtype: DType,
    pub batch: usize,
    pub heads: usize,
    pub tokens: usize,
    pub kv_tokens: Option<usize>,
    pub head_dim: usize,
    pub warmup: usize,
    pub iters: usize,
}

/// The engine's `attention()` entry point alone at `[B, H, L, D]`; achieved TFLOP/s
/// counts the two matmuls, `4 B H Lq Lk D` flops.
pub fn attention_bench(a: &AttnArgs) -> anyhow::Result<serde_json::Value> {
    let lk = a.kv_tokens.unwrap_or(a.tokens);
    // made on the host: the GPU bundle may carry a stub cuRAND (scripts/gpu-bundle), so
    // nothing here draws random numbers on the device
    let mk = |name: &str, l: usize| -> anyhow::Result<Tensor> {
        Ok(det_std(name, &[a.batch, a.heads, l, a.head_dim], 1.0)?
            .to_device(&a.device)?
            .to_dtype(a.dtype)?)
    };
    let (q, k, v) = (
        mk("bench.q", a.tokens)?,
        mk("bench.k", lk)?,
        mk("bench.v", lk)?,
    );
    let scale = 1.0 / (a.head_dim as f64).sqrt();
    let budget = AttentionBudget::for_device(&a.device);
    let mem = MemSampler::start(&a.device);
    let mut times = Vec::new();
    for i in 0..a.warmup + a.iters {
        let (_, s) = timed(&a.device, || {
            Ok(attention(&q, &k, &v, None, scale, budget)?)
        })?;
        if i >= a.warmup {
            times.push(s);
        }
    }
    let memory = mem.finish();
    let flops = 4.0 * (a.batch * a.heads) as f64 * a.tokens as f64 * lk as f64 * a.head_dim as f64;
    let med = median(&times);
    let tflops = flops / med / 1e12;
    println!(
        "attention [{} x {} heads x {} x {lk} tokens x {}] {}: median {med:.4} s of {}, {tflops:.2} TFLOP/s",
        a.batch,
        a.heads,
        a.tokens,
        a.head_dim,
        dtype_name(a.dtype),
        times.len()
    );
    Ok(serde_json::json!({
        "impl": "kinema",
        "shape": [a.batch, a.heads, a.tokens, lk, a.head_dim],
        "dtype": dtype_name(a.dtype),
        "seconds": times,
        "median_s": med,
        "flops": flops,
        "tflops": tflops,
        "memory": memory,
    }))
}

/// Copies what a Wan folder needs besides the transformer and VAE (model_index.json,
/// scheduler, tokenizer, text encoder) from `from`, a small Wan folder.
pub fn copy_pipeline_parts(from: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::copy(from.join("model_index.json"), out.join("model_index.json"))
        .with_context(|| format!("copying {}/model_index.json", from.display()))?;
    for part in ["scheduler", "tokenizer", "text_encoder"] {
        let (src, dst) = (from.join(part), out.join(part));
        std::fs::create_dir_all(&dst)?;
        for e in std::fs::read_dir(&src).with_context(|| format!("{}", src.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), dst.join(e.file_name()))?;
            }
        }
    }
    Ok(())
}
