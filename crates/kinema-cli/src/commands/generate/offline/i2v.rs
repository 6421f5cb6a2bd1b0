//! `kinema generate --model-dir DIR --image PNG [--last-image PNG]` for image-to-video
//! folders (`WanImageToVideoPipeline`: Wan 2.1 I2V / FLF2V, Wan 2.2 I2V-A14B). The
//! request comes resolved as the server resolves a submission: its images decoded,
//! checked and fitted to the video's size.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use kinema_diffusion::{GenerationRequest, StepControl, VideoFrames};
use kinema_wan::pipeline_i2v::WanImageToVideoPipeline;

use super::load_tensor;
use crate::cli::GenerateArgs;

/// Loads, conditions, denoises and decodes; returns the frames and a timings line.
pub fn generate(
    args: &GenerateArgs,
    dir: &Path,
    device: &Device,
    dtype: DType,
    request: &GenerationRequest,
) -> anyhow::Result<(VideoFrames, String)> {
    let t = Instant::now();
    let pipeline = WanImageToVideoPipeline::load(dir, device, dtype)
        .with_context(|| format!("loading {}", dir.display()))?;
    let load_ms = t.elapsed().as_millis();
    let r = request;
    let shape = pipeline.latent_shape(r.width, r.height, r.num_frames)?;
    let latents = match &args.init_latents {
        Some(path) => {
            let latents = load_tensor(path, "latents")?;
            if latents.dims() != shape {
                bail!(
                    "--init-latents {}: shape {:?}, but {}x{} x {} frames needs {shape:?}",
                    path.display(),
                    latents.dims(),
                    r.width,
                    r.height,
                    r.num_frames
                );
            }
            latents.to_dtype(DType::F32)?.to_device(device)?
        }
        None => pipeline
            .initial_latents(request, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };

    let t = Instant::now();
    let cond = pipeline.encode(request)?;
    let cond_ms = t.elapsed().as_millis();

    let t = Instant::now();
    let latents = pipeline
        .denoise_latents(
            &cond,
            latents,
            r.steps as usize,
            r.guidance_scale,
            r.guidance_scale_2,
            &mut |step, total, _| {
                if !args.quiet {
                    eprintln!("step {step}/{total} ({:.1} s)", t.elapsed().as_secs_f64());
                }
                StepControl::Continue
            },
        )
        .map_err(|e| anyhow::anyhow!("denoising: {e}"))?;
    let denoise_ms = t.elapsed().as_millis();

    let t = Instant::now();
    let frames = pipeline.decode_latents(&latents)?;
    let decode_ms = t.elapsed().as_millis();
    Ok((
        frames,
        format!(
            "load {load_ms} ms, text + image {cond_ms} ms, denoise {denoise_ms} ms, decode {decode_ms} ms"
        ),
    ))
}
