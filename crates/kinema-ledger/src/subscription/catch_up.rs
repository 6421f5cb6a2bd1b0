//! Catching a state up to `now`: every grant, renewal and end due, in calendar order,
//! with missed months passed over and their share owed back (the `subscription`
//! module docs, "Catch-up"); also starting a plan and an annual plan's proration,
//! which the events use too.

use super::{
    CancellationKind, EndReason, MoneyRefundReason, QueuedPlan, Subscription, SubscriptionEffect,
    Transition,
};
use crate::calendar::{add_months, month_index};
use crate::{price_at, Catalogue, LotSource, Money, NewLot, PlanInterval, UnixMillis};

/// The most renewals, grants and ends one call processes (a guard against clocks
/// decades ahead); a later call goes on where it stopped.
const MAX_STEPS_PER_CALL: usize = 10_000;

/// The refund of an annual period of which `started` months were started. Months a
/// catch-up passed over were neither granted nor kept: they are left out of the months
/// charged, and what was owed back for them out of the price.
pub(super) fn proration(cur: &Subscription, started: u32) -> Option<(Money, MoneyRefundReason)> {
    let month_price = cur.month_price();
    let months = started.saturating_sub(cur.missed_months).max(1);
    let kept = month_price.minor.saturating_mul(i64::from(months));
    let net = cur
        .paid
        .minor
        .saturating_sub(cur.share_of_paid(cur.missed_months));
    let owed = net.saturating_sub(kept).max(0);
    (owed > 0).then(|| {
        (
            Money::new(owed, cur.paid.currency),
            MoneyRefundReason::AnnualProration {
                months_charged: months,
                month_price,
            },
        )
    })
}

/// Makes `q` the current subscription from `at` (its first period is already paid).
pub(super) fn start(t: &mut Transition, q: QueuedPlan, at: UnixMillis) {
    t.effects.push(SubscriptionEffect::Started {
        subscription_id: q.id.clone(),
        plan_id: q.plan_id.clone(),
        at,
    });
    t.state.current = Some(Subscription {
        period_end: add_months(at, i64::from(q.interval.months())),
        id: q.id,
        plan_id: q.plan_id,
        interval: q.interval,
        anchor: at,
        period: 0,
        period_start: at,
        months_granted: 0,
        missed_months: 0,
        credits_per_month: q.credits_per_month,
        paid: q.paid,
        monthly_reference: q.monthly_reference,
        cancellation: None,
        extra_seats: 0,
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    // Order matters at equal instants: an end comes before a renewal, a renewal
    // before the first grant of the new period.
    End,
    Renew,
    Grant,
}

pub(super) fn catch_up(t: &mut Transition, catalogue: &Catalogue, now: UnixMillis) {
    for _ in 0..MAX_STEPS_PER_CALL {
        let Some(cur) = t.state.current.as_ref() else {
            return;
        };
        let ends_at = cur.ends_at();
        let month = cur.month_start(cur.months_granted);
        let mut due: Vec<(UnixMillis, Step)> = Vec::with_capacity(3);
        if month < cur.period_end && ends_at.is_none_or(|e| month < e) && month <= now {
            due.push((month, Step::Grant));
        }
        if let Some(e) = ends_at.filter(|e| *e <= now) {
            due.push((e, Step::End));
        }
        if cur.period_end <= now && ends_at.is_none_or(|e| e > cur.period_end) {
            due.push((cur.period_end, Step::Renew));
        }
        let Some((at, step)) = due.into_iter().min() else {
            return;
        };
        match step {
            Step::Grant => grant(t, at, now),
            Step::End => end(t, at),
            Step::Renew => renew(t, catalogue, at, now),
        }
    }
}

/// Grants the month due at `at`, or, if its credits would arrive already expired at
/// `now`, passes over it and the missed months after it in one go.
fn grant(t: &mut Transition, at: UnixMillis, now: UnixMillis) {
    let Some(cur) = t.state.current.as_mut() else {
        return;
    };
    let m = cur.months_granted;
    if cur.month_start(m + 1) <= now {
        miss_months(t, now);
        return;
    }
    cur.months_granted += 1;
    t.effects.push(SubscriptionEffect::GrantLot(NewLot {
        source: LotSource::Subscription {
            subscription_id: cur.id.clone(),
            plan_id: cur.plan_id.clone(),
            month: m,
        },
        credits: cur.credits_per_month,
        expires_at: Some(cur.month_start(m + 1)),
        granted_at: at,
    }));
}

fn end(t: &mut Transition, at: UnixMillis) {
    let Some(cur) = t.state.current.take() else {
        return;
    };
    let reason = match cur.cancellation.map(|c| c.kind) {
        Some(CancellationKind::Switch) => EndReason::Switched,
        _ => EndReason::Cancelled,
    };
    t.effects.push(SubscriptionEffect::Ended {
        subscription_id: cur.id,
        plan_id: cur.plan_id,
        reason,
        at,
    });
    if let Some(q) = t.state.queued.take() {
        start(t, q, at);
    }
}

/// Passes over the run of missed months from the next month due: not granted, and
/// their share of what the period was charged is owed back.
fn miss_months(t: &mut Transition, now: UnixMillis) {
    let Some(cur) = t.state.current.as_mut() else {
        return;
    };
    let first = cur.months_granted;
    let last = cur.period_end_month();
    let ends_at = cur.ends_at();
    let mut m = first;
    while m < last
        && ends_at.is_none_or(|e| cur.month_start(m) < e)
        && cur.month_start(m + 1) <= now
    {
        m += 1;
    }
    let months = m - first;
    if months == 0 {
        return;
    }
    let before = cur.share_of_paid(cur.missed_months);
    cur.months_granted = m;
    cur.missed_months += months;
    let owed = cur.share_of_paid(cur.missed_months) - before;
    if owed > 0 {
        t.effects.push(SubscriptionEffect::RefundOwed {
            subscription_id: cur.id.clone(),
            plan_id: cur.plan_id.clone(),
            amount: Money::new(owed, cur.paid.currency),
            reason: MoneyRefundReason::MissedMonths {
                period: cur.period,
                first_month: first,
                months,
            },
            at: cur.month_start(first),
        });
    }
}

fn renew(t: &mut Transition, catalogue: &Catalogue, at: UnixMillis, now: UnixMillis) {
    let Some(cur) = t.state.current.as_mut() else {
        return;
    };
    let priced = catalogue.plan(&cur.plan_id).and_then(|plan| {
        let price = price_at(&plan.prices, at)?;
        Ok((plan, price))
    });
    let Ok((plan, price)) = priced.map_err(|_| ()).and_then(|(plan, price)| {
        if price.currency == cur.paid.currency && plan.interval == cur.interval {
            Ok((plan, price))
        } else {
            Err(())
        }
    }) else {
        // Cannot renew: it ends at the renewal instant, uncharged.
        let cur = t.state.current.take().expect("current checked above");
        t.effects.push(SubscriptionEffect::Ended {
            subscription_id: cur.id,
            plan_id: cur.plan_id,
            reason: EndReason::PlanUnavailable,
            at,
        });
        if let Some(q) = t.state.queued.take() {
            start(t, q, at);
        }
        return;
    };
    cur.period += 1;
    cur.period_start = at;
    cur.period_end = cur.period_boundary(cur.period + 1);
    cur.missed_months = 0;
    cur.credits_per_month = plan.credits_per_month.max(1);
    cur.monthly_reference = catalogue.monthly_reference_price(plan, at).ok().flatten();
    // Every month this renewal pays for (to a cancellation's end if that comes first:
    // always a month boundary) is over at `now`: skipped, uncharged.
    let paid_until = cur
        .ends_at()
        .map_or(cur.period_end, |e| e.min(cur.period_end));
    if paid_until <= now {
        cur.paid = Money::zero(price.currency);
        cur.months_granted = cur.period_end_month();
        t.effects.push(SubscriptionEffect::RenewalSkipped {
            subscription_id: cur.id.clone(),
            plan_id: cur.plan_id.clone(),
            period: cur.period,
            period_end: cur.period_end,
            price,
            at,
        });
        return;
    }
    cur.paid = price;
    t.effects.push(SubscriptionEffect::Charge {
        subscription_id: cur.id.clone(),
        plan_id: cur.plan_id.clone(),
        period: cur.period,
        amount: price,
        at,
    });
    t.effects.push(SubscriptionEffect::Renewed {
        subscription_id: cur.id.clone(),
        period: cur.period,
        period_end: cur.period_end,
        at,
    });
    super::seats::renew_seats(cur, plan, at, &mut t.effects);
    // An annual plan cancelled too late to stop this renewal: prorated now.
    if let Some(c) = cur.cancellation.filter(|c| c.ends_at < cur.period_end) {
        if cur.interval == PlanInterval::Annual {
            let months = month_index(cur.anchor, c.ends_at.saturating_sub(1)) + 1;
            let started = months.saturating_sub(cur.period * 12).clamp(1, 12);
            if let Some((amount, reason)) = proration(cur, started) {
                t.effects.push(SubscriptionEffect::RefundOwed {
                    subscription_id: cur.id.clone(),
                    plan_id: cur.plan_id.clone(),
                    amount,
                    reason,
                    at,
                });
            }
        }
    }
}
