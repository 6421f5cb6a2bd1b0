//! Kinema's credit rules as pure functions over plain data. No I/O and no clock:
//! every rule that depends on time takes `now` (Unix milliseconds) as a parameter.
//! The store applies these inside its transactions (docs/api.md, "Money").
//!
//! One job per module:
//! - [`quote`](crate::quote()): the price book (§2.1);
//! - `lot`, `allocation`: FIFO-by-expiry debits and refunds to the source lots (§2.3, §2.4);
//! - [`expiry`]: expiry at the exact instant and forfeit on termination (§2.5, §2.6);
//! - [`calendar`]: calendar months in UTC ("a month of a subscription");
//! - `money`, `pricing`, `catalogue`: money, price schedules with notice, packs and plans (§3);
//! - `grant`, `pack`, `trial`: admin grants, pack purchases, one trial per account (§3);
//! - [`subscription`]: plan periods, renewals, cancellation, proration, queued plans (§3);
//! - [`postpaid`]: pay-as-you-go balances, arrears, suspension, termination (§4);
//! - [`verify`]: recomputes lots and jobs from ledger entries and checks the invariants (§2.7).

mod allocation;
pub mod calendar;
mod catalogue;
mod effects;
mod error;
pub mod expiry;
mod grant;
mod lot;
mod money;
mod pack;
pub mod postpaid;
mod pricing;
mod quote;
pub mod subscription;
mod trial;
pub mod verify;

pub use allocation::{allocate_debit, plan_refund, Allocation, RefundPlan};
pub use catalogue::{Catalogue, Pack, Plan, PlanInterval, Validity};
pub use effects::{EntryKind, LotSource, NewLot};
pub use error::LedgerError;
pub use expiry::{due_expiries, forfeit_all, live_total, Expiry, ForfeitPlan};
pub use grant::admin_grant;
pub use lot::{debit_order, is_live, LotState};
pub use money::{Currency, Money};
pub use pack::{purchase_pack, PackPurchase};
pub use postpaid::{
    advance_postpaid, charge_job, postpaid_can_submit, postpaid_status, top_up, PostpaidAccount,
    PostpaidEffect, PostpaidPhase, PostpaidPolicy, PostpaidStatus, PostpaidTransition,
    DEFAULT_POSTPAID_GRACE_MS, DEFAULT_SUSPENSION_LIMIT_MS,
};
pub use pricing::{
    price_at, schedule_price_change, PriceHistory, ScheduledPrice, DEFAULT_PRICE_NOTICE_MS,
};
pub use quote::{quote, ModelPrice, Quote, TierPrice};
pub use subscription::{
    apply_subscription_event, buy_seats, cancel_queued_plan, cancel_subscription, seats_in_force,
    subscribe, terminate_subscriptions, tick_subscriptions, Cancellation, CancellationKind,
    EndReason, MoneyRefundReason, QueuedPlan, Subscription, SubscriptionEffect, SubscriptionEvent,
    SubscriptionState, Transition, RENEWAL_CANCEL_NOTICE_MS,
};
pub use trial::{start_trial, TrialOffer, TrialRecord, TrialStart, DEFAULT_TRIAL_MS};
pub use verify::{
    verify_ledger, AccountTotals, EntryRecord, JobRecord, JobState, JobTotals, LotRecord,
    LotTotals, Problem, VerifyPolicy, VerifyReport,
};

/// Whole credits. Never a float.
pub type Credits = i64;

/// Unix time in milliseconds, as handed in by the caller's clock.
pub type UnixMillis = i64;

/// How long credits refunded into an already-expired lot stay usable (docs/api.md, "Refunds").
pub const DEFAULT_REFUND_GRACE_MS: i64 = 7 * 24 * 60 * 60 * 1000;
