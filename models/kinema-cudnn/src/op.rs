//! The candle side: parameters from tensor layouts, the `CustomOp3` that runs the shim
//! on candle's CUDA stream, and the [`sdpa`] entry point.
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::ffi;
use crate::SdpaError;

const ERR_LEN: usize = 1024;

/// `softmax(q k^T * scale) v` over `q: [B, H, Lq, D]`, `k, v: [B, H, Lk, D]` on a CUDA
/// device, fused by cuDNN (no score matrix in memory). Any strides whose last one is 1.
///
/// `Ok(None)` when this input is not for the fused kernel (not CUDA, not bf16/f16, a
/// head dimension outside [`crate::HEAD_DIMS`], a strided head dimension, or cuDNN has
/// no engine for it): the caller uses another attention. Errors are real failures.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    let Some(params) = params_of(q, q.layout(), k.layout(), v.layout(), scale)? else {
        return Ok(None);
    };
    let candle_core::Device::Cuda(dev) = q.device() else {
        return Ok(None);
    };
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Ok(None);
    }
    // The shim asks the runtime for the current device: make it candle's.
    dev.cuda_stream()
        .context()
        .bind_to_thread()
        .map_err(candle_core::Error::wrap)?;
    let mut workspace = 0u64;
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: `params` and the out-pointers live across the call; the shim copies nothing.
    let rc =
        unsafe { ffi::kinema_sdpa_prepare(&params, &mut workspace, err.as_mut_ptr(), ERR_LEN) };
    if rc == ffi::UNSUPPORTED {
        note_unsupported(&message(&err));
        return Ok(None);
    }
    check(rc, &err)?;
    q.apply_op3_no_bwd(k, v, &Sdpa { scale }).map(Some)
}

struct Sdpa {
    scale: f64,
}

impl CustomOp3 for Sdpa {
    fn name(&self) -> &'static str {
        "kinema-cudnn-sdpa"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("kinema-cudnn-sdpa runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match q.dtype() {
            DType::BF16 => self.run::<half::bf16>(q, ql, k, kl, v, vl),
            DType::F16 => self.run::<half::f16>(q, ql, k, kl, v, vl),
            other => candle_core::bail!("kinema-cudnn-sdpa: unsupported dtype {other:?}"),
        }
    }
}

impl Sdpa {
    fn run<T: CudaDType + candle_core::cuda::cudarc::driver::DeviceRepr>(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let Some(p) = params_from_layouts(q.dtype(), ql, kl, vl, self.scale)? else {
            candle_core::bail!("kinema-cudnn-sdpa: input not supported (checked before)")
        };
        let dev = q.device().clone();
        let stream = dev.cuda_stream();
        let elem = std::mem::size_of::<T>() as u64;
        let (qs, ks, vs) = (
            q.as_cuda_slice::<T>()?,
            k.as_cuda_slice::<T>()?,
            v.as_cuda_slice::<T>()?,
        );
        let out_len = (p.b * p.h * p.lq * p.d) as usize;
        // SAFETY: every element is written by the kernel before anyone reads it.
        let mut out = unsafe { dev.alloc::<T>(out_len)? };
        let mut err = [0 as c_char; ERR_LEN];
        let mut ws_bytes = 0u64;
        // SAFETY: as in `sdpa`; the plan is cached, so this is a lookup.
        let rc = unsafe { ffi::kinema_sdpa_prepare(&p, &mut ws_bytes, err.as_mut_ptr(), ERR_LEN) };
        check(rc, &err)?;
        let mut workspace = if ws_bytes > 0 {
            // SAFETY: scratch memory for cuDNN; never read before written.
            Some(unsafe { dev.alloc::<u8>(ws_bytes as usize)? })
        } else {
            None
        };
        {
            // The guards make the stream wait for earlier writes of the inputs and record
            // this use, so candle's stream-ordered allocator keeps the memory alive.
            let (qp, _gq) = qs.device_ptr(&stream);
            let (kp, _gk) = ks.device_ptr(&stream);
            let (vp, _gv) = vs.device_ptr(&stream);
            let (op, _go) = out.device_ptr_mut(&stream);
            let (wp, _gw) = match workspace.as_mut() {
                Some(w) => {
                    let (p, g) = w.device_ptr_mut(&stream);
                    (p, Some(g))
                }
                None => (0, None),
            };
            let at =
                |base: u64, l: &Layout| (base + l.start_offset() as u64 * elem) as *const c_void;
            // SAFETY: pointers are device addresses of live buffers at the layouts'
            // offsets, the strides in `p` describe them, and the stream is candle's.
            let rc = unsafe {
                ffi::kinema_sdpa_run(
                    &p,
                    at(qp, ql),
                    at(kp, kl),
                    at(vp, vl),
                    op as *mut c_void,
                    wp as *mut c_void,
                    ws_bytes,
                    stream.cu_stream() as *mut c_void,
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            check(rc, &err)?;
        }
        drop(workspace);
        let shape = Shape::from((p.b as usize, p.h as usize, p.lq as usize, p.d as usize));
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

fn params_of(
    q: &Tensor,
    ql: &Layout,
    kl: &Layout,
    vl: &Layout,
    scale: f64,
) -> Result<Option<ffi::Params>> {
    if !q.device().is_cuda() {
        return Ok(None);
    }
    params_from_layouts(q.dtype(), ql, kl, vl, scale)
}

/// The shim's parameters, or `None` when the shapes, dtype or strides are not for it.
fn params_from_layouts(
    dtype: DType,
    ql: &Layout,
    kl: &Layout,
    vl: &Layout,
    scale: f64,
) -> Result<Option<ffi::Params>> {
    let dtype = match dtype {
        DType::BF16 => ffi::BF16,
        DType::F16 => ffi::F16,
        _ => return Ok(None),
    };
    let (qd, kd, vd) = (ql.dims(), kl.dims(), vl.dims());
    if qd.len() != 4 || kd.len() != 4 || vd.len() != 4 {
        candle_core::bail!("kinema-cudnn-sdpa: q, k, v must be [B, H, L, D]")
    }
    let (b, h, lq, d) = (qd[0], qd[1], qd[2], qd[3]);
    let lk = kd[2];
    if kd != [b, h, lk, d] || vd != [b, h, lk, d] {
        candle_core::bail!("kinema-cudnn-sdpa: shapes {qd:?}, {kd:?}, {vd:?} do not match")
    }
    if !crate::HEAD_DIMS.contains(&d) || lq == 0 || lk == 0 || b == 0 || h == 0 {
        return Ok(None);
    }
    let strides = |l: &Layout| -> Option<[i64; 4]> {
        let s = l.stride();
        // cuDNN wants 16-byte aligned rows: a unit head-dimension stride, others in
        // multiples of 8 elements (size-1 dimensions' strides do not matter).
        let ok = s[3] == 1
            && l.start_offset().is_multiple_of(8)
            && s[..3]
                .iter()
                .zip(&l.dims()[..3])
                .all(|(&st, &n)| n == 1 || st.is_multiple_of(8));
        ok.then(|| [s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64])
    };
    let (Some(q_stride), Some(k_stride), Some(v_stride)) = (strides(ql), strides(kl), strides(vl))
    else {
        return Ok(None);
    };
    Ok(Some(ffi::Params {
        b: b as i64,
        h: h as i64,
        lq: lq as i64,
        lk: lk as i64,
        d: d as i64,
        q_stride,
        k_stride,
        v_stride,
        dtype,
        scale: scale as f32,
    }))
}

fn message(err: &[c_char]) -> String {
    // SAFETY: the shim always NUL-terminates within ERR_LEN (snprintf); the buffer was
    // zeroed, so it is NUL-terminated even when the shim wrote nothing.
    unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn check(rc: c_int, err: &[c_char]) -> Result<()> {
    let msg = message(err);
    let e = match rc {
        ffi::OK => return Ok(()),
        ffi::CUDNN_ERROR | ffi::UNSUPPORTED => SdpaError::Cudnn(msg),
        ffi::CUDA_ERROR => SdpaError::Cuda(msg),
        _ => SdpaError::Internal(msg),
    };
    Err(candle_core::Error::wrap(e))
}

/// Logs once per distinct reason why cuDNN declined a shape (then the caller's own
/// attention runs, silently, for the same reason).
fn note_unsupported(reason: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    if let Ok(mut seen) = seen.lock() {
        if seen.insert(reason.to_string()) {
            tracing::warn!(
                reason,
                "cuDNN fused attention unavailable for a shape; using the chunked path"
            );
        }
    }
}
