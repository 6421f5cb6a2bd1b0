use std::fmt;

use kinema_ledger::Credits;

/// What the store looked for and did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    Job,
    Account,
    ApiKey,
    Lot,
    Subscription,
    Member,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotFound::Job => "job",
            NotFound::Account => "account",
            NotFound::ApiKey => "api key",
            NotFound::Lot => "lot",
            NotFound::Subscription => "subscription",
            NotFound::Member => "member",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database writer: {0}")]
    Writer(String),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(NotFound),
    #[error("insufficient credits: {needed} needed, {available} available")]
    InsufficientCredits { needed: Credits, available: Credits },
    /// Suspended (by an operator, or by arrears past their grace): no new jobs until
    /// reinstated or topped up.
    #[error("account is {status}")]
    AccountNotActive { status: String },
    #[error("idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("external_id is already used by job {job_id}")]
    ExternalIdConflict { job_id: String },
    #[error("the job is no longer leased to this worker")]
    LeaseLost,
    /// A remote worker could not reach the control plane, or it answered with an
    /// error the worker cannot act on.
    #[error("control plane: {0}")]
    Unavailable(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// Adding `adding` credits would take the account's credits past what the ledger
    /// can count.
    #[error("the account holds {total} credits: {adding} more would overflow its balance")]
    BalanceOverflow { total: Credits, adding: Credits },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Ledger(#[from] kinema_ledger::LedgerError),
    #[error("payment_ref {payment_ref:?} was already used for {used_for}")]
    PaymentRefConflict {
        payment_ref: String,
        used_for: String,
    },
    /// Terminated or deleted: closed for good.
    #[error("the account is {status}")]
    AccountClosed { status: String },
    #[error("the account is {actual}: {what} needs a {needed} account")]
    BillingMode {
        actual: crate::BillingMode,
        needed: crate::BillingMode,
        what: &'static str,
    },
    #[error("the queue is full: {queued} jobs queued, the {limit} limit is {max}")]
    QueueFull {
        limit: crate::QueueLimit,
        max: u32,
        queued: u64,
    },
    /// Every seat the account has is taken (docs/api.md, "Organisations and seats").
    #[error("all {seats} seats of the account are taken: buy a seat or remove a member")]
    SeatsExhausted { seats: u32, members: u32 },
    /// The account's last owner cannot be removed or demoted.
    #[error("member {member_id} is the account's last owner")]
    LastOwner { member_id: String },
    #[error("account deletion refused: {}", crate::DeletionRefusal::describe_all(.0))]
    DeletionRefused(Vec<crate::DeletionRefusal>),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("json: {e}"))
    }
}

impl From<std::num::TryFromIntError> for StoreError {
    fn from(e: std::num::TryFromIntError) -> Self {
        StoreError::Corrupt(format!("a stored number is out of range: {e}"))
    }
}
