//! Where a job ends, and where a started job goes back to the queue. [`end_job`] is
//! the only code that writes a terminal state, so the rules every ending shares are
//! written once, here:
//! - a cancel request wins over whatever the worker reports (the job ends CANCELLED);
//! - a hold still outstanding is released (RELEASE);
//! - a debit is refunded exactly once, in full (REFUND), when the job fails, or is
//!   cancelled under `refund_on_cancel`; never when it succeeds. The database refuses
//!   a second REFUND (or DEBIT) for a job whatever path asks for one;
//! - a refund reaching an account terminated for violation is forfeited with the rest;
//! - a succeeded postpaid job is charged its price.
//!
//! [`finish_attempt`] decides what a started job's attempt comes to (ended, or back to
//! the queue while its retry budget lasts); every worker report and the recovery of
//! lost jobs go through it.

use kinema_ledger::UnixMillis;

use crate::callbacks::{ending_event, enqueue_event};
use crate::locks::account_status;
use crate::money::{forfeit_credits, refund_debit, release_hold};
use crate::rows::JobRow;
use crate::tx::Tx;
use crate::{AccountStatus, Artifact, Failure, Job, JobBilling, JobState, StoreError, Usage};

/// How a job ends.
#[derive(Clone, Copy)]
pub(crate) enum Ending<'a> {
    /// With its stored artifacts.
    Succeeded(&'a [Artifact]),
    Failed(&'a Failure),
    Cancelled,
}

/// A job after its ending or requeue, and the queued jobs a postpaid charge cancelled
/// (its account's grace ran out while it ran: the charge suspends the account).
pub(crate) struct Ended {
    pub job: Job,
    pub cancelled: Vec<Job>,
}

/// The ending's row, with what a refund needs: the DEBIT's allocations and whether
/// the account has lots past expiry without their EXPIRE entry.
#[derive(sqlx::FromRow)]
struct EndedRow {
    #[sqlx(flatten)]
    job: JobRow,
    debit_allocations: Option<String>,
    due_lots: i64,
}

/// Ends `job` (as read under its account's lock, not yet terminal) with its money
/// effects, in the caller's transaction. `usage`, when given, is recorded with it.
pub(crate) async fn end_job(
    tx: &mut Tx<'_>,
    job: &Job,
    ending: Ending<'_>,
    usage: Option<&Usage>,
    actor: &str,
    now: UnixMillis,
) -> Result<Ended, StoreError> {
    let ending = if job.cancel_requested {
        Ending::Cancelled
    } else {
        ending
    };
    let (state, failure) = match ending {
        Ending::Succeeded(_) => (JobState::Succeeded, None),
        Ending::Failed(f) => (JobState::Failed, Some(f)),
        Ending::Cancelled => (JobState::Cancelled, None),
    };
    let refund = job.debited > 0
        && job.refunded == 0
        && match state {
            JobState::Failed => true,
            JobState::Cancelled => tx.policy.refund_on_cancel,
            _ => false,
        };
    // What a refund needs comes back with the row (one round trip).
    let refund_needs = if refund {
        "(SELECT d.allocations FROM ledger_entries d WHERE d.job_id = jobs.id \
         AND d.kind = 'DEBIT') AS debit_allocations, \
         CAST((SELECT COUNT(*) FROM lots l WHERE l.account_id = jobs.account_id \
         AND l.expired_at IS NULL AND l.expires_at IS NOT NULL AND l.expires_at <= $5) \
         AS BIGINT) AS due_lots"
    } else {
        "CAST(NULL AS TEXT) AS debit_allocations, CAST(0 AS BIGINT) AS due_lots"
    };
    let sql = format!(
        "UPDATE jobs SET state = $1, failure_code = $2, failure_message = $3, \
         failure_retryable = $4, finished_at = $5, lease_owner = NULL, lease_expires_at = NULL, \
         held = 0, refunded = CASE WHEN $6 = 1 THEN debited ELSE refunded END, \
         progress_step = CASE WHEN $1 = 'SUCCEEDED' THEN progress_total ELSE progress_step END, \
         usage = COALESCE($7, usage), prompt_expires_at = $5 + $10 \
         WHERE id = $8 AND state = $9 RETURNING *, {refund_needs}"
    );
    let row: EndedRow = sqlx::query_as(&sql)
        .bind(state.as_str())
        .bind(failure.map(|f| f.code.as_str()))
        .bind(failure.map(|f| f.message.as_str()))
        .bind(failure.map(|f| i64::from(f.retryable)))
        .bind(now)
        .bind(i64::from(refund))
        .bind(usage.map(serde_json::to_string).transpose()?)
        .bind(&job.id)
        .bind(job.state.as_str())
        .bind(tx.policy.prompt_log_ttl_ms)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {} changed under its lock", job.id)))?;
    let mut ended = Ended {
        job: Job::try_from(row.job)?,
        cancelled: Vec::new(),
    };
    if job.held > 0 {
        release_hold(tx, &job.account_id, &job.id, job.held, actor, now).await?;
    }
    if refund {
        let debit = row.debit_allocations.ok_or_else(|| {
            StoreError::Corrupt(format!("job {} is debited without a DEBIT entry", job.id))
        })?;
        let debit: Vec<kinema_ledger::Allocation> = serde_json::from_str(&debit)?;
        let entry = refund_debit(
            tx,
            &job.account_id,
            &job.id,
            &debit,
            row.due_lots > 0,
            actor,
            now,
        )
        .await?;
        if entry.amount != job.debited {
            return Err(StoreError::Corrupt(format!(
                "job {}: refund of {} for a debit of {}",
                job.id, entry.amount, job.debited
            )));
        }
        // The account was terminated for violation while the job ran: the refund is
        // forfeited with everything else it held.
        if account_status(tx.conn(), &job.account_id).await? == AccountStatus::Terminated {
            forfeit_credits(tx, &job.account_id, actor, "terminated", now).await?;
        }
    }
    if let Ending::Succeeded(artifacts) = ending {
        if state == JobState::Succeeded {
            insert_artifacts(tx, &job.id, artifacts).await?;
            ended.job.artifacts = artifacts.to_vec();
            // In the order every read lists them.
            ended.job.artifacts.sort_by_key(|a| a.kind.as_str());
            if job.billing == JobBilling::Postpaid {
                // Boxed: a charge that suspends the account cancels its queued jobs,
                // which ends them here again.
                let charge = crate::postpaid::charge_succeeded(tx, &mut ended.job, now);
                ended.cancelled = Box::pin(charge).await?;
            }
        }
    }
    // The receiver hears of the end in this transaction's commit, or not at all.
    if let Some(event) = ending_event(state) {
        enqueue_event(tx, &ended.job, event, now).await?;
    }
    Ok(ended)
}

async fn insert_artifacts(
    tx: &mut Tx<'_>,
    job_id: &str,
    artifacts: &[Artifact],
) -> Result<(), StoreError> {
    for a in artifacts {
        sqlx::query(
            "INSERT INTO artifacts (job_id, kind, mime, bytes, sha256, location, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job_id)
        .bind(a.kind.as_str())
        .bind(&a.mime)
        .bind(i64::try_from(a.bytes)?)
        .bind(&a.sha256)
        .bind(&a.location)
        .bind(a.expires_at)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Why a started job goes back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// A retryable failure with starts left; `run_alone` marks it to run unbatched.
    Retry { run_alone: bool },
    /// A draining worker gave it back: the start is not counted against the budget.
    HandBack,
    /// Its worker was lost.
    Lost,
}

/// Puts a running job back in the queue. Its debit stands (the next start does not
/// debit again) and its start stays counted in `attempts`.
pub(crate) async fn requeue(
    tx: &mut Tx<'_>,
    job: &Job,
    why: Requeue,
    usage: Option<&Usage>,
) -> Result<Job, StoreError> {
    let run_alone = matches!(why, Requeue::Retry { run_alone: true });
    let handed_back = why == Requeue::HandBack;
    let row: JobRow = sqlx::query_as(
        "UPDATE jobs SET state = 'QUEUED', stage = NULL, progress_step = 0, lease_owner = NULL, \
         lease_expires_at = NULL, run_alone = CASE WHEN $1 = 1 THEN 1 ELSE run_alone END, \
         handed_back = handed_back + $2, usage = COALESCE($3, usage) \
         WHERE id = $4 AND state = 'RUNNING' RETURNING *",
    )
    .bind(i64::from(run_alone))
    .bind(i64::from(handed_back))
    .bind(usage.map(serde_json::to_string).transpose()?)
    .bind(&job.id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("job {} changed under its lock", job.id)))?;
    Job::try_from(row)
}

/// How a started job's attempt came out, as its worker (or recovery) reports it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Succeeded(Vec<Artifact>),
    /// With `retry`, a failure goes back to the queue while the job has starts left;
    /// then (or without it) it fails.
    Failed {
        failure: Failure,
        retry: Option<Retry>,
    },
    /// The worker stopped it because its cancel was requested.
    Stopped,
    /// A draining worker gave it back unfinished.
    HandedBack,
    /// Its worker is gone: back to the queue while it has starts left, else failed
    /// with `WORKER_LOST`.
    Lost {
        max_attempts: u32,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub max_attempts: u32,
    pub run_alone: bool,
}

/// Whether the job may start again under a budget of `max_attempts` starts (those a
/// draining worker handed back do not count).
fn starts_left(job: &Job, max_attempts: u32) -> bool {
    job.attempts.saturating_sub(job.handed_back) < max_attempts
}

/// Ends a running job's attempt as `outcome` says: ended through [`end_job`], or
/// requeued through [`requeue`]. A cancel request wins over any outcome.
pub(crate) async fn finish_attempt(
    tx: &mut Tx<'_>,
    job: &Job,
    outcome: Outcome,
    usage: Option<&Usage>,
    actor: &str,
    now: UnixMillis,
) -> Result<Ended, StoreError> {
    let requeued = |job| Ended {
        job,
        cancelled: Vec::new(),
    };
    if job.cancel_requested {
        return end_job(tx, job, Ending::Cancelled, usage, actor, now).await;
    }
    match outcome {
        Outcome::Succeeded(artifacts) => {
            end_job(tx, job, Ending::Succeeded(&artifacts), usage, actor, now).await
        }
        Outcome::Failed {
            retry: Some(retry), ..
        } if starts_left(job, retry.max_attempts) => {
            let why = Requeue::Retry {
                run_alone: retry.run_alone,
            };
            Ok(requeued(requeue(tx, job, why, usage).await?))
        }
        Outcome::Failed { failure, .. } => {
            end_job(tx, job, Ending::Failed(&failure), usage, actor, now).await
        }
        Outcome::Stopped => end_job(tx, job, Ending::Cancelled, usage, actor, now).await,
        Outcome::HandedBack => Ok(requeued(requeue(tx, job, Requeue::HandBack, usage).await?)),
        Outcome::Lost { max_attempts } if starts_left(job, max_attempts) => {
            Ok(requeued(requeue(tx, job, Requeue::Lost, usage).await?))
        }
        Outcome::Lost { .. } => {
            let failure = Failure {
                code: "WORKER_LOST".into(),
                message: format!("the worker was lost {} times", job.attempts),
                retryable: false,
            };
            end_job(tx, job, Ending::Failed(&failure), usage, actor, now).await
        }
    }
}
