use crate::{Credits, Currency, UnixMillis};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient credits: {needed} needed, {available} available")]
    InsufficientCredits { needed: Credits, available: Credits },
    #[error("amount must be positive, got {0}")]
    NonPositiveAmount(Credits),
    #[error("refund names lot {0}, which the account does not have")]
    UnknownLot(i64),
    /// A request the price book cannot price; `field` is the request's field at fault
    /// (`width`, `height`, `num_frames`, `fps`, `steps`).
    #[error("{field}: {reason}")]
    InvalidQuote { field: &'static str, reason: String },
    /// A price book entry that prices nothing (a model's configuration, not a request).
    #[error("invalid price book entry: {0}")]
    InvalidPrice(String),

    #[error("unknown job state {0:?}")]
    UnknownJobState(String),
    #[error("unknown ledger entry kind {0:?}")]
    UnknownEntryKind(String),
    #[error("expires_at {expires_at} is not after now ({now})")]
    ExpiryNotInFuture {
        expires_at: UnixMillis,
        now: UnixMillis,
    },

    #[error("{0:?} is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("currency mismatch: expected {expected}, got {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("amount overflows")]
    AmountOverflow,
    #[error("a price cannot be negative, got {0}")]
    NegativePrice(i64),
    #[error(
        "price change effective at {effective_at} is announced at {announced_at}: \
         the notice period requires {earliest} or later"
    )]
    PriceNoticeTooShort {
        announced_at: UnixMillis,
        effective_at: UnixMillis,
        earliest: UnixMillis,
    },
    #[error("no price is in effect at {at}")]
    NoPriceInEffect { at: UnixMillis },
    #[error("unknown pack {0:?}")]
    UnknownPack(String),
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("invalid catalogue: {0}")]
    InvalidCatalogue(String),

    #[error("the account already used its trial (at {used_at})")]
    TrialAlreadyUsed { used_at: UnixMillis },

    #[error("the account has no subscription to cancel")]
    NoSubscription,
    #[error("the account has no queued plan")]
    NoQueuedPlan,
    #[error("a plan is already queued to start after the current one")]
    PlanAlreadyQueued,
    #[error("the account is already subscribed to plan {0:?} and it renews")]
    AlreadySubscribed(String),

    #[error("plan {0:?} sells no extra seats")]
    SeatsNotSold(String),
    #[error("the account has no plan in force to add seats to")]
    NoPlanForSeats,

    #[error("the account is suspended")]
    AccountSuspended,
    #[error("the account is terminated")]
    AccountTerminated,
}

impl LedgerError {
    /// The stable machine-readable reason of docs/api.md, "Errors", where the error is one
    /// the contract names (`FAILED_PRECONDITION` reasons); `None` otherwise.
    pub fn contract_reason(&self) -> Option<&'static str> {
        match self {
            LedgerError::InsufficientCredits { .. } => Some("INSUFFICIENT_CREDITS"),
            LedgerError::PriceNoticeTooShort { .. } => Some("PRICE_NOTICE_TOO_SHORT"),
            LedgerError::AccountSuspended | LedgerError::AccountTerminated => {
                Some("ACCOUNT_SUSPENDED")
            }
            _ => None,
        }
    }
}
