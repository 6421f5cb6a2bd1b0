//! Jobs whose worker is gone go back to the queue (or fail, with refund): at startup,
//! and periodically for leases that lapsed (another replica, or a remote worker node,
//! died). Every control-plane process looks, whether or not it runs workers itself.

use std::sync::Arc;

use std::time::Duration;

use kinema_store::{RecoveryReport, Store, StoreError};
use tokio::sync::watch;
use tracing::{error, info};

use super::{WorkerConfig, LOCAL_OWNERS};
use crate::{meters, Clock, JobEventKind, JobEvents};

/// Requeues (or fails, with refund) jobs whose worker is gone. `alive` is the lease
/// owner prefix of this process's workers: their jobs are running right here. `all`:
/// also every job an earlier in-process worker (`local-…`) left running, whatever its
/// lease says (a single node's restart); remote workers' jobs wait for their lease.
pub(super) async fn recover(
    store: &Store,
    clock: &Arc<dyn Clock>,
    events: &JobEvents,
    config: &WorkerConfig,
    alive: &str,
    all: bool,
) -> Result<RecoveryReport, StoreError> {
    let now = clock.now_ms();
    let report = store
        .recover_lost_jobs(all.then_some(LOCAL_OWNERS), alive, config.max_attempts, now)
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

/// Looks for lapsed leases every half lease (at least every second) until shutdown.
pub(super) async fn recovery_loop(
    store: Store,
    clock: Arc<dyn Clock>,
    events: JobEvents,
    config: WorkerConfig,
    alive: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_millis((config.lease_ms / 2).max(1000) as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = recover(&store, &clock, &events, &config, &alive, false).await {
            error!(error = %e, "recovering lapsed leases failed");
        }
    }
}
