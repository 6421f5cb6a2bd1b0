//! The lots' side: lots created, credits taken from them and given back as the entries
//! say, each lot kept within 0 and its original, and at the end each stored lot
//! against what its entries add up to.

use super::{EntryRecord, LotRecord, LotTotals, Problem, Replay};
use crate::{Allocation, Credits, EntryKind, UnixMillis};

impl<'a> Replay<'a> {
    /// The stored expiry of a lot, checking it exists and belongs to the account.
    fn lot_meta(&mut self, e: &EntryRecord, lot_id: i64) -> Option<UnixMillis> {
        match self.stored_lots.get(&lot_id).copied() {
            None => {
                self.problems.push(Problem::LotMissing {
                    entry_id: e.id,
                    lot_id,
                });
                None
            }
            Some(l) => {
                self.check_lot_account(e, l);
                l.expires_at
            }
        }
    }

    fn check_lot_account(&mut self, e: &EntryRecord, l: &'a LotRecord) {
        if l.account_id != e.account_id {
            self.problems.push(Problem::LotAccountMismatch {
                entry_id: e.id,
                lot_id: l.id,
                entry_account: e.account_id.clone(),
                lot_account: l.account_id.clone(),
            });
        }
    }

    fn expiry_of(&self, lot_id: i64) -> Option<Option<UnixMillis>> {
        self.lot_expiry.get(&lot_id).copied()
    }

    /// The lot's expiry when it is at or before `at` (the lot is no longer live then).
    fn expired_by(&self, lot_id: i64, at: UnixMillis) -> Option<UnixMillis> {
        self.expiry_of(lot_id).flatten().filter(|&x| at >= x)
    }

    pub(super) fn create(&mut self, e: &EntryRecord, a: &Allocation) {
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
            if let Some(l) = self.stored_lots.get(&a.lot_id).copied() {
                self.check_lot_account(e, l);
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

    /// Takes the allocation from its lot, counting it in `field` (DEBIT, EXPIRE,
    /// FORFEIT).
    pub(super) fn take(
        &mut self,
        e: &EntryRecord,
        a: &Allocation,
        field: fn(&mut LotTotals) -> &mut Credits,
    ) {
        if !self.known(e, a) {
            return;
        }
        if e.kind == EntryKind::Debit {
            if let Some(expires_at) = self.expired_by(a.lot_id, e.created_at) {
                self.problems.push(Problem::DebitFromExpiredLot {
                    entry_id: e.id,
                    lot_id: a.lot_id,
                    at: e.created_at,
                    expires_at,
                });
            }
        }
        let l = self.lots.get_mut(&a.lot_id).expect("known");
        l.remaining -= a.amount;
        *field(l) += a.amount;
        self.check_bounds(a.lot_id, Some(e.id));
    }

    /// An EXPIRE allocation: the lot's whole remaining, at or after its expiry.
    pub(super) fn expire(&mut self, e: &EntryRecord, a: &Allocation) {
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

    /// An ADJUST allocation: signed; a positive one may create a lot not yet seen.
    pub(super) fn adjust(&mut self, e: &EntryRecord, a: &Allocation) {
        if a.amount > 0 && !self.lots.contains_key(&a.lot_id) {
            self.create(e, a);
        } else if self.known(e, a) {
            let l = self.lots.get_mut(&a.lot_id).expect("known");
            l.remaining += a.amount;
            l.adjusted += a.amount;
            self.check_bounds(a.lot_id, Some(e.id));
        }
    }

    /// The lots' side of a REFUND: back to the live lots `debit` took from, and a new
    /// refund lot for the share of expired ones.
    pub(super) fn refund_lots(&mut self, e: &EntryRecord, debit: &[Allocation]) {
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
            if let Some(expires_at) = self.expired_by(a.lot_id, e.created_at) {
                self.problems.push(Problem::RefundIntoExpiredLot {
                    entry_id: e.id,
                    lot_id: a.lot_id,
                    at: e.created_at,
                    expires_at,
                });
            }
            let l = self.lots.get_mut(&a.lot_id).expect("known");
            l.remaining += a.amount;
            l.refunded += a.amount;
            self.check_bounds(a.lot_id, Some(e.id));
        }
    }

    fn check_bounds(&mut self, lot_id: i64, entry_id: Option<i64>) {
        if let Some(l) = self.lots.get(&lot_id) {
            self.problems
                .extend(out_of_bounds(lot_id, entry_id, l.remaining, l.original));
        }
    }

    pub(super) fn check_lots(&mut self, lots: &[LotRecord]) {
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
            self.problems.extend(out_of_bounds(
                stored.id,
                None,
                stored.remaining,
                stored.original,
            ));
        }
    }
}

/// A lot below 0 or above its original (`entry_id`: the entry that made it so, or none
/// for a stored lot).
fn out_of_bounds(
    lot_id: i64,
    entry_id: Option<i64>,
    remaining: Credits,
    original: Credits,
) -> Option<Problem> {
    if remaining < 0 {
        Some(Problem::LotNegative {
            lot_id,
            entry_id,
            remaining,
        })
    } else if remaining > original {
        Some(Problem::LotAboveOriginal {
            lot_id,
            entry_id,
            remaining,
            original,
        })
    } else {
        None
    }
}
