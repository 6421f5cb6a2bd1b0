//! The committed tiny Wan fixtures (`tests/wan/fixtures/<case>/`, diffusers' f32
//! reference intermediates and outputs) run on any device and dtype and compared with
//! the reference: the transformer forward, the VAE decode, and the whole pipeline
//! (latents after every step, frames).
//!
//! # Tolerances (bf16)
//!
//! bf16 keeps 8 significant bits, so one rounding has a relative error of at most
//! u = 2^-8 ≈ 3.9e-3 (≈ u/√3 ≈ 2.3e-3 rms for values spread over a binade). Candle's
//! bf16 matmuls accumulate in f32, so the error comes from rounding the weights, the
//! activations at every op boundary and each op's output, not from long sums. On the
//! path from input to output of the tiny transformer (2 blocks) there are some 30 such
//! roundings (weights, norms, modulation, q/k/v, attention, FFN, residuals); with
//! independent errors adding in quadrature the output's relative L2 error is about
//! 2.3e-3 · √30 ≈ 1.3e-2; residual blocks and norms keep it from compounding
//! multiplicatively at this depth. The VAE decoder is deeper (~40 convs and norms) but
//! each conv sums hundreds of bf16 products in f32: about the same estimate. Three
//! denoising steps feed each step's error into the next (UniPC mixes the history), and
//! the frames go through the VAE after them: twice the estimate. Each tolerance below
//! is the estimate with a ~3x margin (rounding errors are not perfectly independent,
//! and random tiny weights are less well conditioned than trained ones); in f32 the
//! same cases must agree to 1e-4 relative (the CPU parity tests hold 1e-3 absolute).
//! Max abs diffs are reported beside, relative to the reference's largest magnitude,
//! but only the relative L2 error decides.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use kinema_diffusion::{GenerationRequest, StepControl};
use kinema_wan::pipeline::WanPipeline;
use kinema_wan::transformer::WanTransformer3DModel;
use kinema_wan::vae::AutoencoderKLWan;

use crate::device::{dtype_name, timed};

/// Relative L2 tolerances in bf16 (see the module docs for the reasoning).
pub const BF16_TRANSFORMER: f64 = 4e-2;
pub const BF16_VAE: f64 = 4e-2;
pub const BF16_PIPELINE: f64 = 8e-2;
/// The same in f32 (and f16 gets bf16's, having more mantissa but less range).
pub const F32_ANY: f64 = 1e-4;

fn tolerance(dtype: DType, bf16: f64) -> f64 {
    if dtype == DType::F32 {
        F32_ANY
    } else {
        bf16
    }
}

/// `(max |a - b|, max |b|, ||a - b|| / ||b||)` in f64 on the host.
pub fn compare(got: &Tensor, want: &Tensor) -> anyhow::Result<(f64, f64, f64)> {
    anyhow::ensure!(
        got.dims() == want.dims(),
        "shape {:?} vs reference {:?}",
        got.dims(),
        want.dims()
    );
    let v = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let (a, b) = (v(got)?, v(want)?);
    let (mut max_abs, mut max_ref, mut num, mut den) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(&b) {
        let d = (x as f64 - y as f64).abs();
        // a NaN must fail, not vanish in max()
        max_abs = if d.is_nan() { f64::NAN } else { max_abs.max(d) };
        max_ref = max_ref.max((y as f64).abs());
        num += d * d;
        den += (y as f64) * (y as f64);
    }
    Ok((max_abs, max_ref, (num / den.max(f64::MIN_POSITIVE)).sqrt()))
}

/// An error's message without the backtrace candle appends under RUST_BACKTRACE.
pub fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let line = cause
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        if !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
    }
    parts.join(": ").chars().take(500).collect()
}

fn check(name: &str, got: &Tensor, want: &Tensor, tol: f64) -> serde_json::Value {
    match compare(got, want) {
        Ok((max_abs, max_ref, rel)) => {
            let pass = rel <= tol;
            println!(
                "  {name}: rel L2 {rel:.3e} (tolerance {tol:.1e}) {}; max abs {max_abs:.3e} \
                 (reference max {max_ref:.3e})",
                if pass { "ok" } else { "FAIL" }
            );
            serde_json::json!({"name": name, "rel_l2": rel, "max_abs_diff": max_abs,
                "max_abs_ref": max_ref, "tolerance_rel_l2": tol, "pass": pass})
        }
        Err(e) => {
            let m = message(&e);
            println!("  {name}: FAIL ({m})");
            serde_json::json!({"name": name, "error": m, "pass": false})
        }
    }
}

fn load(dir: &Path, file: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    let p = dir.join(file);
    candle_core::safetensors::load(&p, &Device::Cpu).with_context(|| format!("{}", p.display()))
}

fn get<'a>(f: &'a HashMap<String, Tensor>, k: &str) -> anyhow::Result<&'a Tensor> {
    f.get(k)
        .with_context(|| format!("fixture has no tensor {k}"))
}

pub struct ParityArgs<'a> {
    pub fixtures: &'a Path,
    pub case: &'a str,
    pub device: &'a Device,
    pub dtype: DType,
    /// Which of `transformer`, `vae_decode`, `pipeline` to run (empty: all).
    pub parts: &'a [String],
}

/// Runs every check of one fixture case; an error in one part is recorded as a failed
/// check and the others still run.
pub fn run(a: &ParityArgs) -> serde_json::Value {
    let dir = a.fixtures.join(a.case);
    let model = dir.join("model");
    println!(
        "parity {} on {:?} in {}",
        a.case,
        a.device,
        dtype_name(a.dtype)
    );
    let mut checks = Vec::new();
    let mut timings = serde_json::Map::new();
    let parts: [(&str, PartFn); 3] = [
        ("transformer", transformer),
        ("vae_decode", vae),
        ("pipeline", pipeline),
    ];
    for (part, f) in parts {
        if !a.parts.is_empty() && !a.parts.iter().any(|p| p == part) {
            continue;
        }
        match timed(a.device, || f(a, &dir, &model)) {
            Ok((mut c, s)) => {
                checks.append(&mut c);
                timings.insert(part.into(), s.into());
            }
            Err(e) => {
                let m = message(&e);
                println!("  {part}: FAIL ({m})");
                checks.push(serde_json::json!({"name": part, "error": m, "pass": false}));
            }
        }
    }
    let pass = checks.iter().all(|c| c["pass"] == true);
    serde_json::json!({
        "case": a.case,
        "dtype": dtype_name(a.dtype),
        "pass": pass,
        "checks": checks,
        "seconds": timings,
    })
}

type PartFn = fn(&ParityArgs, &Path, &Path) -> anyhow::Result<Vec<serde_json::Value>>;

fn transformer(a: &ParityArgs, dir: &Path, model: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let f = load(dir, "transformer.safetensors")?;
    let m = WanTransformer3DModel::load(&model.join("transformer"), a.dtype, a.device)?;
    let t: Vec<f32> = get(&f, "timestep")?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|&v| v as f32)
        .collect();
    let on = |k: &str| -> anyhow::Result<Tensor> {
        Ok(get(&f, k)?.to_device(a.device)?.to_dtype(a.dtype)?)
    };
    let out = m.forward(&on("hidden_states")?, &t, &on("encoder_hidden_states")?)?;
    let tol = tolerance(a.dtype, BF16_TRANSFORMER);
    Ok(vec![check(
        "transformer_output",
        &out,
        get(&f, "output")?,
        tol,
    )])
}

fn vae(a: &ParityArgs, dir: &Path, model: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let f = load(dir, "vae.safetensors")?;
    let vae = AutoencoderKLWan::load_decoder(&model.join("vae"), a.dtype, a.device)?;
    let z = get(&f, "latents")?.to_device(a.device)?.to_dtype(a.dtype)?;
    let out = vae.decode(&z)?;
    let tol = tolerance(a.dtype, BF16_VAE);
    Ok(vec![check(
        "vae_decode_video",
        &out,
        get(&f, "video")?,
        tol,
    )])
}

fn pipeline(a: &ParityArgs, dir: &Path, model: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let f = load(dir, "pipeline.safetensors")?;
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("case.json")).context("case.json")?,
    )?;
    let num = |k: &str| {
        case[k]
            .as_f64()
            .with_context(|| format!("case.json has no number {k}"))
    };
    let text = |k: &str| -> anyhow::Result<String> {
        Ok(case[k]
            .as_str()
            .with_context(|| format!("case.json has no string {k}"))?
            .to_string())
    };
    let req = GenerationRequest {
        prompt: text("prompt")?,
        negative_prompt: text("negative_prompt")?,
        width: num("width")? as u32,
        height: num("height")? as u32,
        num_frames: num("num_frames")? as u32,
        steps: num("steps")? as u32,
        guidance_scale: num("guidance_scale")? as f32,
        seed: 0,
        ..Default::default()
    };
    let pipe = WanPipeline::load(model, a.device, a.dtype)?;
    let latents = get(&f, "latents")?.to_device(a.device)?;
    // generate()'s stages one by one, so the latents are checked even if decoding fails
    let cond = pipe.encode_request(&req)?;
    let mut per_step = Vec::new();
    let latents = pipe.denoise_latents(
        &cond,
        latents,
        req.steps as usize,
        req.guidance_scale,
        None,
        &mut |_, _, l| {
            per_step.push(l.clone());
            StepControl::Continue
        },
    )?;
    let tol = tolerance(a.dtype, BF16_PIPELINE);
    let mut out = Vec::new();
    for (i, l) in per_step.iter().enumerate() {
        let name = format!("latents_after_step_{i}");
        out.push(check(&name, l, get(&f, &name)?, tol));
    }
    let frames = (|| -> anyhow::Result<Tensor> {
        let frames = pipe.decode_latents(&latents)?;
        let (n, h, w) = (frames.num_frames, frames.height, frames.width);
        Ok(Tensor::from_vec(frames.data, (n, h, w, 3), &Device::Cpu)?)
    })();
    match frames {
        Ok(got) => out.push(check("pipeline_frames", &got, get(&f, "frames")?, tol)),
        Err(e) => {
            let m = message(&e);
            println!("  pipeline_frames: FAIL ({m})");
            out.push(serde_json::json!({"name": "pipeline_frames", "error": m, "pass": false}));
        }
    }
    Ok(out)
}

/// The fixtures folder: `--fixtures`, else the source tree's (only valid where the
/// binary was built).
pub fn fixtures_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/wan/fixtures"))
}
