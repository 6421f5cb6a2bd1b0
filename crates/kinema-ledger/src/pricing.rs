//! Price schedules of packs and plans (docs/api.md, "Catalogue, purchases and plans", "Price changes").
//!
//! A price history is append-only: each entry is a price, when it was announced and
//! when it takes effect. The first entry is the list price the item was created with
//! and needs no notice; every later change is scheduled with [`schedule_price_change`],
//! which refuses an `effective_at` earlier than `announced_at + notice` (default 30
//! days). A purchase pays [`price_at`] the moment of purchase.

use serde::{Deserialize, Serialize};

use crate::calendar::DAY_MS;
use crate::{LedgerError, Money, UnixMillis};

/// Minimum time between announcing a price change and its taking effect (§3).
pub const DEFAULT_PRICE_NOTICE_MS: i64 = 30 * DAY_MS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPrice {
    pub price: Money,
    pub announced_at: UnixMillis,
    pub effective_at: UnixMillis,
}

/// Every price an item has had or will have, in the order they were scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceHistory {
    pub entries: Vec<ScheduledPrice>,
}

impl PriceHistory {
    /// The list price an item is created with, in effect from `since`.
    pub fn new(initial: Money, since: UnixMillis) -> Result<Self, LedgerError> {
        if initial.minor < 0 {
            return Err(LedgerError::NegativePrice(initial.minor));
        }
        Ok(Self {
            entries: vec![ScheduledPrice {
                price: initial,
                announced_at: since,
                effective_at: since,
            }],
        })
    }

    /// The entry in effect at `now`: the latest `effective_at <= now`; among entries
    /// effective at the same instant, the one announced (then scheduled) last.
    pub fn entry_at(&self, now: UnixMillis) -> Option<&ScheduledPrice> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.effective_at <= now)
            .max_by_key(|(i, e)| (e.effective_at, e.announced_at, *i))
            .map(|(_, e)| e)
    }

    /// Changes announced but not yet in effect at `now`, earliest first (for
    /// `ListCatalog`'s "scheduled prices").
    pub fn scheduled_after(&self, now: UnixMillis) -> Vec<&ScheduledPrice> {
        let mut out: Vec<&ScheduledPrice> = self
            .entries
            .iter()
            .filter(|e| e.effective_at > now)
            .collect();
        out.sort_by_key(|e| (e.effective_at, e.announced_at));
        out
    }
}

/// The price a purchase at `now` pays.
pub fn price_at(history: &PriceHistory, now: UnixMillis) -> Result<Money, LedgerError> {
    history
        .entry_at(now)
        .map(|e| e.price)
        .ok_or(LedgerError::NoPriceInEffect { at: now })
}

/// Schedules `new_price` to take effect at `effective_at`, announced at
/// `announced_at` (docs/api.md, "Catalogue, purchases and plans": no earlier than `price_notice` after the
/// announcement; an earlier one is refused with `PriceNoticeTooShort`, i.e.
/// `FAILED_PRECONDITION` / `PRICE_NOTICE_TOO_SHORT`). Exactly `notice` is enough.
/// The currency cannot change. Returns the history with the change appended.
pub fn schedule_price_change(
    history: &PriceHistory,
    new_price: Money,
    announced_at: UnixMillis,
    effective_at: UnixMillis,
    notice_ms: i64,
) -> Result<PriceHistory, LedgerError> {
    if new_price.minor < 0 {
        return Err(LedgerError::NegativePrice(new_price.minor));
    }
    if let Some(first) = history.entries.first() {
        if first.price.currency != new_price.currency {
            return Err(LedgerError::CurrencyMismatch {
                expected: first.price.currency,
                got: new_price.currency,
            });
        }
    }
    let earliest = announced_at.saturating_add(notice_ms.max(0));
    if effective_at < earliest {
        return Err(LedgerError::PriceNoticeTooShort {
            announced_at,
            effective_at,
            earliest,
        });
    }
    let mut next = history.clone();
    next.entries.push(ScheduledPrice {
        price: new_price,
        announced_at,
        effective_at,
    });
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    #[test]
    fn notice_of_exactly_thirty_days_is_accepted_and_less_refused() {
        let h = PriceHistory::new(eur(1000), 0).unwrap();
        let announced = 5 * DAY_MS;
        let err = schedule_price_change(
            &h,
            eur(1200),
            announced,
            announced + 29 * DAY_MS,
            DEFAULT_PRICE_NOTICE_MS,
        )
        .unwrap_err();
        assert_eq!(err.contract_reason(), Some("PRICE_NOTICE_TOO_SHORT"));
        assert!(schedule_price_change(
            &h,
            eur(1200),
            announced,
            announced + 30 * DAY_MS - 1,
            DEFAULT_PRICE_NOTICE_MS
        )
        .is_err());
        let h2 = schedule_price_change(
            &h,
            eur(1200),
            announced,
            announced + 30 * DAY_MS,
            DEFAULT_PRICE_NOTICE_MS,
        )
        .unwrap();
        assert_eq!(price_at(&h2, announced + 30 * DAY_MS - 1), Ok(eur(1000)));
        assert_eq!(price_at(&h2, announced + 30 * DAY_MS), Ok(eur(1200)));
        assert_eq!(h2.scheduled_after(announced).len(), 1);
        assert!(h2.scheduled_after(announced + 30 * DAY_MS).is_empty());
    }

    #[test]
    fn no_price_before_the_first_and_currency_is_fixed() {
        let h = PriceHistory::new(eur(1000), 100).unwrap();
        assert_eq!(
            price_at(&h, 99),
            Err(LedgerError::NoPriceInEffect { at: 99 })
        );
        let usd = Money::new(5, Currency::new("USD").unwrap());
        assert!(matches!(
            schedule_price_change(&h, usd, 0, 100 * DAY_MS, DEFAULT_PRICE_NOTICE_MS),
            Err(LedgerError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            schedule_price_change(&h, eur(-1), 0, 100 * DAY_MS, DEFAULT_PRICE_NOTICE_MS),
            Err(LedgerError::NegativePrice(-1))
        );
    }

    #[test]
    fn a_later_announcement_for_the_same_instant_wins() {
        let h = PriceHistory::new(eur(1000), 0).unwrap();
        let at = 40 * DAY_MS;
        let h = schedule_price_change(&h, eur(1100), 0, at, DEFAULT_PRICE_NOTICE_MS).unwrap();
        let h = schedule_price_change(&h, eur(900), DAY_MS, at, DEFAULT_PRICE_NOTICE_MS).unwrap();
        assert_eq!(price_at(&h, at), Ok(eur(900)));
    }
}
