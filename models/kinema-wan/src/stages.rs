//! The stages both Wan pipelines (`WanPipeline`, `WanImageToVideoPipeline`) run the
//! same way: the prompt's umT5 embeddings, the latent shape, the initial latents, an
//! input image as a [-1, 1] tensor, and the VAE decode to frames.

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};
use kinema_diffusion::{GenerationRequest, PipelineError, RgbImage, VideoFrames};

use crate::error::{Result, WanError};
use crate::pipeline::seeded_noise;
use crate::prompt::{PromptTokenizer, MAX_SEQUENCE_LENGTH};
use crate::text_encoder::Umt5Encoder;
use crate::vae::{AutoencoderKLWan, WanVaeConfig};

/// `[1, 512, text_dim]`: the encoder output cut to the prompt's true length and
/// zero-padded back to 512, as `_get_t5_prompt_embeds`.
/// `encoder` on `device`: itself when it is there, else a copy for this request (an
/// offloaded encoder lives in host memory between requests).
fn encoder_on<'a>(encoder: &'a Umt5Encoder, device: &Device) -> Result<Cow<'a, Umt5Encoder>> {
    if encoder.device().same_device(device) {
        Ok(Cow::Borrowed(encoder))
    } else {
        Ok(Cow::Owned(encoder.to_device(device)?))
    }
}

/// The prompt's embeddings and, when given, the negative prompt's, with one copy of an
/// offloaded encoder on the device for both.
pub(crate) fn encode_prompts(
    tokenizer: &PromptTokenizer,
    encoder: &Umt5Encoder,
    device: &Device,
    prompt: &str,
    negative: Option<&str>,
) -> Result<(Tensor, Option<Tensor>)> {
    let encoder = encoder_on(encoder, device)?;
    let positive = encode_text(tokenizer, &encoder, device, prompt)?;
    let negative = negative
        .map(|n| encode_text(tokenizer, &encoder, device, n))
        .transpose()?;
    Ok((positive, negative))
}

/// Moves the text encoder to host memory: it is copied to the device for each
/// request's prompts and dropped after, so the device holds it only while encoding.
pub(crate) fn offload(encoder: &mut Umt5Encoder) -> Result<()> {
    *encoder = encoder.to_device(&Device::Cpu)?;
    Ok(())
}

fn encode_text(
    tokenizer: &PromptTokenizer,
    encoder: &Umt5Encoder,
    device: &Device,
    prompt: &str,
) -> Result<Tensor> {
    let t = tokenizer.encode(prompt)?;
    let l = t.ids.len();
    let ids = Tensor::from_vec(t.ids, (1, l), device)?;
    let mask = Tensor::from_vec(t.mask, (1, l), device)?;
    let h = encoder.forward(&ids, &mask)?;
    let keep = mask.to_dtype(h.dtype())?.unsqueeze(2)?;
    let h = h.broadcast_mul(&keep)?;
    Ok(h.pad_with_zeros(1, 0, MAX_SEQUENCE_LENGTH.saturating_sub(l))?)
}

/// The latent shape for a video: `[1, z, (F - 1) / t + 1, H / s, W / s]`, with sizes a
/// multiple of the VAE factor times the patch and at least `min_frames` frames.
pub(crate) fn latent_shape(
    vae: &WanVaeConfig,
    patch: [usize; 3],
    (width, height, frames): (u32, u32, u32),
    min_frames: usize,
) -> Result<[usize; 5]> {
    let [_, ph, pw] = patch;
    let (sf, tf) = (vae.scale_factor_spatial, vae.scale_factor_temporal);
    let (w, h, f) = (width as usize, height as usize, frames as usize);
    if w == 0 || h == 0 || w % (sf * pw) != 0 || h % (sf * ph) != 0 {
        return Err(WanError::Input(format!(
            "width {w} and height {h} must be positive multiples of {}",
            sf * ph.max(pw)
        )));
    }
    if f < min_frames.max(1) || (f - 1) % tf != 0 {
        return Err(WanError::Input(if min_frames > 1 {
            format!("frames {f} must be {tf}k + 1 (k >= 1)")
        } else {
            format!("frames {f} must be {tf}k + 1")
        }));
    }
    Ok([1, vae.z_dim, (f - 1) / tf + 1, h / sf, w / sf])
}

/// The initial latents of `shape`: given ones (checked against it) or the request's
/// seeded noise.
pub(crate) fn initial_latents(
    request: &GenerationRequest,
    shape: Result<[usize; 5]>,
    given: Option<Tensor>,
    device: &Device,
) -> std::result::Result<Tensor, PipelineError> {
    let shape = shape.map_err(to_pipeline_error)?;
    match given {
        Some(l) if l.dims() != shape => Err(PipelineError::InvalidRequest(format!(
            "initial latents have shape {:?}, the request needs {shape:?}",
            l.dims()
        ))),
        Some(l) => Ok(l),
        None => seeded_noise(request.seed, &shape, device).map_err(to_pipeline_error),
    }
}

/// `[1, 3, H, W]` in [-1, 1] from packed RGB, as `VideoProcessor.preprocess` does for a
/// PIL image of the video's size: `u8 as f32 / 255`, then `2 x - 1`, in f32.
pub fn image_to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (image.width as usize, image.height as usize);
    if image.data.len() != w * h * 3 {
        return Err(WanError::Input(format!(
            "image {w}x{h} with {} bytes of RGB",
            image.data.len()
        )));
    }
    let n = w * h;
    let mut out = vec![0f32; 3 * n];
    for (i, rgb) in image.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = 2.0 * (rgb[c] as f32 / 255.0) - 1.0;
        }
    }
    Ok(Tensor::from_vec(out, (1, 3, h, w), device)?)
}

/// De-normalises and decodes latents to frames `[F, H, W, 3]` in [0, 1].
pub(crate) fn decode_latents(vae: &AutoencoderKLWan, latents: &Tensor) -> Result<VideoFrames> {
    let z = vae.denormalize(&latents.to_dtype(vae.dtype())?)?;
    let (_, _, _, h, w) = z.dims5()?;
    let sf = vae.config.scale_factor_spatial;
    let mut data = Vec::new();
    let mut num_frames = 0;
    vae.decode_chunks(&z, &mut |chunk| {
        // [1, 3, f, H, W] -> [f, H, W, 3], (x / 2 + 0.5) clamped to [0, 1]
        let f = chunk.dim(2)?;
        let frames = ((chunk.to_dtype(DType::F32)? / 2.0)? + 0.5)?
            .clamp(0f32, 1f32)?
            .squeeze(0)?
            .permute((1, 2, 3, 0))?
            .contiguous()?;
        data.extend(frames.flatten_all()?.to_vec1::<f32>()?);
        num_frames += f;
        Ok(())
    })?;
    Ok(VideoFrames {
        num_frames,
        height: h * sf,
        width: w * sf,
        data,
    })
}

pub(crate) fn to_pipeline_error(e: WanError) -> PipelineError {
    match e {
        WanError::Input(m) => PipelineError::InvalidRequest(m),
        other => PipelineError::Model(other.to_string()),
    }
}
