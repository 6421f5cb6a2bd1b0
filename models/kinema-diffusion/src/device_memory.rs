//! Peak device memory per stage, for usage records. Candle allocates CUDA memory
//! stream-ordered from the device's default memory pool (`cuMemAllocAsync`), whose
//! `USED_MEM_HIGH` attribute is the high-water mark of bytes handed out to tensors
//! (cuBLAS's and the driver's own allocations are not in it). A stage resets the
//! mark, runs, and reads it. On CPU there is nothing to read.

use candle_core::Device;

/// Resets the device's high-water mark to the memory in use now.
pub fn reset_peak(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        if let Err(e) = cuda::reset_peak(d) {
            tracing::debug!(error = %e, "resetting the memory pool's high-water mark");
        }
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
}

/// Bytes of device memory at the high-water mark since the last [`reset_peak`];
/// `None` on CPU or when the driver does not say.
pub fn peak_bytes(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return cuda::peak_bytes(d)
            .map_err(|e| tracing::debug!(error = %e, "reading the memory pool's high-water mark"))
            .ok();
    }
    let _ = device;
    None
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::CudaDevice;

    fn check(r: sys::CUresult, what: &str) -> Result<(), String> {
        if r == sys::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(format!("{what}: {r:?}"))
        }
    }

    fn default_pool(d: &CudaDevice) -> Result<sys::CUmemoryPool, String> {
        let dev = d.cuda_stream().context().cu_device();
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: `pool` is a valid out-pointer; `dev` is a device of a live context.
        check(
            unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, dev) },
            "cuDeviceGetDefaultMemPool",
        )?;
        Ok(pool)
    }

    pub fn reset_peak(d: &CudaDevice) -> Result<(), String> {
        let pool = default_pool(d)?;
        // Setting the mark to 0 resets it to the current use.
        let mut zero: u64 = 0;
        // SAFETY: the attribute is a cuuint64_t; `zero` outlives the call.
        check(
            unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut zero as *mut u64).cast(),
                )
            },
            "cuMemPoolSetAttribute(USED_MEM_HIGH)",
        )
    }

    pub fn peak_bytes(d: &CudaDevice) -> Result<u64, String> {
        let pool = default_pool(d)?;
        let mut high: u64 = 0;
        // SAFETY: the attribute is a cuuint64_t; `high` outlives the call.
        check(
            unsafe {
                sys::cuMemPoolGetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut high as *mut u64).cast(),
                )
            },
            "cuMemPoolGetAttribute(USED_MEM_HIGH)",
        )?;
        Ok(high)
    }
}
