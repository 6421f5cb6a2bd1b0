//! Kinema's database. Every job state change is written in one transaction with its
//! money effect (HOLD, DEBIT, RELEASE, REFUND), so no path changes one without the
//! other. SQLite (WAL, `synchronous=FULL`) is the embedded backend.

mod accounts;
mod credits;
mod db;
mod error;
mod jobs;
mod keys;
mod retention;
mod types;
mod verify;
mod worker;

pub use db::{Backend, Store, StorePolicy};
pub use error::StoreError;
pub use retention::ExpiredArtifact;
pub use types::*;
pub use verify::LedgerExport;
pub use worker::{Leased, ProgressAck, RecoveryReport};
