//! The accounts' side: each account's totals by entry kind, the balance and holds each
//! entry states, and at the end the conservation of credits.

use super::{EntryRecord, LotRecord, Problem, Replay};
use crate::{Credits, EntryKind};

impl Replay<'_> {
    /// Counts the entry in its account's totals.
    pub(super) fn tally(&mut self, e: &EntryRecord) {
        let totals = self.accounts.entry(e.account_id.clone()).or_default();
        match e.kind {
            k if k.creates_lots() => totals.granted += i128::from(e.amount),
            EntryKind::Debit => totals.debited += i128::from(e.amount),
            EntryKind::Refund => totals.refunded += i128::from(e.amount),
            EntryKind::Expire => totals.expired += i128::from(e.amount),
            EntryKind::Forfeit => totals.forfeited += i128::from(e.amount),
            EntryKind::Adjust => {
                totals.adjusted += e
                    .allocations
                    .iter()
                    .map(|a| i128::from(a.amount))
                    .sum::<i128>()
            }
            _ => {}
        }
    }

    pub(super) fn check_entry_balances(&mut self, e: &EntryRecord) {
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
            .map(|l| i128::from(l.remaining))
            .sum::<i128>()
            .try_into()
            // Lots a ledger cannot add up: reported below as a mismatch, not a panic.
            .unwrap_or(Credits::MAX);
        let held = self
            .account_held
            .get(&e.account_id)
            .copied()
            .unwrap_or_default();
        for (field, stored, recomputed) in [
            ("balance_after", e.balance_after, balance),
            ("held_after", e.held_after, held),
        ] {
            if let Some(stored) = stored.filter(|s| *s != recomputed) {
                self.problems.push(Problem::EntryBalanceMismatch {
                    entry_id: e.id,
                    field,
                    stored,
                    recomputed,
                });
            }
        }
        if e.kind == EntryKind::Hold && held > balance {
            self.problems.push(Problem::HoldExceedsBalance {
                entry_id: e.id,
                held,
                balance,
            });
        }
    }

    pub(super) fn check_conservation(&mut self, lots: &[LotRecord]) {
        for l in lots {
            self.accounts
                .entry(l.account_id.clone())
                .or_default()
                .remaining += i128::from(l.remaining);
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
