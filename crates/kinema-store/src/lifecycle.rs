//! The account lifecycle (CONTRACT.md §2.6, §4, §5): operator suspension and
//! reinstatement, termination (for violation: credits forfeited; for arrears), the
//! owner's deletion request (refused with every reason while anything is left), and
//! the purge of a closed account's videos and prompts.

use kinema_ledger::{forfeit_all, Catalogue, Credits, UnixMillis};
use sqlx::AnyConnection;

use crate::credits::{
    all_lots, append_entry, expire_due_lots, live_total, lock_account, lot_state, refund_job,
    release_hold, EntryDraft,
};
use crate::db::Backend;
use crate::events::{append_event, EventDraft};
use crate::jobs::{load_job, set_terminal};
use crate::subscriptions::{apply_transition, load_subscriptions, tick_locked};
use crate::{
    AccountChange, AccountStatus, BillingEventKind, DeletionRefusal, EntryKind, ExpiredArtifact,
    JobState, Store, StoreError,
};

/// Cancels the account's queued jobs: holds released, and a queued retry that was
/// debited already refunded under `refund_on_cancel` (as `CancelJob` does).
pub(crate) async fn cancel_queued_jobs(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    refund_on_cancel: bool,
    refund_grace_ms: i64,
    actor: &str,
    now: UnixMillis,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        &b.sql("SELECT id FROM jobs WHERE account_id = ? AND state = 'QUEUED' ORDER BY seq"),
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    for id in &ids {
        set_terminal(conn, b, id, JobState::Cancelled, None, now).await?;
        release_hold(conn, b, account_id, id, actor, now).await?;
        if refund_on_cancel {
            refund_job(conn, b, account_id, id, refund_grace_ms, actor, now).await?;
        }
    }
    Ok(ids)
}

/// Asks the account's running jobs to stop (their workers finish the cancel).
pub(crate) async fn stop_running_jobs(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        &b.sql("SELECT id FROM jobs WHERE account_id = ? AND state = 'RUNNING' ORDER BY seq"),
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        &b.sql("UPDATE jobs SET cancel_requested = 1 WHERE account_id = ? AND state = 'RUNNING'"),
    )
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}

/// Forfeits every credit left (CONTRACT.md §2.6): lots already past their expiry are
/// expired first, the rest goes in one FORFEIT entry. Returns the credits forfeited.
pub(crate) async fn forfeit_credits(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    actor: &str,
    memo: &str,
    now: UnixMillis,
) -> Result<Credits, StoreError> {
    expire_due_lots(conn, b, account_id, now).await?;
    let lots: Vec<_> = all_lots(conn, b, account_id)
        .await?
        .iter()
        .map(lot_state)
        .collect();
    let plan = forfeit_all(&lots, now);
    let forfeited = plan.forfeited();
    if forfeited == 0 {
        return Ok(0);
    }
    for a in &plan.forfeit {
        let moved = sqlx::query(
            &b.sql("UPDATE lots SET remaining = remaining - ? WHERE id = ? AND remaining >= ?"),
        )
        .bind(a.amount)
        .bind(a.lot_id)
        .bind(a.amount)
        .execute(&mut *conn)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Corrupt(format!(
                "lot {} changed under a forfeit",
                a.lot_id
            )));
        }
    }
    append_entry(
        conn,
        b,
        EntryDraft {
            account_id,
            kind: EntryKind::Forfeit,
            amount: forfeited,
            allocations: &plan.forfeit,
            job_id: None,
            actor,
            memo,
        },
        now,
    )
    .await?;
    Ok(forfeited)
}

/// Sets a closed status (terminated, deleted), cancels queued jobs and asks running
/// ones to stop. Returns (cancelled, stopping) job ids.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn close_account(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    status: AccountStatus,
    reason: &str,
    at: UnixMillis,
    refund_on_cancel: bool,
    refund_grace_ms: i64,
    actor: &str,
    now: UnixMillis,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    set_status(conn, b, account_id, status, reason, at).await?;
    let cancelled = cancel_queued_jobs(
        conn,
        b,
        account_id,
        refund_on_cancel,
        refund_grace_ms,
        actor,
        now,
    )
    .await?;
    let stopping = stop_running_jobs(conn, b, account_id).await?;
    Ok((cancelled, stopping))
}

async fn set_status(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    status: AccountStatus,
    reason: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "UPDATE accounts SET status = ?, status_reason = ?, status_changed_at = ? WHERE id = ?",
    ))
    .bind(status.as_str())
    .bind(reason)
    .bind(at)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn account_event(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    kind: BillingEventKind,
    reason: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    append_event(
        conn,
        b,
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

impl Store {
    /// Operator suspension (CONTRACT.md §5): no new jobs; queued jobs are cancelled
    /// with their holds released. Suspending a suspended account changes nothing.
    pub async fn suspend_account(
        &self,
        account_id: &str,
        reason: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let b = self.backend;
        let account_id = account_id.to_owned();
        let reason = reason.to_owned();
        let actor = actor.to_owned();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                let reason = reason.as_str();
                let actor = actor.as_str();
                let locked = lock_account(&mut *tx, b, account_id).await?;
                locked.require_open()?;
                let mut cancelled = Vec::new();
                if locked.status == AccountStatus::Active {
                    set_status(
                        &mut *tx,
                        b,
                        account_id,
                        AccountStatus::Suspended,
                        reason,
                        now,
                    )
                    .await?;
                    for id in cancel_queued_jobs(
                        &mut *tx,
                        b,
                        account_id,
                        this.policy.refund_on_cancel,
                        this.policy.refund_grace_ms,
                        actor,
                        now,
                    )
                    .await?
                    {
                        cancelled.extend(load_job(&mut *tx, b, &id).await?);
                    }
                    account_event(
                        &mut *tx,
                        b,
                        account_id,
                        BillingEventKind::AccountSuspended,
                        reason,
                        actor,
                        now,
                    )
                    .await?;
                }
                let account = crate::accounts::load_account(&mut *tx, b, account_id).await?;
                Ok(AccountChange {
                    account,
                    cancelled,
                    stopping: Vec::new(),
                    forfeited: 0,
                })
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
        let b = self.backend;
        let account_id = account_id.to_owned();
        let actor = actor.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                let actor = actor.as_str();
                let locked = lock_account(&mut *tx, b, account_id).await?;
                locked.require_open()?;
                if locked.status == AccountStatus::Suspended {
                    set_status(&mut *tx, b, account_id, AccountStatus::Active, "", now).await?;
                    account_event(
                        &mut *tx,
                        b,
                        account_id,
                        BillingEventKind::AccountReinstated,
                        "",
                        actor,
                        now,
                    )
                    .await?;
                }
                let account = crate::accounts::load_account(&mut *tx, b, account_id).await?;
                Ok(AccountChange {
                    account,
                    cancelled: Vec::new(),
                    stopping: Vec::new(),
                    forfeited: 0,
                })
            })
        })
        .await
    }

    /// Termination for violating the usage policy (CONTRACT.md §2.6): the account is
    /// closed, its plans end without refund, queued jobs are cancelled, running ones
    /// asked to stop, and every credit left is forfeited (FORFEIT). Its videos and
    /// prompts are purged by the sweeper.
    pub async fn terminate_account(
        &self,
        base: &Catalogue,
        account_id: &str,
        reason: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let b = self.backend;
        let base = base.clone();
        let account_id = account_id.to_owned();
        let reason = reason.to_owned();
        let actor = actor.to_owned();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let base = &base;
                let account_id = account_id.as_str();
                let reason = reason.as_str();
                let actor = actor.as_str();
                let locked = lock_account(&mut *tx, b, account_id).await?;
                locked.require_open()?;
                // Plans first: a renewal or grant due before now is written, then everything ends.
                let cat = crate::catalog::catalogue_in(&mut *tx, b, base).await?;
                let state = load_subscriptions(&mut *tx, b, account_id).await?;
                let t = kinema_ledger::terminate_subscriptions(&state, &cat, now);
                apply_transition(&mut *tx, b, account_id, &t, None, actor, now).await?;
                let (cancelled_ids, stopping) = close_account(
                    &mut *tx,
                    b,
                    account_id,
                    AccountStatus::Terminated,
                    reason,
                    now,
                    this.policy.refund_on_cancel,
                    this.policy.refund_grace_ms,
                    actor,
                    now,
                )
                .await?;
                let forfeited =
                    forfeit_credits(&mut *tx, b, account_id, actor, reason, now).await?;
                if let Some(mut pp) =
                    crate::postpaid::load_postpaid(&mut *tx, b, account_id).await?
                {
                    if pp.terminated_at.is_none() {
                        pp.terminated_at = Some(now);
                        pp.phase = kinema_ledger::PostpaidPhase::Terminated;
                        crate::postpaid::save_postpaid(&mut *tx, b, account_id, &pp, now).await?;
                    }
                }
                account_event(
                    &mut *tx,
                    b,
                    account_id,
                    BillingEventKind::AccountTerminated,
                    reason,
                    actor,
                    now,
                )
                .await?;
                let mut cancelled = Vec::new();
                for id in cancelled_ids {
                    cancelled.extend(load_job(&mut *tx, b, &id).await?);
                }
                let account = crate::accounts::load_account(&mut *tx, b, account_id).await?;
                Ok(AccountChange {
                    account,
                    cancelled,
                    stopping,
                    forfeited,
                })
            })
        })
        .await
    }

    /// The owner's request to delete the account (CONTRACT.md §5). Refused, with
    /// every reason, while it holds credits or money, has unfinished jobs or a running
    /// subscription, or is younger than `min_age_ms`. Otherwise the account is
    /// deleted: its name and ids, its jobs' prompts and its keys go now, its videos
    /// with the sweeper's purge; the ledger keeps its entries, memos blanked.
    pub async fn delete_account(
        &self,
        base: &Catalogue,
        account_id: &str,
        min_age_ms: i64,
        actor: &str,
        now: UnixMillis,
    ) -> Result<AccountChange, StoreError> {
        let b = self.backend;
        let base = base.clone();
        let account_id = account_id.to_owned();
        let actor = actor.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let base = &base;
                let account_id = account_id.as_str();
                let actor = actor.as_str();
                let locked = lock_account(&mut *tx, b, account_id).await?;
                if locked.status == AccountStatus::Deleted {
                    return Err(StoreError::AccountClosed {
                        status: locked.status.to_string(),
                    });
                }
                expire_due_lots(&mut *tx, b, account_id, now).await?;
                let plans = tick_locked(&mut *tx, b, base, account_id, now).await?.state;
                let mut refusals = Vec::new();
                let credits = live_total(&mut *tx, b, account_id, now).await?;
                if credits > 0 {
                    refusals.push(DeletionRefusal::Credits { credits });
                }
                if let Some(pp) = crate::postpaid::load_postpaid(&mut *tx, b, account_id).await? {
                    if pp.balance.minor != 0 {
                        refusals.push(DeletionRefusal::Money {
                            balance: pp.balance,
                        });
                    }
                }
                let unfinished: i64 = sqlx::query_scalar(&b.sql(
            "SELECT COUNT(*) FROM jobs WHERE account_id = ? AND state IN ('QUEUED', 'RUNNING')",
        ))
        .bind(account_id)
        .fetch_one(&mut *tx)
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
                if !refusals.is_empty() {
                    // The catch-up above is not worth a write of its own: roll it back.
                    return Err(StoreError::DeletionRefused(refusals));
                }
                set_status(
                    &mut *tx,
                    b,
                    account_id,
                    AccountStatus::Deleted,
                    "owner request",
                    now,
                )
                .await?;
                sqlx::query(
                    &b.sql("UPDATE accounts SET name = '', external_id = NULL WHERE id = ?"),
                )
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
            &b.sql(
                "UPDATE api_keys SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
            ),
        )
        .bind(now)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
                sqlx::query(&b.sql(
                    "UPDATE ledger_entries SET memo = '' WHERE account_id = ? AND memo <> ''",
                ))
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                blank_jobs(&mut *tx, b, account_id).await?;
                account_event(
                    &mut *tx,
                    b,
                    account_id,
                    BillingEventKind::AccountDeleted,
                    "owner request",
                    actor,
                    now,
                )
                .await?;
                let account = crate::accounts::load_account(&mut *tx, b, account_id).await?;
                Ok(AccountChange {
                    account,
                    cancelled: Vec::new(),
                    stopping: Vec::new(),
                    forfeited: 0,
                })
            })
        })
        .await
    }

    /// Closed accounts (terminated or deleted) whose content is not purged yet.
    pub async fn accounts_to_purge(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(&self.backend.sql(
            "SELECT id FROM accounts WHERE status IN ('terminated', 'deleted') \
             AND purged_at IS NULL ORDER BY status_changed_at LIMIT ?",
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    /// The stored files of an account's jobs (not deleted yet).
    pub async fn account_artifacts(
        &self,
        account_id: &str,
    ) -> Result<Vec<ExpiredArtifact>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(&self.backend.sql(
            "SELECT a.job_id, a.kind, a.location FROM artifacts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.account_id = ? AND a.deleted_at IS NULL ORDER BY a.job_id, a.kind",
        ))
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, kind, location)| ExpiredArtifact {
                job_id,
                kind,
                location,
            })
            .collect())
    }

    /// Ends the purge of a closed account once its files are deleted: prompts and
    /// request data blanked, its videos' retention ended (a download says
    /// ARTIFACT_EXPIRED). False, and nothing written, while a job still runs or a file
    /// is left (the sweeper comes back).
    pub async fn finish_purge(
        &self,
        account_id: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let b = self.backend;
        let account_id = account_id.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                lock_account(&mut *tx, b, account_id).await?;
                let busy: i64 = sqlx::query_scalar(&b.sql(
            "SELECT COUNT(*) FROM jobs WHERE account_id = ? AND state IN ('QUEUED', 'RUNNING')",
        ))
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
                let files: i64 = sqlx::query_scalar(&b.sql(
                    "SELECT COUNT(*) FROM artifacts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.account_id = ? AND a.deleted_at IS NULL",
                ))
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
                if busy > 0 || files > 0 {
                    return Ok(false);
                }
                blank_jobs(&mut *tx, b, account_id).await?;
                sqlx::query(&b.sql(
                    "UPDATE artifacts SET expires_at = ? WHERE expires_at > ? AND job_id IN \
             (SELECT id FROM jobs WHERE account_id = ?)",
                ))
                .bind(now)
                .bind(now)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&b.sql("UPDATE accounts SET purged_at = ? WHERE id = ?"))
                    .bind(now)
                    .bind(account_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(true)
            })
        })
        .await
    }
}

/// Removes what a job row holds of the person behind it; the money columns stay, so
/// the ledger still verifies.
async fn blank_jobs(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "UPDATE jobs SET prompt = '', negative_prompt = '', metadata = '{}', callback_url = '', \
         external_id = NULL, idempotency_key = NULL, request_hash = '', failure_message = \
         CASE WHEN failure_message IS NULL THEN NULL ELSE '' END WHERE account_id = ?",
    ))
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
