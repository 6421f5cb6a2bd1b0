//! The worker's side of a job: lease and start (with the debit), progress heartbeats,
//! and the three endings, each with its money effect in the same transaction.

use kinema_ledger::UnixMillis;
use sqlx::AnyConnection;

use crate::credits::{debit_job, lock_job_account, refund_job, release_hold, require_account};
use crate::db::Backend;
use crate::jobs::{load_job, set_terminal};
use crate::{
    AccountStatus, Artifact, Failure, Job, JobBilling, JobState, Stage, Store, StoreError, Usage,
};

/// What one lease attempt did.
#[derive(Debug, Default)]
pub struct Leased {
    /// The job now RUNNING under this worker's lease, if any was queued.
    pub job: Option<Job>,
    /// Jobs that reached the front but could no longer be covered (lots expired while
    /// they waited): FAILED with `INSUFFICIENT_CREDITS`, hold released, nothing debited.
    pub refused: Vec<Job>,
}

/// Which queued jobs a worker may lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    /// Only jobs for these models (those the device can hold); `None`: any model.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressAck {
    pub cancel_requested: bool,
}

#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub requeued: Vec<Job>,
    pub failed: Vec<Job>,
    pub cancelled: Vec<Job>,
}

const WORKER: &str = "worker";

impl Store {
    /// Leases the oldest queued job to `owner` and starts it: RUNNING, attempt counted,
    /// and on its first start the hold becomes a DEBIT, all in one transaction. A job
    /// requeued after a lost worker was debited already and is not debited again.
    pub async fn lease_next_job(
        &self,
        owner: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        self.lease_next_job_for(owner, lease_ms, now, &LeaseFilter::default())
            .await
    }

    /// [`Store::lease_next_job`] restricted to the jobs `filter` admits (the models a
    /// device can hold).
    pub async fn lease_next_job_for(
        &self,
        owner: &str,
        lease_ms: i64,
        now: UnixMillis,
        filter: &LeaseFilter,
    ) -> Result<Leased, StoreError> {
        let b = self.backend;
        let mut outcome = Leased::default();
        if filter.models.as_ref().is_some_and(Vec::is_empty) {
            return Ok(outcome);
        }
        let model_clause = match &filter.models {
            Some(models) => format!(" AND model IN ({})", vec!["?"; models.len()].join(", ")),
            None => String::new(),
        };
        let candidate_sql = format!(
            "SELECT id, account_id FROM jobs WHERE state = 'QUEUED'{model_clause} ORDER BY seq LIMIT 1"
        );
        let candidate_sql = b.sql(&candidate_sql);
        loop {
            let mut tx = self.write.begin().await?;
            let mut query = sqlx::query_as(&candidate_sql);
            for m in filter.models.iter().flatten() {
                query = query.bind(m);
            }
            let candidate: Option<(String, String)> = query.fetch_optional(&mut *tx).await?;
            let Some((candidate, candidate_account)) = candidate else {
                return Ok(outcome);
            };
            // Account first, then the job row (the store's lock order); another worker
            // may have taken the job meanwhile, in which case look again.
            crate::credits::lock_account(&mut tx, b, &candidate_account).await?;
            let sql = format!(
                "SELECT id, account_id, quoted, debited, billing FROM jobs WHERE id = ? \
                 AND state = 'QUEUED'{}",
                b.for_update()
            );
            let next: Option<(String, String, i64, i64, String)> = sqlx::query_as(&b.sql(&sql))
                .bind(&candidate)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((id, account_id, quoted, debited, billing)) = next else {
                tx.commit().await?;
                continue;
            };
            // Postpaid jobs hold and debit no credits: they are charged on success.
            if debited == 0 && billing.parse::<JobBilling>()? == JobBilling::Credits {
                match debit_job(&mut tx, b, &account_id, &id, quoted, WORKER, now).await {
                    Ok(_) => {}
                    Err(StoreError::InsufficientCredits { needed, available }) => {
                        let failure = Failure {
                            code: "INSUFFICIENT_CREDITS".into(),
                            message: format!(
                                "credits expired while queued: {needed} needed, {available} available"
                            ),
                            retryable: false,
                        };
                        set_terminal(&mut tx, b, &id, JobState::Failed, Some(&failure), now)
                            .await?;
                        release_hold(&mut tx, b, &account_id, &id, WORKER, now).await?;
                        let job = load_job(&mut tx, b, &id)
                            .await?
                            .ok_or(StoreError::NotFound("job"))?;
                        tx.commit().await?;
                        outcome.refused.push(job);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            sqlx::query(&b.sql(
                "UPDATE jobs SET state = 'RUNNING', stage = ?, progress_step = 0, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, ?), lease_owner = ?, \
                 lease_expires_at = ? WHERE id = ?",
            ))
            .bind(Stage::EncodingText.as_str())
            .bind(now)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            let job = load_job(&mut tx, b, &id)
                .await?
                .ok_or(StoreError::NotFound("job"))?;
            tx.commit().await?;
            outcome.job = Some(job);
            return Ok(outcome);
        }
    }

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
        let b = self.backend;
        let cancel: Option<i64> = sqlx::query_scalar(&b.sql(
            "UPDATE jobs SET stage = ?, progress_step = ?, lease_expires_at = ? \
             WHERE id = ? AND state = 'RUNNING' AND lease_owner = ? RETURNING cancel_requested",
        ))
        .bind(stage.as_str())
        .bind(i64::from(step))
        .bind(now.saturating_add(lease_ms))
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.write)
        .await?;
        cancel
            .map(|cancel| ProgressAck {
                cancel_requested: cancel != 0,
            })
            .ok_or(StoreError::LeaseLost)
    }

    /// SUCCEEDED with its artifacts. A cancel that arrived after the last step still
    /// wins: the job ends CANCELLED (refunded under `refund_on_cancel`) and the caller,
    /// seeing that state, deletes the artifacts it stored.
    pub async fn complete_job(
        &self,
        id: &str,
        owner: &str,
        artifacts: &[Artifact],
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let b = self.backend;
        let mut tx = self.write.begin().await?;
        let job = running_job(&mut tx, b, id, owner).await?;
        save_usage(&mut tx, b, id, usage).await?;
        if job.cancel_requested {
            self.cancel_running(&mut tx, &job, now).await?;
        } else {
            for a in artifacts {
                sqlx::query(
                    &b.sql("INSERT INTO artifacts (job_id, kind, mime, bytes, sha256, location, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"),
                )
                .bind(id)
                .bind(a.kind.as_str())
                .bind(&a.mime)
                .bind(a.bytes as i64)
                .bind(&a.sha256)
                .bind(&a.location)
                .bind(a.expires_at)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(&b.sql("UPDATE jobs SET progress_step = progress_total WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            set_terminal(&mut tx, b, id, JobState::Succeeded, None, now).await?;
            if job.billing == JobBilling::Postpaid {
                crate::postpaid::charge_succeeded(&mut tx, b, self, &job, now).await?;
            }
        }
        let job = load_job(&mut tx, b, id)
            .await?
            .ok_or(StoreError::NotFound("job"))?;
        tx.commit().await?;
        Ok(job)
    }

    /// FAILED with its failure, and the debit refunded in full, once.
    pub async fn fail_job(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let b = self.backend;
        let mut tx = self.write.begin().await?;
        let job = running_job(&mut tx, b, id, owner).await?;
        save_usage(&mut tx, b, id, usage).await?;
        set_terminal(&mut tx, b, id, JobState::Failed, Some(failure), now).await?;
        refund_job(
            &mut tx,
            b,
            &job.account_id,
            id,
            self.policy.refund_grace_ms,
            WORKER,
            now,
        )
        .await?;
        let job = load_job(&mut tx, b, id)
            .await?
            .ok_or(StoreError::NotFound("job"))?;
        tx.commit().await?;
        Ok(job)
    }

    /// A retryable failure: back to the queue while the job has attempts left (its
    /// debit stands and the next lease does not debit again; the attempt stays
    /// counted), else FAILED with `failure` and refunded once, as [`Store::fail_job`].
    /// One transaction either way; the returned job's state says which.
    pub async fn retry_job(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        max_attempts: u32,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let b = self.backend;
        let mut tx = self.write.begin().await?;
        let job = running_job(&mut tx, b, id, owner).await?;
        save_usage(&mut tx, b, id, usage).await?;
        if job.cancel_requested {
            self.cancel_running(&mut tx, &job, now).await?;
        } else if job.attempts < max_attempts {
            sqlx::query(&b.sql(
                "UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, \
                 lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
            ))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            set_terminal(&mut tx, b, id, JobState::Failed, Some(failure), now).await?;
            refund_job(
                &mut tx,
                b,
                &job.account_id,
                id,
                self.policy.refund_grace_ms,
                WORKER,
                now,
            )
            .await?;
        }
        let job = load_job(&mut tx, b, id)
            .await?
            .ok_or(StoreError::NotFound("job"))?;
        tx.commit().await?;
        Ok(job)
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
        let b = self.backend;
        let mut tx = self.write.begin().await?;
        let job = running_job(&mut tx, b, id, owner).await?;
        save_usage(&mut tx, b, id, usage).await?;
        self.cancel_running(&mut tx, &job, now).await?;
        let job = load_job(&mut tx, b, id)
            .await?
            .ok_or(StoreError::NotFound("job"))?;
        tx.commit().await?;
        Ok(job)
    }

    /// Gives a running job back to the queue without counting the attempt (a draining
    /// worker stopped it). Its debit stands; it is not debited again.
    pub async fn requeue_job(&self, id: &str, owner: &str) -> Result<Job, StoreError> {
        let b = self.backend;
        let mut tx = self.write.begin().await?;
        running_job(&mut tx, b, id, owner).await?;
        sqlx::query(
            &b.sql("UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ?"),
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let job = load_job(&mut tx, b, id)
            .await?
            .ok_or(StoreError::NotFound("job"))?;
        tx.commit().await?;
        Ok(job)
    }

    /// Running jobs whose worker is gone: every RUNNING job when `all` (a single node
    /// starting up owns the whole database), else those whose lease has lapsed. Each is
    /// cancelled if its cancel was requested, requeued while it has attempts left (its
    /// debit stands; it is not debited again), or failed with `WORKER_LOST` and refunded.
    ///
    /// `alive_owner` is the caller's own lease owner, or the prefix its workers' owners
    /// share: their jobs are running right there, whatever their lease says (a test
    /// clock moved past it, say), and are left alone.
    pub async fn recover_lost_jobs(
        &self,
        all: bool,
        alive_owner: &str,
        max_attempts: u32,
        now: UnixMillis,
    ) -> Result<RecoveryReport, StoreError> {
        let b = self.backend;
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&b.sql(
            "SELECT id, lease_owner FROM jobs WHERE state = 'RUNNING' \
             AND (? = 1 OR lease_expires_at <= ?) ORDER BY seq",
        ))
        .bind(i64::from(all))
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        let ids = rows.into_iter().filter_map(|(id, owner)| {
            let alive = !alive_owner.is_empty()
                && owner.as_deref().is_some_and(|o| o.starts_with(alive_owner));
            (!alive).then_some(id)
        });
        let mut report = RecoveryReport::default();
        for id in ids {
            let mut tx = self.write.begin().await?;
            lock_job_account(&mut tx, b, &id).await?;
            let Some(job) = load_job(&mut tx, b, &id).await? else {
                continue;
            };
            if job.state != JobState::Running {
                continue;
            }
            if job.cancel_requested {
                self.cancel_running(&mut tx, &job, now).await?;
            } else if job.attempts < max_attempts {
                sqlx::query(&b.sql(
                    "UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, \
                     lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                ))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            } else {
                let failure = Failure {
                    code: "WORKER_LOST".into(),
                    message: format!("the worker was lost {} times", job.attempts),
                    retryable: false,
                };
                set_terminal(&mut tx, b, &id, JobState::Failed, Some(&failure), now).await?;
                refund_job(
                    &mut tx,
                    b,
                    &job.account_id,
                    &id,
                    self.policy.refund_grace_ms,
                    WORKER,
                    now,
                )
                .await?;
            }
            let job = load_job(&mut tx, b, &id)
                .await?
                .ok_or(StoreError::NotFound("job"))?;
            tx.commit().await?;
            match job.state {
                JobState::Queued => report.requeued.push(job),
                JobState::Cancelled => report.cancelled.push(job),
                _ => report.failed.push(job),
            }
        }
        Ok(report)
    }

    async fn cancel_running(
        &self,
        conn: &mut AnyConnection,
        job: &Job,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let b = self.backend;
        set_terminal(conn, b, &job.id, JobState::Cancelled, None, now).await?;
        if self.policy.refund_on_cancel {
            refund_job(
                conn,
                b,
                &job.account_id,
                &job.id,
                self.policy.refund_grace_ms,
                WORKER,
                now,
            )
            .await?;
            // Stopped because its account was terminated: the refund is forfeited too.
            if require_account(conn, b, &job.account_id).await? == AccountStatus::Terminated {
                crate::lifecycle::forfeit_credits(
                    conn,
                    b,
                    &job.account_id,
                    WORKER,
                    "terminated",
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The job, locked (its account first), if it is RUNNING under `owner`'s lease.
async fn running_job(
    conn: &mut AnyConnection,
    b: Backend,
    id: &str,
    owner: &str,
) -> Result<Job, StoreError> {
    lock_job_account(conn, b, id).await?;
    match load_job(conn, b, id).await? {
        Some(job)
            if job.state == JobState::Running && job.lease_owner.as_deref() == Some(owner) =>
        {
            Ok(job)
        }
        _ => Err(StoreError::LeaseLost),
    }
}

async fn save_usage(
    conn: &mut AnyConnection,
    b: Backend,
    id: &str,
    usage: &Usage,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql("UPDATE jobs SET usage = ? WHERE id = ?"))
        .bind(serde_json::to_string(usage)?)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
