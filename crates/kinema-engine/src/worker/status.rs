//! What a worker is doing, as `ListWorkers` shows it, and the activity it records
//! (jobs done, heartbeat, the last device sample).

use crate::{DeviceInfo, DeviceSample, ResidentModel};

use super::pool::{Inner, Worker};

/// What a worker is doing, as `ListWorkers` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Idle,
    Busy,
    /// Asked to drain (or shutting down): leases nothing more.
    Draining,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Draining => "draining",
        }
    }
}

/// A snapshot of one worker.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub owner: String,
    pub device: DeviceInfo,
    pub memory_budget: u64,
    pub resident: Vec<ResidentModel>,
    pub evictions: u64,
    pub current_jobs: Vec<String>,
    pub state: WorkerState,
    pub jobs_done: u64,
    /// When the worker last looked for work or renewed a lease (clock ms).
    pub last_heartbeat_ms: i64,
    pub sample: Option<DeviceSample>,
}

#[derive(Debug, Default)]
pub(super) struct Activity {
    pub(super) jobs_done: u64,
    pub(super) last_heartbeat_ms: i64,
    pub(super) sample: Option<DeviceSample>,
}

impl Worker {
    pub fn status(&self) -> WorkerStatus {
        let inner = &self.inner;
        let current_jobs: Vec<String> = inner.lock_running().keys().cloned().collect();
        let activity = inner.lock_activity();
        let state = if *inner.stop.borrow() {
            WorkerState::Draining
        } else if current_jobs.is_empty() {
            WorkerState::Idle
        } else {
            WorkerState::Busy
        };
        WorkerStatus {
            owner: inner.owner.clone(),
            device: inner.device.clone(),
            memory_budget: inner.models.budget(),
            resident: inner.models.resident(),
            evictions: inner.models.evictions(),
            current_jobs,
            state,
            jobs_done: activity.jobs_done,
            last_heartbeat_ms: activity.last_heartbeat_ms,
            sample: activity.sample,
        }
    }
}

impl Inner {
    pub(super) fn lock_activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }
}
