use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinema_artifacts::LocalArtifacts;
use kinema_store::{Backend, RecoveryReport, Store, StoreError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::idle_gap::IdleGap;
use crate::{Clock, JobEventKind, JobEvents, ModelRegistry};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's lease owner id; unique per process.
    pub owner: String,
    /// Where jobs run, as usage records name it ("cpu", "cuda:0").
    pub device: String,
    pub lease_ms: i64,
    /// Starts a job may have before a lost worker fails it (with refund).
    pub max_attempts: u32,
    /// Honour `kinema.fail_at` / `kinema.step_delay_ms` in job metadata.
    pub fault_injection: bool,
    pub artifact_ttl_ms: i64,
    /// Scratch space for encoding before artifacts are stored.
    pub scratch_dir: PathBuf,
    /// How often an idle worker looks for work it was not woken for.
    pub poll_interval: Duration,
    /// On shutdown, how long a running job may take to finish before it is stopped
    /// and put back in the queue.
    pub drain_grace: Duration,
}

/// Per-job stop switches the step callback reads between steps.
#[derive(Debug, Default)]
pub(crate) struct StopFlags {
    pub cancel: AtomicBool,
    /// Shutdown: stop and requeue rather than cancel.
    pub interrupt: AtomicBool,
}

pub(crate) struct Inner {
    pub store: Store,
    pub registry: Arc<ModelRegistry>,
    pub artifacts: LocalArtifacts,
    pub clock: Arc<dyn Clock>,
    pub events: JobEvents,
    pub config: WorkerConfig,
    wake: Notify,
    pub running: Mutex<HashMap<String, Arc<StopFlags>>>,
}

/// The in-process worker: leases queued jobs one at a time and runs them.
#[derive(Clone)]
pub struct Worker {
    pub(crate) inner: Arc<Inner>,
}

pub struct WorkerHandle {
    task: JoinHandle<()>,
}

impl WorkerHandle {
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            error!(error = %e, "worker task ended abnormally");
        }
    }
}

impl Worker {
    pub fn new(
        store: Store,
        registry: Arc<ModelRegistry>,
        artifacts: LocalArtifacts,
        clock: Arc<dyn Clock>,
        events: JobEvents,
        config: WorkerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                artifacts,
                clock,
                events,
                config,
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A job was queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Asks a job running here to stop at its next step. The durable request is the
    /// store's `cancel_requested`; this only makes it immediate.
    pub fn request_cancel(&self, job_id: &str) {
        if let Some(flags) = self.inner.lock_running().get(job_id) {
            flags.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Startup recovery. On SQLite one server owns the database (the data dir is
    /// locked), so every job left RUNNING by a previous process is orphaned; on
    /// PostgreSQL other replicas may be running jobs, so only lapsed leases are.
    pub async fn recover_after_restart(&self) -> Result<RecoveryReport, StoreError> {
        let owns_all = self.inner.store.backend() == Backend::Sqlite;
        self.recover(owns_all).await
    }

    /// Requeues (or fails, with refund) jobs whose worker is gone.
    async fn recover(&self, all: bool) -> Result<RecoveryReport, StoreError> {
        let now = self.inner.clock.now_ms();
        let report = self
            .inner
            .store
            .recover_lost_jobs(
                all,
                &self.inner.config.owner,
                self.inner.config.max_attempts,
                now,
            )
            .await?;
        for job in report
            .requeued
            .iter()
            .chain(&report.failed)
            .chain(&report.cancelled)
        {
            info!(job = %job.id, state = %job.state, attempts = job.attempts, "recovered a job whose worker was lost");
            self.inner
                .events
                .publish(JobEventKind::StateChanged, job.clone(), now);
        }
        Ok(report)
    }

    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> WorkerHandle {
        let worker = self.clone();
        WorkerHandle {
            task: tokio::spawn(async move { worker.run_loop(shutdown).await }),
        }
    }

    async fn run_loop(self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        info!(owner = %inner.config.owner, device = %inner.config.device, "worker started");
        let mut next_recovery = std::time::Instant::now();
        let mut idle = IdleGap::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Leases that lapsed (another replica died) go back to the queue.
            if std::time::Instant::now() >= next_recovery {
                if let Err(e) = self.recover(false).await {
                    error!(error = %e, "recovering lapsed leases failed");
                }
                next_recovery = std::time::Instant::now()
                    + Duration::from_millis((inner.config.lease_ms / 2).max(1000) as u64);
            }
            let now = inner.clock.now_ms();
            match inner
                .store
                .lease_next_job(&inner.config.owner, inner.config.lease_ms, now)
                .await
            {
                Ok(leased) => {
                    for job in leased.refused {
                        warn!(job = %job.id, "job failed at start: credits no longer cover it");
                        inner.events.publish(JobEventKind::StateChanged, job, now);
                    }
                    if let Some(job) = leased.job {
                        inner
                            .events
                            .publish(JobEventKind::StateChanged, job.clone(), now);
                        let idle_since = idle.since(job.created_at);
                        self.run_job(job, shutdown.clone(), idle_since).await;
                        idle.job_ended(inner.clock.now_ms());
                        continue;
                    }
                }
                Err(e) => error!(error = %e, "leasing a job failed"),
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        info!(owner = %inner.config.owner, "worker stopped");
    }
}

impl Inner {
    pub(crate) fn lock_running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StopFlags>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}
