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
//!
//! - **Seats.** A plan includes `seats` members; extra seats are bought for the
//!   current period at the plan's `extra_seat_price` each ([`buy_seats`], charged in
//!   full: no proration) and each renewal charges them again with the plan. They end
//!   with the subscription (a plan that starts later has its own seats only); seat
//!   charges are never prorated or refunded on cancellation.
//!
//! One job per file: `state` (the subscription and the queued plan), `transition`
//! (what a call returns: the new state and its effects), `events` (the public calls),
//! `catch_up` (grants, renewals and ends due by `now`, missed months, proration).

mod catch_up;
mod events;
mod seats;
mod state;
mod transition;

pub use events::{
    apply_subscription_event, cancel_queued_plan, cancel_subscription, subscribe,
    terminate_subscriptions, tick_subscriptions, SubscriptionEvent,
};
pub use seats::{buy_seats, seats_in_force};
pub use state::{Cancellation, CancellationKind, QueuedPlan, Subscription, SubscriptionState};
pub use transition::{EndReason, MoneyRefundReason, SubscriptionEffect, Transition};

use crate::calendar::HOUR_MS;

/// A cancellation stops the next renewal only when made at least this long before it.
pub const RENEWAL_CANCEL_NOTICE_MS: i64 = 24 * HOUR_MS;

#[cfg(test)]
mod tests;
