//! Seats: how many members a plan lets an account have, buying extra seats for the
//! current period, and charging them again at each renewal (module docs, "Seats").

use super::{catch_up::catch_up, Subscription, SubscriptionEffect, SubscriptionState, Transition};
use crate::{Catalogue, LedgerError, Plan, UnixMillis};

/// The seats an account has at `now` (call on a state caught up to `now`): the plan's
/// included seats plus those bought while a plan gives access, else `without_plan`.
/// A plan that left the catalogue counts one seat of its own.
pub fn seats_in_force(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    without_plan: u32,
    now: UnixMillis,
) -> u32 {
    if !state.has_access(now) {
        return without_plan;
    }
    let Some(cur) = state.current.as_ref() else {
        return without_plan;
    };
    let included = catalogue.plan(&cur.plan_id).map_or(1, |p| p.seats.max(1));
    included.saturating_add(cur.extra_seats)
}

/// Buys `seats` extra seats on the plan in force, charged now for the rest of its
/// current period at the plan's `extra_seat_price` each.
pub fn buy_seats(
    state: &SubscriptionState,
    catalogue: &Catalogue,
    seats: u32,
    now: UnixMillis,
) -> Result<Transition, LedgerError> {
    if seats == 0 {
        return Err(LedgerError::NonPositiveAmount(0));
    }
    let mut t = Transition {
        state: state.clone(),
        effects: Vec::new(),
    };
    catch_up(&mut t, catalogue, now);
    if !t.state.has_access(now) {
        return Err(LedgerError::NoPlanForSeats);
    }
    let Some(cur) = t.state.current.as_mut() else {
        return Err(LedgerError::NoPlanForSeats);
    };
    let plan = catalogue.plan(&cur.plan_id)?;
    let amount = plan.extra_seats_price(seats)?;
    if amount.currency != cur.paid.currency {
        return Err(LedgerError::CurrencyMismatch {
            expected: cur.paid.currency,
            got: amount.currency,
        });
    }
    cur.extra_seats = cur
        .extra_seats
        .checked_add(seats)
        .ok_or(LedgerError::AmountOverflow)?;
    t.effects.push(SubscriptionEffect::SeatsCharge {
        subscription_id: cur.id.clone(),
        plan_id: cur.plan_id.clone(),
        period: cur.period,
        seats,
        amount,
        at: now,
    });
    Ok(t)
}

/// At a charged renewal: the extra seats are charged again at the price then, or
/// dropped if the plan no longer sells seats in the subscription's currency.
pub(super) fn renew_seats(
    cur: &mut Subscription,
    plan: &Plan,
    at: UnixMillis,
    effects: &mut Vec<SubscriptionEffect>,
) {
    if cur.extra_seats == 0 {
        return;
    }
    match plan.extra_seats_price(cur.extra_seats) {
        Ok(amount) if amount.currency == cur.paid.currency => {
            effects.push(SubscriptionEffect::SeatsCharge {
                subscription_id: cur.id.clone(),
                plan_id: cur.plan_id.clone(),
                period: cur.period,
                seats: cur.extra_seats,
                amount,
                at,
            });
        }
        _ => cur.extra_seats = 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::add_months;
    use crate::{Currency, Money, PlanInterval, PriceHistory};

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    fn catalogue(seat_price: Option<i64>) -> Catalogue {
        Catalogue {
            packs: vec![],
            plans: vec![Plan {
                id: "team".into(),
                interval: PlanInterval::Monthly,
                credits_per_month: 100,
                prices: PriceHistory::new(eur(5000), 0).unwrap(),
                monthly_counterpart: None,
                seats: 3,
                extra_seat_price: seat_price.map(eur),
            }],
        }
    }

    fn subscribed(cat: &Catalogue, now: UnixMillis) -> SubscriptionState {
        crate::subscribe(&SubscriptionState::default(), cat, "team", "sub_1", now)
            .unwrap()
            .state
    }

    #[test]
    fn seats_are_the_plans_plus_those_bought_or_the_default_without_a_plan() {
        let cat = catalogue(Some(700));
        let now = 1_700_000_000_000;
        assert_eq!(
            seats_in_force(&SubscriptionState::default(), &cat, 1, now),
            1
        );
        let state = subscribed(&cat, now);
        assert_eq!(seats_in_force(&state, &cat, 1, now), 3);
        let t = buy_seats(&state, &cat, 2, now + 10).unwrap();
        assert_eq!(seats_in_force(&t.state, &cat, 1, now + 10), 5);
        assert!(t.effects.iter().any(|e| matches!(
            e,
            SubscriptionEffect::SeatsCharge { seats: 2, amount, period: 0, .. } if *amount == eur(1400)
        )));
    }

    #[test]
    fn a_renewal_charges_the_extra_seats_again() {
        let cat = catalogue(Some(700));
        let now = 1_700_000_000_000;
        let state = buy_seats(&subscribed(&cat, now), &cat, 1, now)
            .unwrap()
            .state;
        let renewal = add_months(now, 1);
        let t = crate::tick_subscriptions(&state, &cat, renewal);
        let seat_charges: Vec<_> = t
            .effects
            .iter()
            .filter_map(|e| match e {
                SubscriptionEffect::SeatsCharge { period, amount, .. } => Some((*period, *amount)),
                _ => None,
            })
            .collect();
        assert_eq!(seat_charges, vec![(1, eur(700))]);
        assert_eq!(seats_in_force(&t.state, &cat, 1, renewal), 4);
    }

    #[test]
    fn seats_need_a_plan_that_sells_them() {
        let now = 1_700_000_000_000;
        let none = catalogue(None);
        assert_eq!(
            buy_seats(&subscribed(&none, now), &none, 1, now).unwrap_err(),
            LedgerError::SeatsNotSold("team".into())
        );
        let cat = catalogue(Some(700));
        assert_eq!(
            buy_seats(&SubscriptionState::default(), &cat, 1, now).unwrap_err(),
            LedgerError::NoPlanForSeats
        );
        assert_eq!(
            buy_seats(&subscribed(&cat, now), &cat, 0, now).unwrap_err(),
            LedgerError::NonPositiveAmount(0)
        );
    }
}
