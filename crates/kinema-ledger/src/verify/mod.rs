//! The ledger checker behind `kinema ledger verify` (docs/api.md, "The ledger" and the
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
//!
//! The replay's parts, one file each: `entries` (one entry: its shape, then its kind),
//! `jobs`, `lots` and `accounts` (each side of an entry, and the checks at the end);
//! `records` (what is read), `report` (what is recomputed) and `problem`.

mod accounts;
mod entries;
mod jobs;
mod lots;
mod problem;
mod records;
mod report;

use std::collections::{BTreeMap, BTreeSet};

pub use problem::Problem;
pub use records::{EntryRecord, JobRecord, JobState, LotRecord, VerifyPolicy};
pub use report::{AccountTotals, JobTotals, LotTotals, VerifyReport};

use crate::{Credits, UnixMillis};

/// The replay's state: what the entries so far add up to, beside what is stored.
/// Each `impl` block in this module's files handles one part of it.
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
