use super::*;
use crate::calendar::HOUR_MS;
use crate::calendar::{join_instant, CivilDate, DAY_MS};
use crate::{
    schedule_price_change, Catalogue, Currency, LedgerError, Money, NewLot, Plan, PlanInterval,
    PriceHistory, UnixMillis, DEFAULT_PRICE_NOTICE_MS,
};

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::new("EUR").unwrap())
}

fn date(year: i64, month: u32, day: u32, hour: i64) -> UnixMillis {
    join_instant(CivilDate { year, month, day }, hour * HOUR_MS)
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

fn catalogue() -> Catalogue {
    Catalogue {
        packs: vec![],
        plans: vec![
            plan("basic-m", PlanInterval::Monthly, 1000, None),
            plan("basic-y", PlanInterval::Annual, 10_000, Some("basic-m")),
            plan("pro-m", PlanInterval::Monthly, 2500, None),
        ],
    }
}

fn charges(effects: &[SubscriptionEffect]) -> Vec<(u32, i64, UnixMillis)> {
    effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::Charge {
                period, amount, at, ..
            } => Some((*period, amount.minor, *at)),
            _ => None,
        })
        .collect()
}

fn refunds(effects: &[SubscriptionEffect]) -> Vec<i64> {
    effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::RefundOwed { amount, .. } => Some(amount.minor),
            _ => None,
        })
        .collect()
}

/// The state ticked at each instant something falls due up to `until`, then at
/// `until`, as a sweeper that never sleeps would; the effects of all the ticks.
fn swept(state: &SubscriptionState, cat: &Catalogue, until: UnixMillis) -> Transition {
    let mut t = Transition {
        state: state.clone(),
        effects: Vec::new(),
    };
    let mut last = UnixMillis::MIN;
    while let Some(due) = t.state.next_due_at().filter(|d| *d < until) {
        assert!(due > last, "the schedule moves forward");
        last = due;
        let next = tick_subscriptions(&t.state, cat, due);
        t.effects.extend(next.effects);
        t.state = next.state;
    }
    let next = tick_subscriptions(&t.state, cat, until);
    t.effects.extend(next.effects);
    t.state = next.state;
    t
}

fn grants(effects: &[SubscriptionEffect]) -> Vec<&NewLot> {
    effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::GrantLot(l) => Some(l),
            _ => None,
        })
        .collect()
}

#[test]
fn a_monthly_plan_starts_charged_and_granted_and_renews_on_the_calendar() {
    let cat = catalogue();
    let t0 = date(2024, 1, 31, 10);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
    assert_eq!(charges(&t.effects), vec![(0, 1000, t0)]);
    let g = grants(&t.effects);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].expires_at, Some(date(2024, 2, 29, 10)));
    assert_eq!(g[0].entry_kind(), crate::EntryKind::SubscriptionGrant);
    assert!(t.state.has_access(t0));
    assert_eq!(t.state.next_due_at(), Some(date(2024, 2, 29, 10)));

    let before = tick_subscriptions(&t.state, &cat, date(2024, 2, 29, 10) - 1);
    assert!(before.effects.is_empty());
    // Two renewals, each on its calendar instant (Jan 31 -> Feb 29 -> Mar 31).
    let later = swept(&t.state, &cat, date(2024, 3, 31, 10));
    assert_eq!(
        charges(&later.effects),
        vec![
            (1, 1000, date(2024, 2, 29, 10)),
            (2, 1000, date(2024, 3, 31, 10))
        ]
    );
    let g = grants(&later.effects);
    assert_eq!(g[0].expires_at, Some(date(2024, 3, 31, 10)));
    assert_eq!(g[1].expires_at, Some(date(2024, 4, 30, 10)));
}

#[test]
fn renewals_pay_the_price_in_effect_at_the_renewal() {
    let mut cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
    let p = &mut cat.plans[0];
    p.prices = schedule_price_change(
        &p.prices,
        eur(1200),
        t0,
        t0 + 40 * DAY_MS,
        DEFAULT_PRICE_NOTICE_MS,
    )
    .unwrap();
    let later = swept(&t.state, &cat, date(2024, 3, 1, 0));
    assert_eq!(
        charges(&later.effects),
        vec![
            (1, 1000, date(2024, 2, 1, 0)),
            (2, 1200, date(2024, 3, 1, 0))
        ]
    );
}

#[test]
fn cancelling_exactly_24_hours_before_renewal_is_in_time() {
    let cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let renewal = date(2024, 2, 1, 0);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
    let c = cancel_subscription(&t.state, &cat, renewal - 24 * HOUR_MS).unwrap();
    assert_eq!(c.state.current.as_ref().unwrap().ends_at(), Some(renewal));
    assert!(refunds(&c.effects).is_empty());
    let c2 = cancel_subscription(&t.state, &cat, renewal - 24 * HOUR_MS + 1).unwrap();
    assert_eq!(
        c2.state.current.as_ref().unwrap().ends_at(),
        Some(date(2024, 3, 1, 0))
    );
}

#[test]
fn an_annual_plan_cancelled_late_renews_then_keeps_one_month() {
    let cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let renewal = date(2025, 1, 1, 0);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", t0).unwrap();
    let t = swept(&t.state, &cat, renewal - 23 * HOUR_MS);
    let c = cancel_subscription(&t.state, &cat, renewal - 23 * HOUR_MS).unwrap();
    assert!(refunds(&c.effects).is_empty());
    let r = tick_subscriptions(&c.state, &cat, renewal);
    assert_eq!(charges(&r.effects), vec![(1, 10_000, renewal)]);
    assert_eq!(refunds(&r.effects), vec![9_000]);
    let end = tick_subscriptions(&r.state, &cat, date(2025, 2, 1, 0));
    assert!(end.state.current.is_none());
    assert!(grants(&end.effects).is_empty());
}

#[test]
fn an_annual_plan_cancelled_in_its_last_months_owes_nothing_back() {
    let cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", t0).unwrap();
    let t = swept(&t.state, &cat, date(2024, 11, 15, 0));
    let c = cancel_subscription(&t.state, &cat, date(2024, 11, 15, 0)).unwrap();
    assert!(refunds(&c.effects).is_empty());
    assert_eq!(
        c.state.current.as_ref().unwrap().ends_at(),
        Some(date(2024, 12, 1, 0))
    );
}

#[test]
fn a_queued_plan_starts_when_the_current_one_ends() {
    let cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", t0).unwrap();
    let q = subscribe(&t.state, &cat, "pro-m", "s2", date(2024, 1, 10, 0)).unwrap();
    assert_eq!(charges(&q.effects), vec![(0, 2500, date(2024, 1, 10, 0))]);
    assert_eq!(q.state.queued_starts_at(), Some(date(2024, 2, 1, 0)));
    assert_eq!(
        subscribe(&q.state, &cat, "basic-y", "s3", date(2024, 1, 11, 0)),
        Err(LedgerError::PlanAlreadyQueued)
    );
    let s = tick_subscriptions(&q.state, &cat, date(2024, 2, 1, 0));
    assert!(charges(&s.effects).is_empty(), "{:?}", s.effects);
    assert!(s.effects.contains(&SubscriptionEffect::Ended {
        subscription_id: "s1".into(),
        plan_id: "basic-m".into(),
        reason: EndReason::Switched,
        at: date(2024, 2, 1, 0),
    }));
    let cur = s.state.current.as_ref().unwrap();
    assert_eq!((cur.id.as_str(), cur.anchor), ("s2", date(2024, 2, 1, 0)));
    assert_eq!(grants(&s.effects).len(), 1);
    assert!(s.state.queued.is_none());
    // Its second period is charged at its own renewal.
    let r = tick_subscriptions(&s.state, &cat, date(2024, 3, 1, 0));
    assert_eq!(charges(&r.effects), vec![(1, 2500, date(2024, 3, 1, 0))]);
}

#[test]
fn errors_name_what_is_missing_or_pointless() {
    let cat = catalogue();
    let empty = SubscriptionState::default();
    assert_eq!(
        cancel_subscription(&empty, &cat, 0),
        Err(LedgerError::NoSubscription)
    );
    assert_eq!(
        cancel_queued_plan(&empty, &cat, 0),
        Err(LedgerError::NoQueuedPlan)
    );
    assert_eq!(
        subscribe(&empty, &cat, "nope", "s", 0),
        Err(LedgerError::UnknownPlan("nope".into()))
    );
    let t = subscribe(&empty, &cat, "basic-m", "s1", 0).unwrap();
    assert_eq!(
        subscribe(&t.state, &cat, "basic-m", "s2", 1),
        Err(LedgerError::AlreadySubscribed("basic-m".into()))
    );
    // Cancelling twice changes nothing the second time.
    let c = cancel_subscription(&t.state, &cat, 5).unwrap();
    let c2 = cancel_subscription(&c.state, &cat, 6).unwrap();
    assert_eq!(c2.state, c.state);
    assert!(c2.effects.is_empty());
}

#[test]
fn termination_ends_everything_without_refunds() {
    let cat = catalogue();
    let t = subscribe(&SubscriptionState::default(), &cat, "basic-y", "s1", 0).unwrap();
    let q = subscribe(&t.state, &cat, "pro-m", "s2", DAY_MS).unwrap();
    let end = terminate_subscriptions(&q.state, &cat, 2 * DAY_MS);
    assert!(refunds(&end.effects).is_empty());
    assert_eq!(end.state, SubscriptionState::default());
    assert_eq!(end.effects.len(), 2);
}

#[test]
fn a_plan_gone_from_the_catalogue_ends_at_its_renewal_uncharged() {
    let mut cat = catalogue();
    let t = subscribe(&SubscriptionState::default(), &cat, "pro-m", "s1", 0).unwrap();
    cat.plans.retain(|p| p.id != "pro-m");
    let r = tick_subscriptions(&t.state, &cat, 40 * DAY_MS);
    assert!(charges(&r.effects).is_empty());
    assert!(r.state.current.is_none());
    assert!(matches!(
        r.effects.last(),
        Some(SubscriptionEffect::Ended {
            reason: EndReason::PlanUnavailable,
            ..
        })
    ));
}

#[test]
fn events_dispatch_to_their_functions() {
    let cat = catalogue();
    let ev = SubscriptionEvent::Subscribe {
        plan_id: "basic-m".into(),
        subscription_id: "s1".into(),
    };
    let a = apply_subscription_event(&SubscriptionState::default(), &cat, &ev, 0).unwrap();
    let b = subscribe(&SubscriptionState::default(), &cat, "basic-m", "s1", 0).unwrap();
    assert_eq!(a, b);
    let c = apply_subscription_event(&a.state, &cat, &SubscriptionEvent::Cancel, 1).unwrap();
    assert!(c.state.current.unwrap().cancellation.is_some());
}
