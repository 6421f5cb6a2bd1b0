//! Expiry and forfeit of lots (docs/api.md, "Expiry and forfeit").
//!
//! A lot is unusable from the instant `expires_at` (see [`crate::is_live`]); its
//! remaining credits are then written off by an EXPIRE entry, whenever the sweeper (or
//! the next operation on the account) gets to it. An account terminated for violating
//! the usage policy forfeits everything left: lots already past `expires_at` are
//! expired first (their credits were never the account's to forfeit), the rest is
//! forfeited with FORFEIT entries.

use serde::{Deserialize, Serialize};

use crate::{is_live, Allocation, Credits, LotState, UnixMillis};

/// An EXPIRE entry to write: the lot's whole remaining, as of `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub lot_id: i64,
    pub amount: Credits,
    /// When the credits stopped being usable (the lot's `expires_at`).
    pub expired_at: UnixMillis,
}

/// Credits usable at `now`: the remaining of every live lot.
pub fn live_total(lots: &[LotState], now: UnixMillis) -> Credits {
    lots.iter()
        .filter(|l| is_live(l, now))
        .map(|l| l.remaining)
        .sum()
}

/// The lots due to expire by `now` (`expires_at <= now`) that still have credits,
/// in order of `expires_at`, then id. After applying them each such lot's remaining is 0.
pub fn due_expiries(lots: &[LotState], now: UnixMillis) -> Vec<Expiry> {
    let mut out: Vec<Expiry> = lots
        .iter()
        .filter(|l| l.remaining > 0 && !is_live(l, now))
        .map(|l| Expiry {
            lot_id: l.id,
            amount: l.remaining,
            expired_at: l.expires_at.unwrap_or(now),
        })
        .collect();
    out.sort_by_key(|e| (e.expired_at, e.lot_id));
    out
}

/// What termination for violation writes: first the due expiries, then one FORFEIT
/// allocation per live lot with credits (all of them: nothing is refunded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForfeitPlan {
    pub expire: Vec<Expiry>,
    pub forfeit: Vec<Allocation>,
}

impl ForfeitPlan {
    pub fn forfeited(&self) -> Credits {
        self.forfeit.iter().map(|a| a.amount).sum()
    }
}

pub fn forfeit_all(lots: &[LotState], now: UnixMillis) -> ForfeitPlan {
    let mut live: Vec<&LotState> = lots
        .iter()
        .filter(|l| l.remaining > 0 && is_live(l, now))
        .collect();
    live.sort_by(|a, b| crate::debit_order(a, b));
    ForfeitPlan {
        expire: due_expiries(lots, now),
        forfeit: live
            .into_iter()
            .map(|l| Allocation {
                lot_id: l.id,
                amount: l.remaining,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(id: i64, remaining: Credits, expires_at: Option<UnixMillis>) -> LotState {
        LotState {
            id,
            remaining,
            expires_at,
            created_at: 0,
        }
    }

    #[test]
    fn a_lot_expires_at_the_exact_instant() {
        let lots = [lot(1, 7, Some(1_000)), lot(2, 3, None), lot(3, 0, Some(10))];
        assert!(due_expiries(&lots, 999).is_empty());
        assert_eq!(live_total(&lots, 999), 10);
        assert_eq!(
            due_expiries(&lots, 1_000),
            vec![Expiry {
                lot_id: 1,
                amount: 7,
                expired_at: 1_000
            }]
        );
        assert_eq!(live_total(&lots, 1_000), 3);
    }

    #[test]
    fn forfeit_takes_everything_live_after_expiring_the_due() {
        let lots = [
            lot(1, 7, Some(1_000)),
            lot(2, 3, None),
            lot(3, 4, Some(5_000)),
        ];
        let plan = forfeit_all(&lots, 2_000);
        assert_eq!(plan.expire.len(), 1);
        assert_eq!(
            plan.forfeit,
            vec![
                Allocation {
                    lot_id: 3,
                    amount: 4
                },
                Allocation {
                    lot_id: 2,
                    amount: 3
                }
            ]
        );
        assert_eq!(plan.forfeited(), 7);
    }
}
