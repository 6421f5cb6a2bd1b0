//! Callbacks' outbox (docs/api.md, "Callbacks"). A job with a `callback_url` gets a
//! delivery row for its first start and for its end, written by [`enqueue_event`] in
//! the transaction that makes the change, so no crash or restart loses one. The
//! server's delivery loop claims due rows ([`Store::claim_due_callbacks`]: PostgreSQL
//! skips rows another replica has locked, SQLite has one writer), sends them and
//! records each attempt; the accounts' signing secrets live here too.

use kinema_ledger::UnixMillis;
use serde_json::json;

use crate::db::{new_id, placeholders};
use crate::tx::Tx;
use crate::{CallbackEvent, CallbackState, Job, JobState, NotFound, Store, StoreError};

/// One event to deliver to a job's callback URL, and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackDelivery {
    /// The event id (`Kinema-Event-Id`): the same on every attempt.
    pub id: String,
    pub job_id: String,
    pub account_id: String,
    #[sqlx(try_from = "String")]
    pub event: CallbackEvent,
    pub url: String,
    /// The JSON sent, as it was when the event happened.
    pub body: String,
    #[sqlx(try_from = "String")]
    pub state: CallbackState,
    pub attempts: i64,
    /// The HTTP status of the last attempt, when one came back.
    pub last_status: Option<i64>,
    pub last_error: String,
    pub created_at: UnixMillis,
    /// When a pending delivery is tried next.
    pub next_attempt_at: UnixMillis,
    pub delivered_at: Option<UnixMillis>,
    pub failed_at: Option<UnixMillis>,
}

/// How one attempt came out, as the delivery loop records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackAttempt {
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed ('' when delivered).
    pub error: String,
    pub next: AttemptNext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    /// Failed; tried again then.
    RetryAt(UnixMillis),
    /// Failed for good: out of time, or a URL that may never be reached.
    GiveUp,
}

/// An account's signing secret, as a rotation made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedSecret {
    pub id: String,
    pub created_at: UnixMillis,
    /// When the secrets it replaced stop signing (none were live: `None`).
    pub previous_retire_at: Option<UnixMillis>,
}

/// Writes the delivery of `event` for `job` in the caller's transaction, if the job
/// has a callback URL; an event already written for the job is kept as it is.
pub(crate) async fn enqueue_event(
    tx: &mut Tx<'_>,
    job: &Job,
    event: CallbackEvent,
    now: UnixMillis,
) -> Result<(), StoreError> {
    if job.callback_url.is_empty() {
        return Ok(());
    }
    let id = new_id("evt");
    let body = event_body(&id, event, job, now).to_string();
    sqlx::query(
        "INSERT INTO callback_deliveries (id, job_id, account_id, event, url, body, created_at, \
         next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (job_id, event) DO NOTHING",
    )
    .bind(&id)
    .bind(&job.id)
    .bind(&job.account_id)
    .bind(event.as_str())
    .bind(&job.callback_url)
    .bind(body)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The event a job's end sends.
pub(crate) fn ending_event(state: JobState) -> Option<CallbackEvent> {
    match state {
        JobState::Succeeded => Some(CallbackEvent::Succeeded),
        JobState::Failed => Some(CallbackEvent::Failed),
        JobState::Cancelled => Some(CallbackEvent::Cancelled),
        JobState::Queued | JobState::Running => None,
    }
}

/// The body a receiver gets: the event and the job's public fields. Never the
/// prompt, negative prompt or metadata (retention purges those; the outbox keeps
/// none), nor where artifacts are stored.
fn event_body(id: &str, event: CallbackEvent, job: &Job, now: UnixMillis) -> serde_json::Value {
    let artifacts: Vec<_> = job
        .artifacts
        .iter()
        .map(|a| {
            json!({
                "kind": a.kind.as_str(),
                "mime": a.mime,
                "bytes": a.bytes,
                "sha256": a.sha256,
                "expires_at_ms": a.expires_at,
            })
        })
        .collect();
    json!({
        "id": id,
        "type": event.as_str(),
        "created_at_ms": now,
        "job": {
            "id": job.id,
            "account_id": job.account_id,
            "external_id": job.external_id,
            "model": job.params.model,
            "state": job.state.as_str(),
            "stage": job.stage.map(|s| s.as_str()),
            "progress": {"step": job.progress_step, "total_steps": job.progress_total},
            "quoted_credits": job.quoted,
            "debited_credits": job.debited,
            "refunded_credits": job.refunded,
            "failure": job.failure.as_ref().map(|f| json!({
                "code": f.code, "message": f.message, "retryable": f.retryable,
            })),
            "artifacts": artifacts,
            "width": job.params.width,
            "height": job.params.height,
            "num_frames": job.params.num_frames,
            "fps": job.params.fps,
            "steps": job.params.steps,
            "seed": job.params.seed,
            "output": job.params.output,
            "attempts": job.attempts,
            "created_at_ms": job.created_at,
            "started_at_ms": job.started_at,
            "finished_at_ms": job.finished_at,
        },
    })
}

impl Store {
    /// Takes up to `limit` pending deliveries due at `now`, oldest first, and pushes
    /// their next attempt to `now + hold_ms`, so no other loop takes them while this
    /// one sends; if this process dies meanwhile they come due again then.
    pub async fn claim_due_callbacks(
        &self,
        now: UnixMillis,
        limit: u32,
        hold_ms: i64,
    ) -> Result<Vec<CallbackDelivery>, StoreError> {
        self.write(move |mut tx| {
            Box::pin(async move {
                let skip = tx.backend.for_update_skip_locked();
                let mut due: Vec<CallbackDelivery> = sqlx::query_as(&format!(
                    "SELECT * FROM callback_deliveries WHERE state = 'PENDING' \
                     AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2{skip}"
                ))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(tx.conn())
                .await?;
                if due.is_empty() {
                    return Ok(due);
                }
                let until = now.saturating_add(hold_ms);
                let sql = format!(
                    "UPDATE callback_deliveries SET next_attempt_at = $1 WHERE id IN ({})",
                    placeholders(2, due.len())
                );
                let mut update = sqlx::query(&sql).bind(until);
                for d in &due {
                    update = update.bind(d.id.clone());
                }
                update.execute(tx.conn()).await?;
                for d in &mut due {
                    d.next_attempt_at = until;
                }
                Ok(due)
            })
        })
        .await
    }

    /// Records one attempt of a pending delivery; one no longer pending (delivered
    /// by another replica, dropped with its account) is left as it is.
    pub async fn record_callback_attempt(
        &self,
        id: &str,
        attempt: CallbackAttempt,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |mut tx| {
            Box::pin(async move {
                let (state, next, delivered, failed) = match attempt.next {
                    AttemptNext::Delivered => (CallbackState::Delivered, now, Some(now), None),
                    AttemptNext::RetryAt(at) => (CallbackState::Pending, at, None, None),
                    AttemptNext::GiveUp => (CallbackState::Failed, now, None, Some(now)),
                };
                sqlx::query(
                    "UPDATE callback_deliveries SET state = $1, attempts = attempts + 1, \
                     last_status = $2, last_error = $3, next_attempt_at = $4, \
                     delivered_at = $5, failed_at = $6 WHERE id = $7 AND state = 'PENDING'",
                )
                .bind(state.as_str())
                .bind(attempt.status.map(i64::from))
                .bind(attempt.error)
                .bind(next)
                .bind(delivered)
                .bind(failed)
                .bind(id)
                .execute(tx.conn())
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// A job's deliveries, in the order their events happened.
    pub async fn job_callbacks(&self, job_id: &str) -> Result<Vec<CallbackDelivery>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM callback_deliveries WHERE job_id = $1 ORDER BY created_at, event",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// How many deliveries are still to be made.
    pub async fn pending_callbacks(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM callback_deliveries WHERE state = 'PENDING'")
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// Makes `secret` the account's signing secret. The secrets it replaces keep
    /// signing beside it for `overlap_ms` (receivers accept either while they rotate).
    pub async fn rotate_callback_secret(
        &self,
        account_id: &str,
        secret: &str,
        overlap_ms: i64,
        now: UnixMillis,
    ) -> Result<RotatedSecret, StoreError> {
        let (account_id, secret) = (account_id.to_owned(), secret.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
                        .bind(&account_id)
                        .fetch_optional(tx.conn())
                        .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(NotFound::Account));
                }
                let retire_at = now.saturating_add(overlap_ms.max(0));
                let replaced = sqlx::query(
                    "UPDATE callback_secrets SET retires_at = $1 WHERE account_id = $2 \
                     AND (retires_at IS NULL OR retires_at > $1)",
                )
                .bind(retire_at)
                .bind(&account_id)
                .execute(tx.conn())
                .await?
                .rows_affected();
                let id = new_id("cbsec");
                sqlx::query(
                    "INSERT INTO callback_secrets (id, account_id, secret, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(&account_id)
                .bind(&secret)
                .bind(now)
                .execute(tx.conn())
                .await?;
                Ok(RotatedSecret {
                    id,
                    created_at: now,
                    previous_retire_at: (replaced > 0).then_some(retire_at),
                })
            })
        })
        .await
    }

    /// The account's secrets that sign at `now`, newest first (empty: the server's
    /// own secret signs, if it has one).
    pub async fn live_callback_secrets(
        &self,
        account_id: &str,
        now: UnixMillis,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT secret FROM callback_secrets WHERE account_id = $1 \
             AND (retires_at IS NULL OR retires_at > $2) ORDER BY created_at DESC, id DESC",
        )
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }
}

/// A deleted account's deliveries: nothing more is sent, and what they held of the
/// job (its external id in the body, the URL) goes; its secrets go too.
pub(crate) async fn forget_account_callbacks(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE callback_deliveries SET url = '', body = '{}', \
         last_error = CASE WHEN state = 'PENDING' THEN 'account deleted' ELSE last_error END, \
         failed_at = CASE WHEN state = 'PENDING' THEN $2 ELSE failed_at END, \
         state = CASE WHEN state = 'PENDING' THEN 'FAILED' ELSE state END \
         WHERE account_id = $1",
    )
    .bind(account_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    sqlx::query("DELETE FROM callback_secrets WHERE account_id = $1")
        .bind(account_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}
