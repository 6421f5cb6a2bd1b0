//! One worker loop per device: it leases queued jobs its device can hold, one at a
//! time, and runs them (`run/`). The [`WorkerPool`] holds every device's worker and
//! is what the server talks to: wake, cancel, drain, list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kinema_artifacts::LocalArtifacts;
use kinema_store::{Backend, Job, LeaseFilter, RecoveryReport, Store, StoreError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn, Instrument};

use crate::idle_gap::IdleGap;
use crate::{
    meters, Clock, DeviceInfo, DeviceSample, DeviceSampler, JobEventKind, JobEvents, ModelCache,
    ModelRegistry, ResidentModel, Timeouts,
};

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

/// Per-job stop switches the step callback reads between steps.
#[derive(Debug)]
pub(crate) struct StopFlags {
    pub cancel: AtomicBool,
    /// Shutdown or drain: stop and requeue rather than cancel.
    pub interrupt: AtomicBool,
    /// Why a time limit stopped the job.
    pub timed_out: OnceLock<String>,
    /// The last denoising step completed.
    pub step: AtomicU32,
    /// The step completed when the cancel was first seen (NO_STEP: not seen).
    pub cancel_seen_at: AtomicU32,
    /// The step the denoising loop stopped after (NO_STEP: it did not stop early).
    pub stopped_at: AtomicU32,
}

pub(crate) const NO_STEP: u32 = u32::MAX;

impl Default for StopFlags {
    fn default() -> Self {
        Self {
            cancel: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
            timed_out: OnceLock::new(),
            step: AtomicU32::new(0),
            cancel_seen_at: AtomicU32::new(NO_STEP),
            stopped_at: AtomicU32::new(NO_STEP),
        }
    }
}

impl StopFlags {
    pub fn request_cancel(&self) {
        let _ = self.cancel_seen_at.compare_exchange(
            NO_STEP,
            self.step.load(Ordering::SeqCst),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn time_out(&self, why: String) {
        let _ = self.timed_out.set(why);
    }

    pub fn stopped(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
            || self.interrupt.load(Ordering::SeqCst)
            || self.timed_out.get().is_some()
    }
}

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
struct Activity {
    jobs_done: u64,
    last_heartbeat_ms: i64,
    sample: Option<DeviceSample>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub artifacts: LocalArtifacts,
    pub clock: Arc<dyn Clock>,
    pub events: JobEvents,
    pub config: WorkerConfig,
    /// This worker's lease owner id.
    pub owner: String,
    pub device: DeviceInfo,
    pub models: Arc<ModelCache>,
    wake: Arc<Notify>,
    /// This worker's place in the pool.
    index: usize,
    pool: Arc<PoolShared>,
    /// Flips to true when the worker must stop leasing (drain or shutdown).
    stop: watch::Sender<bool>,
    pub running: Mutex<HashMap<String, Arc<StopFlags>>>,
    activity: Mutex<Activity>,
}

/// What the workers of one pool know of each other.
struct PoolShared {
    wakes: Vec<Arc<Notify>>,
    /// True while the worker looks for or waits for work (not running a job, not
    /// draining).
    idle: Vec<AtomicBool>,
    caches: Vec<Arc<ModelCache>>,
}

impl PoolShared {
    /// Whether another worker is idle and could hold `model`.
    fn idle_peer_for(&self, me: usize, model: &str) -> bool {
        (0..self.idle.len()).any(|i| {
            i != me && self.idle[i].load(Ordering::SeqCst) && self.caches[i].can_hold(model)
        })
    }
}

/// One device's worker: leases queued jobs one at a time and runs them.
#[derive(Clone)]
pub struct Worker {
    pub(crate) inner: Arc<Inner>,
}

/// Every device's worker.
#[derive(Clone)]
pub struct WorkerPool {
    workers: Arc<Vec<Worker>>,
    store: Store,
    clock: Arc<dyn Clock>,
    events: JobEvents,
    config: WorkerConfig,
}

pub struct PoolHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl PoolHandle {
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                error!(error = %e, "worker task ended abnormally");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no worker {0:?}")]
    UnknownWorker(String),
}

impl WorkerPool {
    pub fn new(
        store: Store,
        registry: Arc<ModelRegistry>,
        artifacts: LocalArtifacts,
        clock: Arc<dyn Clock>,
        events: JobEvents,
        config: WorkerConfig,
        devices: Vec<DeviceSlot>,
    ) -> Self {
        meters::describe();
        let shared = Arc::new(PoolShared {
            wakes: devices.iter().map(|_| Arc::new(Notify::new())).collect(),
            idle: devices.iter().map(|_| AtomicBool::new(false)).collect(),
            caches: devices
                .iter()
                .map(|slot| {
                    Arc::new(ModelCache::new(
                        registry.clone(),
                        slot.info.name.clone(),
                        slot.memory_budget,
                    ))
                })
                .collect(),
        });
        let workers = devices
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                let (stop, _) = watch::channel(false);
                Worker {
                    inner: Arc::new(Inner {
                        store: store.clone(),
                        artifacts: artifacts.clone(),
                        clock: clock.clone(),
                        events: events.clone(),
                        config: config.clone(),
                        owner: format!("{}-w{i}", config.owner),
                        models: shared.caches[i].clone(),
                        device: slot.info,
                        wake: shared.wakes[i].clone(),
                        index: i,
                        pool: shared.clone(),
                        stop,
                        running: Mutex::new(HashMap::new()),
                        activity: Mutex::new(Activity::default()),
                    }),
                }
            })
            .collect();
        Self {
            workers: Arc::new(workers),
            store,
            clock,
            events,
            config,
        }
    }

    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// A job was queued: look now rather than at the next poll.
    pub fn wake(&self) {
        for w in self.workers.iter() {
            w.inner.wake.notify_one();
        }
    }

    /// Asks a job running here to stop at its next step. The durable request is the
    /// store's `cancel_requested`; this only makes it immediate.
    pub fn request_cancel(&self, job_id: &str) {
        for w in self.workers.iter() {
            if let Some(flags) = w.inner.lock_running().get(job_id) {
                flags.request_cancel();
            }
        }
    }

    /// Every worker as it is now.
    pub fn status(&self) -> Vec<WorkerStatus> {
        self.workers.iter().map(Worker::status).collect()
    }

    /// Stops one worker leasing; its running job finishes within the drain grace or
    /// is stopped and requeued, as on SIGTERM.
    pub fn drain(&self, owner: &str) -> Result<WorkerStatus, DrainError> {
        let w = self
            .workers
            .iter()
            .find(|w| w.inner.owner == owner)
            .ok_or_else(|| DrainError::UnknownWorker(owner.to_string()))?;
        info!(owner, "draining worker");
        w.inner.stop.send_replace(true);
        Ok(w.status())
    }

    /// Startup recovery. On SQLite one server owns the database (the data dir is
    /// locked), so every job left RUNNING by a previous process is orphaned; on
    /// PostgreSQL other replicas may be running jobs, so only lapsed leases are.
    pub async fn recover_after_restart(&self) -> Result<RecoveryReport, StoreError> {
        let owns_all = self.store.backend() == Backend::Sqlite;
        recover(
            &self.store,
            &self.clock,
            &self.events,
            &self.config,
            &self.alive_prefix(),
            owns_all,
        )
        .await
    }

    /// The lease owner prefix every worker of this pool shares.
    fn alive_prefix(&self) -> String {
        format!("{}-w", self.config.owner)
    }

    /// Starts every worker loop, and the device sampler where there is a GPU.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> PoolHandle {
        let mut tasks = Vec::new();
        for w in self.workers.iter() {
            // Shutdown stops every worker leasing, as a drain does.
            let mut down = shutdown.clone();
            let stop = w.inner.stop.clone();
            tokio::spawn(async move {
                while !*down.borrow() {
                    if down.changed().await.is_err() {
                        return;
                    }
                }
                stop.send_replace(true);
            });
            let worker = w.clone();
            let span = tracing::info_span!("worker", owner = %w.inner.owner, device = %w.inner.device.name);
            tasks.push(tokio::spawn(worker.run_loop().instrument(span)));
        }
        if self.workers.iter().any(|w| w.inner.device.is_cuda()) {
            tasks.push(tokio::spawn(sample_devices(
                self.workers.clone(),
                self.config.sample_interval,
                shutdown,
            )));
        }
        PoolHandle { tasks }
    }
}

/// Requeues (or fails, with refund) jobs whose worker is gone. `alive` is the lease
/// owner prefix of this process's workers: their jobs are running right here.
async fn recover(
    store: &Store,
    clock: &Arc<dyn Clock>,
    events: &JobEvents,
    config: &WorkerConfig,
    alive: &str,
    all: bool,
) -> Result<RecoveryReport, StoreError> {
    let now = clock.now_ms();
    let report = store
        .recover_lost_jobs(all, alive, config.max_attempts, now)
        .await?;
    for job in report
        .requeued
        .iter()
        .chain(&report.failed)
        .chain(&report.cancelled)
    {
        info!(job = %job.id, state = %job.state, attempts = job.attempts, "recovered a job whose worker was lost");
        if job.state == kinema_store::JobState::Failed {
            meters::job_finished("", "FAILED", "WORKER_LOST");
        }
        events.publish(JobEventKind::StateChanged, job.clone(), now);
    }
    Ok(report)
}

async fn sample_devices(
    workers: Arc<Vec<Worker>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let sampler = Arc::new(DeviceSampler::new());
    loop {
        for w in workers.iter() {
            let sampler = sampler.clone();
            let device = w.inner.device.clone();
            let sample = tokio::task::spawn_blocking(move || sampler.sample(&device))
                .await
                .ok()
                .flatten();
            if let Some(s) = &sample {
                meters::device_sample(&w.inner.device.name, s);
            }
            w.inner.lock_activity().sample = sample;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl Worker {
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

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

    /// A receiver that turns true when this worker must stop leasing.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    pub(crate) fn heartbeat(&self) {
        self.inner.lock_activity().last_heartbeat_ms = self.inner.clock.now_ms();
    }

    async fn preload(&self) {
        for model in &self.inner.config.preload {
            if !self.inner.models.can_hold(model) {
                warn!(
                    model,
                    "not preloaded: it does not fit this device's memory budget"
                );
                continue;
            }
            let models = self.inner.models.clone();
            let m = model.clone();
            match tokio::task::spawn_blocking(move || models.get(&m).map(|_| ())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(model, error = %e, "preloading failed"),
                Err(e) => error!(model, error = %e, "preloading ended abnormally"),
            }
        }
    }

    async fn run_loop(self) {
        let inner = &self.inner;
        info!(budget = inner.models.budget(), "worker started");
        let mut stop = self.stop_signal();
        self.preload().await;
        let filter = LeaseFilter {
            models: inner.models.placeable_models(),
        };
        let mut next_recovery = Instant::now();
        let mut idle = IdleGap::default();
        loop {
            if *stop.borrow() {
                break;
            }
            inner.pool.idle[inner.index].store(true, Ordering::SeqCst);
            self.heartbeat();
            // Leases that lapsed (another replica died) go back to the queue; one
            // worker of the pool looks.
            if inner.index == 0 && Instant::now() >= next_recovery {
                let c = &inner.config;
                let alive = format!("{}-w", c.owner);
                if let Err(e) =
                    recover(&inner.store, &inner.clock, &inner.events, c, &alive, false).await
                {
                    error!(error = %e, "recovering lapsed leases failed");
                }
                next_recovery =
                    Instant::now() + Duration::from_millis((c.lease_ms / 2).max(1000) as u64);
            }
            let now = inner.clock.now_ms();
            match inner
                .store
                .lease_matching(&inner.owner, &filter, inner.config.lease_ms, now)
                .await
            {
                Ok(leased) => {
                    for job in leased.refused {
                        warn!(job = %job.id, state = %job.state, "job ended at start instead of running");
                        inner.events.publish(JobEventKind::StateChanged, job, now);
                    }
                    if let Some(job) = leased.job {
                        meters::leased(&inner.device.name);
                        meters::queue_wait(now - job.created_at);
                        inner.pool.idle[inner.index].store(false, Ordering::SeqCst);
                        meters::busy(&inner.owner, true);
                        inner
                            .events
                            .publish(JobEventKind::StateChanged, job.clone(), now);
                        let idle_since = idle.since(job.created_at);
                        let jobs = self.with_companions(job).await;
                        let n = jobs.len() as u64;
                        let oom_retries = self.run_batch(jobs, idle_since).await;
                        idle.job_ended(inner.clock.now_ms());
                        inner.lock_activity().jobs_done += n;
                        meters::busy(&inner.owner, false);
                        for job in &oom_retries {
                            self.hand_off(job).await;
                        }
                        continue;
                    }
                }
                Err(e) => error!(error = %e, "leasing a job failed"),
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        inner.pool.idle[inner.index].store(false, Ordering::SeqCst);
        info!("worker stopped leasing");
    }

    /// An out-of-memory retry runs elsewhere if it can: while another worker that can
    /// hold the model is idle, this one leases nothing until the job has left the
    /// queue (bounded, so a lost wake-up cannot stall it).
    async fn hand_off(&self, job: &kinema_store::Job) {
        let inner = &self.inner;
        if !inner.pool.idle_peer_for(inner.index, &job.model) {
            return;
        }
        inner.wake_all();
        for _ in 0..100 {
            match inner.store.get_job(None, &job.id).await {
                Ok(Some(j)) if j.state == kinema_store::JobState::Queued => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Worker {
    /// The leader and the queued jobs leased to run in one batch with it: up to the
    /// server's `max_batch`, the model's, and what the device's budget leaves beside
    /// the model.
    async fn with_companions(&self, leader: Job) -> Vec<Job> {
        let inner = &self.inner;
        let room = match inner.models.manifest(&leader.model) {
            Some(m) if leader.batch_key.is_some() => {
                let free = inner.models.budget().saturating_sub(m.memory_bytes);
                let limit = inner
                    .config
                    .max_batch
                    .unwrap_or_else(|| default_max_batch(&inner.device));
                m.batch_capacity(free).min(limit)
            }
            _ => 1,
        };
        if room <= 1 {
            return vec![leader];
        }
        let now = inner.clock.now_ms();
        let leased = inner
            .store
            .lease_companions(&inner.owner, &leader, room - 1, inner.config.lease_ms, now)
            .await;
        let mut jobs = vec![leader];
        match leased {
            Ok(leased) => {
                for job in leased.refused {
                    warn!(job = %job.id, state = %job.state, "job ended at start instead of running");
                    inner.events.publish(JobEventKind::StateChanged, job, now);
                }
                for job in leased.companions {
                    meters::leased(&inner.device.name);
                    meters::queue_wait(now - job.created_at);
                    inner
                        .events
                        .publish(JobEventKind::StateChanged, job.clone(), now);
                    jobs.push(job);
                }
            }
            Err(e) => error!(error = %e, "leasing batch companions failed"),
        }
        if jobs.len() > 1 {
            info!(
                size = jobs.len(),
                key = jobs[0].batch_key.as_deref().unwrap_or_default(),
                "running a batch"
            );
        }
        jobs
    }
}

impl Inner {
    pub(crate) fn lock_running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StopFlags>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every worker of the pool (a job went back to the queue).
    pub(crate) fn wake_all(&self) {
        for w in &self.pool.wakes {
            w.notify_one();
        }
    }

    fn lock_activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }
}
