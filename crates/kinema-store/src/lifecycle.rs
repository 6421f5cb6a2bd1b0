//! The account lifecycle (docs/api.md, "Expiry and forfeit"): operator suspension and
//! reinstatement, termination (for violation: credits forfeited; for arrears), the
//! owner's deletion request (refused with every reason while anything is left), and
//! the purge of a closed account's videos and prompts.

use kinema_ledger::{Catalogue, UnixMillis};

use crate::ending::{end_job, Ending};
use crate::events::{append_event, EventDraft};
use crate::locks::{lock_account, lock_job};
use crate::lots::{expire_due_lots, live_total};
use crate::money::forfeit_credits;
use crate::subscriptions::{apply_transition, load_subscriptions, tick_locked};
use crate::tx::Tx;
use crate::{
    AccountChange, AccountStatus, BillingEventKind, DeletionRefusal, ExpiredArtifact, Job, Store,
    StoreError,
};

/// Cancels the account's queued jobs (each through `end_job`: hold released, and a
/// queued retry that was debited already refunded under `refund_on_cancel`, as
/// `CancelJob` does). Returns them as they now stand.
pub(crate) async fn cancel_queued_jobs(
    tx: &mut Tx<'_>,
    account_id: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<Vec<Job>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE account_id = $1 AND state = 'QUEUED' ORDER BY seq",
    )
    .bind(account_id)
    .fetch_all(tx.conn())
    .await?;
    let mut cancelled = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(job) = lock_job(tx, id).await? else {
            continue;
        };
        cancelled.push(
            end_job(tx, &job, Ending::Cancelled, None, actor, now)
                .await?
                .job,
        );
    }
    Ok(cancelled)
}

/// Asks the account's running jobs to stop (their workers finish the cancel).
async fn stop_running_jobs(tx: &mut Tx<'_>, account_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET cancel_requested = 1 WHERE account_id = $1 AND state = 'RUNNING' \
         RETURNING id",
    )
    .bind(account_id)
    .fetch_all(tx.conn())
    .await?)
}

/// Sets a closed status (terminated, deleted), cancels queued jobs, asks running ones
/// to stop, and marks the account's videos for deletion (the sweeper deletes the
/// files; a download meanwhile says why). `at`: when the status took effect (a
/// termination the clock brought, possibly before `now`). Returns (cancelled jobs,
/// stopping ids).
pub(crate) async fn close_account(
    tx: &mut Tx<'_>,
    account_id: &str,
    status: AccountStatus,
    reason: &str,
    at: UnixMillis,
    actor: &str,
    now: UnixMillis,
) -> Result<(Vec<Job>, Vec<String>), StoreError> {
    set_status(tx, account_id, status, reason, at).await?;
    let cancelled = cancel_queued_jobs(tx, account_id, actor, now).await?;
    let stopping = stop_running_jobs(tx, account_id).await?;
    sqlx::query(
        "UPDATE artifacts SET removal = 'account_closed' WHERE removal IS NULL \
         AND job_id IN (SELECT id FROM jobs WHERE account_id = $1)",
    )
    .bind(account_id)
    .execute(tx.conn())
    .await?;
    Ok((cancelled, stopping))
}

async fn set_status(
    tx: &mut Tx<'_>,
    account_id: &str,
    status: AccountStatus,
    reason: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE accounts SET status = $1, status_reason = $2, status_changed_at = $3 \
         WHERE id = $4",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(at)
    .bind(account_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

async fn account_event(
    tx: &mut Tx<'_>,
    account_id: &str,
    kind: BillingEventKind,
    reason: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    append_event(
        tx,
        account_id,
        EventDraft {
            kind: Some(kind),
            detail: serde_json::json!({ "reason": reason, "actor": actor }).to_string(),
            effective_at: now,
            ..EventDraft::default()
        },
        now,
    )
    .await?;
    Ok(())
}

/// Suspends an active account whose row the caller has locked: the status, its
/// queued jobs cancelled (holds released), the billing event. The one path of the
/// operator's `SuspendAccount` and of the usage policy's automatic suspension.
pub(crate) async fn suspend_locked(
    tx: &mut Tx<'_>,
    account_id: &str,
    reason: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<Vec<Job>, StoreError> {
    set_status(tx, account_id, AccountStatus::Suspended, reason, now).await?;
    let cancelled = cancel_queued_jobs(tx, account_id, actor, now).await?;
    let kind = BillingEventKind::AccountSuspended;
    account_event(tx, account_id, kind, reason, actor, now).await?;
    Ok(cancelled)
}

/// What a lifecycle change did, as [`AccountChange`] reports it.
pub(crate) async fn change(
    tx: &mut Tx<'_>,
    account_id: &str,
    cancelled: Vec<Job>,
    stopping: Vec<String>,
    forfeited: kinema_ledger::Credits,
) -> Result<AccountChange, StoreError> {
    Ok(AccountChange {
        account: crate::accounts::load_account(tx.conn(), account_id).await?,
        cancelled,
        stopping,
        forfeited,
    })
}

impl Store {
    /// Operator suspension: no new jobs; queued jobs are cancelled with their holds
    /// released. Suspending a suspended account changes nothing.
    pub async fn suspend_account(
        &self,
        account_id: &str,
        reason: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let (account_id, reason, actor) =
            (account_id.to_owned(), reason.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let locked = lock_account(tx, &account_id).await?;
                locked.require_open()?;
                let mut cancelled = Vec::new();
                if locked.status == AccountStatus::Active {
                    cancelled = suspend_locked(tx, &account_id, &reason, &actor, now).await?;
                }
                change(tx, &account_id, cancelled, Vec::new(), 0).await
            })
        })
        .await
    }

    /// Lifts an operator suspension. A terminated or deleted account stays closed.
    /// (A postpaid account suspended by arrears is reactivated by a top-up.)
    pub async fn reinstate_account(
        &self,
        account_id: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let (account_id, actor) = (account_id.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let locked = lock_account(tx, &account_id).await?;
                locked.require_open()?;
                if locked.status == AccountStatus::Suspended {
                    set_status(tx, &account_id, AccountStatus::Active, "", now).await?;
                    let kind = BillingEventKind::AccountReinstated;
                    account_event(tx, &account_id, kind, "", &actor, now).await?;
                }
                change(tx, &account_id, Vec::new(), Vec::new(), 0).await
            })
        })
        .await
    }

    /// Termination for violating the usage policy: the account is closed, its plans
    /// end without refund, queued jobs are cancelled, running ones asked to stop, and
    /// every credit left is forfeited (FORFEIT). Its videos and prompts are purged by
    /// the sweeper.
    pub async fn terminate_account(
        &self,
        base: &Catalogue,
        account_id: &str,
        reason: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let base = base.clone();
        let (account_id, reason, actor) =
            (account_id.to_owned(), reason.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let (account_id, reason, actor) = (&account_id, &reason, &actor);
                lock_account(tx, account_id).await?.require_open()?;
                // Plans first: a renewal or grant due before now is written, then
                // everything ends.
                let cat = crate::catalog::catalogue_in(tx.conn(), &base).await?;
                let state = load_subscriptions(tx.conn(), account_id).await?;
                let t = kinema_ledger::terminate_subscriptions(&state, &cat, now);
                apply_transition(tx, account_id, &t, None, actor, now).await?;
                let terminated = AccountStatus::Terminated;
                let (cancelled, stopping) =
                    close_account(tx, account_id, terminated, reason, now, actor, now).await?;
                let forfeited = forfeit_credits(tx, account_id, actor, reason, now).await?;
                if let Some(mut pp) = crate::postpaid::load_postpaid(tx.conn(), account_id).await? {
                    if pp.terminated_at.is_none() {
                        pp.terminated_at = Some(now);
                        pp.phase = kinema_ledger::PostpaidPhase::Terminated;
                        crate::postpaid::save_postpaid(tx, account_id, &pp, now).await?;
                    }
                }
                let kind = BillingEventKind::AccountTerminated;
                account_event(tx, account_id, kind, reason, actor, now).await?;
                change(tx, account_id, cancelled, stopping, forfeited).await
            })
        })
        .await
    }

    /// The owner's request to delete the account. Refused, with every reason, while it
    /// holds credits or money, has unfinished jobs or a running subscription, or is
    /// younger than `min_age_ms`. Otherwise the account is deleted: its name and ids,
    /// its jobs' prompts and its keys go now, its videos with the sweeper's purge; the
    /// ledger keeps its entries, memos blanked.
    pub async fn delete_account(
        &self,
        base: &Catalogue,
        account_id: &str,
        min_age_ms: i64,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let base = base.clone();
        let (account_id, actor) = (account_id.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let refusals = deletion_refusals(tx, &base, &account_id, min_age_ms, now).await?;
                if !refusals.is_empty() {
                    // The catch-up it did is not worth a write of its own: roll it back.
                    return Err(StoreError::DeletionRefused(refusals));
                }
                let deleted = AccountStatus::Deleted;
                let reason = "owner request";
                close_account(tx, &account_id, deleted, reason, now, &actor, now).await?;
                forget_account(tx, &account_id, now).await?;
                let kind = BillingEventKind::AccountDeleted;
                account_event(tx, &account_id, kind, "owner request", &actor, now).await?;
                change(tx, &account_id, Vec::new(), Vec::new(), 0).await
            })
        })
        .await
    }

    /// Closed accounts (terminated or deleted) whose content is not purged yet.
    pub async fn accounts_to_purge(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM accounts WHERE status IN ('terminated', 'deleted') \
             AND purged_at IS NULL ORDER BY status_changed_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    /// The stored files of an account's jobs (not deleted yet).
    pub async fn account_artifacts(
        &self,
        account_id: &str,
    ) -> Result<Vec<ExpiredArtifact>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.job_id, a.kind, a.location FROM artifacts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.account_id = $1 AND a.deleted_at IS NULL ORDER BY a.job_id, a.kind",
        )
        .bind(account_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Ends the purge of a closed account once its files are deleted: prompts and
    /// request data blanked. False, and nothing written, while a job still runs or a
    /// file is left (the sweeper comes back).
    pub async fn finish_purge(
        &self,
        account_id: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let account_id = account_id.to_owned();
        let purged = self
            .write(move |mut tx| {
                Box::pin(async move {
                    let tx = &mut tx;
                    lock_account(tx, &account_id).await?;
                    let (busy, files): (i64, i64) = sqlx::query_as(
                        "SELECT CAST((SELECT COUNT(*) FROM jobs WHERE account_id = $1 \
                     AND state IN ('QUEUED', 'RUNNING')) AS BIGINT), \
                     CAST((SELECT COUNT(*) FROM artifacts a JOIN jobs j ON j.id = a.job_id \
                     WHERE j.account_id = $1 AND a.deleted_at IS NULL) AS BIGINT)",
                    )
                    .bind(&account_id)
                    .fetch_one(tx.conn())
                    .await?;
                    if busy > 0 || files > 0 {
                        return Ok(false);
                    }
                    blank_jobs(tx, &account_id, now).await?;
                    sqlx::query("UPDATE accounts SET purged_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&account_id)
                        .execute(tx.conn())
                        .await?;
                    Ok(true)
                })
            })
            .await?;
        if purged {
            self.erase_old_copies().await;
        }
        Ok(purged)
    }
}

/// Every reason the owner's deletion request is refused (none: it may go ahead),
/// read under the account's lock after its lots and plans are caught up to `now`.
async fn deletion_refusals(
    tx: &mut Tx<'_>,
    base: &Catalogue,
    account_id: &str,
    min_age_ms: i64,
    now: UnixMillis,
) -> Result<Vec<DeletionRefusal>, StoreError> {
    let locked = lock_account(tx, account_id).await?;
    if locked.status == AccountStatus::Deleted {
        return Err(StoreError::AccountClosed {
            status: locked.status.to_string(),
        });
    }
    expire_due_lots(tx, account_id, now).await?;
    let plans = tick_locked(tx, base, account_id, now).await?.state;
    let mut refusals = Vec::new();
    let credits = live_total(tx, account_id, now).await?;
    if credits > 0 {
        refusals.push(DeletionRefusal::Credits { credits });
    }
    if let Some(pp) = crate::postpaid::load_postpaid(tx.conn(), account_id).await? {
        if pp.balance.minor != 0 {
            refusals.push(DeletionRefusal::Money {
                balance: pp.balance,
            });
        }
    }
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND state IN ('QUEUED', 'RUNNING')",
    )
    .bind(account_id)
    .fetch_one(tx.conn())
    .await?;
    if unfinished > 0 {
        refusals.push(DeletionRefusal::UnfinishedJobs { count: unfinished });
    }
    if plans.is_running() {
        let plan_ids = plans
            .current
            .iter()
            .map(|c| c.plan_id.clone())
            .chain(plans.queued.iter().map(|q| q.plan_id.clone()))
            .collect();
        refusals.push(DeletionRefusal::RunningSubscription { plan_ids });
    }
    let deletable_from = locked.created_at.saturating_add(min_age_ms);
    if now < deletable_from {
        refusals.push(DeletionRefusal::TooYoung {
            created_at: locked.created_at,
            deletable_from,
        });
    }
    Ok(refusals)
}

/// What a deleted account's rows hold of the person behind it goes: its name and
/// external id, its keys, the memos of its entries, its jobs' request data.
async fn forget_account(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE accounts SET name = '', external_id = NULL WHERE id = $1")
        .bind(account_id)
        .execute(tx.conn())
        .await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(account_id)
        .execute(tx.conn())
        .await?;
    sqlx::query("UPDATE ledger_entries SET memo = '' WHERE account_id = $1 AND memo <> ''")
        .bind(account_id)
        .execute(tx.conn())
        .await?;
    crate::callbacks::forget_account_callbacks(tx, account_id, now).await?;
    blank_jobs(tx, account_id, now).await
}

/// Removes what a job row holds of the person behind it; the money columns stay, so
/// the ledger still verifies.
async fn blank_jobs(tx: &mut Tx<'_>, account_id: &str, now: UnixMillis) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET prompt = '', negative_prompt = '', metadata = '{}', callback_url = '', \
         inputs = '[]', \
         external_id = NULL, idempotency_key = NULL, request_hash = '', failure_message = \
         CASE WHEN failure_message IS NULL THEN NULL ELSE '' END, \
         prompt_purged_at = COALESCE(prompt_purged_at, $2) WHERE account_id = $1",
    )
    .bind(account_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    crate::retention::forget_purged_inputs(tx).await
}
