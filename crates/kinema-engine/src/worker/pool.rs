//! The pool of every device's worker: built from the device slots, spawned, woken,
//! asked to cancel or drain; and what each worker and the pool share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kinema_artifacts::Artifacts;
use kinema_store::{Backend, RecoveryReport, Store, StoreError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, Instrument};

use super::recovery::{recover, recovery_loop};
use super::sampling::sample_devices;
use super::status::Activity;
use super::{DeviceSlot, StopFlags, WorkerConfig, WorkerStatus};
use crate::{meters, Clock, DeviceInfo, JobControl, JobEvents, ModelCache, ModelRegistry};

/// One worker's state, shared by its lease loop, the jobs it runs (`src/run/`) and
/// the pool.
pub(crate) struct Inner {
    /// Where jobs are leased and their ends written: the store, or a remote control
    /// plane.
    pub control: Arc<dyn JobControl>,
    pub artifacts: Artifacts,
    pub clock: Arc<dyn Clock>,
    pub events: JobEvents,
    pub config: WorkerConfig,
    /// This worker's lease owner id.
    pub owner: String,
    pub device: DeviceInfo,
    pub models: Arc<ModelCache>,
    pub(super) wake: Arc<Notify>,
    /// This worker's place in the pool.
    pub(super) index: usize,
    pub(super) pool: Arc<PoolShared>,
    /// Flips to true when the worker must stop leasing (drain or shutdown).
    pub(super) stop: watch::Sender<bool>,
    pub running: Mutex<HashMap<String, Arc<StopFlags>>>,
    pub(super) activity: Mutex<Activity>,
}

/// What the workers of one pool know of each other.
pub(super) struct PoolShared {
    wakes: Vec<Arc<Notify>>,
    /// True while the worker looks for or waits for work (not running a job, not
    /// draining).
    pub(super) idle: Vec<AtomicBool>,
    caches: Vec<Arc<ModelCache>>,
}

impl PoolShared {
    /// Whether another worker is idle and could hold `model`.
    pub(super) fn idle_peer_for(&self, me: usize, model: &str) -> bool {
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
    /// The store, when this pool runs inside the control plane: it then also finds
    /// jobs whose worker was lost. A remote node's pool has none.
    store: Option<Store>,
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
    /// A pool inside the server: it leases from the store directly, and recovers jobs
    /// whose worker was lost.
    pub fn new(
        store: Store,
        registry: Arc<ModelRegistry>,
        artifacts: Artifacts,
        clock: Arc<dyn Clock>,
        events: JobEvents,
        config: WorkerConfig,
        devices: Vec<DeviceSlot>,
    ) -> Self {
        let control: Arc<dyn JobControl> = Arc::new(store.clone());
        Self::build(
            control,
            Some(store),
            registry,
            artifacts,
            clock,
            events,
            config,
            devices,
        )
    }

    /// A pool on a remote worker node: `control` reaches the control plane (leases,
    /// progress, endings) and `artifacts` uploads through it.
    pub fn remote(
        control: Arc<dyn JobControl>,
        registry: Arc<ModelRegistry>,
        artifacts: Artifacts,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        devices: Vec<DeviceSlot>,
    ) -> Self {
        Self::build(
            control,
            None,
            registry,
            artifacts,
            clock,
            JobEvents::new(16),
            config,
            devices,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        control: Arc<dyn JobControl>,
        store: Option<Store>,
        registry: Arc<ModelRegistry>,
        artifacts: Artifacts,
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
                        control: control.clone(),
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
        let Some(store) = &self.store else {
            return Ok(RecoveryReport::default());
        };
        let owns_all = store.backend() == Backend::Sqlite;
        recover(
            store,
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
        if let Some(store) = &self.store {
            tasks.push(tokio::spawn(recovery_loop(
                store.clone(),
                self.clock.clone(),
                self.events.clone(),
                self.config.clone(),
                self.alive_prefix(),
                shutdown.clone(),
            )));
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

impl Worker {
    pub fn owner(&self) -> &str {
        &self.inner.owner
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
}
