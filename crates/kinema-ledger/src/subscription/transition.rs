//! What every call of the state machine returns: the new state, and the effects the
//! store writes for it (charges, money owed back, lots, changes of state).

use serde::{Deserialize, Serialize};

use super::SubscriptionState;
use crate::{Money, NewLot, UnixMillis};

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
    /// The platform collects `amount` for `seats` extra seats for `period` (bought
    /// during it, or renewed with it).
    SeatsCharge {
        subscription_id: String,
        plan_id: String,
        period: u32,
        seats: u32,
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
