//! Pay-as-you-go accounts (CONTRACT.md §4): a money balance instead of lots. A
//! succeeded job is charged the money price fixed at its submission; the ledger
//! crate's rules move the account through arrears, suspension and termination.

use kinema_ledger::{
    Money, PostpaidAccount, PostpaidEffect, PostpaidPhase, PostpaidPolicy, UnixMillis,
};
use sqlx::{AnyConnection, Row};

use crate::credits::lock_account;
use crate::db::Backend;
use crate::events::{append_event, postpaid_event};
use crate::purchases::{check_payment_ref, insert_payment, replayed_payment};
use crate::{BillingMode, Job, Payment, PostpaidAdvanced, Store, StoreError, ToppedUp};

fn phase_str(p: PostpaidPhase) -> &'static str {
    match p {
        PostpaidPhase::Active => "active",
        PostpaidPhase::InArrears => "in_arrears",
        PostpaidPhase::Suspended => "suspended",
        PostpaidPhase::Terminated => "terminated",
    }
}

fn parse_phase(s: &str) -> Result<PostpaidPhase, StoreError> {
    Ok(match s {
        "active" => PostpaidPhase::Active,
        "in_arrears" => PostpaidPhase::InArrears,
        "suspended" => PostpaidPhase::Suspended,
        "terminated" => PostpaidPhase::Terminated,
        other => return Err(StoreError::Corrupt(format!("postpaid phase {other:?}"))),
    })
}

pub(crate) async fn load_postpaid(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<Option<PostpaidAccount>, StoreError> {
    let Some(r) = sqlx::query(&b.sql("SELECT * FROM postpaid_accounts WHERE account_id = ?"))
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let currency: String = r.try_get("currency")?;
    Ok(Some(PostpaidAccount {
        balance: Money::new(
            r.try_get("balance_minor")?,
            currency
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("postpaid currency: {e}")))?,
        ),
        arrears_since: r.try_get("arrears_since")?,
        phase: parse_phase(&r.try_get::<String, _>("phase")?)?,
        terminated_at: r.try_get("terminated_at")?,
    }))
}

pub(crate) async fn insert_postpaid(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    account: &PostpaidAccount,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "INSERT INTO postpaid_accounts (account_id, balance_minor, currency, arrears_since, phase, \
         terminated_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ))
    .bind(account_id)
    .bind(account.balance.minor)
    .bind(account.balance.currency.as_str())
    .bind(account.arrears_since)
    .bind(phase_str(account.phase))
    .bind(account.terminated_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn save_postpaid(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    account: &PostpaidAccount,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "UPDATE postpaid_accounts SET balance_minor = ?, currency = ?, arrears_since = ?, \
         phase = ?, terminated_at = ?, updated_at = ? WHERE account_id = ?",
    ))
    .bind(account.balance.minor)
    .bind(account.balance.currency.as_str())
    .bind(account.arrears_since)
    .bind(phase_str(account.phase))
    .bind(account.terminated_at)
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes the effects as billing events; a suspension cancels the account's queued
/// jobs, a termination closes the account (its queued jobs cancelled, running ones
/// asked to stop; the sweeper purges its content). Returns the jobs cancelled, for
/// their watchers.
#[allow(clippy::too_many_arguments)]
async fn record_effects(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    effects: &[PostpaidEffect],
    job_id: Option<&str>,
    payment_ref: Option<&str>,
    refund_on_cancel: bool,
    refund_grace_ms: i64,
    now: UnixMillis,
) -> Result<Vec<String>, StoreError> {
    let mut cancelled = Vec::new();
    for effect in effects {
        let (kind, mut parts) = postpaid_event(effect)?;
        if matches!(effect, PostpaidEffect::ToppedUp { .. }) {
            parts.payment_ref = payment_ref.map(str::to_string);
        }
        let job = match effect {
            PostpaidEffect::Charged { .. } => job_id,
            _ => None,
        };
        append_event(conn, b, account_id, parts.draft(kind, job), now).await?;
        // Suspended for arrears as an operator suspends (CONTRACT.md §4, §5): no new
        // jobs, and the queued ones are cancelled rather than run up more debt.
        if let PostpaidEffect::Suspended { .. } = effect {
            let ids = crate::lifecycle::cancel_queued_jobs(
                conn,
                b,
                account_id,
                refund_on_cancel,
                refund_grace_ms,
                "system",
                now,
            )
            .await?;
            cancelled.extend(ids);
        }
        if let PostpaidEffect::Terminated { at } = effect {
            let (ids, _stopping) = crate::lifecycle::close_account(
                conn,
                b,
                account_id,
                crate::AccountStatus::Terminated,
                "arrears",
                *at,
                refund_on_cancel,
                refund_grace_ms,
                "system",
                now,
            )
            .await?;
            cancelled.extend(ids);
        }
    }
    Ok(cancelled)
}

/// Applies the arrears rules that came due by `now` to a postpaid account whose row
/// the caller has locked (suspension, termination: see `record_effects`). `None` when
/// nothing was due (or the account is prepaid); else the queued jobs it cancelled.
pub(crate) async fn catch_up(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    policy: &crate::StorePolicy,
    now: UnixMillis,
) -> Result<Option<Vec<Job>>, StoreError> {
    let Some(account) = load_postpaid(&mut *conn, b, account_id).await? else {
        return Ok(None);
    };
    let t = kinema_ledger::advance_postpaid(&account, &policy.postpaid, now);
    if t.effects.is_empty() {
        return Ok(None);
    }
    save_postpaid(&mut *conn, b, account_id, &t.account, now).await?;
    let cancelled = record_effects(
        &mut *conn,
        b,
        account_id,
        &t.effects,
        None,
        None,
        policy.refund_on_cancel,
        policy.refund_grace_ms,
        now,
    )
    .await?;
    Ok(Some(load_jobs(conn, b, &cancelled).await?))
}

/// The jobs with these ids, as they now stand.
async fn load_jobs(
    conn: &mut AnyConnection,
    b: Backend,
    ids: &[String],
) -> Result<Vec<Job>, StoreError> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.extend(crate::jobs::load_job(&mut *conn, b, id).await?);
    }
    Ok(jobs)
}

/// Charges a succeeded postpaid job its price (in the caller's transaction, which
/// holds the account lock).
pub(crate) async fn charge_succeeded(
    conn: &mut AnyConnection,
    b: Backend,
    store: &Store,
    job: &Job,
    now: UnixMillis,
) -> Result<Vec<Job>, StoreError> {
    let Some(price) = job.price else {
        return Err(StoreError::Corrupt(format!(
            "postpaid job {} has no price",
            job.id
        )));
    };
    let account = load_postpaid(conn, b, &job.account_id)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt("postpaid job of an account without a balance".into())
        })?;
    let t = kinema_ledger::charge_job(&account, &store.policy.postpaid, &job.id, price, now)?;
    save_postpaid(conn, b, &job.account_id, &t.account, now).await?;
    sqlx::query(&b.sql("UPDATE jobs SET charged_minor = ? WHERE id = ?"))
        .bind(price.minor)
        .bind(&job.id)
        .execute(&mut *conn)
        .await?;
    // A suspension that came due while the job ran cancels the account's queued jobs
    // here; they go back to the caller for their watchers.
    let cancelled = record_effects(
        conn,
        b,
        &job.account_id,
        &t.effects,
        Some(&job.id),
        None,
        store.policy.refund_on_cancel,
        store.policy.refund_grace_ms,
        now,
    )
    .await?;
    load_jobs(conn, b, &cancelled).await
}

impl Store {
    pub async fn postpaid_account(
        &self,
        account_id: &str,
    ) -> Result<Option<PostpaidAccount>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_postpaid(&mut conn, self.backend, account_id).await
    }

    pub fn postpaid_policy(&self) -> &PostpaidPolicy {
        &self.policy.postpaid
    }

    /// Adds the platform's payment `payment_ref` of `amount` to a postpaid balance;
    /// reaching zero or above ends arrears or suspension at once. The same
    /// `payment_ref` again changes nothing.
    pub async fn top_up(
        &self,
        account_id: &str,
        amount: Money,
        payment_ref: &str,
        now: UnixMillis,
    ) -> Result<ToppedUp, StoreError> {
        check_payment_ref(payment_ref)?;
        let b = self.backend;
        let account_id = account_id.to_owned();
        let payment_ref = payment_ref.to_owned();
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                let payment_ref = payment_ref.as_str();
                let locked = lock_account(&mut *tx, b, account_id).await?;
                let item = format!("{} {}", amount.minor, amount.currency);
                if replayed_payment(&mut *tx, b, payment_ref, account_id, "top_up", &item)
                    .await?
                    .is_some()
                {
                    let account = load_postpaid(&mut *tx, b, account_id)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("top-up of a prepaid account".into()))?;
                    return Ok(ToppedUp {
                        account,
                        effects: Vec::new(),
                        cancelled: Vec::new(),
                        created: false,
                    });
                }
                locked.require_billing(BillingMode::Postpaid, "a top-up")?;
                locked.require_open()?;
                let account = load_postpaid(&mut *tx, b, account_id)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt("postpaid account without a balance".into())
                    })?;
                let t = kinema_ledger::top_up(&account, &this.policy.postpaid, amount, now)?;
                save_postpaid(&mut *tx, b, account_id, &t.account, now).await?;
                let cancelled = record_effects(
                    &mut *tx,
                    b,
                    account_id,
                    &t.effects,
                    None,
                    Some(payment_ref),
                    this.policy.refund_on_cancel,
                    this.policy.refund_grace_ms,
                    now,
                )
                .await?;
                insert_payment(
                    &mut *tx,
                    b,
                    &Payment {
                        payment_ref: payment_ref.to_string(),
                        account_id: account_id.to_string(),
                        kind: "top_up".into(),
                        item_id: item,
                        amount,
                        created_at: now,
                    },
                    &serde_json::json!({}),
                )
                .await?;
                Ok(ToppedUp {
                    account: t.account,
                    effects: t.effects,
                    cancelled: load_jobs(&mut *tx, b, &cancelled).await?,
                    created: true,
                })
            })
        })
        .await
    }

    /// Records the phases the clock has moved postpaid accounts in arrears through
    /// (suspension, then termination, which closes the account). Returns the accounts
    /// that changed.
    pub async fn advance_postpaid_accounts(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<PostpaidAdvanced>, StoreError> {
        let b = self.backend;
        let policy = self.policy.postpaid;
        let suspend_before = now.saturating_sub(policy.grace_ms);
        let terminate_before = suspend_before.saturating_sub(policy.suspension_limit_ms);
        let candidates: Vec<(String, String)> = sqlx::query_as(&b.sql(
            "SELECT account_id, phase FROM postpaid_accounts WHERE arrears_since IS NOT NULL \
             AND terminated_at IS NULL AND ((phase <> 'suspended' AND arrears_since <= ?) \
             OR arrears_since <= ?) ORDER BY arrears_since LIMIT ?",
        ))
        .bind(suspend_before)
        .bind(terminate_before)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut changed = Vec::new();
        for (account_id, _) in candidates {
            let policy = self.policy.clone();
            let advanced = self
                .write(move |tx| {
                    Box::pin(async move {
                        lock_account(&mut *tx, b, &account_id).await?;
                        let cancelled = catch_up(&mut *tx, b, &account_id, &policy, now).await?;
                        Ok(cancelled.map(|cancelled| PostpaidAdvanced {
                            account_id,
                            cancelled,
                        }))
                    })
                })
                .await?;
            changed.extend(advanced);
        }
        Ok(changed)
    }
}
