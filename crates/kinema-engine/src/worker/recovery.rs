//! Jobs whose worker is gone go back to the queue (or fail, with refund): at startup,
//! and periodically for leases that lapsed on another replica.

use std::sync::Arc;

use kinema_store::{RecoveryReport, Store, StoreError};
use tracing::info;

use super::WorkerConfig;
use crate::{meters, Clock, JobEventKind, JobEvents};

/// Requeues (or fails, with refund) jobs whose worker is gone. `alive` is the lease
/// owner prefix of this process's workers: their jobs are running right here.
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
