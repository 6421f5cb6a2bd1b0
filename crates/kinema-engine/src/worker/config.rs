//! Settings every worker of a pool shares, and the devices it runs on.

use std::path::PathBuf;
use std::time::Duration;

use crate::{DeviceInfo, Timeouts};

/// The lease owner prefix of every in-process worker (`kinema serve`'s own): a single
/// node restarting knows jobs under it were its previous process's. Remote worker
/// nodes' owners begin with their key id instead.
pub const LOCAL_OWNERS: &str = "local-";

/// Settings every worker of a pool shares.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The lease owner prefix, unique per process; each device's worker appends its
    /// index (`local-123-abcd-w0`).
    pub owner: String,
    pub lease_ms: i64,
    /// Starts a job may have before a lost worker (or a retryable failure) fails it,
    /// with refund.
    pub max_attempts: u32,
    /// Honour `kinema.fail_at` / `kinema.step_delay_ms` / ... in job metadata.
    pub fault_injection: bool,
    pub artifact_ttl_ms: i64,
    /// Scratch space for encoding before artifacts are stored.
    pub scratch_dir: PathBuf,
    /// How often an idle worker looks for work it was not woken for.
    pub poll_interval: Duration,
    /// On shutdown or drain, how long a running job may take to finish before it is
    /// stopped and put back in the queue.
    pub drain_grace: Duration,
    pub timeouts: Timeouts,
    /// Models each device loads before it leases its first job.
    pub preload: Vec<String>,
    /// How often GPU memory and utilisation are sampled (when NVML is present).
    pub sample_interval: Duration,
    /// Most jobs denoised as one batch (1: no batching); `None`: each device's
    /// default, [`default_max_batch`].
    pub max_batch: Option<usize>,
}

/// Batching pays where one forward over more rows fills an accelerator better; on CPU
/// the work is the same and two forwards fight over the cores (benches/README.md:
/// a batch of 4 at 0.3-1.1x of one by one), so CPU devices do not batch unless asked.
pub fn default_max_batch(device: &DeviceInfo) -> usize {
    if device.is_cuda() {
        4
    } else {
        1
    }
}

/// A device and how much of its memory models may use.
#[derive(Debug, Clone)]
pub struct DeviceSlot {
    pub info: DeviceInfo,
    pub memory_budget: u64,
}
