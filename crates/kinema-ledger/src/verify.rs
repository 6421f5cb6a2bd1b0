//! The ledger checker behind `kinema ledger verify` (CONTRACT.md §2.7 and the
//! invariants at the end of §2).
//!
//! Given every ledger entry and the stored lots and jobs, [`verify_ledger`] replays the
//! entries in id order, recomputes each lot's original and remaining, each job's hold,
//! debit and refund, each account's totals and each entry's `balance_after` and
//! `held_after`, and reports every difference from what is stored and every violated
//! invariant as a [`Problem`]. An empty problem list means the ledger is sound.
//!
//! How entries move credits (amounts are never negative; allocations say which lots):
//! - GRANT, PURCHASE, TRIAL, SUBSCRIPTION_GRANT create the lots they name, each with
//!   its allocation as original and remaining;
//! - HOLD and RELEASE name no lots; a job's outstanding hold is its HOLD's amount until
//!   a RELEASE or its DEBIT;
//! - DEBIT takes its allocations from live lots (not at or after their `expires_at`);
//! - REFUND gives back to the lots of the job's DEBIT (live ones), and creates a refund
//!   lot for the share of expired ones: an allocation naming a lot not yet seen;
//! - EXPIRE takes a lot's whole remaining, at or after its `expires_at`;
//! - FORFEIT takes credits from lots;
//! - ADJUST allocations are signed (positive adds, or creates a lot not yet seen;
//!   negative removes); its amount is the absolute value of their sum.
//!
//! `balance_after` is the sum of the remaining of the account's lots live at the entry's
//! time (`expires_at` after `created_at`), after the entry; `held_after` is the sum of
//! the account's outstanding holds after it.
//!
//! Conservation per account, with `adjusted` the net of ADJUST entries:
//! `granted + adjusted = remaining + debited - refunded + expired + forfeited`,
//! where `remaining` is the stored lots' and the others come from the entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Allocation, Credits, EntryKind, LedgerError, UnixMillis};

/// A ledger entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub id: i64,
    pub account_id: String,
    pub kind: EntryKind,
    pub amount: Credits,
    pub allocations: Vec<Allocation>,
    pub job_id: Option<String>,
    /// Checked when present.
    pub balance_after: Option<Credits>,
    /// Checked when present.
    pub held_after: Option<Credits>,
    pub created_at: UnixMillis,
}

/// A lot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotRecord {
    pub id: i64,
    pub account_id: String,
    pub original: Credits,
    pub remaining: Credits,
    pub expires_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
        .ok_or_else(|| LedgerError::UnknownJobState(s.to_string()))
    }
}

/// A job's money columns as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub account_id: String,
    pub state: JobState,
    pub quoted: Credits,
    /// The hold still outstanding.
    pub held: Credits,
    pub debited: Credits,
    pub refunded: Credits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// Whether a job cancelled while running is refunded (CONTRACT.md §1, default on).
    pub refund_on_cancel: bool,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            refund_on_cancel: true,
        }
    }
}

/// A lot as recomputed from the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotTotals {
    pub account_id: String,
    /// The entry that created it.
    pub created_by: Option<i64>,
    pub original: Credits,
    pub remaining: Credits,
    pub debited: Credits,
    pub refunded: Credits,
    pub expired: Credits,
    pub forfeited: Credits,
    pub adjusted: Credits,
}

/// A job as recomputed from the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTotals {
    pub account_id: String,
    /// The amount of its HOLD entry.
    pub hold: Credits,
    /// The hold still outstanding.
    pub held: Credits,
    pub debited: Credits,
    pub refunded: Credits,
    pub holds: u32,
    pub releases: u32,
    pub debits: u32,
    pub refunds: u32,
    /// What the DEBIT took from each lot.
    pub debit_allocations: Vec<Allocation>,
}

/// An account's totals: from the entries, and `remaining` from the stored lots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotals {
    pub granted: Credits,
    pub adjusted: Credits,
    pub remaining: Credits,
    pub debited: Credits,
    pub refunded: Credits,
    pub expired: Credits,
    pub forfeited: Credits,
}

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
        granted: Credits,
        adjusted: Credits,
        remaining: Credits,
        debited: Credits,
        refunded: Credits,
        expired: Credits,
        forfeited: Credits,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub lots: BTreeMap<i64, LotTotals>,
    pub jobs: BTreeMap<String, JobTotals>,
    pub accounts: BTreeMap<String, AccountTotals>,
    pub entries_checked: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Replay<'a> {
    lots: BTreeMap<i64, LotTotals>,
    lot_expiry: BTreeMap<i64, Option<UnixMillis>>,
    account_lots: BTreeMap<String, BTreeSet<i64>>,
    account_held: BTreeMap<String, Credits>,
    jobs: BTreeMap<String, JobTotals>,
    stored_lots: BTreeMap<i64, &'a LotRecord>,
    stored_jobs: BTreeMap<&'a str, &'a JobRecord>,
    accounts: BTreeMap<String, AccountTotals>,
    problems: Vec<Problem>,
}

/// Replays `entries` against the stored `lots` and `jobs` (any order) and reports.
pub fn verify_ledger(
    entries: &[EntryRecord],
    lots: &[LotRecord],
    jobs: &[JobRecord],
    policy: &VerifyPolicy,
) -> VerifyReport {
    let mut r = Replay {
        lots: BTreeMap::new(),
        lot_expiry: BTreeMap::new(),
        account_lots: BTreeMap::new(),
        account_held: BTreeMap::new(),
        jobs: BTreeMap::new(),
        stored_lots: lots.iter().map(|l| (l.id, l)).collect(),
        stored_jobs: jobs.iter().map(|j| (j.id.as_str(), j)).collect(),
        accounts: BTreeMap::new(),
        problems: Vec::new(),
    };
    let mut sorted: Vec<&EntryRecord> = entries.iter().collect();
    sorted.sort_by_key(|e| e.id);
    for pair in sorted.windows(2) {
        if pair[0].id == pair[1].id {
            r.problems.push(Problem::DuplicateEntryId {
                entry_id: pair[0].id,
            });
        }
    }
    for e in &sorted {
        r.apply(e);
    }
    r.check_lots(lots);
    r.check_jobs(jobs, policy);
    r.check_conservation(lots);
    VerifyReport {
        lots: r.lots,
        jobs: r.jobs,
        accounts: r.accounts,
        entries_checked: sorted.len(),
        problems: r.problems,
    }
}

impl Replay<'_> {
    fn apply(&mut self, e: &EntryRecord) {
        if e.amount < 0 {
            self.problems.push(Problem::NegativeAmount {
                entry_id: e.id,
                amount: e.amount,
            });
        }
        self.check_allocation_shape(e);
        let totals = self.accounts.entry(e.account_id.clone()).or_default();
        match e.kind {
            k if k.creates_lots() => totals.granted += e.amount,
            EntryKind::Debit => totals.debited += e.amount,
            EntryKind::Refund => totals.refunded += e.amount,
            EntryKind::Expire => totals.expired += e.amount,
            EntryKind::Forfeit => totals.forfeited += e.amount,
            EntryKind::Adjust => {
                totals.adjusted += e.allocations.iter().map(|a| a.amount).sum::<Credits>()
            }
            _ => {}
        }
        let job = self.job_for(e);
        match e.kind {
            EntryKind::Hold => {
                if let Some(job_id) = &job {
                    let j = self.jobs.get_mut(job_id).expect("job_for inserts");
                    j.holds += 1;
                    j.hold = e.amount;
                    j.held = e.amount;
                    *self.account_held.entry(e.account_id.clone()).or_default() += e.amount;
                }
            }
            EntryKind::Release => {
                if let Some(job_id) = &job {
                    let j = self.jobs.get_mut(job_id).expect("job_for inserts");
                    j.releases += 1;
                    if j.held == 0 {
                        self.problems.push(Problem::NoOutstandingHold {
                            entry_id: e.id,
                            kind: e.kind,
                            job_id: job_id.clone(),
                        });
                    } else if j.held != e.amount {
                        self.problems.push(Problem::ReleaseMismatch {
                            entry_id: e.id,
                            job_id: job_id.clone(),
                            amount: e.amount,
                            held: j.held,
                        });
                    }
                    *self.account_held.entry(e.account_id.clone()).or_default() -= j.held;
                    j.held = 0;
                }
            }
            EntryKind::Debit => {
                if let Some(job_id) = &job {
                    let j = self.jobs.get_mut(job_id).expect("job_for inserts");
                    j.debits += 1;
                    if j.held == 0 {
                        self.problems.push(Problem::NoOutstandingHold {
                            entry_id: e.id,
                            kind: e.kind,
                            job_id: job_id.clone(),
                        });
                    }
                    *self.account_held.entry(e.account_id.clone()).or_default() -= j.held;
                    j.held = 0;
                    j.debited += e.amount;
                    j.debit_allocations.extend(e.allocations.iter().copied());
                }
                for a in &e.allocations {
                    self.take(e, a, |l| &mut l.debited);
                }
            }
            EntryKind::Refund => self.refund(e, job.as_deref()),
            EntryKind::Expire => {
                for a in &e.allocations {
                    if let Some(expires_at) = self.expiry_of(a.lot_id) {
                        if expires_at.is_none_or(|x| e.created_at < x) {
                            self.problems.push(Problem::ExpiredEarly {
                                entry_id: e.id,
                                lot_id: a.lot_id,
                                at: e.created_at,
                                expires_at,
                            });
                        }
                    }
                    self.take(e, a, |l| &mut l.expired);
                    if let Some(l) = self.lots.get(&a.lot_id) {
                        if l.remaining > 0 {
                            self.problems.push(Problem::PartialExpiry {
                                entry_id: e.id,
                                lot_id: a.lot_id,
                                left: l.remaining,
                            });
                        }
                    }
                }
            }
            EntryKind::Forfeit => {
                for a in &e.allocations {
                    self.take(e, a, |l| &mut l.forfeited);
                }
            }
            EntryKind::Adjust => {
                for a in &e.allocations {
                    if a.amount > 0 && !self.lots.contains_key(&a.lot_id) {
                        self.create(e, a);
                    } else if self.known(e, a) {
                        let l = self.lots.get_mut(&a.lot_id).expect("known");
                        l.remaining += a.amount;
                        l.adjusted += a.amount;
                        self.check_bounds(a.lot_id, Some(e.id));
                    }
                }
            }
            _ => {
                // Lot-creating kinds.
                for a in &e.allocations {
                    self.create(e, a);
                }
            }
        }
        self.check_entry_balances(e);
    }

    fn check_allocation_shape(&mut self, e: &EntryRecord) {
        match e.kind {
            EntryKind::Hold | EntryKind::Release => {
                if !e.allocations.is_empty() {
                    self.problems.push(Problem::UnexpectedAllocations {
                        entry_id: e.id,
                        kind: e.kind,
                    });
                }
            }
            EntryKind::Adjust => {
                let net: Credits = e.allocations.iter().map(|a| a.amount).sum();
                if net.abs() != e.amount {
                    self.problems.push(Problem::AllocationSumMismatch {
                        entry_id: e.id,
                        kind: e.kind,
                        amount: e.amount,
                        allocated: net,
                    });
                }
                for a in e.allocations.iter().filter(|a| a.amount == 0) {
                    self.problems.push(Problem::BadAllocation {
                        entry_id: e.id,
                        kind: e.kind,
                        lot_id: a.lot_id,
                        amount: a.amount,
                    });
                }
            }
            _ => {
                let sum: Credits = e.allocations.iter().map(|a| a.amount).sum();
                if sum != e.amount {
                    self.problems.push(Problem::AllocationSumMismatch {
                        entry_id: e.id,
                        kind: e.kind,
                        amount: e.amount,
                        allocated: sum,
                    });
                }
                for a in e.allocations.iter().filter(|a| a.amount <= 0) {
                    self.problems.push(Problem::BadAllocation {
                        entry_id: e.id,
                        kind: e.kind,
                        lot_id: a.lot_id,
                        amount: a.amount,
                    });
                }
            }
        }
    }

    /// The job an entry of a job kind names (tracked even when not stored).
    fn job_for(&mut self, e: &EntryRecord) -> Option<String> {
        let job_kind = matches!(
            e.kind,
            EntryKind::Hold | EntryKind::Release | EntryKind::Debit | EntryKind::Refund
        );
        if !job_kind {
            return None;
        }
        let Some(job_id) = e.job_id.clone() else {
            self.problems.push(Problem::MissingJobId {
                entry_id: e.id,
                kind: e.kind,
            });
            return None;
        };
        if !self.jobs.contains_key(&job_id) {
            match self.stored_jobs.get(job_id.as_str()) {
                None => self.problems.push(Problem::UnknownJob {
                    entry_id: e.id,
                    job_id: job_id.clone(),
                }),
                Some(j) if j.account_id != e.account_id => {
                    self.problems.push(Problem::JobAccountMismatch {
                        entry_id: e.id,
                        job_id: job_id.clone(),
                        entry_account: e.account_id.clone(),
                        job_account: j.account_id.clone(),
                    })
                }
                Some(_) => {}
            }
            self.jobs.insert(
                job_id.clone(),
                JobTotals {
                    account_id: e.account_id.clone(),
                    ..JobTotals::default()
                },
            );
        }
        Some(job_id)
    }

    /// The stored expiry of a lot, checking it exists and belongs to the account.
    fn lot_meta(&mut self, e: &EntryRecord, lot_id: i64) -> Option<UnixMillis> {
        match self.stored_lots.get(&lot_id) {
            None => {
                self.problems.push(Problem::LotMissing {
                    entry_id: e.id,
                    lot_id,
                });
                None
            }
            Some(l) => {
                if l.account_id != e.account_id {
                    self.problems.push(Problem::LotAccountMismatch {
                        entry_id: e.id,
                        lot_id,
                        entry_account: e.account_id.clone(),
                        lot_account: l.account_id.clone(),
                    });
                }
                l.expires_at
            }
        }
    }

    fn expiry_of(&self, lot_id: i64) -> Option<Option<UnixMillis>> {
        self.lot_expiry.get(&lot_id).copied()
    }

    fn create(&mut self, e: &EntryRecord, a: &Allocation) {
        if let Some(l) = self.lots.get(&a.lot_id) {
            self.problems.push(Problem::LotCreatedTwice {
                entry_id: e.id,
                kind: e.kind,
                lot_id: a.lot_id,
                first: l.created_by.unwrap_or_default(),
            });
            return;
        }
        let expires_at = self.lot_meta(e, a.lot_id);
        self.lot_expiry.insert(a.lot_id, expires_at);
        self.account_lots
            .entry(e.account_id.clone())
            .or_default()
            .insert(a.lot_id);
        self.lots.insert(
            a.lot_id,
            LotTotals {
                account_id: e.account_id.clone(),
                created_by: Some(e.id),
                original: a.amount,
                remaining: a.amount,
                ..LotTotals::default()
            },
        );
        self.check_bounds(a.lot_id, Some(e.id));
    }

    /// Whether the allocation's lot was created before; reports it when not.
    fn known(&mut self, e: &EntryRecord, a: &Allocation) -> bool {
        if self.lots.contains_key(&a.lot_id) {
            if let Some(l) = self.stored_lots.get(&a.lot_id) {
                if l.account_id != e.account_id {
                    self.problems.push(Problem::LotAccountMismatch {
                        entry_id: e.id,
                        lot_id: a.lot_id,
                        entry_account: e.account_id.clone(),
                        lot_account: l.account_id.clone(),
                    });
                }
            }
            true
        } else {
            self.problems.push(Problem::LotUsedBeforeCreated {
                entry_id: e.id,
                kind: e.kind,
                lot_id: a.lot_id,
            });
            false
        }
    }

    fn take(&mut self, e: &EntryRecord, a: &Allocation, field: fn(&mut LotTotals) -> &mut Credits) {
        if !self.known(e, a) {
            return;
        }
        if e.kind == EntryKind::Debit {
            if let Some(Some(expires_at)) = self.expiry_of(a.lot_id) {
                if e.created_at >= expires_at {
                    self.problems.push(Problem::DebitFromExpiredLot {
                        entry_id: e.id,
                        lot_id: a.lot_id,
                        at: e.created_at,
                        expires_at,
                    });
                }
            }
        }
        let l = self.lots.get_mut(&a.lot_id).expect("known");
        l.remaining -= a.amount;
        *field(l) += a.amount;
        self.check_bounds(a.lot_id, Some(e.id));
    }

    fn refund(&mut self, e: &EntryRecord, job: Option<&str>) {
        let debit: Vec<Allocation> = match job {
            Some(job_id) => {
                let j = self.jobs.get_mut(job_id).expect("job_for inserts");
                j.refunds += 1;
                j.refunded += e.amount;
                if j.debits == 0 {
                    self.problems.push(Problem::RefundWithoutDebit {
                        entry_id: e.id,
                        job_id: job_id.to_string(),
                    });
                }
                j.debit_allocations.clone()
            }
            None => Vec::new(),
        };
        for a in &e.allocations {
            let from_debit: Credits = debit
                .iter()
                .filter(|d| d.lot_id == a.lot_id)
                .map(|d| d.amount)
                .sum();
            if from_debit == 0 && !self.lots.contains_key(&a.lot_id) {
                // A new refund lot for the share of expired lots.
                self.create(e, a);
                if let Some(l) = self.lots.get_mut(&a.lot_id) {
                    l.refunded += a.amount;
                }
                continue;
            }
            if !self.known(e, a) {
                continue;
            }
            if a.amount > from_debit {
                self.problems.push(Problem::RefundNotToSource {
                    entry_id: e.id,
                    lot_id: a.lot_id,
                    amount: a.amount,
                    debited: from_debit,
                });
            }
            if let Some(Some(expires_at)) = self.expiry_of(a.lot_id) {
                if e.created_at >= expires_at {
                    self.problems.push(Problem::RefundIntoExpiredLot {
                        entry_id: e.id,
                        lot_id: a.lot_id,
                        at: e.created_at,
                        expires_at,
                    });
                }
            }
            let l = self.lots.get_mut(&a.lot_id).expect("known");
            l.remaining += a.amount;
            l.refunded += a.amount;
            self.check_bounds(a.lot_id, Some(e.id));
        }
    }

    fn check_bounds(&mut self, lot_id: i64, entry_id: Option<i64>) {
        let Some(l) = self.lots.get(&lot_id) else {
            return;
        };
        if l.remaining < 0 {
            self.problems.push(Problem::LotNegative {
                lot_id,
                entry_id,
                remaining: l.remaining,
            });
        } else if l.remaining > l.original {
            self.problems.push(Problem::LotAboveOriginal {
                lot_id,
                entry_id,
                remaining: l.remaining,
                original: l.original,
            });
        }
    }

    fn check_entry_balances(&mut self, e: &EntryRecord) {
        let balance: Credits = self
            .account_lots
            .get(&e.account_id)
            .into_iter()
            .flatten()
            .filter(|id| {
                self.lot_expiry
                    .get(id)
                    .copied()
                    .flatten()
                    .is_none_or(|x| e.created_at < x)
            })
            .filter_map(|id| self.lots.get(id))
            .map(|l| l.remaining)
            .sum();
        let held = self
            .account_held
            .get(&e.account_id)
            .copied()
            .unwrap_or_default();
        if let Some(stored) = e.balance_after.filter(|s| *s != balance) {
            self.problems.push(Problem::EntryBalanceMismatch {
                entry_id: e.id,
                field: "balance_after",
                stored,
                recomputed: balance,
            });
        }
        if let Some(stored) = e.held_after.filter(|s| *s != held) {
            self.problems.push(Problem::EntryBalanceMismatch {
                entry_id: e.id,
                field: "held_after",
                stored,
                recomputed: held,
            });
        }
        if e.kind == EntryKind::Hold && held > balance {
            self.problems.push(Problem::HoldExceedsBalance {
                entry_id: e.id,
                held,
                balance,
            });
        }
    }

    fn check_lots(&mut self, lots: &[LotRecord]) {
        for stored in lots {
            let Some(l) = self.lots.get(&stored.id) else {
                self.problems
                    .push(Problem::LotWithoutEntry { lot_id: stored.id });
                continue;
            };
            if l.original != stored.original {
                self.problems.push(Problem::LotOriginalMismatch {
                    lot_id: stored.id,
                    stored: stored.original,
                    recomputed: l.original,
                });
            }
            if l.remaining != stored.remaining {
                self.problems.push(Problem::LotRemainingMismatch {
                    lot_id: stored.id,
                    stored: stored.remaining,
                    recomputed: l.remaining,
                });
            }
            if stored.remaining < 0 {
                self.problems.push(Problem::LotNegative {
                    lot_id: stored.id,
                    entry_id: None,
                    remaining: stored.remaining,
                });
            } else if stored.remaining > stored.original {
                self.problems.push(Problem::LotAboveOriginal {
                    lot_id: stored.id,
                    entry_id: None,
                    remaining: stored.remaining,
                    original: stored.original,
                });
            }
        }
    }

    fn check_jobs(&mut self, jobs: &[JobRecord], policy: &VerifyPolicy) {
        for (job_id, t) in &self.jobs {
            for (kind, count) in [
                (EntryKind::Hold, t.holds),
                (EntryKind::Release, t.releases),
                (EntryKind::Debit, t.debits),
                (EntryKind::Refund, t.refunds),
            ] {
                if count > 1 {
                    self.problems.push(Problem::DuplicateJobEntry {
                        job_id: job_id.clone(),
                        kind,
                        count,
                    });
                }
            }
        }
        for job in jobs {
            let t = self.jobs.get(&job.id).cloned().unwrap_or_default();
            for (field, stored, recomputed) in [
                ("held", job.held, t.held),
                ("debited", job.debited, t.debited),
                ("refunded", job.refunded, t.refunded),
            ] {
                if stored != recomputed {
                    self.problems.push(Problem::JobMismatch {
                        job_id: job.id.clone(),
                        field,
                        stored,
                        recomputed,
                    });
                }
            }
            if t.holds > 0 && t.hold != job.quoted {
                self.problems.push(Problem::HoldNotQuote {
                    job_id: job.id.clone(),
                    held: t.hold,
                    quoted: job.quoted,
                });
            }
            if t.debited != 0 && t.debited != job.quoted {
                self.problems.push(Problem::DebitNotQuote {
                    job_id: job.id.clone(),
                    debited: t.debited,
                    quoted: job.quoted,
                });
            }
            if t.refunded != 0 && t.refunded != t.debited {
                self.problems.push(Problem::RefundNotDebit {
                    job_id: job.id.clone(),
                    refunded: t.refunded,
                    debited: t.debited,
                });
            }
            let refund_allowed = match job.state {
                JobState::Failed => true,
                JobState::Cancelled => policy.refund_on_cancel,
                _ => false,
            };
            if t.refunded > 0 && !refund_allowed {
                self.problems.push(Problem::RefundNotAllowed {
                    job_id: job.id.clone(),
                    state: job.state,
                    refunded: t.refunded,
                });
            }
            if refund_allowed && t.debited > 0 && t.refunded == 0 {
                self.problems.push(Problem::MissingRefund {
                    job_id: job.id.clone(),
                    state: job.state,
                    debited: t.debited,
                });
            }
            if job.state.is_terminal() && t.held > 0 {
                self.problems.push(Problem::HoldNotReleased {
                    job_id: job.id.clone(),
                    state: job.state,
                    held: t.held,
                });
            }
        }
    }

    fn check_conservation(&mut self, lots: &[LotRecord]) {
        for l in lots {
            self.accounts
                .entry(l.account_id.clone())
                .or_default()
                .remaining += l.remaining;
        }
        for (account_id, t) in &self.accounts {
            if t.granted + t.adjusted
                != t.remaining + t.debited - t.refunded + t.expired + t.forfeited
            {
                self.problems.push(Problem::ConservationViolated {
                    account_id: account_id.clone(),
                    granted: t.granted,
                    adjusted: t.adjusted,
                    remaining: t.remaining,
                    debited: t.debited,
                    refunded: t.refunded,
                    expired: t.expired,
                    forfeited: t.forfeited,
                });
            }
        }
    }
}
