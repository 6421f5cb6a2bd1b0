//! Kinema's credit rules as pure functions over plain data. No I/O and no clock:
//! every rule that depends on time takes `now` (Unix milliseconds) as a parameter.
//! The store applies these inside its transactions (CONTRACT.md §2).

mod allocation;
mod error;
mod lot;
mod quote;

pub use allocation::{allocate_debit, plan_refund, Allocation, RefundPlan};
pub use error::LedgerError;
pub use lot::{debit_order, is_live, LotState};
pub use quote::{quote, ModelPrice, Quote, QuoteInput, TierPrice};

/// Whole credits. Never a float.
pub type Credits = i64;

/// Unix time in milliseconds, as handed in by the caller's clock.
pub type UnixMillis = i64;

/// How long credits refunded into an already-expired lot stay usable (CONTRACT.md §2.4).
pub const DEFAULT_REFUND_GRACE_MS: i64 = 7 * 24 * 60 * 60 * 1000;
