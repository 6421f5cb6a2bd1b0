//! An account's plans: the subscription in force, its cancellation, and the plan
//! queued to follow it.

use serde::{Deserialize, Serialize};

use crate::calendar::add_months;
use crate::{Credits, Money, PlanInterval, UnixMillis};

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
    /// Seats bought on top of the plan's own for the current period; each renewal
    /// charges them again at the plan's `extra_seat_price` (docs/api.md,
    /// "Organisations and seats").
    #[serde(default)]
    pub extra_seats: u32,
}

impl Subscription {
    /// When access ends, if it is set to end.
    pub fn ends_at(&self) -> Option<UnixMillis> {
        self.cancellation.map(|c| c.ends_at)
    }

    pub(super) fn month_start(&self, m: u32) -> UnixMillis {
        add_months(self.anchor, i64::from(m))
    }

    pub(super) fn period_boundary(&self, period: u32) -> UnixMillis {
        add_months(
            self.anchor,
            i64::from(period) * i64::from(self.interval.months()),
        )
    }

    /// The first month after the current period.
    pub(super) fn period_end_month(&self) -> u32 {
        (self.period + 1).saturating_mul(self.interval.months())
    }

    /// What the current period's first `months` months cost, pro rata of `paid`,
    /// rounded up (in the customer's favour when owed back); all of it at most.
    pub(super) fn share_of_paid(&self, months: u32) -> i64 {
        let per = i128::from(self.interval.months());
        let months = i128::from(months).min(per);
        let share = (i128::from(self.paid.minor.max(0)) * months + per - 1) / per;
        i64::try_from(share).unwrap_or(i64::MAX)
    }

    /// Price of one started month when an annual period is prorated.
    pub(super) fn month_price(&self) -> Money {
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

    /// The next instant at which [`tick_subscriptions`](super::tick_subscriptions) has
    /// something to do (a grant, a renewal or an end), for the sweeper's schedule.
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
