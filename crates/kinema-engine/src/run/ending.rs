//! How a job's run ended, and writing that down: the store's transition with its
//! money effect (docs/api.md, "Refunds"), a retry for a retryable failure, the job's event
//! and meters.

use std::sync::atomic::Ordering;

use kinema_store::{Artifact, Job, JobState, StoreError, Usage};
use tracing::{info, warn};

use crate::worker::StopFlags;
use crate::{meters, FailureCode, JobEventKind, JobFailure, Worker};

/// How a job's run ended, before it is written down.
pub(super) enum Ending {
    Succeeded {
        artifacts: Vec<Artifact>,
    },
    Failed(JobFailure),
    Cancelled,
    /// Stopped by shutdown: back to the queue.
    Interrupted,
    /// The lease went to someone else (recovery): write nothing.
    LeaseLost,
}

impl Worker {
    /// Why a job stopped early: a time limit, shutdown, a lost lease, or a cancel.
    pub(super) async fn stop_ending(&self, job: &Job, flags: &StopFlags) -> Ending {
        if !flags.cancel.load(Ordering::SeqCst) {
            if let Some(why) = flags.timed_out.get() {
                return Ending::Failed(JobFailure::new(FailureCode::Timeout, why.clone()));
            }
            if flags.interrupt.load(Ordering::SeqCst) {
                return Ending::Interrupted;
            }
        }
        let inner = &self.inner;
        match inner.control.leased_job(&job.id, &inner.owner).await {
            Ok(Some(j)) if j.state == JobState::Running && j.cancel_requested => Ending::Cancelled,
            Ok(Some(j)) if j.state == JobState::Running => {
                if flags.cancel.load(Ordering::SeqCst) {
                    Ending::Cancelled
                } else {
                    Ending::LeaseLost
                }
            }
            _ => Ending::LeaseLost,
        }
    }

    pub(super) async fn finish(&self, job: &Job, ending: Ending, usage: &Usage) -> Option<Job> {
        let inner = &self.inner;
        let owner = &inner.owner;
        let now = inner.clock.now_ms();
        let code = match &ending {
            Ending::Failed(f) => f.code.as_str(),
            _ => "",
        };
        let written = match ending {
            Ending::Succeeded { artifacts } => {
                let result = inner
                    .control
                    .complete(&job.id, owner, &artifacts, usage, now)
                    .await
                    .map(|done| {
                        for cancelled in done.cancelled {
                            inner
                                .events
                                .publish(JobEventKind::StateChanged, cancelled, now);
                        }
                        done.job
                    });
                if let Ok(j) = &result {
                    if j.state != JobState::Succeeded {
                        // Cancelled after the last step: the stored files go.
                        let _ = inner.artifacts.delete_job(&job.id).await;
                    }
                }
                result
            }
            Ending::Failed(failure) if failure.code.retryable() => {
                let oom = failure.code == FailureCode::OutOfMemory;
                let allowed = failure
                    .code
                    .attempts_allowed(inner.config.max_attempts, job.run_alone);
                warn!(code = failure.code.as_str(), message = %failure.message, attempt = job.attempts, allowed, "job failed; retryable");
                let written = inner
                    .control
                    .retry(
                        &job.id,
                        owner,
                        &failure.to_record(),
                        allowed,
                        oom,
                        usage,
                        now,
                    )
                    .await;
                if let Ok(j) = &written {
                    if j.state == JobState::Queued {
                        meters::retried(failure.code.as_str());
                    }
                }
                written
            }
            Ending::Failed(failure) => {
                warn!(code = failure.code.as_str(), message = %failure.message, "job failed");
                inner
                    .control
                    .fail(&job.id, owner, &failure.to_record(), usage, now)
                    .await
            }
            Ending::Cancelled => {
                inner
                    .control
                    .finish_cancelled(&job.id, owner, usage, now)
                    .await
            }
            Ending::Interrupted => inner.control.hand_back(&job.id, owner, now).await,
            Ending::LeaseLost => {
                warn!("lease lost; another worker or recovery owns the job now");
                return None;
            }
        };
        match written {
            Ok(j) => {
                info!(state = %j.state, debited = j.debited, refunded = j.refunded, ms = usage.total_ms, "job finished");
                let failed_code = if j.state == JobState::Failed {
                    code
                } else {
                    ""
                };
                meters::job_finished(&inner.device.name, j.state.as_str(), failed_code);
                let requeued = j.state == JobState::Queued;
                if requeued {
                    // Back in the queue: any worker (this one too) may take it now.
                    inner.wake_all();
                }
                inner
                    .events
                    .publish(JobEventKind::StateChanged, j.clone(), now);
                (requeued && code == FailureCode::OutOfMemory.as_str()).then_some(j)
            }
            Err(StoreError::LeaseLost) => {
                warn!("lease lost before the job's end was written");
                None
            }
            Err(e) => {
                warn!(error = %e, "writing the job's end failed; recovery will retry it");
                None
            }
        }
    }

    pub(crate) async fn publish(&self, kind: JobEventKind, job_id: &str) {
        let inner = &self.inner;
        if !inner.events.is_watched() {
            return;
        }
        match inner.control.leased_job(job_id, &inner.owner).await {
            Ok(Some(job)) => self
                .inner
                .events
                .publish(kind, job, self.inner.clock.now_ms()),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "reading a job to publish its event failed"),
        }
    }
}
