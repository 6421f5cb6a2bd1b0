use serde::{Deserialize, Serialize};

use crate::{debit_order, is_live, Credits, LedgerError, LotState, UnixMillis};

/// Credits taken from (or given back to) one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub lot_id: i64,
    pub amount: Credits,
}

/// Takes `amount` from the live lots, earliest expiry first (docs/api.md, "Hold, debit, release").
/// Either the whole amount is covered or nothing is taken.
pub fn allocate_debit(
    lots: &[LotState],
    amount: Credits,
    now: UnixMillis,
) -> Result<Vec<Allocation>, LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::NonPositiveAmount(amount));
    }
    let mut live: Vec<&LotState> = lots
        .iter()
        .filter(|l| is_live(l, now) && l.remaining > 0)
        .collect();
    let available: Credits = live.iter().map(|l| l.remaining).sum();
    if available < amount {
        return Err(LedgerError::InsufficientCredits {
            needed: amount,
            available,
        });
    }
    live.sort_by(|a, b| debit_order(a, b));
    let mut left = amount;
    let mut taken = Vec::new();
    for lot in live {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        taken.push(Allocation {
            lot_id: lot.id,
            amount: take,
        });
        left -= take;
    }
    Ok(taken)
}

/// Where a refund of a debit goes: each credit back to the lot it came from, except
/// those whose lot has expired since, which go to one new refund lot (docs/api.md, "Refunds").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPlan {
    pub to_lots: Vec<Allocation>,
    pub to_refund_lot: Credits,
    /// `expires_at` of the refund lot, when `to_refund_lot > 0`.
    pub refund_lot_expires_at: UnixMillis,
}

impl RefundPlan {
    pub fn total(&self) -> Credits {
        self.to_lots.iter().map(|a| a.amount).sum::<Credits>() + self.to_refund_lot
    }
}

pub fn plan_refund(
    debit: &[Allocation],
    lots: &[LotState],
    now: UnixMillis,
    refund_grace_ms: i64,
) -> Result<RefundPlan, LedgerError> {
    let mut plan = RefundPlan {
        to_lots: Vec::new(),
        to_refund_lot: 0,
        refund_lot_expires_at: now.saturating_add(refund_grace_ms),
    };
    for alloc in debit {
        let lot = lots
            .iter()
            .find(|l| l.id == alloc.lot_id)
            .ok_or(LedgerError::UnknownLot(alloc.lot_id))?;
        if is_live(lot, now) {
            plan.to_lots.push(*alloc);
        } else {
            plan.to_refund_lot += alloc.amount;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(id: i64, remaining: Credits, expires_at: Option<i64>, created_at: i64) -> LotState {
        LotState {
            id,
            remaining,
            expires_at,
            created_at,
        }
    }

    #[test]
    fn takes_earliest_expiry_first_and_never_expiring_last() {
        let lots = [
            lot(1, 10, None, 0),
            lot(2, 5, Some(300), 1),
            lot(3, 5, Some(200), 2),
        ];
        let got = allocate_debit(&lots, 12, 100).unwrap();
        assert_eq!(
            got,
            vec![
                Allocation {
                    lot_id: 3,
                    amount: 5
                },
                Allocation {
                    lot_id: 2,
                    amount: 5
                },
                Allocation {
                    lot_id: 1,
                    amount: 2
                },
            ]
        );
    }

    #[test]
    fn ties_break_by_creation_then_id() {
        let lots = [
            lot(9, 3, Some(50), 5),
            lot(4, 3, Some(50), 5),
            lot(7, 3, Some(50), 1),
        ];
        let got = allocate_debit(&lots, 7, 0).unwrap();
        let order: Vec<i64> = got.iter().map(|a| a.lot_id).collect();
        assert_eq!(order, vec![7, 4, 9]);
    }

    #[test]
    fn expired_lots_are_not_usable_from_the_instant_of_expiry() {
        let lots = [lot(1, 10, Some(100), 0), lot(2, 3, None, 0)];
        assert!(allocate_debit(&lots, 10, 99).is_ok());
        assert_eq!(
            allocate_debit(&lots, 10, 100),
            Err(LedgerError::InsufficientCredits {
                needed: 10,
                available: 3
            })
        );
    }

    #[test]
    fn refund_goes_back_to_live_lots_and_expired_share_to_a_refund_lot() {
        let lots = [lot(1, 0, Some(100), 0), lot(2, 0, None, 0)];
        let debit = [
            Allocation {
                lot_id: 1,
                amount: 4,
            },
            Allocation {
                lot_id: 2,
                amount: 6,
            },
        ];
        let plan = plan_refund(&debit, &lots, 150, 1_000).unwrap();
        assert_eq!(
            plan.to_lots,
            vec![Allocation {
                lot_id: 2,
                amount: 6
            }]
        );
        assert_eq!(plan.to_refund_lot, 4);
        assert_eq!(plan.refund_lot_expires_at, 1_150);
        assert_eq!(plan.total(), 10);
    }

    #[test]
    fn rejects_non_positive_amounts_and_unknown_lots() {
        assert_eq!(
            allocate_debit(&[], 0, 0),
            Err(LedgerError::NonPositiveAmount(0))
        );
        let debit = [Allocation {
            lot_id: 5,
            amount: 1,
        }];
        assert_eq!(
            plan_refund(&debit, &[], 0, 0),
            Err(LedgerError::UnknownLot(5))
        );
    }
}
