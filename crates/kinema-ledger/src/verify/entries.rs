//! One entry at a time: the shape of its allocations, then what its kind does to the
//! account's totals, its job and its lots, then the balances it states.

use super::{EntryRecord, Problem, Replay};
use crate::{Credits, EntryKind};

impl Replay<'_> {
    pub(super) fn apply(&mut self, e: &EntryRecord) {
        if e.amount < 0 {
            self.problems.push(Problem::NegativeAmount {
                entry_id: e.id,
                amount: e.amount,
            });
        }
        self.check_allocation_shape(e);
        self.tally(e);
        let job = self.job_for(e);
        match e.kind {
            EntryKind::Hold => {
                if let Some(job_id) = &job {
                    self.hold(e, job_id);
                }
            }
            EntryKind::Release => {
                if let Some(job_id) = &job {
                    self.release(e, job_id);
                }
            }
            EntryKind::Debit => {
                if let Some(job_id) = &job {
                    self.debit_job(e, job_id);
                }
                for a in &e.allocations {
                    self.take(e, a, |l| &mut l.debited);
                }
            }
            EntryKind::Refund => {
                let debit = match &job {
                    Some(job_id) => self.refund_job(e, job_id),
                    None => Vec::new(),
                };
                self.refund_lots(e, &debit);
            }
            EntryKind::Expire => {
                for a in &e.allocations {
                    self.expire(e, a);
                }
            }
            EntryKind::Forfeit => {
                for a in &e.allocations {
                    self.take(e, a, |l| &mut l.forfeited);
                }
            }
            EntryKind::Adjust => {
                for a in &e.allocations {
                    self.adjust(e, a);
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
                // Signed allocations: the amount is the absolute value of their sum.
                let net: Credits = e.allocations.iter().map(|a| a.amount).sum();
                self.check_allocations(e, net.abs(), net, |amount| amount == 0);
            }
            _ => {
                let sum: Credits = e.allocations.iter().map(|a| a.amount).sum();
                self.check_allocations(e, sum, sum, |amount| amount <= 0);
            }
        }
    }

    /// Reports an entry whose amount is not `expected` (shown as `allocated`), and each
    /// allocation whose amount is `bad`.
    fn check_allocations(
        &mut self,
        e: &EntryRecord,
        expected: Credits,
        allocated: Credits,
        bad: fn(Credits) -> bool,
    ) {
        if expected != e.amount {
            self.problems.push(Problem::AllocationSumMismatch {
                entry_id: e.id,
                kind: e.kind,
                amount: e.amount,
                allocated,
            });
        }
        for a in e.allocations.iter().filter(|a| bad(a.amount)) {
            self.problems.push(Problem::BadAllocation {
                entry_id: e.id,
                kind: e.kind,
                lot_id: a.lot_id,
                amount: a.amount,
            });
        }
    }
}
