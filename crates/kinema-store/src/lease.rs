//! Leasing: the next queued job in the queue's order (`queue.rs`) started under a
//! worker's lease, with its hold turned into a DEBIT on its first start, in one
//! transaction; and the companions of a batch.

use kinema_ledger::UnixMillis;

use crate::attempts::WORKER;
use crate::callbacks::enqueue_event;
use crate::ending::{end_job, Ending};
use crate::jobs::load_job;
use crate::money::{plan_debit, write_debit};
use crate::queue::{self, Pick};
use crate::rows::JobRow;
use crate::tx::Tx;
use crate::{
    Backend, CallbackEvent, Failure, Job, JobBilling, LeaseFilter, NotFound, Stage, Store,
    StoreError,
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
    /// it: RUNNING, start counted, and on its first start the hold becomes a DEBIT,
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
            let step = self
                .write(move |mut tx| {
                    Box::pin(async move {
                        let pick = Pick {
                            models: models.as_deref(),
                            batch_key: batch_key.as_deref(),
                        };
                        lease_step(&mut tx, pick, &owner, lease_ms, now).await
                    })
                })
                .await?;
            match step {
                LeaseStep::Empty => return Ok(None),
                LeaseStep::Started(job) => return Ok(Some(*job)),
                LeaseStep::Ended(jobs) => refused.extend(jobs),
                LeaseStep::Again => {}
            }
        }
    }
}

/// What one lease transaction did.
enum LeaseStep {
    /// No queued job matches.
    Empty,
    Started(Box<Job>),
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
    tx: &mut Tx<'_>,
    pick: Pick<'_>,
    owner: &str,
    lease_ms: i64,
    now: UnixMillis,
) -> Result<LeaseStep, StoreError> {
    // The account comes locked (the store's lock order: account first, then the job
    // row); another worker may have taken its jobs meanwhile, in which case look again.
    let mut next = queue::next_account(tx, pick, true).await?;
    if next.is_none() && tx.backend == Backend::Postgres {
        // Every waiting account may be locked by another transaction: wait for the
        // first one rather than report an empty queue.
        next = queue::next_account(tx, pick, false).await?;
    }
    let Some((candidate_account, class)) = next else {
        return Ok(LeaseStep::Empty);
    };
    let Some(head) = queue::head_job(tx, &candidate_account, class, pick).await? else {
        return Ok(LeaseStep::Again);
    };
    if head.billing == JobBilling::Postpaid {
        // The grace may have run out since the sweeper last came by: a suspended
        // account's queued jobs are cancelled, not started.
        if let Some(cancelled) = crate::postpaid::catch_up(tx, &head.account_id, now).await? {
            return Ok(LeaseStep::Ended(cancelled));
        }
    }
    // Postpaid jobs hold and debit no credits: they are charged on success. A job
    // requeued after a lost worker was debited already.
    let debit = if head.debited == 0 && head.billing == JobBilling::Credits {
        match plan_debit(tx, &head.account_id, head.quoted, now).await {
            Ok(debit) => Some(debit),
            Err(StoreError::InsufficientCredits { needed, available }) => {
                let failure = Failure {
                    code: "INSUFFICIENT_CREDITS".into(),
                    message: format!(
                        "credits expired while queued: {needed} needed, {available} available"
                    ),
                    retryable: false,
                };
                let job = load_job(tx.conn(), &head.id)
                    .await?
                    .ok_or(StoreError::NotFound(NotFound::Job))?;
                let ended = end_job(tx, &job, Ending::Failed(&failure), None, WORKER, now).await?;
                return Ok(LeaseStep::Ended(vec![ended.job]));
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
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET state = 'RUNNING', stage = $1, progress_step = 0, \
         attempts = attempts + 1, started_at = COALESCE(started_at, $2), lease_owner = $3, \
         lease_expires_at = $4{money} WHERE id = $5 AND state = 'QUEUED' AND debited = $6 \
         RETURNING *"
    ))
    .bind(Stage::EncodingText.as_str())
    .bind(now)
    .bind(owner)
    .bind(now.saturating_add(lease_ms))
    .bind(&head.id)
    .bind(head.debited)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(LeaseStep::Again);
    };
    if let Some(debit) = &debit {
        write_debit(tx, &head.account_id, &head.id, debit, WORKER, now).await?;
    }
    queue::mark_served(tx, &head.account_id).await?;
    // A running job has no artifacts and no queue position: the row is the job, with
    // its input images' bytes (the worker needs them).
    let mut job = Job::try_from(row)?;
    crate::jobs::attach_input_bytes(tx.conn(), &mut job).await?;
    if job.attempts == 1 {
        // Its first start (a requeued job's restart is not told again).
        enqueue_event(tx, &job, CallbackEvent::Running, now).await?;
    }
    Ok(LeaseStep::Started(Box::new(job)))
}
