//! What the platform pays for: packs (one lot each, idempotent on `payment_ref`) and
//! the one trial an account ever gets (CONTRACT.md §3).

use kinema_ledger::{Allocation, Catalogue, Money, NewLot, TrialOffer, TrialRecord, UnixMillis};
use sqlx::{AnyConnection, Row};

use crate::catalog::catalogue_in;
use crate::credits::{append_entry, expire_due_lots, insert_lot, lock_account, EntryDraft};
use crate::db::Backend;
use crate::events::{append_event, EventDraft};
use crate::{
    BillingEventKind, BillingMode, EntryKind, LedgerEntry, Lot, PackPurchased, Payment, Store,
    StoreError, TrialStarted,
};

/// Longest `payment_ref` accepted.
pub const MAX_PAYMENT_REF_CHARS: usize = 200;

pub(crate) fn check_payment_ref(payment_ref: &str) -> Result<(), StoreError> {
    if payment_ref.trim().is_empty() {
        return Err(StoreError::Invalid("payment_ref must not be empty".into()));
    }
    if payment_ref.chars().count() > MAX_PAYMENT_REF_CHARS {
        return Err(StoreError::Invalid(format!(
            "payment_ref is longer than {MAX_PAYMENT_REF_CHARS} characters"
        )));
    }
    Ok(())
}

/// A recorded payment and what it bought (JSON), if `payment_ref` is known.
pub(crate) async fn find_payment(
    conn: &mut AnyConnection,
    b: Backend,
    payment_ref: &str,
) -> Result<Option<(Payment, serde_json::Value)>, StoreError> {
    let Some(r) = sqlx::query(&b.sql("SELECT * FROM payments WHERE payment_ref = ?"))
        .bind(payment_ref)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let currency: String = r.try_get("currency")?;
    let payment = Payment {
        payment_ref: r.try_get("payment_ref")?,
        account_id: r.try_get("account_id")?,
        kind: r.try_get("kind")?,
        item_id: r.try_get("item_id")?,
        amount: Money::new(
            r.try_get("amount_minor")?,
            currency
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("payment currency: {e}")))?,
        ),
        created_at: r.try_get("created_at")?,
    };
    let result: String = r.try_get("result")?;
    Ok(Some((payment, serde_json::from_str(&result)?)))
}

/// The payment for `payment_ref` when it is the same purchase presented again (same
/// account, kind and item); `PaymentRefConflict` when the ref paid for something else.
pub(crate) async fn replayed_payment(
    conn: &mut AnyConnection,
    b: Backend,
    payment_ref: &str,
    account_id: &str,
    kind: &str,
    item_id: &str,
) -> Result<Option<(Payment, serde_json::Value)>, StoreError> {
    let Some((payment, result)) = find_payment(conn, b, payment_ref).await? else {
        return Ok(None);
    };
    if payment.account_id != account_id || payment.kind != kind || payment.item_id != item_id {
        return Err(StoreError::PaymentRefConflict {
            payment_ref: payment_ref.to_string(),
            used_for: if payment.account_id == account_id {
                format!("{} {:?}", payment.kind, payment.item_id)
            } else {
                "another account".to_string()
            },
        });
    }
    Ok(Some((payment, result)))
}

pub(crate) async fn insert_payment(
    conn: &mut AnyConnection,
    b: Backend,
    payment: &Payment,
    result: &serde_json::Value,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(&b.sql(
        "INSERT INTO payments (payment_ref, account_id, kind, item_id, amount_minor, currency, \
         result, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ))
    .bind(&payment.payment_ref)
    .bind(&payment.account_id)
    .bind(&payment.kind)
    .bind(&payment.item_id)
    .bind(payment.amount.minor)
    .bind(payment.amount.currency.as_str())
    .bind(result.to_string())
    .bind(payment.created_at)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // Another account recorded the same ref at the same moment.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::PaymentRefConflict {
                payment_ref: payment.payment_ref.clone(),
                used_for: "another purchase".into(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the lot a rule asked for, with the entry of its source's kind.
pub(crate) async fn grant_new_lot(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    lot: &NewLot,
    actor: &str,
    memo: &str,
    now: UnixMillis,
) -> Result<(Lot, LedgerEntry), StoreError> {
    let kind: EntryKind = lot.entry_kind().as_str().parse()?;
    let created = insert_lot(
        conn,
        b,
        account_id,
        &lot.source.label(),
        lot.credits,
        lot.expires_at,
        lot.granted_at,
    )
    .await?;
    let entry = append_entry(
        conn,
        b,
        EntryDraft {
            account_id,
            kind,
            amount: lot.credits,
            allocations: &[Allocation {
                lot_id: created.id,
                amount: lot.credits,
            }],
            job_id: None,
            actor,
            memo,
        },
        now,
    )
    .await?;
    Ok((created, entry))
}

pub(crate) async fn load_lot(
    conn: &mut AnyConnection,
    b: Backend,
    lot_id: i64,
) -> Result<Lot, StoreError> {
    let r = sqlx::query(&b.sql("SELECT * FROM lots WHERE id = ?"))
        .bind(lot_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("lot"))?;
    Ok(Lot {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        source: r.try_get("source")?,
        original: r.try_get("original")?,
        remaining: r.try_get("remaining")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Records the platform's payment `payment_ref` for pack `pack_id` and grants its
    /// lot (expiring at now + validity) with a PURCHASE entry, at the pack's price in
    /// effect now. The same `payment_ref` again returns the first purchase unchanged.
    #[allow(clippy::too_many_arguments)]
    pub async fn purchase_pack(
        &self,
        base: &Catalogue,
        account_id: &str,
        pack_id: &str,
        payment_ref: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<PackPurchased, StoreError> {
        check_payment_ref(payment_ref)?;
        let b = self.backend;
        let base = base.clone();
        let account_id = account_id.to_owned();
        let pack_id = pack_id.to_owned();
        let payment_ref = payment_ref.to_owned();
        let actor = actor.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let base = &base;
                let account_id = account_id.as_str();
                let pack_id = pack_id.as_str();
                let payment_ref = payment_ref.as_str();
                let actor = actor.as_str();
                let account = lock_account(&mut *tx, b, account_id).await?;
                if let Some((payment, result)) =
                    replayed_payment(&mut *tx, b, payment_ref, account_id, "pack", pack_id).await?
                {
                    let lot_id = result["lot_id"].as_i64().ok_or_else(|| {
                        StoreError::Corrupt("pack payment without its lot".into())
                    })?;
                    let lot = load_lot(&mut *tx, b, lot_id).await?;
                    return Ok(PackPurchased {
                        payment,
                        lot,
                        created: false,
                    });
                }
                account.require_open()?;
                account.require_billing(BillingMode::Prepaid, "buying a pack")?;
                let cat = catalogue_in(&mut *tx, b, base).await?;
                let bought = kinema_ledger::purchase_pack(cat.pack(pack_id)?, now)?;
                expire_due_lots(&mut *tx, b, account_id, now).await?;
                let (lot, _) = grant_new_lot(
                    &mut *tx,
                    b,
                    account_id,
                    &bought.lot,
                    actor,
                    payment_ref,
                    now,
                )
                .await?;
                let payment = Payment {
                    payment_ref: payment_ref.to_string(),
                    account_id: account_id.to_string(),
                    kind: "pack".into(),
                    item_id: pack_id.to_string(),
                    amount: bought.price,
                    created_at: now,
                };
                insert_payment(
                    &mut *tx,
                    b,
                    &payment,
                    &serde_json::json!({ "lot_id": lot.id }),
                )
                .await?;
                append_event(
                    &mut *tx,
                    b,
                    account_id,
                    EventDraft {
                        kind: Some(BillingEventKind::PackPurchase),
                        amount: Some(bought.price),
                        payment_ref: Some(payment_ref),
                        plan_id: None,
                        detail: serde_json::json!({ "pack_id": pack_id, "lot_id": lot.id })
                            .to_string(),
                        effective_at: now,
                        ..EventDraft::default()
                    },
                    now,
                )
                .await?;
                Ok(PackPurchased {
                    payment,
                    lot,
                    created: true,
                })
            })
        })
        .await
    }

    /// Starts the account's one trial: a TRIAL lot expiring when the trial ends.
    /// A second one, ever, is refused with `TrialAlreadyUsed`.
    pub async fn start_trial(
        &self,
        account_id: &str,
        offer: &TrialOffer,
        actor: &str,
        now: UnixMillis,
    ) -> Result<TrialStarted, StoreError> {
        let b = self.backend;
        let account_id = account_id.to_owned();
        let offer = offer.clone();
        let actor = actor.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                let offer = &offer;
                let actor = actor.as_str();
                let account = lock_account(&mut *tx, b, account_id).await?;
                account.require_open()?;
                let previous = load_trial(&mut *tx, b, account_id).await?;
                let started = kinema_ledger::start_trial(previous.as_ref(), offer, now)?;
                account.require_billing(BillingMode::Prepaid, "a trial")?;
                expire_due_lots(&mut *tx, b, account_id, now).await?;
                let (lot, _) =
                    grant_new_lot(&mut *tx, b, account_id, &started.lot, actor, "", now).await?;
                sqlx::query(&b.sql(
            "INSERT INTO trials (account_id, started_at, ends_at, lot_id) VALUES (?, ?, ?, ?)",
        ))
        .bind(account_id)
        .bind(started.trial.started_at)
        .bind(started.trial.ends_at)
        .bind(lot.id)
        .execute(&mut *tx)
        .await?;
                append_event(
                    &mut *tx,
                    b,
                    account_id,
                    EventDraft {
                        kind: Some(BillingEventKind::TrialStarted),
                        detail: serde_json::to_string(&started.trial)?,
                        effective_at: now,
                        ..EventDraft::default()
                    },
                    now,
                )
                .await?;
                Ok(TrialStarted {
                    trial: started.trial,
                    lot,
                })
            })
        })
        .await
    }

    pub async fn trial(&self, account_id: &str) -> Result<Option<TrialRecord>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_trial(&mut conn, self.backend, account_id).await
    }
}

pub(crate) async fn load_trial(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<Option<TrialRecord>, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as(&b.sql("SELECT started_at, ends_at FROM trials WHERE account_id = ?"))
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(started_at, ends_at)| TrialRecord {
        started_at,
        ends_at,
    }))
}
