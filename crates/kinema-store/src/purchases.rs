//! What the platform pays for: packs (one lot each, idempotent on `payment_ref`) and
//! the one trial an account ever gets (docs/api.md, "Catalogue, purchases and plans").

use kinema_ledger::{Allocation, Catalogue, NewLot, TrialOffer, TrialRecord, UnixMillis};
use sqlx::AnyConnection;

use crate::catalog::catalogue_in;
use crate::entries::{append_entry, EntryDraft};
use crate::events::{append_event, EventDraft};
use crate::locks::lock_account;
use crate::lots::{expire_due_lots, insert_lot, load_lot};
use crate::rows::PaymentRow;
use crate::tx::Tx;
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

/// The payment for `payment_ref` and what it bought (JSON) when it is the same
/// purchase presented again (same account, kind and item); `PaymentRefConflict` when
/// the ref paid for something else.
pub(crate) async fn replayed_payment(
    tx: &mut Tx<'_>,
    payment_ref: &str,
    account_id: &str,
    kind: &str,
    item_id: &str,
) -> Result<Option<(Payment, serde_json::Value)>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as("SELECT * FROM payments WHERE payment_ref = $1")
        .bind(payment_ref)
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let payment = row.payment()?;
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
    Ok(Some((payment, serde_json::from_str(&row.result)?)))
}

pub(crate) async fn insert_payment(
    tx: &mut Tx<'_>,
    payment: &Payment,
    result: &serde_json::Value,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO payments (payment_ref, account_id, kind, item_id, amount_minor, currency, \
         result, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&payment.payment_ref)
    .bind(&payment.account_id)
    .bind(&payment.kind)
    .bind(&payment.item_id)
    .bind(payment.amount.minor)
    .bind(payment.amount.currency.as_str())
    .bind(result.to_string())
    .bind(payment.created_at)
    .execute(tx.conn())
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
    tx: &mut Tx<'_>,
    account_id: &str,
    lot: &NewLot,
    actor: &str,
    memo: &str,
    now: UnixMillis,
) -> Result<(Lot, LedgerEntry), StoreError> {
    let kind: EntryKind = lot.entry_kind().as_str().parse()?;
    let source = lot.source.label();
    let created = insert_lot(
        tx,
        account_id,
        &source,
        lot.credits,
        lot.expires_at,
        lot.granted_at,
    )
    .await?;
    let entry = append_entry(
        tx,
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
        let base = base.clone();
        let (account_id, pack_id) = (account_id.to_owned(), pack_id.to_owned());
        let (payment_ref, actor) = (payment_ref.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let purchase = Purchase {
                    account_id: &account_id,
                    pack_id: &pack_id,
                    payment_ref: &payment_ref,
                    actor: &actor,
                };
                purchase_pack(&mut tx, &base, purchase, now).await
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
        let (account_id, offer, actor) = (account_id.to_owned(), *offer, actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move { start_trial(&mut tx, &account_id, &offer, &actor, now).await })
        })
        .await
    }

    pub async fn trial(&self, account_id: &str) -> Result<Option<TrialRecord>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_trial(&mut conn, account_id).await
    }
}

/// Who buys which pack with which payment.
struct Purchase<'a> {
    account_id: &'a str,
    pack_id: &'a str,
    payment_ref: &'a str,
    actor: &'a str,
}

async fn purchase_pack(
    tx: &mut Tx<'_>,
    base: &Catalogue,
    p: Purchase<'_>,
    now: UnixMillis,
) -> Result<PackPurchased, StoreError> {
    let account = lock_account(tx, p.account_id).await?;
    if let Some((payment, result)) =
        replayed_payment(tx, p.payment_ref, p.account_id, "pack", p.pack_id).await?
    {
        let lot_id = result["lot_id"]
            .as_i64()
            .ok_or_else(|| StoreError::Corrupt("pack payment without its lot".into()))?;
        let lot = load_lot(tx, lot_id).await?;
        return Ok(PackPurchased {
            payment,
            lot,
            created: false,
        });
    }
    account.require_open()?;
    account.require_billing(BillingMode::Prepaid, "buying a pack")?;
    let cat = catalogue_in(tx.conn(), base).await?;
    let bought = kinema_ledger::purchase_pack(cat.pack(p.pack_id)?, now)?;
    expire_due_lots(tx, p.account_id, now).await?;
    let (lot, _) =
        grant_new_lot(tx, p.account_id, &bought.lot, p.actor, p.payment_ref, now).await?;
    let payment = Payment {
        payment_ref: p.payment_ref.to_string(),
        account_id: p.account_id.to_string(),
        kind: "pack".into(),
        item_id: p.pack_id.to_string(),
        amount: bought.price,
        created_at: now,
    };
    insert_payment(tx, &payment, &serde_json::json!({ "lot_id": lot.id })).await?;
    let event = EventDraft {
        kind: Some(BillingEventKind::PackPurchase),
        amount: Some(bought.price),
        payment_ref: Some(p.payment_ref),
        detail: serde_json::json!({ "pack_id": p.pack_id, "lot_id": lot.id }).to_string(),
        effective_at: now,
        ..EventDraft::default()
    };
    append_event(tx, p.account_id, event, now).await?;
    Ok(PackPurchased {
        payment,
        lot,
        created: true,
    })
}

async fn start_trial(
    tx: &mut Tx<'_>,
    account_id: &str,
    offer: &TrialOffer,
    actor: &str,
    now: UnixMillis,
) -> Result<TrialStarted, StoreError> {
    let account = lock_account(tx, account_id).await?;
    account.require_open()?;
    let previous = load_trial(tx.conn(), account_id).await?;
    let started = kinema_ledger::start_trial(previous.as_ref(), offer, now)?;
    account.require_billing(BillingMode::Prepaid, "a trial")?;
    expire_due_lots(tx, account_id, now).await?;
    let (lot, _) = grant_new_lot(tx, account_id, &started.lot, actor, "", now).await?;
    sqlx::query(
        "INSERT INTO trials (account_id, started_at, ends_at, lot_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(account_id)
    .bind(started.trial.started_at)
    .bind(started.trial.ends_at)
    .bind(lot.id)
    .execute(tx.conn())
    .await?;
    let event = EventDraft {
        kind: Some(BillingEventKind::TrialStarted),
        detail: serde_json::to_string(&started.trial)?,
        effective_at: now,
        ..EventDraft::default()
    };
    append_event(tx, account_id, event, now).await?;
    Ok(TrialStarted {
        trial: started.trial,
        lot,
    })
}

pub(crate) async fn load_trial(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<TrialRecord>, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT started_at, ends_at FROM trials WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(started_at, ends_at)| TrialRecord {
        started_at,
        ends_at,
    }))
}
