//! Kinema's database. Every job state change is written in one transaction with its
//! money effect (HOLD, DEBIT, RELEASE, REFUND), so no path changes one without the
//! other. SQLite (WAL, `synchronous=FULL`) is the embedded backend.

mod accounts;
mod bench;
mod catalog;
mod credits;
mod db;
mod error;
mod events;
mod jobs;
mod keys;
mod lifecycle;
mod postpaid;
mod purchases;
mod queue;
mod retention;
mod subscriptions;
mod types;
mod verify;
mod worker;
mod writer;

pub use catalog::ItemKind;
pub use db::{Backend, Store, StorePolicy, DEFAULT_CURRENCY};
pub use error::StoreError;
pub use purchases::MAX_PAYMENT_REF_CHARS;
pub use queue::{LeaseFilter, QueueLimit, QueueLimits};
pub use retention::ExpiredArtifact;
pub use types::*;
pub use verify::{LedgerExport, MoneyReport};
pub use worker::{Leased, ProgressAck, RecoveryReport};
