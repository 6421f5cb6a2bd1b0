//! Causal 3D convolution (candle has no conv3d). Time is padded only in front, with
//! zeros (Wan's `WanCausalConv3d`: `2 * pad_t` frames, none behind), or with cached
//! frames of the previous chunk.
//!
//! Two implementations of the same sum:
//! - on CPU in f32, "shifted GEMMs" over a channels-last copy of the zero-padded
//!   input: for a kernel tap `(dt, dy, dx)` the inputs of all output pixels of a frame
//!   are one contiguous run of rows of that copy, offset by `dy * Wp + dx` (computing
//!   `Wp` columns per output row and dropping the last `k - 1`), so each tap is one
//!   matrix product `[pixels, C] x [C, O]` accumulated into the output. No unfolded
//!   (im2col) input is ever built; at 480p this is several times faster than conv2d.
//! - elsewhere (CUDA, other dtypes), candle's conv2d per temporal tap, summed.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
/// Bytes of unfolded input a causal conv lets one conv2d call take on the conv2d path
/// (see [`CausalConv3d::forward`]); at least one frame always goes.
pub const UNFOLD_BUDGET_BYTES: usize = 256 << 20;

/// A budget that makes [`CausalConv3d::forward_budgeted`] take the conv2d path even
/// on CPU (tests compare the two).
pub const FORCE_CONV2D: usize = 0;

/// Kernel taps packed for the CPU path: per tap `(dt, dy, dx)`, the row-major `[I, O]`
/// matrix.
#[derive(Debug)]
struct Packed {
    taps: Vec<Vec<f32>>,
    bias: Option<Vec<f32>>,
}

fn packed_for(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Arc<Packed>>> {
    if !(weight.device().is_cpu() && weight.dtype() == DType::F32) {
        return Ok(None);
    }
    let (o, i, ..) = weight.dims5()?;
    // [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
    let all = weight
        .permute((2, 3, 4, 1, 0))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bias = match bias {
        Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        None => None,
    };
    Ok(Some(Arc::new(Packed {
        taps: all.chunks_exact(i * o).map(<[f32]>::to_vec).collect(),
        bias,
    })))
}

/// Where input channel `c`, pixel `i` of one frame lives: `data[base + c * c_stride + i]`.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [f32],
    base: usize,
    c_stride: usize,
}

/// Geometry of one CPU convolution. `height` and `width` are the input's size as the
/// kernel sees it: with `upsample` > 1 the stored frames are that many times smaller
/// and are read nearest-neighbour (`upsample_nearest2d` fused into the packing).
struct ConvShape {
    batch: usize,
    frames_in: usize,
    channels: usize,
    height: usize,
    width: usize,
    upsample: usize,
    kernel_t: usize,
    kernel_hw: usize,
    pad: usize,
    time_stride: usize,
    out_channels: usize,
}

/// Writes `plane` (or zeros) as a zero-padded channels-last frame `[Hp, Wp, C]`.
fn pack_frame(s: &ConvShape, plane: Option<Plane>, dst: &mut [f32]) {
    use rayon::prelude::*;
    let (c, h, w, p, up) = (s.channels, s.height, s.width, s.pad, s.upsample);
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let row = wp * c;
    let (sh, sw) = (h / up, w / up);
    dst.par_chunks_mut(row).enumerate().for_each(|(yp, dst)| {
        let inside = yp >= p && yp < p + h;
        match plane {
            Some(plane) if inside => {
                dst[..p * c].fill(0.0);
                dst[(p + w) * c..].fill(0.0);
                let sy = (yp - p) / up;
                for ch in 0..c {
                    let src = &plane.data[plane.base + ch * plane.c_stride + sy * sw..][..sw];
                    for x in 0..w {
                        dst[(x + p) * c + ch] = src[x / up];
                    }
                }
            }
            _ => dst.fill(0.0),
        }
    });
    debug_assert!(sh * up == h && sw * up == w && dst.len() == hp * row);
}

/// The CPU convolution ("shifted GEMMs", see the module docs): `planes[b * frames_in +
/// t]` is input frame `t` of batch item `b` (`None`: zeros). Returns the output as
/// `[B, O, T_out, Ho, Wo]` data, and `(T_out, Ho, Wo)`. Only the `kernel_t` input
/// frames an output frame needs are held channels-last at a time.
fn conv_cpu(
    s: &ConvShape,
    planes: &[Option<Plane>],
    packed: &Packed,
) -> Result<(Vec<f32>, (usize, usize, usize))> {
    use rayon::prelude::*;
    let (b, t, c, h, w) = (s.batch, s.frames_in, s.channels, s.height, s.width);
    let (k, p, o, kt) = (s.kernel_hw, s.pad, s.out_channels, s.kernel_t);
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    if hp < k || wp < k || t < kt || s.upsample == 0 || h % s.upsample + w % s.upsample != 0 {
        candle_core::bail!("conv: {t}x{h}x{w} input for a {kt}x{k}x{k} kernel");
    }
    let (ho, wo) = (hp - k + 1, wp - k + 1);
    let t_out = (t - kt) / s.time_stride + 1;
    let frame_in = hp * wp * c;
    // Per output frame: `Wp` columns per output row, less the last row's `k - 1`
    // columns that would read past the frame (dropped with the other padding columns).
    let m = ho * wp - (k - 1);
    let mut buf = vec![0f32; ho * wp * o];
    let mut out = vec![0f32; b * o * t_out * ho * wo];
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    for bi in 0..b {
        // Channels-last frames of this batch item, packed when first needed and
        // dropped when no later output frame reads them.
        let mut held: Vec<Option<Vec<f32>>> = (0..t).map(|_| None).collect();
        for j in 0..t_out {
            let first_in = j * s.time_stride;
            for f in held.iter_mut().take(first_in) {
                *f = None;
            }
            for ti in first_in..first_in + kt {
                if held[ti].is_none() {
                    let mut frame = vec![0f32; frame_in];
                    pack_frame(s, planes[bi * t + ti], &mut frame);
                    held[ti] = Some(frame);
                }
            }
            let mut first = true;
            for dt in 0..kt {
                let src = held[first_in + dt].as_deref().unwrap_or_default();
                for dy in 0..k {
                    for dx in 0..k {
                        let off = (dy * wp + dx) * c;
                        let rhs = &packed.taps[(dt * k + dy) * k + dx];
                        assert!(off + m * c <= src.len() && rhs.len() == c * o);
                        // SAFETY: `buf` holds m x o (row stride o), written by this call
                        // only; lhs is m x c (row stride c) starting at `off` inside
                        // `src` (asserted); rhs is c x o (row stride o).
                        unsafe {
                            gemm::gemm(
                                m,
                                o,
                                c,
                                buf.as_mut_ptr(),
                                1,
                                o as isize,
                                !first,
                                src.as_ptr().add(off),
                                1,
                                c as isize,
                                rhs.as_ptr(),
                                1,
                                o as isize,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                parallelism,
                            );
                        }
                        first = false;
                    }
                }
            }
            // [Ho, Wp, O] (valid columns < Wo) -> out[bi, :, j] as [O, Ho, Wo], + bias
            let buf = &buf;
            let plane_len = t_out * ho * wo;
            out[bi * o * plane_len..(bi + 1) * o * plane_len]
                .par_chunks_mut(plane_len)
                .enumerate()
                .for_each(|(oc, dst)| {
                    let add = packed.bias.as_ref().map_or(0.0, |bias| bias[oc]);
                    let dst = &mut dst[j * ho * wo..(j + 1) * ho * wo];
                    for y in 0..ho {
                        for x in 0..wo {
                            dst[y * wo + x] = buf[(y * wp + x) * o + oc] + add;
                        }
                    }
                });
        }
    }
    Ok((out, (t_out, ho, wo)))
}

/// A contiguous f32 CPU tensor's data, to read in place.
fn with_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let data = match &*storage {
        candle_core::Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => candle_core::bail!("conv: expected a CPU tensor"),
    };
    let start = layout.start_offset();
    f(&data[start..start + t.elem_count()])
}

#[derive(Debug, Clone)]
pub struct CausalConv3d {
    /// The conv2d path's kernels: `[O, I, kh, kw]` per temporal tap. Empty when the
    /// CPU path's packed taps stand in for them.
    taps: Vec<Tensor>,
    packed: Option<Arc<Packed>>,
    bias: Option<Tensor>,
    kernel_t: usize,
    kernel_hw: usize,
    in_channels: usize,
    /// Frames of zero (or cache) padding in front.
    pub time_pad: usize,
    pub spatial_pad: usize,
    pub time_stride: usize,
    pub out_channels: usize,
}

impl CausalConv3d {
    /// `weight: [O, I, kt, kh, kw]` with `kh == kw`; `padding` is the module's
    /// `(pad_t, pad_hw)` as passed to `nn.Conv3d` (time padding becomes `2 * pad_t`).
    pub fn new(
        weight: &Tensor,
        bias: Option<Tensor>,
        padding: (usize, usize),
        time_stride: usize,
    ) -> Result<Self> {
        let (o, i, kt, kh, kw) = weight.dims5()?;
        if kh != kw {
            candle_core::bail!("causal conv3d wants a square spatial kernel, got {kh}x{kw}");
        }
        if kt == 0 || time_stride == 0 {
            candle_core::bail!("causal conv3d: empty kernel or zero stride");
        }
        let packed = packed_for(weight, bias.as_ref())?;
        let taps = if packed.is_some() {
            Vec::new()
        } else {
            (0..kt)
                .map(|k| weight.narrow(2, k, 1)?.squeeze(2)?.contiguous())
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Self {
            taps,
            packed,
            bias,
            kernel_t: kt,
            kernel_hw: kh,
            in_channels: i,
            time_pad: 2 * padding.0,
            spatial_pad: padding.1,
            time_stride,
            out_channels: o,
        })
    }

    pub fn kernel_t(&self) -> usize {
        self.kernel_t
    }

    /// The conv2d path's per-tap kernels (rebuilt from the packed taps on CPU).
    fn conv2d_taps(&self) -> Result<Vec<Tensor>> {
        match &self.packed {
            Some(packed) if self.taps.is_empty() => {
                let (k, i, o) = (self.kernel_hw, self.in_channels, self.out_channels);
                (0..self.kernel_t)
                    .map(|dt| {
                        let data: Vec<f32> = packed.taps[dt * k * k..(dt + 1) * k * k].concat();
                        Tensor::from_vec(data, (k, k, i, o), &Device::Cpu)?
                            .permute((3, 2, 0, 1))?
                            .contiguous()
                    })
                    .collect()
            }
            _ => Ok(self.taps.clone()),
        }
    }

    /// `x: [B, C, T, H, W]`. With `cache` (`[B, C, Tc, H, W]`) and time padding, the
    /// cached frames replace that many zero frames in front.
    pub fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        self.forward_budgeted(x, cache, UNFOLD_BUDGET_BYTES)
    }

    /// [`Self::forward`] with another bound on the unfolded input per conv2d call
    /// ([`FORCE_CONV2D`]: the conv2d path even on CPU).
    pub fn forward_budgeted(
        &self,
        x: &Tensor,
        cache: Option<&Tensor>,
        unfold_budget_bytes: usize,
    ) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        if c != self.in_channels {
            candle_core::bail!(
                "causal conv3d: {c} input channels, the kernel has {}",
                self.in_channels
            );
        }
        let cache = match cache {
            Some(cc) if self.time_pad > 0 => {
                let (cb, ccn, _, ch, cw) = cc.dims5()?;
                if (cb, ccn, ch, cw) != (b, c, h, w) {
                    candle_core::bail!(
                        "causal conv3d: cache {:?} for input {:?}",
                        cc.dims(),
                        x.dims()
                    );
                }
                Some(cc)
            }
            _ => None,
        };
        let ct = cache.map_or(Ok(0), |cc| cc.dim(2))?;
        let zeros = self.time_pad.saturating_sub(ct);
        let total = zeros + ct + t;
        if total < self.kernel_t {
            candle_core::bail!(
                "causal conv3d: {total} frames for a {}-tap kernel",
                self.kernel_t
            );
        }
        match (&self.packed, x.device().is_cpu(), x.dtype()) {
            (Some(packed), true, DType::F32) if unfold_budget_bytes != FORCE_CONV2D => {
                let shape = ConvShape {
                    batch: b,
                    frames_in: total,
                    channels: c,
                    height: h,
                    width: w,
                    upsample: 1,
                    kernel_t: self.kernel_t,
                    kernel_hw: self.kernel_hw,
                    pad: self.spatial_pad,
                    time_stride: self.time_stride,
                    out_channels: self.out_channels,
                };
                let hw = h * w;
                let run = |xd: &[f32], cd: &[f32]| -> Result<_> {
                    let mut planes = Vec::with_capacity(b * total);
                    for bi in 0..b {
                        planes.extend((0..zeros).map(|_| None));
                        planes.extend((0..ct).map(|f| {
                            Some(Plane {
                                data: cd,
                                base: (bi * c * ct + f) * hw,
                                c_stride: ct * hw,
                            })
                        }));
                        planes.extend((0..t).map(|f| {
                            Some(Plane {
                                data: xd,
                                base: (bi * c * t + f) * hw,
                                c_stride: t * hw,
                            })
                        }));
                    }
                    conv_cpu(&shape, &planes, packed)
                };
                let (data, (t_out, ho, wo)) = with_f32_data(x, |xd| match cache {
                    Some(cc) => with_f32_data(cc, |cd| run(xd, cd)),
                    None => run(xd, &[]),
                })?;
                Tensor::from_vec(data, (b, self.out_channels, t_out, ho, wo), &Device::Cpu)
            }
            _ => self.forward_conv2d(x, cache, zeros, unfold_budget_bytes),
        }
    }

    /// The conv2d path: candle's conv2d per temporal tap over frame batches, summed.
    fn forward_conv2d(
        &self,
        x: &Tensor,
        cache: Option<&Tensor>,
        zeros: usize,
        unfold_budget_bytes: usize,
    ) -> Result<Tensor> {
        if x.dim(0)? == 1 && self.time_stride == 1 {
            return self.forward_conv2d_views(x, cache, zeros, unfold_budget_bytes);
        }
        let mut x = x.clone();
        if let Some(cc) = cache {
            x = Tensor::cat(&[cc, &x], 2)?;
        }
        if zeros > 0 {
            let (b, c, _, h, w) = x.dims5()?;
            let z = Tensor::zeros((b, c, zeros, h, w), x.dtype(), x.device())?;
            x = Tensor::cat(&[&z, &x], 2)?;
        }
        let (b, c, t, h, w) = x.dims5()?;
        let kt = self.kernel_t;
        let t_out = (t - kt) / self.time_stride + 1;
        // [B, T, C, H, W] so a run of frames is a batch of images.
        let xt = x.permute((0, 2, 1, 3, 4))?.contiguous()?;
        drop(x);
        // Output frames go through conv2d in groups whose unfolded input (C x k x k
        // values per pixel) stays near the budget.
        let k = self.kernel_hw;
        let per_frame = b * c * k * k * h * w * xt.dtype().size_in_bytes();
        let group = (unfold_budget_bytes / per_frame.max(1)).clamp(1, t_out);
        let taps = self.conv2d_taps()?;
        let mut outs = Vec::with_capacity(t_out.div_ceil(group));
        let mut j0 = 0;
        while j0 < t_out {
            let n = group.min(t_out - j0);
            let mut acc: Option<Tensor> = None;
            for (k, tap) in taps.iter().enumerate() {
                let frames = if self.time_stride == 1 {
                    xt.narrow(1, k + j0, n)?
                } else {
                    let idx: Vec<u32> = (j0..j0 + n)
                        .map(|j| (k + j * self.time_stride) as u32)
                        .collect();
                    let idx = Tensor::new(idx.as_slice(), xt.device())?;
                    xt.index_select(&idx, 1)?
                };
                let frames = frames.reshape((b * n, c, h, w))?;
                let y = frames.conv2d(tap, self.spatial_pad, 1, 1, 1)?;
                acc = Some(match acc {
                    None => y,
                    Some(a) => (a + y)?,
                });
            }
            let Some(mut y) = acc else {
                candle_core::bail!("causal conv3d without taps")
            };
            if let Some(bias) = &self.bias {
                y = y.broadcast_add(&bias.reshape((1, self.out_channels, 1, 1))?)?;
            }
            let (_, o, ho, wo) = y.dims4()?;
            outs.push(y.reshape((b, n, o, ho, wo))?.permute((0, 2, 1, 3, 4))?);
            j0 += n;
        }
        if outs.len() == 1 {
            outs.remove(0).contiguous()
        } else {
            Tensor::cat(&outs, 2)?.contiguous()
        }
    }
}

impl CausalConv3d {
    /// The conv2d path for one video at time stride 1 (the VAE decoder's case) without
    /// copying the input: each conv2d reads its frames as a strided `[n, C, H, W]` view
    /// of `x` or of the cache (cuDNN and candle's conv2d take strided inputs), and the
    /// zero padding frames are skipped (they add nothing) instead of concatenated.
    /// Output frames are split where a tap's frames would cross from zeros to cache or
    /// from cache to `x`, so every conv2d reads one tensor.
    fn forward_conv2d_views(
        &self,
        x: &Tensor,
        cache: Option<&Tensor>,
        zeros: usize,
        unfold_budget_bytes: usize,
    ) -> Result<Tensor> {
        let (_, c, t, h, w) = x.dims5()?;
        let ct = cache.map_or(Ok(0), |cc| cc.dim(2))?;
        let kt = self.kernel_t;
        let t_out = zeros + ct + t + 1 - kt;
        let k = self.kernel_hw;
        let per_frame = c * k * k * h * w * x.dtype().size_in_bytes();
        let group = (unfold_budget_bytes / per_frame.max(1)).clamp(1, t_out);
        let mut cuts: Vec<usize> = (0..t_out).step_by(group).chain([t_out]).collect();
        for dt in 0..kt {
            for boundary in [zeros, zeros + ct] {
                if let Some(j) = boundary.checked_sub(dt).filter(|&j| j < t_out) {
                    cuts.push(j);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        // Frames `f0..f0 + n` of a `[1, C, T, H, W]` tensor as `[n, C, H, W]`, no copy.
        let frames = |src: &Tensor, f0: usize, n: usize| {
            src.narrow(2, f0, n)?.squeeze(0)?.permute((1, 0, 2, 3))
        };
        let taps = self.conv2d_taps()?;
        let mut outs = Vec::with_capacity(cuts.len());
        for window in cuts.windows(2) {
            let (j0, n) = (window[0], window[1] - window[0]);
            let mut acc: Option<Tensor> = None;
            for (dt, tap) in taps.iter().enumerate() {
                let p0 = j0 + dt;
                let src = if p0 < zeros {
                    continue; // zero frames contribute nothing
                } else if p0 < zeros + ct {
                    match cache {
                        Some(cc) => frames(cc, p0 - zeros, n)?,
                        None => candle_core::bail!("causal conv3d: cache frames without a cache"),
                    }
                } else {
                    frames(x, p0 - zeros - ct, n)?
                };
                let y = src.conv2d(tap, self.spatial_pad, 1, 1, 1)?;
                acc = Some(match acc {
                    None => y,
                    Some(a) => (a + y)?,
                });
            }
            let mut y = match acc {
                Some(y) => y,
                None => {
                    // Every tap on zero padding (a kernel longer than its input).
                    let pad = self.spatial_pad;
                    let (ho, wo) = (h + 2 * pad + 1 - k, w + 2 * pad + 1 - k);
                    Tensor::zeros((n, self.out_channels, ho, wo), x.dtype(), x.device())?
                }
            };
            if let Some(bias) = &self.bias {
                y = y.broadcast_add(&bias.reshape((1, self.out_channels, 1, 1))?)?;
            }
            outs.push(y);
        }
        let y = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 0)?
        };
        // [T_out, O, Ho, Wo] -> [1, O, T_out, Ho, Wo]
        y.permute((1, 0, 2, 3))?.unsqueeze(0)?.contiguous()
    }
}

/// A plain 2D convolution with bias over `[N, C, H, W]` (square kernel, stride 1); on
/// CPU in f32 through the same shifted GEMMs as [`CausalConv3d`].
#[derive(Debug, Clone)]
pub struct Conv2dSame {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub padding: usize,
    packed: Option<Arc<Packed>>,
}

impl Conv2dSame {
    /// `weight: [O, I, k, k]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize) -> Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("conv2d wants a square kernel, got {kh}x{kw}");
        }
        let packed = packed_for(&weight.unsqueeze(2)?, bias.as_ref())?;
        Ok(Self {
            weight,
            bias,
            padding,
            packed,
        })
    }

    /// The conv over every frame of `x: [B, C, T, H, W]` after a nearest-neighbour
    /// `upsample`x spatial upsampling: `[B, O, T, H * up, W * up]`. On CPU in f32 the
    /// upsampling is read on the fly (no upsampled copy) and no layout copies are made.
    pub fn forward_frames(&self, x: &Tensor, upsample: usize) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let (o, i, k, _) = self.weight.dims4()?;
        if c != i || upsample == 0 {
            candle_core::bail!("conv2d: {c} input channels for {i}, upsample {upsample}");
        }
        let (uh, uw) = (h * upsample, w * upsample);
        if let (Some(packed), true, DType::F32) = (&self.packed, x.device().is_cpu(), x.dtype()) {
            // A 2D conv on every frame is a 1-tap 3D conv.
            let shape = ConvShape {
                batch: b,
                frames_in: t,
                channels: c,
                height: uh,
                width: uw,
                upsample,
                kernel_t: 1,
                kernel_hw: k,
                pad: self.padding,
                time_stride: 1,
                out_channels: o,
            };
            let (data, (_, ho, wo)) = with_f32_data(x, |xd| {
                let planes: Vec<Option<Plane>> = (0..b * t)
                    .map(|bt| {
                        let (bi, f) = (bt / t, bt % t);
                        Some(Plane {
                            data: xd,
                            base: (bi * c * t + f) * h * w,
                            c_stride: t * h * w,
                        })
                    })
                    .collect();
                conv_cpu(&shape, &planes, packed)
            })?;
            return Tensor::from_vec(data, (b, o, t, ho, wo), &Device::Cpu);
        }
        // [B, C, T, H, W] -> [B * T, C, H, W]; for one video a strided view (conv2d and
        // the upsampling read strides), else a copy.
        let y = if b == 1 {
            x.squeeze(0)?.permute((1, 0, 2, 3))?
        } else {
            x.permute((0, 2, 1, 3, 4))?
                .contiguous()?
                .reshape((b * t, c, h, w))?
        };
        let y = if upsample > 1 {
            y.upsample_nearest2d(uh, uw)?
        } else {
            y
        };
        let y = self.forward(&y)?;
        let (_, co, ho, wo) = y.dims4()?;
        y.reshape((b, t, co, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

impl Module for Conv2dSame {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(packed), true, DType::F32) = (&self.packed, x.device().is_cpu(), x.dtype()) {
            let (n, c, h, w) = x.dims4()?;
            let (o, i, k, _) = self.weight.dims4()?;
            if c != i {
                candle_core::bail!("conv2d: {c} input channels, the kernel has {i}");
            }
            let shape = ConvShape {
                batch: n,
                frames_in: 1,
                channels: c,
                height: h,
                width: w,
                upsample: 1,
                kernel_t: 1,
                kernel_hw: k,
                pad: self.padding,
                time_stride: 1,
                out_channels: o,
            };
            let (data, (_, ho, wo)) = with_f32_data(x, |xd| {
                let planes: Vec<Option<Plane>> = (0..n)
                    .map(|ni| {
                        Some(Plane {
                            data: xd,
                            base: ni * c * h * w,
                            c_stride: h * w,
                        })
                    })
                    .collect();
                conv_cpu(&shape, &planes, packed)
            })?;
            return Tensor::from_vec(data, (n, o, ho, wo), &Device::Cpu);
        }
        let y = x.conv2d(&self.weight, self.padding, 1, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::tiny::max_abs_diff(a, b).unwrap()
    }

    fn det(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v = crate::tiny::det_values(&format!("conv3d-test-{seed}"), n, 0.0, 1.0);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn shifted_gemm_and_conv2d_paths_agree() {
        let bias = det(&[4], 2);
        let x = det(&[2, 3, 5, 6, 7], 3);
        let cache = det(&[2, 3, 2, 6, 7], 4);
        let cases = [
            ([4, 3, 3, 3, 3], (1, 1), 1),
            ([4, 3, 3, 3, 3], (1, 1), 2),
            ([4, 3, 1, 1, 1], (0, 0), 1),
            ([4, 3, 3, 1, 1], (1, 0), 1),
            ([4, 3, 1, 3, 3], (0, 0), 1),
        ];
        for (shape, pad, stride) in cases {
            let w = det(&shape, 1);
            let conv = CausalConv3d::new(&w, Some(bias.clone()), pad, stride).unwrap();
            for c in [None, Some(&cache)] {
                let whole = conv.forward_budgeted(&x, c, usize::MAX).unwrap();
                let framewise = conv.forward_budgeted(&x, c, 1).unwrap();
                let conv2d = conv.forward_budgeted(&x, c, FORCE_CONV2D).unwrap();
                assert_eq!(whole.dims(), conv2d.dims());
                let d = max_abs_diff(&whole, &conv2d);
                assert!(d < 1e-5, "shifted gemm vs conv2d, stride {stride}: {d}");
                assert_eq!(whole.dims(), framewise.dims());
                let diff = max_abs_diff(&whole, &framewise);
                assert!(diff < 1e-5, "stride {stride}: {diff}");
            }
        }
    }

    /// One video (the strided-view conv2d path) against the shifted GEMMs, with and
    /// without cache, for kernels longer than the zero padding and frame groups.
    #[test]
    fn one_video_conv2d_views_match_shifted_gemm() {
        let bias = det(&[4], 12);
        let cases = [
            ([4, 3, 3, 3, 3], (1, 1), 1, 5),
            ([4, 3, 3, 3, 3], (1, 1), 1, 1),
            ([4, 3, 3, 1, 1], (1, 0), 1, 2),
            ([4, 3, 1, 3, 3], (0, 0), 1, 3),
            ([4, 3, 3, 3, 3], (0, 1), 1, 4),
        ];
        for (shape, pad, stride, t) in cases {
            let x = det(&[1, 3, t, 6, 7], 13);
            let w = det(&shape, 11);
            let conv = CausalConv3d::new(&w, Some(bias.clone()), pad, stride).unwrap();
            for ct in [0, 1, 2] {
                let cache = det(&[1, 3, ct, 6, 7], 14);
                // As `forward`: a cache only stands in for time padding.
                let c = (ct > 0 && conv.time_pad > 0).then_some(&cache);
                let want = conv.forward_budgeted(&x, c, usize::MAX).unwrap();
                let zeros = conv.time_pad.saturating_sub(ct);
                for budget in [usize::MAX, 1] {
                    let got = conv.forward_conv2d_views(&x, c, zeros, budget).unwrap();
                    assert_eq!(got.dims(), want.dims(), "{shape:?} t {t} cache {ct}");
                    let d = max_abs_diff(&got, &want);
                    assert!(d < 1e-5, "{shape:?} t {t} cache {ct} budget {budget}: {d}");
                }
                let got = conv.forward_budgeted(&x, c, FORCE_CONV2D).unwrap();
                assert!(max_abs_diff(&got, &want) < 1e-5);
            }
        }
    }

    #[test]
    fn conv2d_same_cpu_path_matches_candle_conv2d() {
        let x = det(&[2, 3, 6, 7], 5);
        for (k, pad) in [(3, 1), (1, 0), (3, 0)] {
            let w = det(&[4, 3, k, k], 6);
            let b = det(&[4], 7);
            let conv = Conv2dSame::new(w.clone(), Some(b.clone()), pad).unwrap();
            let got = conv.forward(&x).unwrap();
            let want = x
                .conv2d(&w, pad, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-5, "k {k} pad {pad}: {d}");
        }
    }

    /// The non-f32 path of `forward_frames` for one video (strided frames, no copy)
    /// against the f32 CPU path.
    #[test]
    fn one_video_frames_in_f64_match_the_f32_path() {
        let x = det(&[1, 3, 4, 5, 6], 15);
        let w = det(&[4, 3, 3, 3], 16);
        let b = det(&[4], 17);
        let f32_conv = Conv2dSame::new(w.clone(), Some(b.clone()), 1).unwrap();
        let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let f64_conv = Conv2dSame::new(f64(&w), Some(f64(&b)), 1).unwrap();
        for up in [1, 2] {
            let want = f32_conv.forward_frames(&x, up).unwrap();
            let got = f64_conv.forward_frames(&f64(&x), up).unwrap();
            let got = got.to_dtype(DType::F32).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-4, "up {up}: {d}");
        }
    }

    #[test]
    fn upsampled_frames_match_upsample_then_conv2d() {
        let x = det(&[2, 3, 4, 5, 6], 8);
        let w = det(&[4, 3, 3, 3], 9);
        let b = det(&[4], 10);
        let conv = Conv2dSame::new(w.clone(), Some(b.clone()), 1).unwrap();
        for up in [1, 2] {
            let got = conv.forward_frames(&x, up).unwrap();
            let frames = x
                .permute((0, 2, 1, 3, 4))
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((8, 3, 5, 6))
                .unwrap()
                .upsample_nearest2d(5 * up, 6 * up)
                .unwrap();
            let want = frames
                .conv2d(&w, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap()
                .reshape((2, 4, 4, 5 * up, 6 * up))
                .unwrap()
                .permute((0, 2, 1, 3, 4))
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-5, "up {up}: {d}");
        }
    }
}
