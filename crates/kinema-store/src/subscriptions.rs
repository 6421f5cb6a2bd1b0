//! Plans (docs/api.md, "Catalogue, purchases and plans"): the account's `kinema_ledger::SubscriptionState` is kept as
//! JSON; every change runs the ledger crate's state machine and writes its effects in
//! the same transaction (lots granted with SUBSCRIPTION_GRANT entries, charges and
//! refunds owed as billing events).

use kinema_ledger::{Catalogue, SubscriptionEffect, SubscriptionState, Transition, UnixMillis};
use sqlx::AnyConnection;

use crate::catalog::catalogue_in;
use crate::db::new_id;
use crate::events::{append_event, subscription_event};
use crate::locks::lock_account;
use crate::lots::expire_due_lots;
use crate::purchases::{check_payment_ref, grant_new_lot, insert_payment, replayed_payment};
use crate::tx::Tx;
use crate::{
    BillingEvent, BillingMode, CancelTarget, Lot, NotFound, Payment, Store, StoreError,
    SubscriptionChange,
};

pub(crate) async fn load_subscriptions(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<SubscriptionState, StoreError> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM subscriptions WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    match state {
        Some(s) => Ok(serde_json::from_str(&s)?),
        None => Ok(SubscriptionState::default()),
    }
}

async fn save_subscriptions(
    tx: &mut Tx<'_>,
    account_id: &str,
    state: &SubscriptionState,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions (account_id, state, next_due_at, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO UPDATE SET state = excluded.state, \
         next_due_at = excluded.next_due_at, updated_at = excluded.updated_at",
    )
    .bind(account_id)
    .bind(serde_json::to_string(state)?)
    .bind(state.next_due_at())
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Writes a transition's effects and its new state. The rules never grant a month
/// already over (a sweeper that slept skips it: RENEWAL_SKIPPED, or REFUND_OWED for
/// missed months); lots that fall due while writing are expired as usual.
pub(crate) async fn apply_transition(
    tx: &mut Tx<'_>,
    account_id: &str,
    t: &Transition,
    payment_ref: Option<&str>,
    actor: &str,
    now: UnixMillis,
) -> Result<(Vec<Lot>, Vec<BillingEvent>), StoreError> {
    let mut lots = Vec::new();
    let mut events = Vec::new();
    for effect in &t.effects {
        if let SubscriptionEffect::GrantLot(lot) = effect {
            expire_due_lots(tx, account_id, now).await?;
            lots.push(grant_new_lot(tx, account_id, lot, actor, "", now).await?.0);
            continue;
        }
        // The payment_ref belongs to the charge it paid: the new plan's first period.
        let reference = match effect {
            SubscriptionEffect::Charge { period: 0, at, .. } if *at == now => payment_ref,
            SubscriptionEffect::SeatsCharge { at, .. } if *at == now => payment_ref,
            _ => None,
        };
        if let Some((kind, parts)) = subscription_event(effect, reference)? {
            events.push(append_event(tx, account_id, parts.draft(kind, None), now).await?);
        }
    }
    expire_due_lots(tx, account_id, now).await?;
    save_subscriptions(tx, account_id, &t.state, now).await?;
    Ok((lots, events))
}

/// The first-period charge of `subscription_id` among `effects`.
fn first_charge(
    effects: &[SubscriptionEffect],
    subscription_id: &str,
) -> Option<kinema_ledger::Money> {
    effects.iter().find_map(|e| match e {
        SubscriptionEffect::Charge {
            subscription_id: id,
            period: 0,
            amount,
            ..
        } if id == subscription_id => Some(*amount),
        _ => None,
    })
}

impl Store {
    /// Buys `plan_id`: with nothing current it starts now, charged and its first month
    /// granted; otherwise it is paid now and queued to start when the current plan
    /// ends. With a `payment_ref`, presenting it again changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        &self,
        base: &Catalogue,
        account_id: &str,
        plan_id: &str,
        payment_ref: Option<&str>,
        actor: &str,
        now: UnixMillis,
    ) -> Result<SubscriptionChange, StoreError> {
        if let Some(r) = payment_ref {
            check_payment_ref(r)?;
        }
        let base = base.clone();
        let (account_id, plan_id) = (account_id.to_owned(), plan_id.to_owned());
        let (payment_ref, actor) = (payment_ref.map(str::to_owned), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let order = Order {
                    account_id: &account_id,
                    plan_id: &plan_id,
                    payment_ref: payment_ref.as_deref(),
                    actor: &actor,
                };
                subscribe(&mut tx, &base, order, now).await
            })
        })
        .await
    }

    /// Buys `seats` extra seats on the plan in force for the rest of its period, paid
    /// by `payment_ref` (the same ref again changes nothing); each renewal charges them
    /// again (docs/api.md, "Organisations and seats").
    pub async fn buy_seats(
        &self,
        base: &Catalogue,
        account_id: &str,
        seats: u32,
        payment_ref: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<SubscriptionChange, StoreError> {
        check_payment_ref(payment_ref)?;
        let base = base.clone();
        let (account_id, payment_ref, actor) = (
            account_id.to_owned(),
            payment_ref.to_owned(),
            actor.to_owned(),
        );
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let account = lock_account(tx, &account_id).await?;
                let item = seats.to_string();
                if replayed_payment(tx, &payment_ref, &account_id, "seats", &item)
                    .await?
                    .is_some()
                {
                    return Ok(SubscriptionChange {
                        state: load_subscriptions(tx.conn(), &account_id).await?,
                        effects: Vec::new(),
                        lots: Vec::new(),
                        events: Vec::new(),
                        created: false,
                    });
                }
                account.require_open()?;
                // Caught up first, so the purchase's own charge is the only one at now.
                tick_locked(tx, &base, &account_id, now).await?;
                let cat = catalogue_in(tx.conn(), &base).await?;
                let state = load_subscriptions(tx.conn(), &account_id).await?;
                let t = kinema_ledger::buy_seats(&state, &cat, seats, now)?;
                let amount = t
                    .effects
                    .iter()
                    .find_map(|e| match e {
                        SubscriptionEffect::SeatsCharge { amount, at, .. } if *at == now => {
                            Some(*amount)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| StoreError::Corrupt("seats bought without a charge".into()))?;
                let (lots, events) =
                    apply_transition(tx, &account_id, &t, Some(&payment_ref), &actor, now).await?;
                let payment = Payment {
                    payment_ref: payment_ref.clone(),
                    account_id: account_id.clone(),
                    kind: "seats".into(),
                    item_id: item,
                    amount,
                    created_at: now,
                };
                let bought = serde_json::json!({ "seats": seats });
                insert_payment(tx, &payment, &bought).await?;
                Ok(SubscriptionChange {
                    state: t.state,
                    effects: t.effects,
                    lots,
                    events,
                    created: true,
                })
            })
        })
        .await
    }

    /// Cancels the current plan (access to the end of the period, the 24-hour rule,
    /// annual proration) or the queued one (full refund), as the ledger crate says.
    pub async fn cancel_subscription(
        &self,
        base: &Catalogue,
        account_id: &str,
        target: &CancelTarget,
        actor: &str,
        now: UnixMillis,
    ) -> Result<SubscriptionChange, StoreError> {
        let (base, target) = (base.clone(), target.clone());
        let (account_id, actor) = (account_id.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                lock_account(tx, &account_id).await?;
                let cat = catalogue_in(tx.conn(), &base).await?;
                let state = load_subscriptions(tx.conn(), &account_id).await?;
                let queued = match &target {
                    CancelTarget::Current => false,
                    CancelTarget::Queued => true,
                    CancelTarget::Id(id) if state.queued.as_ref().is_some_and(|q| &q.id == id) => {
                        true
                    }
                    CancelTarget::Id(id) if state.current.as_ref().is_some_and(|c| &c.id == id) => {
                        false
                    }
                    CancelTarget::Id(_) => {
                        return Err(StoreError::NotFound(NotFound::Subscription))
                    }
                };
                let t = if queued {
                    kinema_ledger::cancel_queued_plan(&state, &cat, now)?
                } else {
                    kinema_ledger::cancel_subscription(&state, &cat, now)?
                };
                let (lots, events) =
                    apply_transition(tx, &account_id, &t, None, &actor, now).await?;
                Ok(SubscriptionChange {
                    state: t.state,
                    effects: t.effects,
                    lots,
                    events,
                    created: true,
                })
            })
        })
        .await
    }

    /// The account's plans caught up to `now` (renewals, grants and ends due are
    /// written first).
    pub async fn subscriptions(
        &self,
        base: &Catalogue,
        account_id: &str,
        now: UnixMillis,
    ) -> Result<SubscriptionChange, StoreError> {
        let (base, account_id) = (base.clone(), account_id.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                lock_account(&mut tx, &account_id).await?;
                tick_locked(&mut tx, &base, &account_id, now).await
            })
        })
        .await
    }

    /// Catches up every account whose plans have something due by `now`; returns how
    /// many accounts were processed (at most `limit`).
    pub async fn tick_due_subscriptions(
        &self,
        base: &Catalogue,
        now: UnixMillis,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT account_id FROM subscriptions WHERE next_due_at IS NOT NULL \
             AND next_due_at <= $1 ORDER BY next_due_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        for account_id in &due {
            let (base, account_id) = (base.clone(), account_id.clone());
            self.write(move |mut tx| {
                Box::pin(async move {
                    lock_account(&mut tx, &account_id).await?;
                    tick_locked(&mut tx, &base, &account_id, now).await
                })
            })
            .await?;
        }
        Ok(due.len())
    }
}

/// Who buys which plan, with which payment.
struct Order<'a> {
    account_id: &'a str,
    plan_id: &'a str,
    payment_ref: Option<&'a str>,
    actor: &'a str,
}

async fn subscribe(
    tx: &mut Tx<'_>,
    base: &Catalogue,
    o: Order<'_>,
    now: UnixMillis,
) -> Result<SubscriptionChange, StoreError> {
    let account = lock_account(tx, o.account_id).await?;
    if let Some(r) = o.payment_ref {
        if replayed_payment(tx, r, o.account_id, "subscription", o.plan_id)
            .await?
            .is_some()
        {
            return Ok(SubscriptionChange {
                state: load_subscriptions(tx.conn(), o.account_id).await?,
                effects: Vec::new(),
                lots: Vec::new(),
                events: Vec::new(),
                created: false,
            });
        }
    }
    account.require_open()?;
    account.require_billing(BillingMode::Prepaid, "a subscription")?;
    let cat = catalogue_in(tx.conn(), base).await?;
    let state = load_subscriptions(tx.conn(), o.account_id).await?;
    let subscription_id = new_id("sub");
    let t = kinema_ledger::subscribe(&state, &cat, o.plan_id, &subscription_id, now)?;
    let (lots, events) =
        apply_transition(tx, o.account_id, &t, o.payment_ref, o.actor, now).await?;
    if let Some(r) = o.payment_ref {
        let amount = first_charge(&t.effects, &subscription_id)
            .ok_or_else(|| StoreError::Corrupt("a subscription without its charge".into()))?;
        let payment = Payment {
            payment_ref: r.to_string(),
            account_id: o.account_id.to_string(),
            kind: "subscription".into(),
            item_id: o.plan_id.to_string(),
            amount,
            created_at: now,
        };
        let bought = serde_json::json!({ "subscription_id": subscription_id });
        insert_payment(tx, &payment, &bought).await?;
    }
    Ok(SubscriptionChange {
        state: t.state,
        effects: t.effects,
        lots,
        events,
        created: true,
    })
}

/// Ticks an account whose row the caller has locked.
pub(crate) async fn tick_locked(
    tx: &mut Tx<'_>,
    base: &Catalogue,
    account_id: &str,
    now: UnixMillis,
) -> Result<SubscriptionChange, StoreError> {
    let cat = catalogue_in(tx.conn(), base).await?;
    let state = load_subscriptions(tx.conn(), account_id).await?;
    let t = kinema_ledger::tick_subscriptions(&state, &cat, now);
    let (lots, events) = if t.effects.is_empty() && t.state == state {
        (Vec::new(), Vec::new())
    } else {
        apply_transition(tx, account_id, &t, None, "system", now).await?
    };
    Ok(SubscriptionChange {
        state: t.state,
        effects: t.effects,
        lots,
        events,
        created: true,
    })
}
