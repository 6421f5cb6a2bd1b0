//! Pay-as-you-go accounts (docs/api.md, "Postpaid accounts"): a money balance instead of lots. A
//! succeeded job is charged the money price fixed at its submission; the ledger
//! crate's rules move the account through arrears, suspension and termination.

use kinema_ledger::{Money, PostpaidAccount, PostpaidEffect, PostpaidPolicy, UnixMillis};
use sqlx::AnyConnection;

use crate::events::{append_event, postpaid_event};
use crate::locks::lock_account;
use crate::purchases::{check_payment_ref, insert_payment, replayed_payment};
use crate::rows::{phase_str, PostpaidRow};
use crate::tx::Tx;
use crate::{BillingMode, Job, Payment, PostpaidAdvanced, Store, StoreError, ToppedUp};

pub(crate) async fn load_postpaid(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<PostpaidAccount>, StoreError> {
    let row: Option<PostpaidRow> =
        sqlx::query_as("SELECT * FROM postpaid_accounts WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(PostpaidAccount::try_from).transpose()
}

/// The postpaid balance of an account the caller knows is postpaid.
async fn require_postpaid(
    tx: &mut Tx<'_>,
    account_id: &str,
) -> Result<PostpaidAccount, StoreError> {
    load_postpaid(tx.conn(), account_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("postpaid account without a balance".into()))
}

pub(crate) async fn insert_postpaid(
    tx: &mut Tx<'_>,
    account_id: &str,
    account: &PostpaidAccount,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO postpaid_accounts (account_id, balance_minor, currency, arrears_since, \
         phase, terminated_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account_id)
    .bind(account.balance.minor)
    .bind(account.balance.currency.as_str())
    .bind(account.arrears_since)
    .bind(phase_str(account.phase))
    .bind(account.terminated_at)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

pub(crate) async fn save_postpaid(
    tx: &mut Tx<'_>,
    account_id: &str,
    account: &PostpaidAccount,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE postpaid_accounts SET balance_minor = $1, currency = $2, arrears_since = $3, \
         phase = $4, terminated_at = $5, updated_at = $6 WHERE account_id = $7",
    )
    .bind(account.balance.minor)
    .bind(account.balance.currency.as_str())
    .bind(account.arrears_since)
    .bind(phase_str(account.phase))
    .bind(account.terminated_at)
    .bind(now)
    .bind(account_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Writes the effects as billing events; a suspension cancels the account's queued
/// jobs, a termination closes the account (its queued jobs cancelled, running ones
/// asked to stop; the sweeper purges its content). Returns the jobs cancelled, for
/// their watchers.
async fn record_effects(
    tx: &mut Tx<'_>,
    account_id: &str,
    effects: &[PostpaidEffect],
    job_id: Option<&str>,
    payment_ref: Option<&str>,
    now: UnixMillis,
) -> Result<Vec<Job>, StoreError> {
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
        append_event(tx, account_id, parts.draft(kind, job), now).await?;
        match effect {
            // Suspended for arrears as an operator suspends: no new jobs, and the
            // queued ones are cancelled rather than run up more debt.
            PostpaidEffect::Suspended { .. } => {
                let jobs =
                    crate::lifecycle::cancel_queued_jobs(tx, account_id, "system", now).await?;
                cancelled.extend(jobs);
            }
            PostpaidEffect::Terminated { at } => {
                let status = crate::AccountStatus::Terminated;
                let (jobs, _stopping) = crate::lifecycle::close_account(
                    tx, account_id, status, "arrears", *at, "system", now,
                )
                .await?;
                cancelled.extend(jobs);
            }
            _ => {}
        }
    }
    Ok(cancelled)
}

/// Applies the arrears rules that came due by `now` to a postpaid account whose row
/// the caller has locked (suspension, termination: see `record_effects`). `None` when
/// nothing was due (or the account is prepaid); else the queued jobs it cancelled.
pub(crate) async fn catch_up(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<Option<Vec<Job>>, StoreError> {
    let Some(account) = load_postpaid(tx.conn(), account_id).await? else {
        return Ok(None);
    };
    let t = kinema_ledger::advance_postpaid(&account, &tx.policy.postpaid, now);
    if t.effects.is_empty() {
        return Ok(None);
    }
    save_postpaid(tx, account_id, &t.account, now).await?;
    Ok(Some(
        record_effects(tx, account_id, &t.effects, None, None, now).await?,
    ))
}

/// Charges a succeeded postpaid job its price (in the caller's transaction, which
/// holds the account lock), and records it on `job`. Returns the queued jobs a
/// suspension that came due while the job ran cancelled, for their watchers.
pub(crate) async fn charge_succeeded(
    tx: &mut Tx<'_>,
    job: &mut Job,
    now: UnixMillis,
) -> Result<Vec<Job>, StoreError> {
    let Some(price) = job.price else {
        return Err(StoreError::Corrupt(format!(
            "postpaid job {} has no price",
            job.id
        )));
    };
    let account = require_postpaid(tx, &job.account_id).await?;
    let t = kinema_ledger::charge_job(&account, &tx.policy.postpaid, &job.id, price, now)?;
    save_postpaid(tx, &job.account_id, &t.account, now).await?;
    sqlx::query("UPDATE jobs SET charged_minor = $1 WHERE id = $2")
        .bind(price.minor)
        .bind(&job.id)
        .execute(tx.conn())
        .await?;
    job.charged_minor = price.minor;
    record_effects(tx, &job.account_id, &t.effects, Some(&job.id), None, now).await
}

impl Store {
    pub async fn postpaid_account(
        &self,
        account_id: &str,
    ) -> Result<Option<PostpaidAccount>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_postpaid(&mut conn, account_id).await
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
        let (account_id, payment_ref) = (account_id.to_owned(), payment_ref.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move { top_up(&mut tx, &account_id, amount, &payment_ref, now).await })
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
        let policy = self.policy.postpaid;
        let suspend_before = now.saturating_sub(policy.grace_ms);
        let terminate_before = suspend_before.saturating_sub(policy.suspension_limit_ms);
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT account_id FROM postpaid_accounts WHERE arrears_since IS NOT NULL \
             AND terminated_at IS NULL AND ((phase <> 'suspended' AND arrears_since <= $1) \
             OR arrears_since <= $2) ORDER BY arrears_since LIMIT $3",
        )
        .bind(suspend_before)
        .bind(terminate_before)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut changed = Vec::new();
        for account_id in candidates {
            let advanced = self
                .write(move |mut tx| {
                    Box::pin(async move {
                        lock_account(&mut tx, &account_id).await?;
                        let cancelled = catch_up(&mut tx, &account_id, now).await?;
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

async fn top_up(
    tx: &mut Tx<'_>,
    account_id: &str,
    amount: Money,
    payment_ref: &str,
    now: UnixMillis,
) -> Result<ToppedUp, StoreError> {
    let locked = lock_account(tx, account_id).await?;
    let item = format!("{} {}", amount.minor, amount.currency);
    if replayed_payment(tx, payment_ref, account_id, "top_up", &item)
        .await?
        .is_some()
    {
        let account = load_postpaid(tx.conn(), account_id)
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
    let account = require_postpaid(tx, account_id).await?;
    let t = kinema_ledger::top_up(&account, &tx.policy.postpaid, amount, now)?;
    save_postpaid(tx, account_id, &t.account, now).await?;
    let cancelled =
        record_effects(tx, account_id, &t.effects, None, Some(payment_ref), now).await?;
    let payment = Payment {
        payment_ref: payment_ref.to_string(),
        account_id: account_id.to_string(),
        kind: "top_up".into(),
        item_id: item,
        amount,
        created_at: now,
    };
    insert_payment(tx, &payment, &serde_json::json!({})).await?;
    Ok(ToppedUp {
        account: t.account,
        effects: t.effects,
        cancelled,
        created: true,
    })
}
