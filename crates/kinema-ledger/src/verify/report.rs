//! What the checker recomputes from the entries, and its report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::{Allocation, Credits};

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

/// An account's totals: from the entries, and `remaining` from the stored lots. Wider
/// than [`Credits`]: an account's balance fits one, but what it was granted over its
/// lifetime need not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotals {
    pub granted: i128,
    pub adjusted: i128,
    pub remaining: i128,
    pub debited: i128,
    pub refunded: i128,
    pub expired: i128,
    pub forfeited: i128,
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
