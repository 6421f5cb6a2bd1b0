//! `kinema generate --model-dir DIR`: the model runs in this process, offline, with no
//! server and no credits: resolve the model (a folder or a repo id in the local hf-hub
//! cache), load it, generate, encode the MP4.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Tensor};
use kinema_diffusion::weights::{default_dtype, parse_device, parse_dtype, resolve_model_source};
use kinema_diffusion::{StepControl, VideoFrames};
use kinema_engine::{
    pipeline_request, ImageLimits, JobExtras, JobSpec, ModelSpec, RequestImages, ResolvedSpec,
};
use kinema_wan::pipeline::{seeded_noise, WanPipeline};

use crate::cli::GenerateArgs;

mod i2v;

/// The request flags as the manifest names its fields.
fn flag_of(field: &str) -> &str {
    match field {
        "num_frames" => "--frames",
        "guidance_scale" => "--guidance",
        "negative_prompt" => "--negative-prompt",
        "width" => "--width",
        "height" => "--height",
        "steps" => "--steps",
        "fps" => "--fps",
        "prompt" => "--prompt",
        "output" => "--format",
        "preview" => "--preview",
        "image" => "--image",
        "last_image" => "--last-image",
        "guidance_scale_2" => "--guidance-2",
        other => other,
    }
}

/// An input image file's bytes, as a submission carries them (empty: none).
fn read_image(path: Option<&Path>, flag: &str) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) => std::fs::read(p).with_context(|| format!("{flag} {}", p.display())),
        None => Ok(Vec::new()),
    }
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let source = args.model_dir.as_deref().context("--model-dir")?;
    let device = parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let dtype = match &args.dtype {
        Some(d) => parse_dtype(d).map_err(anyhow::Error::msg)?,
        None => default_dtype(&device),
    };
    let dir = resolve_model_source(source).with_context(|| format!("--model-dir {source}"))?;

    // Defaults and limits as the server would apply them to this model.
    // Named in messages ("... as <id> needs"): the folder's or repo's name.
    let name: String = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("model")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let spec = ModelSpec {
        id: if name.is_empty() {
            "model".into()
        } else {
            name
        },
        family: "wan".into(),
        source: dir.to_string_lossy().into_owned(),
        device: Some(args.device.clone()),
        dtype: Some(dtype.as_str().to_string()),
        ..ModelSpec::default()
    };
    let manifest = kinema_engine::manifest_for(&spec)?;
    let requested = JobSpec {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        width: args.width,
        height: args.height,
        num_frames: args.frames,
        fps: args.fps,
        steps: args.steps,
        guidance_scale: args.guidance,
        output: args.format.clone(),
        preview: args.preview.clone(),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let image = read_image(args.image.as_deref(), "--image")?;
    let last_image = read_image(args.last_image.as_deref(), "--last-image")?;
    // resolved as the server resolves a submission: the same checks, size rule and fit
    let extras = JobExtras {
        images: RequestImages {
            image: &image,
            last_image: &last_image,
            limits: ImageLimits::default(),
        },
        guidance_scale_2: args.guidance_2,
        seed,
    };
    let resolved = manifest
        .resolve_job(&requested, &extras, true)
        .map_err(|violations| {
            let why: Vec<String> = violations
                .iter()
                .map(|v| format!("{}: {}", flag_of(v.field), v.description))
                .collect();
            anyhow::anyhow!("invalid request: {}", why.join("; "))
        })?;
    let r = resolved.spec;
    let request = pipeline_request(&resolved.params).map_err(anyhow::Error::msg)?;
    println!("model      {} ({})", dir.display(), manifest.description);
    println!(
        "spec       {}x{}, {} frames @ {} fps, {} steps, guidance {}, shift {}, seed {seed}, {} {}",
        r.width,
        r.height,
        r.num_frames,
        r.fps,
        r.steps,
        r.guidance_scale,
        manifest.defaults.flow_shift.unwrap_or(0.0),
        args.device,
        dtype.as_str()
    );

    // image-to-video folders; Wan 2.2 TI2V (t2v and i2v) runs below with its image
    if manifest.needs_image() {
        let (frames, timings) = i2v::generate(args, &dir, &device, dtype, &request)?;
        let encode_ms = write_outputs(args, &r, &frames)?;
        println!(
            "timings    {timings}, encode {encode_ms} ms on {}",
            args.device
        );
        return Ok(());
    }

    let t = Instant::now();
    let pipeline = WanPipeline::load(&dir, &device, dtype)
        .with_context(|| format!("loading {}", dir.display()))?;
    let load_ms = t.elapsed().as_millis();
    if let Some(g) = args.guidance_2 {
        if pipeline.transformer_2.is_none() {
            bail!(
                "--guidance-2: {} has one transformer (no low-noise expert)",
                dir.display()
            );
        }
        if !(g.is_finite() && g >= 0.0) {
            bail!("--guidance-2 {g} must be a finite number >= 0");
        }
    }

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
            latents.to_dtype(DType::F32)?.to_device(&device)?
        }
        None => seeded_noise(seed, &shape, &device)?,
    };

    let t = Instant::now();
    let cond = pipeline.encode_request(&request)?;
    let text_ms = t.elapsed().as_millis();

    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let b = indicatif::ProgressBar::new(r.steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "denoising [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let t = Instant::now();
    let latents = pipeline
        .denoise_latents(
            &cond,
            latents,
            r.steps as usize,
            r.guidance_scale,
            request.guidance_scale_2,
            &mut |step, total, _| {
                match &bar {
                    Some(b) => b.set_position(step as u64),
                    None if !args.quiet => {
                        eprintln!("step {step}/{total} ({:.1} s)", t.elapsed().as_secs_f64())
                    }
                    None => {}
                }
                StepControl::Continue
            },
        )
        .map_err(|e| anyhow::anyhow!("denoising: {e}"))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let denoise_ms = t.elapsed().as_millis();

    let t = Instant::now();
    let frames = pipeline.decode_latents(&latents)?;
    let decode_ms = t.elapsed().as_millis();

    let encode_ms = write_outputs(args, &r, &frames)?;
    println!(
        "timings    load {load_ms} ms, text {text_ms} ms, denoise {denoise_ms} ms, decode {decode_ms} ms, encode {encode_ms} ms on {}",
        args.device
    );
    Ok(())
}

/// `--save-frames`, the video, `--poster` and the preview; returns the encode time.
fn write_outputs(
    args: &GenerateArgs,
    r: &ResolvedSpec,
    frames: &VideoFrames,
) -> anyhow::Result<u128> {
    if let Some(path) = &args.save_frames {
        save_frames(frames, path)?;
        println!(
            "frames     {} (f32 [{}, {}, {}, 3])",
            path.display(),
            frames.num_frames,
            frames.height,
            frames.width
        );
    }
    let t = Instant::now();
    let spec = kinema_media::VideoSpec {
        width: frames.width as u32,
        height: frames.height as u32,
        fps: r.fps,
    };
    let rgb: Vec<Vec<u8>> = (0..frames.num_frames)
        .map(|i| frames.frame_rgb8(i))
        .collect();
    let video = kinema_media::encode_video(
        &spec,
        &r.output,
        rgb.iter().map(Vec::as_slice),
        &args.output,
    )
    .with_context(|| format!("encoding {}", args.output.display()))?;
    let encode_ms = t.elapsed().as_millis();
    println!(
        "video      {} ({} frames, {} bytes)",
        args.output.display(),
        video.frames,
        video.bytes
    );
    if let Some(poster) = &args.poster {
        kinema_media::write_poster_png(spec.width, spec.height, &rgb[0], poster)
            .with_context(|| format!("writing {}", poster.display()))?;
        println!("poster     {}", poster.display());
    }
    if let Some(options) = &r.preview {
        let path = super::preview_path(args, options.format.mime());
        kinema_media::preview(&spec, options, rgb.iter().map(Vec::as_slice), &path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("preview    {}", path.display());
    }
    Ok(encode_ms)
}

fn load_tensor(path: &Path, name: &str) -> anyhow::Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    tensors
        .remove(name)
        .with_context(|| format!("{} holds no tensor {name:?}", path.display()))
}

/// `frames`: f32 `[F, H, W, 3]` in [0, 1], as diffusers returns with `output_type="np"`.
fn save_frames(frames: &VideoFrames, path: &Path) -> anyhow::Result<()> {
    let t = Tensor::from_slice(
        &frames.data,
        (frames.num_frames, frames.height, frames.width, 3),
        &candle_core::Device::Cpu,
    )?;
    candle_core::safetensors::save(&std::collections::HashMap::from([("frames", t)]), path)
        .with_context(|| format!("writing {}", path.display()))
}
