//! The devices jobs run on: CUDA GPUs (with the `cuda` feature) or CPU worker slots.
//! `--devices 0,1` picks GPUs by index; `cpu` (or `cpu,cpu`, `--cpu-workers N`) gives
//! CPU slots, so several workers can be exercised without a GPU.

use std::fmt;

/// One device a worker loop owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// As usage records and model constructors name it: `cpu`, `cuda:0`.
    pub name: String,
    /// The hardware's own name ("NVIDIA H100 80GB HBM3", "cpu").
    pub model: String,
    /// CUDA ordinal; `None` for CPU.
    pub ordinal: Option<usize>,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: Option<(u32, u32)>,
}

impl DeviceInfo {
    pub fn is_cuda(&self) -> bool {
        self.ordinal.is_some()
    }
}

/// What `--devices` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "--devices {0:?}: expected a comma-separated list of GPU indices (0,1), cuda:N or cpu"
    )]
    Parse(String),
    #[error("device cuda:{0}: this build has no CUDA support (build with the `cuda` feature)")]
    NoCuda(usize),
    #[error("device cuda:{ordinal}: {message}")]
    Cuda { ordinal: usize, message: String },
}

/// Parses `--devices`: `0,1`, `cuda:0`, `cpu`, `cpu,cpu`.
pub fn parse_devices(text: &str) -> Result<Vec<DeviceRequest>, DeviceError> {
    let bad = || DeviceError::Parse(text.to_string());
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let request = if part.eq_ignore_ascii_case("cpu") {
            DeviceRequest::Cpu
        } else {
            let n = part
                .strip_prefix("cuda:")
                .unwrap_or(part)
                .parse::<usize>()
                .map_err(|_| bad())?;
            DeviceRequest::Cuda(n)
        };
        out.push(request);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The default when `--devices` is not given: every CUDA device this build can see,
/// else one CPU slot.
pub fn default_devices() -> Vec<DeviceRequest> {
    let gpus = cuda::device_count();
    if gpus == 0 {
        vec![DeviceRequest::Cpu]
    } else {
        (0..gpus).map(DeviceRequest::Cuda).collect()
    }
}

/// Opens each requested device and reads what it has.
pub fn discover(requests: &[DeviceRequest]) -> Result<Vec<DeviceInfo>, DeviceError> {
    requests
        .iter()
        .map(|r| match r {
            DeviceRequest::Cpu => Ok(cpu_info()),
            DeviceRequest::Cuda(n) => cuda::info(*n),
        })
        .collect()
}

/// The CPU as a device: its memory is the machine's.
pub fn cpu_info() -> DeviceInfo {
    let (total, free) = host_memory().unwrap_or((0, 0));
    DeviceInfo {
        name: "cpu".into(),
        model: "cpu".into(),
        ordinal: None,
        total_bytes: total,
        free_bytes: free,
        compute_capability: None,
    }
}

/// (MemTotal, MemAvailable) from /proc/meminfo, in bytes.
fn host_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// A device's memory and utilisation as sampled now. CUDA devices are sampled through
/// NVML when the library is present; without it (or on CPU) there is no sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSample {
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// Percent of the last sample period a kernel was running.
    pub utilization_percent: u32,
}

/// Samples GPU memory and utilisation (NVML), or nothing.
pub struct DeviceSampler {
    #[cfg(feature = "cuda")]
    nvml: Option<nvml_wrapper::Nvml>,
}

impl DeviceSampler {
    pub fn new() -> Self {
        #[cfg(feature = "cuda")]
        {
            let nvml = match nvml_wrapper::Nvml::init() {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::info!(error = %e, "NVML not available: no GPU memory/utilisation samples");
                    None
                }
            };
            Self { nvml }
        }
        #[cfg(not(feature = "cuda"))]
        Self {}
    }

    pub fn sample(&self, device: &DeviceInfo) -> Option<DeviceSample> {
        #[cfg(feature = "cuda")]
        {
            let nvml = self.nvml.as_ref()?;
            let dev = nvml.device_by_index(device.ordinal? as u32).ok()?;
            let mem = dev.memory_info().ok()?;
            let util = dev.utilization_rates().ok()?;
            Some(DeviceSample {
                used_bytes: mem.used,
                total_bytes: mem.total,
                utilization_percent: util.gpu,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = device;
            None
        }
    }
}

impl Default for DeviceSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{DeviceError, DeviceInfo};
    use candle_core::cuda_backend::cudarc::driver::{result, sys::CUdevice_attribute};

    pub fn device_count() -> usize {
        if result::init().is_err() {
            return 0;
        }
        result::device::get_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }

    pub fn info(ordinal: usize) -> Result<DeviceInfo, DeviceError> {
        let err = |e: &dyn std::fmt::Display| DeviceError::Cuda {
            ordinal,
            message: e.to_string(),
        };
        result::init().map_err(|e| err(&e))?;
        let count = result::device::get_count().map_err(|e| err(&e))?;
        if ordinal as i32 >= count {
            return Err(err(&format!("only {count} CUDA device(s) present")));
        }
        let dev = result::device::get(ordinal as i32).map_err(|e| err(&e))?;
        let name = result::device::get_name(dev).map_err(|e| err(&e))?;
        // SAFETY: `dev` is a valid device handle from `device::get` after `init`.
        let (total, major, minor) = unsafe {
            (
                result::device::total_mem(dev).map_err(|e| err(&e))?,
                result::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )
                .map_err(|e| err(&e))?,
                result::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )
                .map_err(|e| err(&e))?,
            )
        };
        // Free memory needs a context on the device; NVML reports it too.
        let free = candle_core::cuda_backend::cudarc::driver::CudaContext::new(ordinal)
            .ok()
            .and_then(|ctx| ctx.mem_get_info().ok())
            .map(|(free, _)| free as u64)
            .unwrap_or(total as u64);
        Ok(DeviceInfo {
            name: format!("cuda:{ordinal}"),
            model: name,
            ordinal: Some(ordinal),
            total_bytes: total as u64,
            free_bytes: free,
            compute_capability: Some((major as u32, minor as u32)),
        })
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{DeviceError, DeviceInfo};

    pub fn device_count() -> usize {
        0
    }

    pub fn info(ordinal: usize) -> Result<DeviceInfo, DeviceError> {
        Err(DeviceError::NoCuda(ordinal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpu_lists_and_cpu_slots() {
        assert_eq!(
            parse_devices("0,1").unwrap(),
            [DeviceRequest::Cuda(0), DeviceRequest::Cuda(1)]
        );
        assert_eq!(parse_devices("cuda:3").unwrap(), [DeviceRequest::Cuda(3)]);
        assert_eq!(
            parse_devices("cpu, CPU").unwrap(),
            [DeviceRequest::Cpu, DeviceRequest::Cpu]
        );
        for bad in ["", "gpu", "0,,1", "-1"] {
            assert!(parse_devices(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_slots_are_discovered_with_host_memory() {
        let devices = discover(&[DeviceRequest::Cpu, DeviceRequest::Cpu]).unwrap();
        assert_eq!(devices.len(), 2);
        assert!(devices.iter().all(|d| d.name == "cpu" && !d.is_cuda()));
        assert!(devices[0].total_bytes > 0, "{:?}", devices[0]);
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            discover(&[DeviceRequest::Cuda(0)]),
            Err(DeviceError::NoCuda(0))
        ));
    }
}
