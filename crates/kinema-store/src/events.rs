//! Billing events: the append-only record of money the platform collects or owes
//! back (subscription charges, pack purchases, refunds owed, postpaid usage and
//! top-ups) and of plan and account state changes, next to the credit ledger.

use kinema_ledger::{Money, PostpaidEffect, SubscriptionEffect, UnixMillis};

use crate::rows::EventRow;
use crate::tx::Tx;
use crate::{BillingEvent, BillingEventKind, Store, StoreError};

/// An event to append.
#[derive(Debug, Default)]
pub(crate) struct EventDraft<'a> {
    pub kind: Option<BillingEventKind>,
    pub amount: Option<Money>,
    pub subscription_id: Option<&'a str>,
    pub plan_id: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub payment_ref: Option<&'a str>,
    pub detail: String,
    pub effective_at: UnixMillis,
}

pub(crate) async fn append_event(
    tx: &mut Tx<'_>,
    account_id: &str,
    draft: EventDraft<'_>,
    now: UnixMillis,
) -> Result<BillingEvent, StoreError> {
    let kind = draft
        .kind
        .ok_or_else(|| StoreError::Invalid("billing event without a kind".into()))?;
    let (minor, currency) = match draft.amount {
        Some(m) => {
            if m.minor < 0 {
                return Err(StoreError::Invalid(format!(
                    "billing event {kind} with a negative amount {}",
                    m.minor
                )));
            }
            (m.minor, m.currency.as_str().to_string())
        }
        None => (0, String::new()),
    };
    let detail = if draft.detail.is_empty() {
        "{}".to_string()
    } else {
        draft.detail
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO billing_events (account_id, kind, amount_minor, currency, subscription_id, \
         plan_id, job_id, payment_ref, detail, effective_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(account_id)
    .bind(kind.as_str())
    .bind(minor)
    .bind(&currency)
    .bind(draft.subscription_id)
    .bind(draft.plan_id)
    .bind(draft.job_id)
    .bind(draft.payment_ref)
    .bind(&detail)
    .bind(draft.effective_at)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    Ok(BillingEvent {
        id,
        account_id: account_id.to_string(),
        kind,
        amount: draft.amount,
        subscription_id: draft.subscription_id.map(str::to_string),
        plan_id: draft.plan_id.map(str::to_string),
        job_id: draft.job_id.map(str::to_string),
        payment_ref: draft.payment_ref.map(str::to_string),
        detail,
        effective_at: draft.effective_at,
        created_at: now,
    })
}

/// The billing event of a subscription effect (lot grants are ledger entries and have
/// none: `None`).
pub(crate) fn subscription_event(
    effect: &SubscriptionEffect,
    payment_ref: Option<&str>,
) -> Result<Option<(BillingEventKind, EventParts)>, StoreError> {
    use SubscriptionEffect as E;
    let detail = serde_json::to_string(effect)?;
    let parts = |subscription_id: &str, plan_id: Option<&str>, amount, at| EventParts {
        subscription_id: Some(subscription_id.to_string()),
        plan_id: plan_id.map(str::to_string),
        amount,
        effective_at: at,
        detail: detail.clone(),
        payment_ref: payment_ref.map(str::to_string),
    };
    Ok(Some(match effect {
        E::GrantLot(_) => return Ok(None),
        E::Charge {
            subscription_id,
            plan_id,
            amount,
            at,
            ..
        } => (
            BillingEventKind::Charge,
            parts(subscription_id, Some(plan_id), Some(*amount), *at),
        ),
        E::SeatsCharge {
            subscription_id,
            plan_id,
            amount,
            at,
            ..
        } => (
            BillingEventKind::Charge,
            parts(subscription_id, Some(plan_id), Some(*amount), *at),
        ),
        E::RefundOwed {
            subscription_id,
            plan_id,
            amount,
            at,
            ..
        } => (
            BillingEventKind::RefundOwed,
            parts(subscription_id, Some(plan_id), Some(*amount), *at),
        ),
        E::Started {
            subscription_id,
            plan_id,
            at,
        } => (
            BillingEventKind::SubscriptionStarted,
            parts(subscription_id, Some(plan_id), None, *at),
        ),
        E::Queued {
            subscription_id,
            plan_id,
            at,
            ..
        } => (
            BillingEventKind::SubscriptionQueued,
            parts(subscription_id, Some(plan_id), None, *at),
        ),
        E::Renewed {
            subscription_id,
            at,
            ..
        } => (
            BillingEventKind::SubscriptionRenewed,
            parts(subscription_id, None, None, *at),
        ),
        // No money moves: the price it would have cost is in the detail.
        E::RenewalSkipped {
            subscription_id,
            plan_id,
            at,
            ..
        } => (
            BillingEventKind::RenewalSkipped,
            parts(subscription_id, Some(plan_id), None, *at),
        ),
        E::CancellationScheduled {
            subscription_id,
            at,
            ..
        } => (
            BillingEventKind::CancellationScheduled,
            parts(subscription_id, None, None, *at),
        ),
        E::CancellationWithdrawn {
            subscription_id,
            at,
        } => (
            BillingEventKind::CancellationWithdrawn,
            parts(subscription_id, None, None, *at),
        ),
        E::Ended {
            subscription_id,
            plan_id,
            at,
            ..
        } => (
            BillingEventKind::SubscriptionEnded,
            parts(subscription_id, Some(plan_id), None, *at),
        ),
    }))
}

/// The billing event of a postpaid effect.
pub(crate) fn postpaid_event(
    effect: &PostpaidEffect,
) -> Result<(BillingEventKind, EventParts), StoreError> {
    use PostpaidEffect as E;
    let detail = serde_json::to_string(effect)?;
    let parts = |amount, at| EventParts {
        amount,
        effective_at: at,
        detail: detail.clone(),
        ..EventParts::default()
    };
    Ok(match effect {
        E::Charged { amount, at, .. } => (BillingEventKind::UsageCharge, parts(Some(*amount), *at)),
        E::ToppedUp { amount, at, .. } => (BillingEventKind::TopUp, parts(Some(*amount), *at)),
        E::ArrearsStarted { at } => (BillingEventKind::ArrearsStarted, parts(None, *at)),
        E::Suspended { at } => (BillingEventKind::ArrearsSuspended, parts(None, *at)),
        E::Terminated { at } => (BillingEventKind::ArrearsTerminated, parts(None, *at)),
        E::Reactivated { at } => (BillingEventKind::Reactivated, parts(None, *at)),
    })
}

/// The owned parts of an event, before it borrows them into an [`EventDraft`].
#[derive(Debug, Default, Clone)]
pub(crate) struct EventParts {
    pub subscription_id: Option<String>,
    pub plan_id: Option<String>,
    pub amount: Option<Money>,
    pub effective_at: UnixMillis,
    pub detail: String,
    pub payment_ref: Option<String>,
}

impl EventParts {
    pub fn draft<'a>(&'a self, kind: BillingEventKind, job_id: Option<&'a str>) -> EventDraft<'a> {
        EventDraft {
            kind: Some(kind),
            amount: self.amount,
            subscription_id: self.subscription_id.as_deref(),
            plan_id: self.plan_id.as_deref(),
            job_id,
            payment_ref: self.payment_ref.as_deref(),
            detail: self.detail.clone(),
            effective_at: self.effective_at,
        }
    }
}

impl Store {
    /// An account's billing events oldest first, after event id `after_id`.
    pub async fn billing_events(
        &self,
        account_id: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT * FROM billing_events WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(account_id)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(BillingEvent::try_from).collect()
    }
}
