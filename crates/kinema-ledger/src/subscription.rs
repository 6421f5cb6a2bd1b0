//! Plans as a state machine (docs/api.md, "Catalogue, purchases and plans", "Plans").
//!
//! An account's [`SubscriptionState`] is its current subscription, if any, and at most
//! one plan queued to start when the current one ends. Every function takes the state
//! and `now`, first catches the state up to `now` (see [`tick_subscriptions`]), then
//! applies its event, and returns the new state and the [`SubscriptionEffect`]s to
//! write out: money to charge, money refunds owed (the platform pays them out), lots
//! to grant, and the changes of state.
//!
//! The rules, as implemented:
//! - **Periods.** A subscription is anchored at its start instant. Month `m` is
//!   `[add_months(anchor, m), add_months(anchor, m + 1))` (calendar months in UTC, the
//!   day clamped); period `k` of a monthly plan is month `k`, of an annual plan months
//!   `12k .. 12k + 12`.
//! - **Credits.** At the start of each month of the subscription a SUBSCRIPTION_GRANT
//!   lot of the plan's `credits_per_month` is granted, expiring at the end of that month.
//! - **Renewal.** At the end of a period the plan renews (charged at the plan's price in
//!   effect at that instant) unless a cancellation ends it there.
//! - **Cancellation** ([`cancel_subscription`]) keeps access until the period ends:
//!   - requested at least 24 h before the renewal instant (`now <= period_end - 24 h`):
//!     no renewal; access ends at `period_end`;
//!   - requested later: the renewal still happens and the cancellation takes effect at
//!     the end of the next period;
//!   - an **annual** plan cancelled mid-term (at least 24 h before its renewal): the
//!     months started (the current one included) are charged at the monthly plan's
//!     price, the rest of the annual price is owed back, never below zero; access ends
//!     at the end of the current month (the last one paid for). An annual plan
//!     cancelled less than 24 h before its renewal renews, and is then cancelled at the
//!     renewal instant as above: one month started, access to the end of that month.
//!   - a **monthly** plan gets no prorated refund.
//! - **Queued plans.** Subscribing while a plan is current charges the new plan now (at
//!   its price in effect now) and queues it to start when the current one ends; the
//!   current one stops renewing (by the same 24-hour rule as a cancellation, without
//!   proration). The queued plan can be cancelled before it starts for a full refund
//!   ([`cancel_queued_plan`]); the current one then renews again, unless it was
//!   cancelled by its owner. At most one plan is queued.
//! - **Termination** for violation ([`terminate_subscriptions`]): the subscription and
//!   any queued plan end at once, with no refund (§2.6).
//! - **Catch-up** (nobody ticked for a while, e.g. the server was down): everything due
//!   is processed in calendar order, each effect at its own instant, except that no
//!   month whose credits would arrive already expired is granted or paid for. Month
//!   `m` is *missed* at `now` when its credits' expiry `add_months(anchor, m + 1)` is
//!   `<= now`; a month still running at `now` (the sweeper was merely late) is granted
//!   as usual, with its usual expiry.
//!   - A renewal whose paid-for months (to the period end, or to a cancellation's end
//!     if that comes first) are all missed is **skipped**: not charged, nothing
//!     granted, recorded as [`SubscriptionEffect::RenewalSkipped`]. The subscription
//!     stays on its calendar (same anchor) and renews normally, at the price in effect
//!     then, for the first period with a month still running.
//!   - Missed months of a period that is charged (a renewal that is partly over: an
//!     annual plan renewed months late; an annual period charged before the outage;
//!     a queued plan's prepaid first period) are not granted, and their share of the
//!     period's price, `paid * missed / months_in_period` rounded up, is owed back
//!     ([`MoneyRefundReason::MissedMonths`]). A later mid-term cancellation of an
//!     annual plan counts only the months granted, against what is left of the price.

use serde::{Deserialize, Serialize};

use crate::calendar::{add_months, month_index, HOUR_MS};
use crate::{
    price_at, Catalogue, Credits, LedgerError, LotSource, Money, NewLot, PlanInterval, UnixMillis,
};

/// A cancellation stops the next renewal only when made at least this long before it.
pub const RENEWAL_CANCEL_NOTICE_MS: i64 = 24 * HOUR_MS;

/// The most renewals, grants and ends one call processes (a guard against clocks
/// decades ahead); a later call goes on where it stopped.
const MAX_STEPS_PER_CALL: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationKind {
    /// The owner cancelled.
    Requested,
    /// Another plan was bought and waits for this one to end.
    Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub requested_at: UnixMillis,
    /// When access ends (a month boundary of the subscription).
    pub ends_at: UnixMillis,
    pub kind: CancellationKind,
}

/// The subscription in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub plan_id: String,
    pub interval: PlanInterval,
    /// When it started; months and periods are counted from here.
    pub anchor: UnixMillis,
    /// Index of the current period, 0-based.
    pub period: u32,
    pub period_start: UnixMillis,
    /// The renewal instant.
    pub period_end: UnixMillis,
    /// Months dealt with: granted, or passed over by a catch-up as missed or in a
    /// skipped period (months `0 .. months_granted`).
    pub months_granted: u32,
    /// Months of the current period passed over by a catch-up because their credits
    /// would have arrived already expired: not granted, their share of `paid` owed back.
    #[serde(default)]
    pub missed_months: u32,
    pub credits_per_month: Credits,
    /// What the current period was charged (zero for a skipped period).
    pub paid: Money,
    /// Annual plans: what a started month of the current period costs on cancellation.
    pub monthly_reference: Option<Money>,
    pub cancellation: Option<Cancellation>,
}

impl Subscription {
    /// When access ends, if it is set to end.
    pub fn ends_at(&self) -> Option<UnixMillis> {
        self.cancellation.map(|c| c.ends_at)
    }

    fn month_start(&self, m: u32) -> UnixMillis {
        add_months(self.anchor, i64::from(m))
    }

    fn period_boundary(&self, period: u32) -> UnixMillis {
        add_months(
            self.anchor,
            i64::from(period) * i64::from(self.interval.months()),
        )
    }

    /// The first month after the current period.
    fn period_end_month(&self) -> u32 {
        (self.period + 1).saturating_mul(self.interval.months())
    }

    /// What the current period's first `months` months cost, pro rata of `paid`,
    /// rounded up (in the customer's favour when owed back); all of it at most.
    fn share_of_paid(&self, months: u32) -> i64 {
        let per = i128::from(self.interval.months());
        let months = i128::from(months).min(per);
        let share = (i128::from(self.paid.minor.max(0)) * months + per - 1) / per;
        i64::try_from(share).unwrap_or(i64::MAX)
    }

    /// Price of one started month when an annual period is prorated.
    fn month_price(&self) -> Money {
        match self.monthly_reference {
            Some(m) if m.currency == self.paid.currency => m,
            _ => {
                let minor = self.paid.minor / 12 + i64::from(self.paid.minor % 12 != 0);
                Money::new(minor, self.paid.currency)
            }
        }
    }
}

/// A plan bought while another is current: paid, waiting to start when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPlan {
    pub id: String,
    pub plan_id: String,
    pub interval: PlanInterval,
    pub credits_per_month: Credits,
    pub paid: Money,
    pub monthly_reference: Option<Money>,
    pub bought_at: UnixMillis,
}

/// One account's plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub current: Option<Subscription>,
    pub queued: Option<QueuedPlan>,
}

impl SubscriptionState {
    /// Whether the current subscription gives access at `now` (call on a state caught
    /// up to `now`).
    pub fn has_access(&self, now: UnixMillis) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.anchor <= now && c.ends_at().is_none_or(|e| now < e))
    }

    /// A subscription is running while one is current or queued (account deletion is
    /// refused then, docs/api.md, "Accounts").
    pub fn is_running(&self) -> bool {
        self.current.is_some() || self.queued.is_some()
    }

    /// When the queued plan starts: the instant the current one ends.
    pub fn queued_starts_at(&self) -> Option<UnixMillis> {
        self.queued.as_ref()?;
        self.current.as_ref().and_then(Subscription::ends_at)
    }

    /// The next instant at which [`tick_subscriptions`] has something to do (a
    /// grant, a renewal or an end), for the sweeper's schedule.
    pub fn next_due_at(&self) -> Option<UnixMillis> {
        let cur = self.current.as_ref()?;
        let mut next = cur.ends_at().unwrap_or(cur.period_end).min(cur.period_end);
        let month = cur.month_start(cur.months_granted);
        if month < cur.period_end && cur.ends_at().is_none_or(|e| month < e) {
            next = next.min(month);
        }
        Some(next)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Cancelled,
    /// Ended to make way for the queued plan.
    Switched,
    /// The plan left the catalogue or has no price: it cannot renew.
    PlanUnavailable,
    /// The account was terminated for violation.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoneyRefundReason {
    /// An annual plan cancelled mid-term: `months_charged` months at `month_price`
    /// were kept out of the period's price (less what was owed back for missed months).
    AnnualProration {
        months_charged: u32,
        month_price: Money,
    },
    /// A catch-up passed over `months` months of `period`, from month `first_month` of
    /// the subscription, whose credits would have arrived already expired: their share
    /// of the period's price.
    MissedMonths {
        period: u32,
        first_month: u32,
        months: u32,
    },
    /// A queued plan cancelled before it started: everything back.
    QueuedPlanCancelled,
}

/// What a transition asks the store to write. `at` is the instant the effect
/// belongs to, which may be before `now` when a tick catches up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum SubscriptionEffect {
    /// The platform collects `amount` for `period` of the subscription.
    Charge {
        subscription_id: String,
        plan_id: String,
        period: u32,
        amount: Money,
        at: UnixMillis,
    },
    /// A lot to create with a SUBSCRIPTION_GRANT entry.
    GrantLot(NewLot),
    /// Money Kinema owes back; the platform pays it out.
    RefundOwed {
        subscription_id: String,
        plan_id: String,
        amount: Money,
        reason: MoneyRefundReason,
        at: UnixMillis,
    },
    Started {
        subscription_id: String,
        plan_id: String,
        at: UnixMillis,
    },
    Queued {
        subscription_id: String,
        plan_id: String,
        starts_at: UnixMillis,
        at: UnixMillis,
    },
    Renewed {
        subscription_id: String,
        period: u32,
        period_end: UnixMillis,
        at: UnixMillis,
    },
    /// A renewal reached by a catch-up after every month it would pay for was over:
    /// not charged (`price` is what it would have cost), nothing granted. The
    /// subscription goes on to the next period on the same calendar.
    RenewalSkipped {
        subscription_id: String,
        plan_id: String,
        period: u32,
        period_end: UnixMillis,
        price: Money,
        at: UnixMillis,
    },
    CancellationScheduled {
        subscription_id: String,
        ends_at: UnixMillis,
        at: UnixMillis,
    },
    /// A switch-cancellation withdrawn because its queued plan was cancelled.
    CancellationWithdrawn {
        subscription_id: String,
        at: UnixMillis,
    },
    Ended {
        subscription_id: String,
        plan_id: String,
        reason: EndReason,
        at: UnixMillis,
    },
}

/// The new state and what to write for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub state: SubscriptionState,
    pub effects: Vec<SubscriptionEffect>,
}

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
/// they are skipped, and months already over are never granted (module docs,
/// "Catch-up").
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

/// The owner cancels the current subscription (rules in the module docs). Cancelling
/// again is a no-op.
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

/// The refund of an annual period of which `started` months were started. Months a
/// catch-up passed over were neither granted nor kept: they are left out of the months
/// charged, and what was owed back for them out of the price.
fn proration(cur: &Subscription, started: u32) -> Option<(Money, MoneyRefundReason)> {
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
fn start(t: &mut Transition, q: QueuedPlan, at: UnixMillis) {
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

fn catch_up(t: &mut Transition, catalogue: &Catalogue, now: UnixMillis) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{join_instant, CivilDate, DAY_MS};
    use crate::{schedule_price_change, Currency, Plan, PriceHistory, DEFAULT_PRICE_NOTICE_MS};

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    fn date(year: i64, month: u32, day: u32, hour: i64) -> UnixMillis {
        join_instant(CivilDate { year, month, day }, hour * HOUR_MS)
    }

    fn plan(id: &str, interval: PlanInterval, price: i64, counterpart: Option<&str>) -> Plan {
        Plan {
            id: id.into(),
            interval,
            credits_per_month: 100,
            prices: PriceHistory::new(eur(price), 0).unwrap(),
            monthly_counterpart: counterpart.map(str::to_string),
        }
    }

    fn catalogue() -> Catalogue {
        Catalogue {
            packs: vec![],
            plans: vec![
                plan("basic-m", PlanInterval::Monthly, 1000, None),
                plan("basic-y", PlanInterval::Annual, 10_000, Some("basic-m")),
                plan("pro-m", PlanInterval::Monthly, 2500, None),
            ],
        }
    }

    fn charges(effects: &[SubscriptionEffect]) -> Vec<(u32, i64, UnixMillis)> {
        effects
            .iter()
            .filter_map(|e| match e {
                SubscriptionEffect::Charge {
                    period, amount, at, ..
                } => Some((*period, amount.minor, *at)),
                _ => None,
            })
            .collect()
    }

    fn refunds(effects: &[SubscriptionEffect]) -> Vec<i64> {
        effects
            .iter()
            .filter_map(|e| match e {
                SubscriptionEffect::RefundOwed { amount, .. } => Some(amount.minor),
                _ => None,
            })
            .collect()
    }

    /// The state ticked at each instant something falls due up to `until`, then at
    /// `until`, as a sweeper that never sleeps would; the effects of all the ticks.
    fn swept(state: &SubscriptionState, cat: &Catalogue, until: UnixMillis) -> Transition {
        let mut t = Transition {
            state: state.clone(),
            effects: Vec::new(),
        };
        let mut last = UnixMillis::MIN;
        while let Some(due) = t.state.next_due_at().filter(|d| *d < until) {
            assert!(due > last, "the schedule moves forward");
            last = due;
            let next = tick_subscriptions(&t.state, cat, due);
            t.effects.extend(next.effects);
            t.state = next.state;
        }
        let next = tick_subscriptions(&t.state, cat, until);
        t.effects.extend(next.effects);
        t.state = next.state;
        t
    }

    fn grants(effects: &[SubscriptionEffect]) -> Vec<&NewLot> {
        effects
            .iter()
            .filter_map(|e| match e {
                SubscriptionEffect::GrantLot(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_monthly_plan_starts_charged_and_granted_and_renews_on_the_calendar() {
        let cat = catalogue();
        let t0 = date(2024, 1, 31, 10);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
        assert_eq!(charges(&t.effects), vec![(0, 1000, t0)]);
        let g = grants(&t.effects);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].expires_at, Some(date(2024, 2, 29, 10)));
        assert_eq!(g[0].entry_kind(), crate::EntryKind::SubscriptionGrant);
        assert!(t.state.has_access(t0));
        assert_eq!(t.state.next_due_at(), Some(date(2024, 2, 29, 10)));

        let before = tick_subscriptions(&t.state, &cat, date(2024, 2, 29, 10) - 1);
        assert!(before.effects.is_empty());
        // Two renewals, each on its calendar instant (Jan 31 -> Feb 29 -> Mar 31).
        let later = swept(&t.state, &cat, date(2024, 3, 31, 10));
        assert_eq!(
            charges(&later.effects),
            vec![
                (1, 1000, date(2024, 2, 29, 10)),
                (2, 1000, date(2024, 3, 31, 10))
            ]
        );
        let g = grants(&later.effects);
        assert_eq!(g[0].expires_at, Some(date(2024, 3, 31, 10)));
        assert_eq!(g[1].expires_at, Some(date(2024, 4, 30, 10)));
    }

    #[test]
    fn renewals_pay_the_price_in_effect_at_the_renewal() {
        let mut cat = catalogue();
        let t0 = date(2024, 1, 1, 0);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
        let p = &mut cat.plans[0];
        p.prices = schedule_price_change(
            &p.prices,
            eur(1200),
            t0,
            t0 + 40 * DAY_MS,
            DEFAULT_PRICE_NOTICE_MS,
        )
        .unwrap();
        let later = swept(&t.state, &cat, date(2024, 3, 1, 0));
        assert_eq!(
            charges(&later.effects),
            vec![
                (1, 1000, date(2024, 2, 1, 0)),
                (2, 1200, date(2024, 3, 1, 0))
            ]
        );
    }

    #[test]
    fn cancelling_exactly_24_hours_before_renewal_is_in_time() {
        let cat = catalogue();
        let t0 = date(2024, 1, 1, 0);
        let renewal = date(2024, 2, 1, 0);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
        let c = cancel_subscription(&t.state, &cat, renewal - 24 * HOUR_MS).unwrap();
        assert_eq!(c.state.current.as_ref().unwrap().ends_at(), Some(renewal));
        assert!(refunds(&c.effects).is_empty());
        let c2 = cancel_subscription(&t.state, &cat, renewal - 24 * HOUR_MS + 1).unwrap();
        assert_eq!(
            c2.state.current.as_ref().unwrap().ends_at(),
            Some(date(2024, 3, 1, 0))
        );
    }

    #[test]
    fn an_annual_plan_cancelled_late_renews_then_keeps_one_month() {
        let cat = catalogue();
        let t0 = date(2024, 1, 1, 0);
        let renewal = date(2025, 1, 1, 0);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", t0).unwrap();
        let t = swept(&t.state, &cat, renewal - 23 * HOUR_MS);
        let c = cancel_subscription(&t.state, &cat, renewal - 23 * HOUR_MS).unwrap();
        assert!(refunds(&c.effects).is_empty());
        let r = tick_subscriptions(&c.state, &cat, renewal);
        assert_eq!(charges(&r.effects), vec![(1, 10_000, renewal)]);
        assert_eq!(refunds(&r.effects), vec![9_000]);
        let end = tick_subscriptions(&r.state, &cat, date(2025, 2, 1, 0));
        assert!(end.state.current.is_none());
        assert!(grants(&end.effects).is_empty());
    }

    #[test]
    fn an_annual_plan_cancelled_in_its_last_months_owes_nothing_back() {
        let cat = catalogue();
        let t0 = date(2024, 1, 1, 0);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", t0).unwrap();
        let t = swept(&t.state, &cat, date(2024, 11, 15, 0));
        let c = cancel_subscription(&t.state, &cat, date(2024, 11, 15, 0)).unwrap();
        assert!(refunds(&c.effects).is_empty());
        assert_eq!(
            c.state.current.as_ref().unwrap().ends_at(),
            Some(date(2024, 12, 1, 0))
        );
    }

    #[test]
    fn a_queued_plan_starts_when_the_current_one_ends() {
        let cat = catalogue();
        let t0 = date(2024, 1, 1, 0);
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
        let q = subscribe(&t.state, &cat, "pro-m", "s2", date(2024, 1, 10, 0)).unwrap();
        assert_eq!(charges(&q.effects), vec![(0, 2500, date(2024, 1, 10, 0))]);
        assert_eq!(q.state.queued_starts_at(), Some(date(2024, 2, 1, 0)));
        assert_eq!(
            subscribe(&q.state, &cat, "basic-y", "s3", date(2024, 1, 11, 0)),
            Err(LedgerError::PlanAlreadyQueued)
        );
        let s = tick_subscriptions(&q.state, &cat, date(2024, 2, 1, 0));
        assert!(charges(&s.effects).is_empty(), "{:?}", s.effects);
        assert!(s.effects.contains(&SubscriptionEffect::Ended {
            subscription_id: "s1".into(),
            plan_id: "basic-m".into(),
            reason: EndReason::Switched,
            at: date(2024, 2, 1, 0),
        }));
        let cur = s.state.current.as_ref().unwrap();
        assert_eq!((cur.id.as_str(), cur.anchor), ("s2", date(2024, 2, 1, 0)));
        assert_eq!(grants(&s.effects).len(), 1);
        assert!(s.state.queued.is_none());
        // Its second period is charged at its own renewal.
        let r = tick_subscriptions(&s.state, &cat, date(2024, 3, 1, 0));
        assert_eq!(charges(&r.effects), vec![(1, 2500, date(2024, 3, 1, 0))]);
    }

    #[test]
    fn errors_name_what_is_missing_or_pointless() {
        let cat = catalogue();
        let empty = SubscriptionState::default();
        assert_eq!(
            cancel_subscription(&empty, &cat, 0),
            Err(LedgerError::NoSubscription)
        );
        assert_eq!(
            cancel_queued_plan(&empty, &cat, 0),
            Err(LedgerError::NoQueuedPlan)
        );
        assert_eq!(
            subscribe(&empty, &cat, "nope", "s", 0),
            Err(LedgerError::UnknownPlan("nope".into()))
        );
        let t = subscribe(&empty, &cat, "basic-m", "s1", 0).unwrap();
        assert_eq!(
            subscribe(&t.state, &cat, "basic-m", "s2", 1),
            Err(LedgerError::AlreadySubscribed("basic-m".into()))
        );
        // Cancelling twice changes nothing the second time.
        let c = cancel_subscription(&t.state, &cat, 5).unwrap();
        let c2 = cancel_subscription(&c.state, &cat, 6).unwrap();
        assert_eq!(c2.state, c.state);
        assert!(c2.effects.is_empty());
    }

    #[test]
    fn termination_ends_everything_without_refunds() {
        let cat = catalogue();
        let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", 0).unwrap();
        let q = subscribe(&t.state, &cat, "pro-m", "s2", DAY_MS).unwrap();
        let end = terminate_subscriptions(&q.state, &cat, 2 * DAY_MS);
        assert!(refunds(&end.effects).is_empty());
        assert_eq!(end.state, SubscriptionState::default());
        assert_eq!(end.effects.len(), 2);
    }

    #[test]
    fn a_plan_gone_from_the_catalogue_ends_at_its_renewal_uncharged() {
        let mut cat = catalogue();
        let t = subscribe(&SubscriptionState::default(), &cat, "pro-m", "s1", 0).unwrap();
        cat.plans.retain(|p| p.id != "pro-m");
        let r = tick_subscriptions(&t.state, &cat, 40 * DAY_MS);
        assert!(charges(&r.effects).is_empty());
        assert!(r.state.current.is_none());
        assert!(matches!(
            r.effects.last(),
            Some(SubscriptionEffect::Ended {
                reason: EndReason::PlanUnavailable,
                ..
            })
        ));
    }

    #[test]
    fn events_dispatch_to_their_functions() {
        let cat = catalogue();
        let ev = SubscriptionEvent::Subscribe {
            plan_id: "basic-m".into(),
            subscription_id: "s1".into(),
        };
        let a = apply_subscription_event(&SubscriptionState::default(), &cat, &ev, 0).unwrap();
        let b = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", 0).unwrap();
        assert_eq!(a, b);
        let c = apply_subscription_event(&a.state, &cat, &SubscriptionEvent::Cancel, 1).unwrap();
        assert!(c.state.current.unwrap().cancellation.is_some());
    }
}
