//! Every difference and broken invariant the checker can report.

use serde::Serialize;

use super::JobState;
use crate::{Credits, EntryKind, UnixMillis};

/// One difference or violated invariant. The message names what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    #[error("entry {entry_id} appears more than once")]
    DuplicateEntryId { entry_id: i64 },
    #[error("entry {entry_id} has a negative amount {amount}")]
    NegativeAmount { entry_id: i64, amount: Credits },
    #[error("entry {entry_id} ({kind}) amount {amount} but its allocations sum to {allocated}")]
    AllocationSumMismatch {
        entry_id: i64,
        kind: EntryKind,
        amount: Credits,
        allocated: Credits,
    },
    #[error("entry {entry_id} ({kind}) has an allocation of {amount} to lot {lot_id}")]
    BadAllocation {
        entry_id: i64,
        kind: EntryKind,
        lot_id: i64,
        amount: Credits,
    },
    #[error("entry {entry_id} ({kind}) names lots but moves no credits of a lot")]
    UnexpectedAllocations { entry_id: i64, kind: EntryKind },
    #[error("entry {entry_id} ({kind}) has no job id")]
    MissingJobId { entry_id: i64, kind: EntryKind },
    #[error("entry {entry_id} names lot {lot_id}, which is not stored")]
    LotMissing { entry_id: i64, lot_id: i64 },
    #[error(
        "entry {entry_id} of account {entry_account} names lot {lot_id} of account {lot_account}"
    )]
    LotAccountMismatch {
        entry_id: i64,
        lot_id: i64,
        entry_account: String,
        lot_account: String,
    },
    #[error("entry {entry_id} ({kind}) creates lot {lot_id}, created before by entry {first}")]
    LotCreatedTwice {
        entry_id: i64,
        kind: EntryKind,
        lot_id: i64,
        first: i64,
    },
    #[error("entry {entry_id} ({kind}) uses lot {lot_id} before any entry created it")]
    LotUsedBeforeCreated {
        entry_id: i64,
        kind: EntryKind,
        lot_id: i64,
    },
    #[error("stored lot {lot_id} was created by no entry")]
    LotWithoutEntry { lot_id: i64 },
    #[error("lot {lot_id} goes negative ({remaining}) at entry {entry_id:?}")]
    LotNegative {
        lot_id: i64,
        entry_id: Option<i64>,
        remaining: Credits,
    },
    #[error(
        "lot {lot_id} holds {remaining}, above its original {original}, at entry {entry_id:?}"
    )]
    LotAboveOriginal {
        lot_id: i64,
        entry_id: Option<i64>,
        remaining: Credits,
        original: Credits,
    },
    #[error("lot {lot_id}: stored original {stored}, entries say {recomputed}")]
    LotOriginalMismatch {
        lot_id: i64,
        stored: Credits,
        recomputed: Credits,
    },
    #[error("lot {lot_id}: stored remaining {stored}, entries say {recomputed}")]
    LotRemainingMismatch {
        lot_id: i64,
        stored: Credits,
        recomputed: Credits,
    },
    #[error("entry {entry_id} debits lot {lot_id} at {at}, at or after its expiry {expires_at}")]
    DebitFromExpiredLot {
        entry_id: i64,
        lot_id: i64,
        at: UnixMillis,
        expires_at: UnixMillis,
    },
    #[error("entry {entry_id} refunds into lot {lot_id} at {at}, at or after its expiry {expires_at}: it should go to a refund lot")]
    RefundIntoExpiredLot {
        entry_id: i64,
        lot_id: i64,
        at: UnixMillis,
        expires_at: UnixMillis,
    },
    #[error("entry {entry_id} refunds {amount} into lot {lot_id}, which the job's debit took only {debited} from")]
    RefundNotToSource {
        entry_id: i64,
        lot_id: i64,
        amount: Credits,
        debited: Credits,
    },
    #[error("entry {entry_id} expires lot {lot_id} at {at}, before its expiry {expires_at:?}")]
    ExpiredEarly {
        entry_id: i64,
        lot_id: i64,
        at: UnixMillis,
        expires_at: Option<UnixMillis>,
    },
    #[error("entry {entry_id} expires only part of lot {lot_id}: {left} left")]
    PartialExpiry {
        entry_id: i64,
        lot_id: i64,
        left: Credits,
    },
    #[error("entry {entry_id} names job {job_id}, which is not stored")]
    UnknownJob { entry_id: i64, job_id: String },
    #[error(
        "entry {entry_id} of account {entry_account} names job {job_id} of account {job_account}"
    )]
    JobAccountMismatch {
        entry_id: i64,
        job_id: String,
        entry_account: String,
        job_account: String,
    },
    #[error("job {job_id} has {count} {kind} entries; at most one is allowed")]
    DuplicateJobEntry {
        job_id: String,
        kind: EntryKind,
        count: u32,
    },
    #[error("entry {entry_id} ({kind}) for job {job_id} without an outstanding hold")]
    NoOutstandingHold {
        entry_id: i64,
        kind: EntryKind,
        job_id: String,
    },
    #[error("entry {entry_id} releases {amount} of job {job_id}, whose hold is {held}")]
    ReleaseMismatch {
        entry_id: i64,
        job_id: String,
        amount: Credits,
        held: Credits,
    },
    #[error("entry {entry_id} refunds job {job_id}, which has no debit before it")]
    RefundWithoutDebit { entry_id: i64, job_id: String },
    #[error("entry {entry_id} (HOLD) leaves {held} held against {balance} usable credits")]
    HoldExceedsBalance {
        entry_id: i64,
        held: Credits,
        balance: Credits,
    },
    #[error("job {job_id}: hold {held} is not the quote {quoted}")]
    HoldNotQuote {
        job_id: String,
        held: Credits,
        quoted: Credits,
    },
    #[error("job {job_id}: debited {debited} is neither 0 nor the quote {quoted}")]
    DebitNotQuote {
        job_id: String,
        debited: Credits,
        quoted: Credits,
    },
    #[error("job {job_id}: refunded {refunded} is neither 0 nor the debit {debited}")]
    RefundNotDebit {
        job_id: String,
        refunded: Credits,
        debited: Credits,
    },
    #[error("job {job_id} is {state} but was refunded {refunded}")]
    RefundNotAllowed {
        job_id: String,
        state: JobState,
        refunded: Credits,
    },
    #[error("job {job_id} is {state} after a debit of {debited} and was not refunded")]
    MissingRefund {
        job_id: String,
        state: JobState,
        debited: Credits,
    },
    #[error("job {job_id} is {state} and still holds {held}")]
    HoldNotReleased {
        job_id: String,
        state: JobState,
        held: Credits,
    },
    #[error("job {job_id}: stored {field} {stored}, entries say {recomputed}")]
    JobMismatch {
        job_id: String,
        field: &'static str,
        stored: Credits,
        recomputed: Credits,
    },
    #[error("entry {entry_id}: stored {field} {stored}, entries say {recomputed}")]
    EntryBalanceMismatch {
        entry_id: i64,
        field: &'static str,
        stored: Credits,
        recomputed: Credits,
    },
    #[error(
        "account {account_id}: credits not conserved: granted {granted} + adjusted {adjusted} != \
         remaining {remaining} + debited {debited} - refunded {refunded} + expired {expired} + \
         forfeited {forfeited}"
    )]
    ConservationViolated {
        account_id: String,
        granted: i128,
        adjusted: i128,
        remaining: i128,
        debited: i128,
        refunded: i128,
        expired: i128,
        forfeited: i128,
    },
}
