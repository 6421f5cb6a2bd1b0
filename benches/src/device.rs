//! `--device cuda:N|cpu` and `--dtype bf16|f32|f16`, device synchronisation before a
//! timer is read, and a sampler of the GPU's used memory (candle's CUDA allocator keeps
//! no statistics, so the driver's `cuMemGetInfo` is polled from a thread).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device};

/// A parsed `--device`.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s => {
            let n = s
                .strip_prefix("cuda")
                .map(|r| r.strip_prefix(':').unwrap_or(r))
                .with_context(|| format!("--device {s}: expected cpu or cuda:N"))?;
            let ordinal = if n.is_empty() { 0 } else { n.parse()? };
            Device::new_cuda(ordinal).with_context(|| {
                format!("--device {s}: no CUDA device (is this binary built with --features cuda?)")
            })
        }
    }
}

/// A parsed `--dtype`.
pub fn parse_dtype(spec: &str) -> anyhow::Result<DType> {
    match spec {
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        s => anyhow::bail!("--dtype {s}: expected bf16, f16 or f32"),
    }
}

pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
        _ => "other",
    }
}

/// Waits for the device's queued work (CUDA kernels run asynchronously).
pub fn sync(dev: &Device) -> anyhow::Result<()> {
    dev.synchronize()?;
    Ok(())
}

/// Seconds `f` takes, the device synchronised before and after.
pub fn timed<T>(dev: &Device, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    sync(dev)?;
    let t0 = Instant::now();
    let out = f()?;
    sync(dev)?;
    Ok((out, t0.elapsed().as_secs_f64()))
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Polls the device's used memory (total - free, every process and the CUDA context
/// included) every few milliseconds until dropped; `peak_mib` is the highest seen.
/// On CPU (or a build without CUDA) it samples nothing and reports `None`.
pub struct MemSampler {
    device: Device,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    base: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemSampler {
    pub fn start(dev: &Device) -> Self {
        // the figure usage records report: the memory pool's high-water mark
        kinema_diffusion::device_memory::reset_peak(dev);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (base, thread) = match used_fn(dev) {
            Some(used) => {
                let base = used().unwrap_or(0);
                peak.store(base, Ordering::Relaxed);
                let (s, p) = (stop.clone(), peak.clone());
                let t = std::thread::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        if let Some(u) = used() {
                            p.fetch_max(u, Ordering::Relaxed);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                });
                (base, Some(t))
            }
            None => (0, None),
        };
        Self {
            device: dev.clone(),
            stop,
            peak,
            base,
            thread,
        }
    }

    /// `{device_used_peak_mib, device_used_at_start_mib}` or null without samples.
    pub fn finish(mut self) -> serde_json::Value {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                serde_json::json!({
                    "device_used_peak_mib": mib(self.peak.load(Ordering::Relaxed)),
                    "device_used_at_start_mib": mib(self.base),
                    "method": "cuMemGetInfo polled every 2 ms (total - free, whole device)",
                    "pool_high_water_mib": kinema_diffusion::device_memory::peak_bytes(&self.device).map(mib),
                })
            }
            None => serde_json::Value::Null,
        }
    }
}

impl Drop for MemSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type UsedFn = Box<dyn Fn() -> Option<u64> + Send>;

#[cfg(feature = "cuda")]
fn used_fn(dev: &Device) -> Option<UsedFn> {
    let ctx = dev.as_cuda_device().ok()?.cuda_stream().context().clone();
    Some(Box::new(move || {
        ctx.mem_get_info()
            .ok()
            .map(|(free, total)| (total - free) as u64)
    }))
}

#[cfg(not(feature = "cuda"))]
fn used_fn(_dev: &Device) -> Option<UsedFn> {
    None
}
