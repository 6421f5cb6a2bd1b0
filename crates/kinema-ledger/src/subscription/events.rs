//! The events of the state machine: subscribe, cancel, cancel the queued plan, tick,
//! terminate. Each first catches the state up to `now`.

use serde::{Deserialize, Serialize};

use super::catch_up::{catch_up, proration, start};
use super::{
    Cancellation, CancellationKind, EndReason, MoneyRefundReason, QueuedPlan, Subscription,
    SubscriptionEffect, SubscriptionState, Transition, RENEWAL_CANCEL_NOTICE_MS,
};
use crate::calendar::month_index;
use crate::{price_at, Catalogue, LedgerError, PlanInterval, UnixMillis};

/// The events of the state machine, for callers that dispatch on data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SubscriptionEvent {
    Subscribe {
        plan_id: String,
        subscription_id: String,
    },
    Cancel,
    CancelQueued,
    Tick,
    Terminate,
}

pub fn apply_subscription_event(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    event: &SubscriptionEvent,
    now: UnixMillis,
) -> Result<Transition, LedgerError> {
    match event {
        SubscriptionEvent::Subscribe {
            plan_id,
            subscription_id,
        } => subscribe(state, catalogue, plan_id, subscription_id, now),
        SubscriptionEvent::Cancel => cancel_subscription(state, catalogue, now),
        SubscriptionEvent::CancelQueued => cancel_queued_plan(state, catalogue, now),
        SubscriptionEvent::Tick => Ok(tick_subscriptions(state, catalogue, now)),
        SubscriptionEvent::Terminate => Ok(terminate_subscriptions(state, catalogue, now)),
    }
}

/// Processes, in order, every grant, renewal and end due by `now` (inclusive).
/// Renewals missed while nobody ticked are each charged at the price in effect at
/// their own instant, unless every month they pay for is already over at `now`: then
/// they are skipped, and months already over are never granted ([module
/// docs](super), "Catch-up").
pub fn tick_subscriptions(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    now: UnixMillis,
) -> Transition {
    let mut t = Transition {
        state: state.clone(),
        effects: Vec::new(),
    };
    catch_up(&mut t, catalogue, now);
    t
}

/// Buys `plan_id` at its price in effect at `now`. With nothing current it starts at
/// once (charged, first month granted); otherwise it is queued (charged now) to start
/// when the current subscription ends, and the current one stops renewing.
pub fn subscribe(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    plan_id: &str,
    subscription_id: &str,
    now: UnixMillis,
) -> Result<Transition, LedgerError> {
    let mut t = tick_subscriptions(state, catalogue, now);
    let plan = catalogue.plan(plan_id)?;
    if plan.credits_per_month <= 0 {
        return Err(LedgerError::NonPositiveAmount(plan.credits_per_month));
    }
    let price = price_at(&plan.prices, now)?;
    let monthly_reference = catalogue.monthly_reference_price(plan, now).ok().flatten();
    let charge = SubscriptionEffect::Charge {
        subscription_id: subscription_id.to_string(),
        plan_id: plan_id.to_string(),
        period: 0,
        amount: price,
        at: now,
    };
    let queued = QueuedPlan {
        id: subscription_id.to_string(),
        plan_id: plan_id.to_string(),
        interval: plan.interval,
        credits_per_month: plan.credits_per_month,
        paid: price,
        monthly_reference,
        bought_at: now,
    };
    let Some(cur) = t.state.current.as_mut() else {
        t.effects.push(charge);
        start(&mut t, queued, now);
        catch_up(&mut t, catalogue, now);
        return Ok(t);
    };
    if t.state.queued.is_some() {
        return Err(LedgerError::PlanAlreadyQueued);
    }
    if cur.plan_id == plan_id && cur.cancellation.is_none() {
        return Err(LedgerError::AlreadySubscribed(plan_id.to_string()));
    }
    if cur.cancellation.is_none() {
        let ends_at = if is_late(cur, now) {
            cur.period_boundary(cur.period + 2)
        } else {
            cur.period_end
        };
        cur.cancellation = Some(Cancellation {
            requested_at: now,
            ends_at,
            kind: CancellationKind::Switch,
        });
        t.effects.push(SubscriptionEffect::CancellationScheduled {
            subscription_id: cur.id.clone(),
            ends_at,
            at: now,
        });
    }
    let starts_at = cur.ends_at().unwrap_or(cur.period_end);
    t.effects.push(charge);
    t.effects.push(SubscriptionEffect::Queued {
        subscription_id: subscription_id.to_string(),
        plan_id: plan_id.to_string(),
        starts_at,
        at: now,
    });
    t.state.queued = Some(queued);
    Ok(t)
}

/// The owner cancels the current subscription (rules in the [module docs](super)).
/// Cancelling again is a no-op.
pub fn cancel_subscription(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    now: UnixMillis,
) -> Result<Transition, LedgerError> {
    let mut t = tick_subscriptions(state, catalogue, now);
    let cur = t
        .state
        .current
        .as_mut()
        .ok_or(LedgerError::NoSubscription)?;
    if cur
        .cancellation
        .is_some_and(|c| c.kind == CancellationKind::Requested)
    {
        return Ok(t);
    }
    let late = is_late(cur, now);
    let (ends_at, refund) = match (cur.interval, late) {
        (PlanInterval::Monthly, false) => (cur.period_end, None),
        (PlanInterval::Monthly, true) => (cur.period_boundary(cur.period + 2), None),
        (PlanInterval::Annual, false) => {
            let month = month_index(cur.anchor, now);
            let first = cur.period * 12;
            let started = (month + 1).saturating_sub(first).clamp(1, 12);
            (
                cur.month_start(first + started),
                Some(proration(cur, started)),
            )
        }
        // Renews first; the refund is computed at the renewal (see `renew`).
        (PlanInterval::Annual, true) => (cur.month_start((cur.period + 1) * 12 + 1), None),
    };
    if let Some(existing) = cur.cancellation.filter(|c| c.ends_at <= ends_at) {
        // A switch already ends it no later: it stays, now as the owner's.
        cur.cancellation = Some(Cancellation {
            kind: CancellationKind::Requested,
            requested_at: now,
            ..existing
        });
        return Ok(t);
    }
    cur.cancellation = Some(Cancellation {
        requested_at: now,
        ends_at,
        kind: CancellationKind::Requested,
    });
    t.effects.push(SubscriptionEffect::CancellationScheduled {
        subscription_id: cur.id.clone(),
        ends_at,
        at: now,
    });
    if let Some((amount, reason)) = refund.flatten() {
        t.effects.push(SubscriptionEffect::RefundOwed {
            subscription_id: cur.id.clone(),
            plan_id: cur.plan_id.clone(),
            amount,
            reason,
            at: now,
        });
    }
    Ok(t)
}

/// Cancels the queued plan before it starts: its whole price is owed back, and a
/// current subscription that stopped renewing only to make way for it renews again.
pub fn cancel_queued_plan(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    now: UnixMillis,
) -> Result<Transition, LedgerError> {
    let mut t = tick_subscriptions(state, catalogue, now);
    let q = t.state.queued.take().ok_or(LedgerError::NoQueuedPlan)?;
    t.effects.push(SubscriptionEffect::RefundOwed {
        subscription_id: q.id.clone(),
        plan_id: q.plan_id.clone(),
        amount: q.paid,
        reason: MoneyRefundReason::QueuedPlanCancelled,
        at: now,
    });
    t.effects.push(SubscriptionEffect::Ended {
        subscription_id: q.id,
        plan_id: q.plan_id,
        reason: EndReason::Cancelled,
        at: now,
    });
    if let Some(cur) = t.state.current.as_mut() {
        if cur
            .cancellation
            .is_some_and(|c| c.kind == CancellationKind::Switch)
        {
            cur.cancellation = None;
            t.effects.push(SubscriptionEffect::CancellationWithdrawn {
                subscription_id: cur.id.clone(),
                at: now,
            });
        }
    }
    Ok(t)
}

/// Termination for violation: everything ends at `now`, nothing is refunded (the
/// credits are forfeited separately, see [`crate::forfeit_all`]).
pub fn terminate_subscriptions(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    now: UnixMillis,
) -> Transition {
    let mut t = tick_subscriptions(state, catalogue, now);
    if let Some(q) = t.state.queued.take() {
        t.effects.push(SubscriptionEffect::Ended {
            subscription_id: q.id,
            plan_id: q.plan_id,
            reason: EndReason::Terminated,
            at: now,
        });
    }
    if let Some(cur) = t.state.current.take() {
        t.effects.push(SubscriptionEffect::Ended {
            subscription_id: cur.id,
            plan_id: cur.plan_id,
            reason: EndReason::Terminated,
            at: now,
        });
    }
    t
}

/// Too late to stop the renewal at the end of the current period.
fn is_late(cur: &Subscription, now: UnixMillis) -> bool {
    now > cur.period_end.saturating_sub(RENEWAL_CANCEL_NOTICE_MS)
}
