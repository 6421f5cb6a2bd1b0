//! The worker's side of a job: lease and start (with the debit), progress heartbeats,
//! and the three endings, each with its money effect in the same transaction.

use kinema_ledger::UnixMillis;
use sqlx::{AnyConnection, Row};

use crate::credits::{
    lock_job_account, lock_job_account_only, plan_debit, refund_debit, refund_job, release_hold,
    require_account, write_debit,
};
use crate::db::{Backend, StorePolicy};
use crate::jobs::{job_from_row, load_job, set_terminal};
use crate::queue::{self, Pick};
use crate::{
    AccountStatus, Artifact, Completed, Failure, Job, JobBilling, JobState, LeaseFilter, Stage,
    Store, StoreError, Usage,
};

/// What one lease attempt did.
#[derive(Debug, Default)]
pub struct Leased {
    /// The job now RUNNING under this worker's lease, if any was queued.
    pub job: Option<Job>,
    /// [`Store::lease_companions`]: the further jobs now RUNNING beside the leader.
    pub companions: Vec<Job>,
    /// Jobs that reached the front and ended instead of starting: those that could no
    /// longer be covered (lots expired while they waited), FAILED with
    /// `INSUFFICIENT_CREDITS`, hold released, nothing debited; and the queued jobs of a
    /// postpaid account whose grace ran out before the sweeper came by, CANCELLED with
    /// its suspension.
    pub refused: Vec<Job>,
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
    /// Leases the next queued job of any model to `owner` and starts it (see
    /// [`Store::lease_matching`]).
    pub async fn lease_next_job(
        &self,
        owner: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        self.lease_matching(owner, &LeaseFilter::any(), lease_ms, now)
            .await
    }

    /// Leases the next queued job the filter admits, in the queue's order (highest
    /// class, then fair share between accounts: see `queue.rs`), to `owner` and starts
    /// it: RUNNING, attempt counted, and on its first start the hold becomes a DEBIT,
    /// all in one transaction. A job requeued after a lost worker was debited already
    /// and is not debited again.
    pub async fn lease_matching(
        &self,
        owner: &str,
        filter: &LeaseFilter,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        let mut outcome = Leased::default();
        let pick = Pick {
            models: filter.models.as_deref(),
            batch_key: None,
        };
        outcome.job = self
            .lease_one(owner, pick, lease_ms, now, &mut outcome.refused)
            .await?;
        Ok(outcome)
    }

    /// Leases up to `max` more queued jobs with the leader's `batch_key` (never one
    /// marked `run_alone`), in the queue's order, each started and debited exactly as
    /// [`Store::lease_next_job`] does; they are in `companions`. None for a leader
    /// without a key or one that must run alone.
    pub async fn lease_companions(
        &self,
        owner: &str,
        leader: &Job,
        max: usize,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        let mut outcome = Leased::default();
        let Some(key) = leader.batch_key.as_deref().filter(|_| !leader.run_alone) else {
            return Ok(outcome);
        };
        let pick = Pick {
            models: None,
            batch_key: Some(key),
        };
        while outcome.companions.len() < max {
            match self
                .lease_one(owner, pick, lease_ms, now, &mut outcome.refused)
                .await?
            {
                Some(job) => outcome.companions.push(job),
                None => break,
            }
        }
        Ok(outcome)
    }

    /// Leases and starts the first job of `pick` in queue order; jobs that can no
    /// longer be covered on the way are failed into `refused`.
    async fn lease_one(
        &self,
        owner: &str,
        pick: Pick<'_>,
        lease_ms: i64,
        now: UnixMillis,
        refused: &mut Vec<Job>,
    ) -> Result<Option<Job>, StoreError> {
        if pick.is_empty() {
            return Ok(None);
        }
        loop {
            let models = pick.models.map(<[String]>::to_vec);
            let batch_key = pick.batch_key.map(str::to_owned);
            let owner = owner.to_owned();
            let b = self.backend;
            let policy = self.policy.clone();
            let step = self
                .write(move |tx| {
                    Box::pin(async move {
                        let pick = Pick {
                            models: models.as_deref(),
                            batch_key: batch_key.as_deref(),
                        };
                        lease_step(tx, b, &policy, pick, &owner, lease_ms, now).await
                    })
                })
                .await?;
            match step {
                LeaseStep::Empty => return Ok(None),
                LeaseStep::Started(job) => return Ok(Some(job)),
                LeaseStep::Ended(jobs) => refused.extend(jobs),
                LeaseStep::Again => {}
            }
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
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let cancel: Option<i64> = self
            .write(move |tx| {
                Box::pin(async move {
                    let cancel = sqlx::query_scalar(&b.sql(
                        "UPDATE jobs SET stage = ?, progress_step = ?, lease_expires_at = ? \
                         WHERE id = ? AND state = 'RUNNING' AND lease_owner = ? \
                         RETURNING cancel_requested",
                    ))
                    .bind(stage.as_str())
                    .bind(i64::from(step))
                    .bind(now.saturating_add(lease_ms))
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&mut *tx)
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
        let b = self.backend;
        let id = id.to_owned();
        let owner = owner.to_owned();
        let artifacts = artifacts.to_vec();
        let usage = usage.clone();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let id = id.as_str();
                let owner = owner.as_str();
                let artifacts = artifacts.as_slice();
                let usage = &usage;
                let job = running_job(&mut *tx, b, id, owner).await?;
                save_usage(&mut *tx, b, id, usage).await?;
                let mut cancelled = Vec::new();
                if job.cancel_requested {
                    this.cancel_running(&mut *tx, &job, now).await?;
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
                    set_terminal(&mut *tx, b, id, JobState::Succeeded, None, now).await?;
                    if job.billing == JobBilling::Postpaid {
                        cancelled =
                            crate::postpaid::charge_succeeded(&mut *tx, b, &this, &job, now)
                                .await?;
                    }
                }
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                Ok(Completed { job, cancelled })
            })
        })
        .await
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
        let id = id.to_owned();
        let owner = owner.to_owned();
        let failure = failure.clone();
        let usage = usage.clone();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let id = id.as_str();
                let owner = owner.as_str();
                let failure = &failure;
                let usage = &usage;
                if !lock_job_account_only(&mut *tx, b, id).await? {
                    return Err(StoreError::LeaseLost);
                }
                // One statement ends the job and marks its refund; it brings back what the
                // refund needs: the DEBIT's allocations, whether a REFUND exists already (then
                // none is due), and whether the account has lots to expire first.
                let row = sqlx::query(&b.sql(
                    "UPDATE jobs SET state = 'FAILED', failure_code = ?, failure_message = ?, \
                     failure_retryable = ?, finished_at = ?, lease_owner = NULL, lease_expires_at = NULL, \
                     usage = ?, refunded = CASE WHEN debited > 0 AND NOT EXISTS (SELECT 1 FROM \
                     ledger_entries r WHERE r.job_id = jobs.id AND r.kind = 'REFUND') THEN debited \
                     ELSE refunded END \
                     WHERE id = ? AND state = 'RUNNING' AND lease_owner = ? \
                     RETURNING *, \
                     (SELECT d.allocations FROM ledger_entries d WHERE d.job_id = jobs.id \
                      AND d.kind = 'DEBIT') AS debit_allocations, \
                     (SELECT COUNT(*) FROM ledger_entries r WHERE r.job_id = jobs.id \
                      AND r.kind = 'REFUND') AS refunds, \
                     (SELECT COUNT(*) FROM lots l WHERE l.account_id = jobs.account_id \
                      AND l.expired_at IS NULL AND l.expires_at IS NOT NULL AND l.expires_at <= ?) AS due_lots",
                ))
                .bind(&failure.code)
                .bind(&failure.message)
                .bind(i64::from(failure.retryable))
                .bind(now)
                .bind(serde_json::to_string(usage)?)
                .bind(id)
                .bind(owner)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::LeaseLost)?;
                let job = job_from_row(&row)?;
                let refunds: i64 = row.try_get("refunds")?;
                if job.debited > 0 && refunds == 0 {
                    let debit: Option<String> = row.try_get("debit_allocations")?;
                    let debit: Vec<kinema_ledger::Allocation> = match debit {
                        Some(json) => serde_json::from_str(&json)?,
                        None => {
                            return Err(StoreError::Corrupt(format!(
                                "job {id} is debited without a DEBIT entry"
                            )))
                        }
                    };
                    let due_lots: i64 = row.try_get("due_lots")?;
                    let entry = refund_debit(
                        &mut *tx,
                        b,
                        &job.account_id,
                        id,
                        &debit,
                        due_lots > 0,
                        this.policy.refund_grace_ms,
                        WORKER,
                        now,
                    )
                    .await?;
                    if entry.amount != job.refunded {
                        return Err(StoreError::Corrupt(format!(
                            "job {id}: refund of {} for a debit of {}",
                            entry.amount, job.debited
                        )));
                    }
                }
                Ok(job)
            })
        })
        .await
    }

    /// A retryable failure: back to the queue while the job has attempts left (its
    /// debit stands and the next lease does not debit again; the attempt stays
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
        let b = self.backend;
        let id = id.to_owned();
        let owner = owner.to_owned();
        let failure = failure.clone();
        let usage = usage.clone();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let id = id.as_str();
                let owner = owner.as_str();
                let failure = &failure;
                let usage = &usage;
                let job = running_job(&mut *tx, b, id, owner).await?;
                save_usage(&mut *tx, b, id, usage).await?;
                if job.cancel_requested {
                    this.cancel_running(&mut *tx, &job, now).await?;
                } else if job.attempts < max_attempts {
                    sqlx::query(&b.sql(
                        "UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 run_alone = CASE WHEN ? = 1 THEN 1 ELSE run_alone END WHERE id = ?",
                    ))
                    .bind(i64::from(run_alone))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    set_terminal(&mut *tx, b, id, JobState::Failed, Some(failure), now).await?;
                    refund_job(
                        &mut *tx,
                        b,
                        &job.account_id,
                        id,
                        this.policy.refund_grace_ms,
                        WORKER,
                        now,
                    )
                    .await?;
                }
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                Ok(job)
            })
        })
        .await
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
        let id = id.to_owned();
        let owner = owner.to_owned();
        let usage = usage.clone();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let id = id.as_str();
                let owner = owner.as_str();
                let usage = &usage;
                let job = running_job(&mut *tx, b, id, owner).await?;
                save_usage(&mut *tx, b, id, usage).await?;
                this.cancel_running(&mut *tx, &job, now).await?;
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                Ok(job)
            })
        })
        .await
    }

    /// Gives a running job back to the queue without counting the attempt (a draining
    /// worker stopped it). Its debit stands; it is not debited again.
    pub async fn requeue_job(&self, id: &str, owner: &str) -> Result<Job, StoreError> {
        let b = self.backend;
        let id = id.to_owned();
        let owner = owner.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let id = id.as_str();
                let owner = owner.as_str();
                running_job(&mut *tx, b, id, owner).await?;
                sqlx::query(
                    &b.sql("UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, \
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = ?"),
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                Ok(job)
            })
        })
        .await
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
            let this = self.clone();
            let recovered = self
                .write(move |tx| {
                    Box::pin(async move {
                        lock_job_account(&mut *tx, b, &id).await?;
                        let Some(job) = load_job(&mut *tx, b, &id).await? else {
                            return Ok(None);
                        };
                        if job.state != JobState::Running {
                            return Ok(None);
                        }
                        if job.cancel_requested {
                            this.cancel_running(&mut *tx, &job, now).await?;
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
                            set_terminal(&mut *tx, b, &id, JobState::Failed, Some(&failure), now)
                                .await?;
                            refund_job(
                                &mut *tx,
                                b,
                                &job.account_id,
                                &id,
                                this.policy.refund_grace_ms,
                                WORKER,
                                now,
                            )
                            .await?;
                        }
                        let job = load_job(&mut *tx, b, &id)
                            .await?
                            .ok_or(StoreError::NotFound("job"))?;
                        Ok(Some(job))
                    })
                })
                .await?;
            let Some(job) = recovered else {
                continue;
            };
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
/// What one lease transaction did.
enum LeaseStep {
    /// No queued job matches.
    Empty,
    Started(Job),
    /// Jobs that ended instead of starting: the head job could no longer be covered
    /// (failed), or its postpaid account's grace had run out (the account is suspended
    /// and its queued jobs cancelled); look again.
    Ended(Vec<Job>),
    /// Another worker took the job first; look again.
    Again,
}

/// One lease attempt in one transaction: the next account in queue order, its head
/// job, started and (on its first start) debited.
async fn lease_step(
    tx: &mut AnyConnection,
    b: Backend,
    policy: &StorePolicy,
    pick: Pick<'_>,
    owner: &str,
    lease_ms: i64,
    now: UnixMillis,
) -> Result<LeaseStep, StoreError> {
    // The account comes locked (the store's lock order: account first, then the job
    // row); another worker may have taken its jobs meanwhile, in which case look again.
    let mut next = queue::next_account(&mut *tx, b, pick, true).await?;
    if next.is_none() && b == Backend::Postgres {
        // Every waiting account may be locked by another transaction: wait for the
        // first one rather than report an empty queue.
        next = queue::next_account(&mut *tx, b, pick, false).await?;
    }
    let Some((candidate_account, class)) = next else {
        return Ok(LeaseStep::Empty);
    };
    let next = queue::head_job(&mut *tx, b, &candidate_account, class, pick).await?;
    let Some((id, account_id, quoted, debited, billing)) = next else {
        return Ok(LeaseStep::Again);
    };
    let billing = billing.parse::<JobBilling>()?;
    if billing == JobBilling::Postpaid {
        // The grace may have run out since the sweeper last came by: a suspended
        // account's queued jobs are cancelled, not started.
        if let Some(cancelled) =
            crate::postpaid::catch_up(&mut *tx, b, &account_id, policy, now).await?
        {
            return Ok(LeaseStep::Ended(cancelled));
        }
    }
    // Postpaid jobs hold and debit no credits: they are charged on success. A job
    // requeued after a lost worker was debited already.
    let debit = if debited == 0 && billing == JobBilling::Credits {
        match plan_debit(&mut *tx, b, &account_id, quoted, now).await {
            Ok(debit) => Some(debit),
            Err(StoreError::InsufficientCredits { needed, available }) => {
                let failure = Failure {
                    code: "INSUFFICIENT_CREDITS".into(),
                    message: format!(
                        "credits expired while queued: {needed} needed, {available} available"
                    ),
                    retryable: false,
                };
                if !still_queued(&mut *tx, b, &id, debited).await? {
                    return Ok(LeaseStep::Again);
                }
                set_terminal(&mut *tx, b, &id, JobState::Failed, Some(&failure), now).await?;
                release_hold(&mut *tx, b, &account_id, &id, WORKER, now).await?;
                let job = load_job(&mut *tx, b, &id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                return Ok(LeaseStep::Ended(vec![job]));
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // Started only if it is still queued as it was read: another worker may have taken
    // it (and even had it requeued, debited) since. Nothing was written before this
    // but the expiry of lots already due, which stands either way.
    let money = if debit.is_some() {
        ", held = 0, debited = quoted"
    } else {
        ""
    };
    let row = sqlx::query(&b.sql(&format!(
        "UPDATE jobs SET state = 'RUNNING', stage = ?, progress_step = 0, \
         attempts = attempts + 1, started_at = COALESCE(started_at, ?), lease_owner = ?, \
         lease_expires_at = ?{money} WHERE id = ? AND state = 'QUEUED' AND debited = ? \
         RETURNING *"
    )))
    .bind(Stage::EncodingText.as_str())
    .bind(now)
    .bind(owner)
    .bind(now.saturating_add(lease_ms))
    .bind(&id)
    .bind(debited)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(LeaseStep::Again);
    };
    if let Some(debit) = &debit {
        write_debit(&mut *tx, b, &account_id, &id, debit, WORKER, now).await?;
    }
    queue::mark_served(&mut *tx, b, &account_id).await?;
    // A running job has no artifacts and no queue position: the row is the job.
    Ok(LeaseStep::Started(job_from_row(&row)?))
}

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

/// Whether the job is still queued with the debit it was read with (under the locks,
/// so it stays so to the end of the transaction).
async fn still_queued(
    conn: &mut AnyConnection,
    b: Backend,
    id: &str,
    debited: i64,
) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT id FROM jobs WHERE id = ? AND state = 'QUEUED' AND debited = ?{}",
        b.for_update()
    );
    let found: Option<String> = sqlx::query_scalar(&b.sql(&sql))
        .bind(id)
        .bind(debited)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
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
