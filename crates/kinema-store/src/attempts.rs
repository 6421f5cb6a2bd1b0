//! A worker's reports on the job it leased: progress heartbeats (which renew the
//! lease and carry cancel requests back), and how the attempt ended. Each ending runs
//! `ending::finish_attempt` in one transaction with its money effect.

use kinema_ledger::UnixMillis;

use crate::ending::{finish_attempt, Outcome, Retry};
use crate::locks::lock_job;
use crate::tx::Tx;
use crate::{Artifact, Completed, Failure, Job, JobState, Stage, Store, StoreError, Usage};

/// The actor of the entries a worker's reports write.
pub(crate) const WORKER: &str = "worker";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressAck {
    pub cancel_requested: bool,
}

impl Store {
    /// Records the stage and step and renews the lease. Tells the worker whether the
    /// job was asked to stop; `LeaseLost` when the job is no longer this worker's.
    pub async fn report_progress(
        &self,
        id: &str,
        owner: &str,
        stage: Stage,
        step: u32,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<ProgressAck, StoreError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let cancel: Option<i64> = self
            .write(move |mut tx| {
                Box::pin(async move {
                    let cancel = sqlx::query_scalar(
                        "UPDATE jobs SET stage = $1, progress_step = $2, lease_expires_at = $3 \
                         WHERE id = $4 AND state = 'RUNNING' AND lease_owner = $5 \
                         RETURNING cancel_requested",
                    )
                    .bind(stage.as_str())
                    .bind(i64::from(step))
                    .bind(now.saturating_add(lease_ms))
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(tx.conn())
                    .await?;
                    Ok(cancel)
                })
            })
            .await?;
        cancel
            .map(|cancel| ProgressAck {
                cancel_requested: cancel != 0,
            })
            .ok_or(StoreError::LeaseLost)
    }

    /// SUCCEEDED with its artifacts. A cancel that arrived after the last step still
    /// wins: the job ends CANCELLED (refunded under `refund_on_cancel`) and the caller,
    /// seeing that state, deletes the artifacts it stored. A postpaid job is charged;
    /// if its account's grace ran out meanwhile, the charge suspends it and cancels
    /// its queued jobs (`cancelled`).
    pub async fn complete_job(
        &self,
        id: &str,
        owner: &str,
        artifacts: &[Artifact],
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Completed, StoreError> {
        let outcome = Outcome::Succeeded(artifacts.to_vec());
        let ended = self.finish(id, owner, outcome, Some(usage), now).await?;
        Ok(Completed {
            job: ended.0,
            cancelled: ended.1,
        })
    }

    /// FAILED with its failure, and the debit refunded in full, once (CANCELLED
    /// instead if its cancel was requested meanwhile).
    pub async fn fail_job(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let outcome = Outcome::Failed {
            failure: failure.clone(),
            retry: None,
        };
        Ok(self.finish(id, owner, outcome, Some(usage), now).await?.0)
    }

    /// A retryable failure: back to the queue while the job has starts left (its
    /// debit stands and the next lease does not debit again; the start stays
    /// counted), else FAILED with `failure` and refunded once, as [`Store::fail_job`].
    /// One transaction either way; the returned job's state says which. `run_alone`
    /// marks the requeued job to run unbatched (an out-of-memory retry).
    #[allow(clippy::too_many_arguments)]
    pub async fn retry_job(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        max_attempts: u32,
        run_alone: bool,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let outcome = Outcome::Failed {
            failure: failure.clone(),
            retry: Some(Retry {
                max_attempts,
                run_alone,
            }),
        };
        Ok(self.finish(id, owner, outcome, Some(usage), now).await?.0)
    }

    /// The worker stopped a job whose cancel was requested: CANCELLED, refunded under
    /// `refund_on_cancel`.
    pub async fn finish_cancelled(
        &self,
        id: &str,
        owner: &str,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        Ok(self
            .finish(id, owner, Outcome::Stopped, Some(usage), now)
            .await?
            .0)
    }

    /// Gives a running job back to the queue (a draining worker stopped it). Its debit
    /// stands and it is not debited again; the start is counted in `attempts` but not
    /// against the retry budget. A job whose cancel was requested ends CANCELLED.
    pub async fn requeue_job(
        &self,
        id: &str,
        owner: &str,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        Ok(self
            .finish(id, owner, Outcome::HandedBack, None, now)
            .await?
            .0)
    }

    /// One transaction: the job, if it is RUNNING under `owner`'s lease (else
    /// `LeaseLost`), finished as `outcome` says.
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        outcome: Outcome,
        usage: Option<&Usage>,
        now: UnixMillis,
    ) -> Result<(Job, Vec<Job>), StoreError> {
        let (id, owner, usage) = (id.to_owned(), owner.to_owned(), usage.cloned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let job = running_job(&mut tx, &id, &owner).await?;
                let ended =
                    finish_attempt(&mut tx, &job, outcome, usage.as_ref(), WORKER, now).await?;
                Ok((ended.job, ended.cancelled))
            })
        })
        .await
    }
}

/// The job, its account locked, if it is RUNNING under `owner`'s lease.
async fn running_job(tx: &mut Tx<'_>, id: &str, owner: &str) -> Result<Job, StoreError> {
    match lock_job(tx, id).await? {
        Some(job)
            if job.state == JobState::Running && job.lease_owner.as_deref() == Some(owner) =>
        {
            Ok(job)
        }
        _ => Err(StoreError::LeaseLost),
    }
}
