use crate::Credits;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient credits: {needed} needed, {available} available")]
    InsufficientCredits { needed: Credits, available: Credits },
    #[error("amount must be positive, got {0}")]
    NonPositiveAmount(Credits),
    #[error("refund names lot {0}, which the account does not have")]
    UnknownLot(i64),
    #[error("{field}: {reason}")]
    InvalidQuote { field: &'static str, reason: String },
}
