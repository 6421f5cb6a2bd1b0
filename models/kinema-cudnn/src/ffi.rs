//! The C API of csrc/kinema_sdpa.h.
use std::ffi::{c_char, c_int, c_void};

pub const OK: c_int = 0;
pub const UNSUPPORTED: c_int = 1;
pub const CUDNN_ERROR: c_int = 2;
pub const CUDA_ERROR: c_int = 3;

pub const F16: i32 = 0;
pub const BF16: i32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub b: i64,
    pub h: i64,
    pub lq: i64,
    pub lk: i64,
    pub d: i64,
    pub q_stride: [i64; 4],
    pub k_stride: [i64; 4],
    pub v_stride: [i64; 4],
    pub dtype: i32,
    pub scale: f32,
}

extern "C" {
    pub fn kinema_sdpa_prepare(
        p: *const Params,
        workspace_bytes: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;

    #[allow(clippy::too_many_arguments)]
    pub fn kinema_sdpa_run(
        p: *const Params,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        o: *mut c_void,
        workspace: *mut c_void,
        workspace_bytes: u64,
        stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}
