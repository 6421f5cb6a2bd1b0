//! Kinema's database. Every job state change is written in one transaction with its
//! money effect (HOLD, DEBIT, RELEASE, REFUND), so no path changes one without the
//! other; every ending goes through one function (`ending.rs`). SQLite (WAL,
//! `synchronous=FULL`) is the embedded backend, PostgreSQL the shared one.

mod accounts;
mod attempts;
mod bench;
mod callbacks;
mod cancel;
mod catalog;
mod credits;
mod db;
mod ending;
mod entries;
mod error;
mod events;
mod job_changes;
mod jobs;
mod keys;
mod lease;
mod lifecycle;
mod locks;
mod lots;
mod members;
mod money;
mod policy;
mod postpaid;
mod purchases;
mod queue;
mod recovery;
mod retention;
mod rows;
mod submit;
mod subscriptions;
mod tx;
mod types;
mod verify;
mod workers;
mod writer;

pub use attempts::ProgressAck;
pub use callbacks::{AttemptNext, CallbackAttempt, CallbackDelivery, RotatedSecret};
pub use catalog::ItemKind;
pub use db::{Backend, Store, StorePolicy, DEFAULT_CURRENCY};
pub use error::{NotFound, StoreError};
pub use job_changes::{
    Heard, JobChange, JobChangeListener, JOB_CHANGES_CHANNEL, JOB_LISTENER_APPLICATION_NAME,
};
pub use lease::Leased;
pub use members::{Member, MemberAdded, SeatRule, Seats};
pub use policy::{
    DecisionFilter, PolicyDecision, PolicyDecisionDraft, PolicyRefusal, SuspensionRule,
    POLICY_ACTOR,
};
pub use purchases::MAX_PAYMENT_REF_CHARS;
pub use queue::{LeaseFilter, QueueLimit, QueueLimits};
pub use recovery::RecoveryReport;
pub use retention::ExpiredArtifact;
pub use types::*;
pub use verify::{LedgerExport, MoneyReport};
pub use workers::RemoteWorker;
