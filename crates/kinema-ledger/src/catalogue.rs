//! The catalogue: packs and plans with their price schedules (docs/api.md, "Catalogue, purchases and plans").

use serde::{Deserialize, Serialize};

use crate::calendar::add_months;
use crate::{price_at, Credits, LedgerError, Money, PriceHistory, UnixMillis};

/// How long a pack's credits last from the purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// The credits never expire.
    Never,
    /// A fixed duration in milliseconds (days are `calendar::DAY_MS`).
    Millis(i64),
    /// Calendar months, the day clamped as in [`crate::calendar::add_months`].
    Months(u32),
}

impl Validity {
    /// `expires_at` of credits granted at `from`.
    pub fn expires_at(self, from: UnixMillis) -> Option<UnixMillis> {
        match self {
            Validity::Never => None,
            Validity::Millis(ms) => Some(from.saturating_add(ms)),
            Validity::Months(n) => Some(add_months(from, i64::from(n))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    pub id: String,
    pub credits: Credits,
    pub validity: Validity,
    pub prices: PriceHistory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanInterval {
    Monthly,
    Annual,
}

impl PlanInterval {
    /// Calendar months in one period.
    pub fn months(self) -> u32 {
        match self {
            PlanInterval::Monthly => 1,
            PlanInterval::Annual => 12,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub interval: PlanInterval,
    pub credits_per_month: Credits,
    /// The price of one period (a month or a year).
    pub prices: PriceHistory,
    /// For an annual plan: the monthly plan whose price each started month is charged
    /// at when the annual plan is cancelled mid-term. Without one, a month costs the
    /// annual price / 12 rounded up (so a refund never exceeds the unused share).
    pub monthly_counterpart: Option<String>,
    /// Seats (members of the account) the plan includes (docs/api.md, "Organisations
    /// and seats").
    #[serde(default = "one_seat")]
    pub seats: u32,
    /// The price of one extra seat for one period of the plan; `None`: the plan sells
    /// no extra seats.
    #[serde(default)]
    pub extra_seat_price: Option<Money>,
}

fn one_seat() -> u32 {
    1
}

impl Plan {
    /// What `seats` extra seats cost for one period; `SeatsNotSold` when the plan
    /// sells none.
    pub fn extra_seats_price(&self, seats: u32) -> Result<Money, LedgerError> {
        let price = self
            .extra_seat_price
            .ok_or_else(|| LedgerError::SeatsNotSold(self.id.clone()))?;
        let minor = price
            .minor
            .checked_mul(i64::from(seats))
            .ok_or(LedgerError::AmountOverflow)?;
        Ok(Money::new(minor, price.currency))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub packs: Vec<Pack>,
    pub plans: Vec<Plan>,
}

impl Catalogue {
    pub fn pack(&self, id: &str) -> Result<&Pack, LedgerError> {
        self.packs
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| LedgerError::UnknownPack(id.to_string()))
    }

    pub fn plan(&self, id: &str) -> Result<&Plan, LedgerError> {
        self.plans
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| LedgerError::UnknownPlan(id.to_string()))
    }

    /// What a started month of an annual `plan` costs at `at` (the proration price of
    /// §3: "the months started are charged at the monthly plan's price"). `None` for
    /// a monthly plan.
    pub fn monthly_reference_price(
        &self,
        plan: &Plan,
        at: UnixMillis,
    ) -> Result<Option<Money>, LedgerError> {
        if plan.interval == PlanInterval::Monthly {
            return Ok(None);
        }
        match &plan.monthly_counterpart {
            Some(id) => Ok(Some(price_at(&self.plan(id)?.prices, at)?)),
            None => {
                let annual = price_at(&plan.prices, at)?;
                let minor = annual.minor / 12 + i64::from(annual.minor % 12 != 0);
                Ok(Some(Money::new(minor, annual.currency)))
            }
        }
    }

    /// Every problem with the catalogue an operator wrote, one line each (empty when
    /// it is usable): duplicate ids, non-positive credits or validity, empty price
    /// histories, mixed currencies within an item, annual plans whose counterpart is
    /// missing, not monthly, or priced in another currency.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.packs {
            if !seen.insert(format!("pack:{}", p.id)) {
                out.push(format!("pack {:?} is defined twice", p.id));
            }
            if p.credits <= 0 {
                out.push(format!("pack {:?}: credits must be positive", p.id));
            }
            match p.validity {
                Validity::Millis(ms) if ms <= 0 => {
                    out.push(format!("pack {:?}: validity must be positive", p.id))
                }
                Validity::Months(0) => {
                    out.push(format!("pack {:?}: validity must be positive", p.id))
                }
                _ => {}
            }
            history_problems(&format!("pack {:?}", p.id), &p.prices, &mut out);
        }
        for p in &self.plans {
            if !seen.insert(format!("plan:{}", p.id)) {
                out.push(format!("plan {:?} is defined twice", p.id));
            }
            if p.credits_per_month <= 0 {
                out.push(format!(
                    "plan {:?}: credits_per_month must be positive",
                    p.id
                ));
            }
            history_problems(&format!("plan {:?}", p.id), &p.prices, &mut out);
            if p.seats == 0 {
                out.push(format!("plan {:?}: seats must be at least 1", p.id));
            }
            if let Some(seat) = p.extra_seat_price {
                if seat.minor < 0 {
                    out.push(format!("plan {:?}: negative extra_seat_price", p.id));
                }
                let currency = p.prices.entries.first().map(|e| e.price.currency);
                if currency.is_some_and(|c| c != seat.currency) {
                    out.push(format!(
                        "plan {:?}: extra_seat_price is in another currency",
                        p.id
                    ));
                }
            }
            if let Some(c) = &p.monthly_counterpart {
                if p.interval != PlanInterval::Annual {
                    out.push(format!(
                        "plan {:?}: only annual plans have a monthly counterpart",
                        p.id
                    ));
                }
                match self.plans.iter().find(|q| &q.id == c) {
                    None => out.push(format!("plan {:?}: counterpart {c:?} is unknown", p.id)),
                    Some(q) if q.interval != PlanInterval::Monthly => out.push(format!(
                        "plan {:?}: counterpart {c:?} is not a monthly plan",
                        p.id
                    )),
                    Some(q) => {
                        let cur = |h: &PriceHistory| h.entries.first().map(|e| e.price.currency);
                        if cur(&q.prices) != cur(&p.prices) {
                            out.push(format!(
                                "plan {:?}: counterpart {c:?} is priced in another currency",
                                p.id
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// `Ok` when [`Catalogue::problems`] finds none, else all of them in one error.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LedgerError::InvalidCatalogue(problems.join("; ")))
        }
    }
}

fn history_problems(what: &str, h: &PriceHistory, out: &mut Vec<String>) {
    let Some(first) = h.entries.first() else {
        out.push(format!("{what}: has no price"));
        return;
    };
    for e in &h.entries {
        if e.price.currency != first.price.currency {
            out.push(format!("{what}: prices in more than one currency"));
            break;
        }
    }
    if h.entries.iter().any(|e| e.price.minor < 0) {
        out.push(format!("{what}: negative price"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    fn plan(id: &str, interval: PlanInterval, price: i64, counterpart: Option<&str>) -> Plan {
        Plan {
            id: id.into(),
            interval,
            credits_per_month: 100,
            prices: PriceHistory::new(eur(price), 0).unwrap(),
            monthly_counterpart: counterpart.map(str::to_string),
            seats: 1,
            extra_seat_price: None,
        }
    }

    #[test]
    fn monthly_reference_is_the_counterpart_price_or_a_twelfth_rounded_up() {
        let cat = Catalogue {
            packs: vec![],
            plans: vec![
                plan("m", PlanInterval::Monthly, 1000, None),
                plan("y", PlanInterval::Annual, 10_000, Some("m")),
                plan("y2", PlanInterval::Annual, 10_001, None),
            ],
        };
        assert!(cat.validate().is_ok());
        let y = cat.plan("y").unwrap();
        assert_eq!(cat.monthly_reference_price(y, 0), Ok(Some(eur(1000))));
        let y2 = cat.plan("y2").unwrap();
        assert_eq!(cat.monthly_reference_price(y2, 0), Ok(Some(eur(834))));
        let m = cat.plan("m").unwrap();
        assert_eq!(cat.monthly_reference_price(m, 0), Ok(None));
    }

    #[test]
    fn problems_name_each_mistake() {
        let cat = Catalogue {
            packs: vec![Pack {
                id: "p".into(),
                credits: 0,
                validity: Validity::Months(0),
                prices: PriceHistory { entries: vec![] },
            }],
            plans: vec![
                plan("y", PlanInterval::Annual, 10_000, Some("nope")),
                plan("y", PlanInterval::Monthly, 10_000, Some("y")),
            ],
        };
        let problems = cat.problems();
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert!(cat.validate().is_err());
    }

    #[test]
    fn validity_in_months_follows_the_calendar() {
        let jan31 = crate::calendar::join_instant(
            crate::calendar::CivilDate {
                year: 2023,
                month: 1,
                day: 31,
            },
            0,
        );
        let feb28 = crate::calendar::join_instant(
            crate::calendar::CivilDate {
                year: 2023,
                month: 2,
                day: 28,
            },
            0,
        );
        assert_eq!(Validity::Months(1).expires_at(jan31), Some(feb28));
        assert_eq!(Validity::Millis(5).expires_at(jan31), Some(jan31 + 5));
        assert_eq!(Validity::Never.expires_at(jan31), None);
    }
}
