//! Pack purchases (docs/api.md, "Catalogue, purchases and plans", "Packs"): one lot of the pack's credits expiring
//! at purchase + validity, paid at the price in effect at the moment of purchase.
//! Pack credits are not refundable in money; the same `payment_ref` twice is one
//! purchase (the store keys purchases by it).

use serde::{Deserialize, Serialize};

use crate::{price_at, LedgerError, LotSource, Money, NewLot, Pack, UnixMillis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackPurchase {
    /// What the platform collects for it.
    pub price: Money,
    /// The lot to create, with a PURCHASE entry.
    pub lot: NewLot,
}

pub fn purchase_pack(pack: &Pack, now: UnixMillis) -> Result<PackPurchase, LedgerError> {
    if pack.credits <= 0 {
        return Err(LedgerError::NonPositiveAmount(pack.credits));
    }
    Ok(PackPurchase {
        price: price_at(&pack.prices, now)?,
        lot: NewLot {
            source: LotSource::Pack {
                pack_id: pack.id.clone(),
            },
            credits: pack.credits,
            expires_at: pack.validity.expires_at(now),
            granted_at: now,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::DAY_MS;
    use crate::{schedule_price_change, Currency, EntryKind, PriceHistory, Validity};

    #[test]
    fn a_purchase_is_one_lot_at_the_price_in_effect() {
        let eur = |m| Money::new(m, Currency::new("EUR").unwrap());
        let prices = PriceHistory::new(eur(999), 0).unwrap();
        let prices =
            schedule_price_change(&prices, eur(1299), 0, 30 * DAY_MS, 30 * DAY_MS).unwrap();
        let pack = Pack {
            id: "starter".into(),
            credits: 500,
            validity: Validity::Millis(90 * DAY_MS),
            prices,
        };
        let before = purchase_pack(&pack, 30 * DAY_MS - 1).unwrap();
        assert_eq!(before.price, eur(999));
        assert_eq!(before.lot.credits, 500);
        assert_eq!(before.lot.expires_at, Some(120 * DAY_MS - 1));
        assert_eq!(before.lot.entry_kind(), EntryKind::Purchase);
        assert_eq!(before.lot.source.label(), "pack:starter");
        let after = purchase_pack(&pack, 30 * DAY_MS).unwrap();
        assert_eq!(after.price, eur(1299));
    }
}
