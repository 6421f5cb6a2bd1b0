//! transformers' `CLIPImageProcessor` as installed (its PIL backend,
//! `CLIPImageProcessorPil`, which transformers falls back to without torchvision):
//! resize so the shortest edge is `size.shortest_edge` (the long edge
//! `int(short * long / short_in)`) with Pillow's resampling on uint8 (bicubic by
//! default), centre crop (zero padding when the image is smaller), rescale by
//! `rescale_factor` in f64 then cast to f32, normalise `(x - mean) / std` in f32.
//!
//! The resampling is Pillow's `ImagingResample` re-implemented: separable filters whose
//! support grows with the downscale factor (antialiasing), coefficients normalised and
//! fixed-point (22 fractional bits), a horizontal pass then a vertical one, rounding
//! and clipping to uint8 after each.

use std::path::Path;

use candle_core::{Device, Tensor};
use kinema_diffusion::weights::read_json;
use kinema_diffusion::RgbImage;

use crate::error::{Result, WanError};

#[derive(Debug, Clone, serde::Deserialize)]
struct SizeSpec {
    shortest_edge: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct RawConfig {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<SizeSpec>,
    #[serde(default = "bicubic")]
    resample: u32,
    #[serde(default = "yes")]
    do_center_crop: bool,
    crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "default_rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How the image is resized before the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    ShortestEdge(usize),
    Exact { height: usize, width: usize },
}

/// Pillow's resampling filters (`PIL.Image.Resampling` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Nearest,
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl Resample {
    fn from_pil(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Self::Nearest | Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn filter(self, x: f64) -> f64 {
        match self {
            Self::Nearest | Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    px.sin() / px * (0.54 + 0.46 * px.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let px = x * std::f64::consts::PI;
                        px.sin() / px
                    }
                };
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// `preprocessor_config.json` of an `image_processor/` folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    pub resize: Option<ResizeTo>,
    pub resample: Resample,
    /// (height, width)
    pub crop: Option<(usize, usize)>,
    pub rescale_factor: Option<f64>,
    pub mean_std: Option<([f32; 3], [f32; 3])>,
}

impl Default for ClipImageProcessor {
    /// transformers' defaults (the OpenAI CLIP ViT at 224 px).
    fn default() -> Self {
        Self {
            resize: Some(ResizeTo::ShortestEdge(224)),
            resample: Resample::Bicubic,
            crop: Some((224, 224)),
            rescale_factor: Some(1.0 / 255.0),
            mean_std: Some((
                OPENAI_CLIP_MEAN.map(|v| v as f32),
                OPENAI_CLIP_STD.map(|v| v as f32),
            )),
        }
    }
}

/// The precision of Pillow's 8-bit fixed-point coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

impl ClipImageProcessor {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let raw: RawConfig = read_json(&path)?;
        let bad = |message: &str| WanError::Config {
            what: format!("image processor ({})", path.display()),
            message: message.into(),
        };
        let resize = if raw.do_resize {
            let s = raw
                .size
                .as_ref()
                .ok_or_else(|| bad("do_resize without size"))?;
            Some(match (s.shortest_edge, s.height, s.width) {
                (Some(e), _, _) if e > 0 => ResizeTo::ShortestEdge(e),
                (None, Some(h), Some(w)) if h > 0 && w > 0 => ResizeTo::Exact {
                    height: h,
                    width: w,
                },
                _ => return Err(bad("size needs shortest_edge or height and width")),
            })
        } else {
            None
        };
        let crop = if raw.do_center_crop {
            match raw.crop_size.as_ref().and_then(|c| c.height.zip(c.width)) {
                Some((h, w)) if h > 0 && w > 0 => Some((h, w)),
                _ => return Err(bad("do_center_crop needs crop_size height and width")),
            }
        } else {
            None
        };
        let three = |v: Option<Vec<f64>>, default: [f64; 3]| -> Result<[f32; 3]> {
            let v = v.unwrap_or(default.to_vec());
            match v.as_slice() {
                [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
                [a] => Ok([*a as f32; 3]),
                _ => Err(bad("image_mean / image_std need 1 or 3 values")),
            }
        };
        Ok(Self {
            resize,
            resample: Resample::from_pil(raw.resample).ok_or_else(|| bad("unknown resample"))?,
            crop,
            rescale_factor: raw.do_rescale.then_some(raw.rescale_factor),
            mean_std: if raw.do_normalize {
                Some((
                    three(raw.image_mean, OPENAI_CLIP_MEAN)?,
                    three(raw.image_std, OPENAI_CLIP_STD)?,
                ))
            } else {
                None
            },
        })
    }

    /// The (height, width) the resize produces for an image of `height` x `width`
    /// (`get_resize_output_image_size(default_to_square=False)`).
    pub fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            None => (height, width),
            Some(ResizeTo::Exact { height, width }) => (height, width),
            Some(ResizeTo::ShortestEdge(s)) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // int(s * long / short) in Python floats
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// The resized, cropped uint8 image (`[H][W][3]`), before rescaling.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<(usize, usize, Vec<u8>)> {
        let (h, w) = (image.height as usize, image.width as usize);
        if h == 0 || w == 0 || image.data.len() != h * w * 3 {
            return Err(WanError::Input(format!(
                "image {w}x{h} with {} bytes of RGB",
                image.data.len()
            )));
        }
        let (nh, nw) = self.resized_size(h, w);
        if nh == 0 || nw == 0 {
            return Err(WanError::Input(format!("image {w}x{h} resizes to nothing")));
        }
        let mut px = if (nh, nw) == (h, w) {
            image.data.to_vec()
        } else {
            pil_resize(&image.data, w, h, nw, nh, self.resample)
        };
        let (mut ch, mut cw) = (nh, nw);
        if let Some((th, tw)) = self.crop {
            px = center_crop(&px, nh, nw, th, tw);
            (ch, cw) = (th, tw);
        }
        Ok((ch, cw, px))
    }

    /// `pixel_values` `[1, 3, H, W]` f32 of one image.
    pub fn preprocess(&self, image: &RgbImage, device: &Device) -> Result<Tensor> {
        let (h, w, px) = self.resize_and_crop(image)?;
        let n = h * w;
        let mut out = vec![0f32; 3 * n];
        for (i, rgb) in px.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = match self.rescale_factor {
                    Some(s) => (rgb[c] as f64 * s) as f32,
                    None => rgb[c] as f32,
                };
                if let Some((mean, std)) = &self.mean_std {
                    v = (v - mean[c]) / std[c];
                }
                out[c * n + i] = v;
            }
        }
        Ok(Tensor::from_vec(out, (1, 3, h, w), device)?)
    }
}

/// numpy's centre crop of `[H][W][3]` (zero-padded when smaller than the crop).
fn center_crop(px: &[u8], h: usize, w: usize, th: usize, tw: usize) -> Vec<u8> {
    // top = (h - th) // 2 with Python's floor division; padding offsets ceil((th - h) / 2)
    let off = |size: usize, target: usize| -> (isize, usize) {
        if size >= target {
            (((size - target) / 2) as isize, 0)
        } else {
            (0, (target - size).div_ceil(2))
        }
    };
    let (top, pad_top) = off(h, th);
    let (left, pad_left) = off(w, tw);
    let mut out = vec![0u8; th * tw * 3];
    for y in 0..th {
        let sy = y as isize + top - pad_top as isize;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        for x in 0..tw {
            let sx = x as isize + left - pad_left as isize;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let s = (sy as usize * w + sx as usize) * 3;
            let d = (y * tw + x) * 3;
            out[d..d + 3].copy_from_slice(&px[s..s + 3]);
        }
    }
    out
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: for each output index, the
/// first input index, the tap count and `ksize` fixed-point weights.
fn precompute_coeffs(
    in_size: usize,
    out_size: usize,
    filter: Resample,
) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    // the box is (0, in_size) as floats
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // (int) truncation, then clamped
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < n {
                if ww != 0.0 {
                    k[x] / ww
                } else {
                    k[x]
                }
            } else {
                0.0
            };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// `Image.resize((out_w, out_h), filter)` of an RGB uint8 image (`[H][W][3]`), as
/// Pillow's `ImagingResample`: horizontal pass over the rows the vertical pass needs,
/// then the vertical pass.
pub fn pil_resize(
    px: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: Resample,
) -> Vec<u8> {
    if filter == Resample::Nearest {
        return nearest(px, w, h, out_w, out_h);
    }
    let need_h = out_w != w;
    let need_v = out_h != h;
    let (ksize_h, bounds_h, kk_h) = precompute_coeffs(w, out_w, filter);
    let (ksize_v, mut bounds_v, kk_v) = precompute_coeffs(h, out_h, filter);
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut cur = px.to_vec();
    let (mut cw, mut chh) = (w, h);
    if need_h {
        let first = bounds_v[0].0;
        let last = bounds_v[out_h - 1].0 + bounds_v[out_h - 1].1;
        for b in bounds_v.iter_mut() {
            b.0 -= first;
        }
        let rows = last - first;
        let mut tmp = vec![0u8; rows * out_w * 3];
        for yy in 0..rows {
            let row = &cur[(yy + first) * cw * 3..(yy + first + 1) * cw * 3];
            for (xx, &(xmin, n)) in bounds_h.iter().enumerate() {
                let k = &kk_h[xx * ksize_h..xx * ksize_h + n];
                for c in 0..3 {
                    let mut ss = half;
                    for (x, &kx) in k.iter().enumerate() {
                        ss = ss.wrapping_add((row[(x + xmin) * 3 + c] as i32).wrapping_mul(kx));
                    }
                    tmp[(yy * out_w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = tmp;
        cw = out_w;
        chh = rows;
    }
    if need_v {
        let mut out = vec![0u8; out_h * cw * 3];
        for (yy, &(ymin, n)) in bounds_v.iter().enumerate() {
            let k = &kk_v[yy * ksize_v..yy * ksize_v + n];
            for xx in 0..cw {
                for c in 0..3 {
                    let mut ss = half;
                    for (y, &ky) in k.iter().enumerate() {
                        ss = ss.wrapping_add(
                            (cur[((y + ymin) * cw + xx) * 3 + c] as i32).wrapping_mul(ky),
                        );
                    }
                    out[(yy * cw + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
        chh = out_h;
    }
    debug_assert_eq!(cur.len(), chh * cw * 3);
    cur
}

/// Pillow's nearest-neighbour resize (`ImagingTransform` affine with a half-pixel
/// offset).
fn nearest(px: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let (sx, sy) = (w as f64 / out_w as f64, h as f64 / out_h as f64);
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        let iy = (((y as f64 + 0.5) * sy) as usize).min(h - 1);
        for x in 0..out_w {
            let ix = (((x as f64 + 0.5) * sx) as usize).min(w - 1);
            let s = (iy * w + ix) * 3;
            let d = (y * out_w + x) * 3;
            out[d..d + 3].copy_from_slice(&px[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_match_transformers() {
        let p = ClipImageProcessor::default();
        assert_eq!(p.resized_size(24, 40), (224, 373));
        assert_eq!(p.resized_size(480, 832), (224, 388));
        assert_eq!(p.resized_size(832, 480), (388, 224));
        assert_eq!(p.resized_size(224, 224), (224, 224));
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let px: Vec<u8> = (0..4 * 5 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(pil_resize(&px, 5, 4, 5, 4, Resample::Bicubic), px);
    }
}
