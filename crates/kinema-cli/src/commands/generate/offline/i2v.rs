//! `kinema generate --model-dir DIR --image PNG [--last-image PNG]` for image-to-video
//! folders (`WanImageToVideoPipeline`: Wan 2.1 I2V / FLF2V, Wan 2.2 I2V-A14B). Images
//! are decoded and fitted to the video's size exactly as the server does
//! (`kinema_params`: EXIF orientation, caps, cover and centre-crop).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use kinema_diffusion::{GenerationRequest, RgbImage, StepControl, VideoFrames};
use kinema_engine::ResolvedSpec;
use kinema_wan::pipeline_i2v::WanImageToVideoPipeline;

use super::load_tensor;
use crate::cli::GenerateArgs;

/// Reads a PNG / JPEG / WebP file and fits it to `width` x `height` as the server
/// fits a submitted image.
pub fn load_image(path: &Path, flag: &str, width: u32, height: u32) -> anyhow::Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    let decoded = kinema_params::decode(&bytes, &kinema_params::ImageLimits::default())
        .map_err(|e| anyhow::anyhow!("{flag} {}: the image {e}", path.display()))?;
    let fitted = kinema_params::fit(&decoded, width, height);
    RgbImage::new(width, height, Arc::<[u8]>::from(fitted.rgb))
        .with_context(|| format!("{flag} {}: bad RGB buffer", path.display()))
}

/// Loads, conditions, denoises and decodes; returns the frames and a timings line.
pub fn generate(
    args: &GenerateArgs,
    dir: &Path,
    device: &Device,
    dtype: DType,
    r: &ResolvedSpec,
    seed: u64,
) -> anyhow::Result<(VideoFrames, String)> {
    let image_path = args
        .image
        .as_deref()
        .context("--image: this is an image-to-video model; give the first frame")?;
    let image = load_image(image_path, "--image", r.width, r.height)?;
    let last_image = match &args.last_image {
        Some(p) => Some(load_image(p, "--last-image", r.width, r.height)?),
        None => None,
    };

    let t = Instant::now();
    let pipeline = WanImageToVideoPipeline::load(dir, device, dtype)
        .with_context(|| format!("loading {}", dir.display()))?;
    let load_ms = t.elapsed().as_millis();
    if last_image.is_some() && !pipeline.takes_last_image() && pipeline.image_encoder.is_some() {
        bail!("--last-image: this model is not a first-last-frame model");
    }

    let request = GenerationRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        width: r.width,
        height: r.height,
        num_frames: r.num_frames,
        steps: r.steps,
        guidance_scale: r.guidance_scale,
        guidance_scale_2: None,
        seed,
        image: Some(image),
        last_image,
    };
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
            .initial_latents(&request, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };

    let t = Instant::now();
    let cond = pipeline.encode(&request)?;
    let cond_ms = t.elapsed().as_millis();

    let t = Instant::now();
    let latents = pipeline
        .denoise_latents(
            &cond,
            latents,
            r.steps as usize,
            r.guidance_scale,
            None,
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
