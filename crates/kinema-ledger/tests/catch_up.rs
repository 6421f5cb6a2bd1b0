//! Catch-up after nobody ticked for a while (the server was down): no month whose
//! credits would arrive already expired is granted or paid for (the "Catch-up" rule in
//! `subscription/mod.rs`, docs/subscriptions-catch-up.md).

mod common;

use common::sweeper::swept;
use kinema_ledger::calendar::{add_months, join_instant, CivilDate, DAY_MS, HOUR_MS};
use kinema_ledger::{
    cancel_subscription, schedule_price_change, subscribe, tick_subscriptions, Catalogue, Currency,
    EndReason, LotSource, Money, MoneyRefundReason, NewLot, Plan, PlanInterval, PriceHistory,
    SubscriptionEffect, SubscriptionState, Transition, UnixMillis, DEFAULT_PRICE_NOTICE_MS,
};

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::new("EUR").unwrap())
}

fn date(year: i64, month: u32, day: u32, hour: i64) -> UnixMillis {
    join_instant(CivilDate { year, month, day }, hour * HOUR_MS)
}

fn catalogue() -> Catalogue {
    let plan = |id: &str, interval, price, counterpart: Option<&str>| Plan {
        id: id.into(),
        interval,
        credits_per_month: 100,
        prices: PriceHistory::new(eur(price), 0).unwrap(),
        monthly_counterpart: counterpart.map(str::to_string),
        seats: 1,
        extra_seat_price: None,
    };
    Catalogue {
        packs: vec![],
        plans: vec![
            plan("basic-m", PlanInterval::Monthly, 1000, None),
            plan("basic-y", PlanInterval::Annual, 10_000, Some("basic-m")),
            plan("pro-m", PlanInterval::Monthly, 2500, None),
        ],
    }
}

fn start(plan: &str, at: UnixMillis) -> SubscriptionState {
    subscribe(&SubscriptionState::default(), &catalogue(), plan, "s1", at)
        .unwrap()
        .state
}

/// (subscription, period, amount, at) of each charge.
fn charges(t: &Transition) -> Vec<(String, u32, i64, UnixMillis)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::Charge {
                subscription_id,
                period,
                amount,
                at,
                ..
            } => Some((subscription_id.clone(), *period, amount.minor, *at)),
            _ => None,
        })
        .collect()
}

/// (period, price, at) of each skipped renewal.
fn skipped(t: &Transition) -> Vec<(u32, i64, UnixMillis)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::RenewalSkipped {
                period, price, at, ..
            } => Some((*period, price.minor, *at)),
            _ => None,
        })
        .collect()
}

fn refunds(t: &Transition) -> Vec<(i64, MoneyRefundReason, UnixMillis)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::RefundOwed {
                amount, reason, at, ..
            } => Some((amount.minor, *reason, *at)),
            _ => None,
        })
        .collect()
}

fn grants(t: &Transition) -> Vec<&NewLot> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::GrantLot(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn month_of(lot: &NewLot) -> u32 {
    match &lot.source {
        LotSource::Subscription { month, .. } => *month,
        other => panic!("a plan grants subscription lots, got {other:?}"),
    }
}

fn ends(t: &Transition) -> Vec<(String, EndReason, UnixMillis)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::Ended {
                subscription_id,
                reason,
                at,
                ..
            } => Some((subscription_id.clone(), *reason, *at)),
            _ => None,
        })
        .collect()
}

/// What every catch-up must hold: no lot arrives expired.
fn assert_nothing_granted_expired(t: &Transition, now: UnixMillis) {
    for lot in grants(t) {
        assert!(
            lot.expires_at.is_none_or(|x| x > now),
            "month {} granted at {now} already expired ({:?})",
            month_of(lot),
            lot.expires_at
        );
    }
}

fn s1(s: &str) -> String {
    s.to_string()
}

#[test]
fn a_monthly_plan_down_three_months_pays_only_for_the_month_it_wakes_in() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 1, 0));
    let now = date(2024, 4, 15, 0);
    let t = tick_subscriptions(&state, &cat, now);
    // Feb and Mar were over before anyone looked: skipped, on their calendar instants.
    assert_eq!(
        skipped(&t),
        vec![
            (1, 1000, date(2024, 2, 1, 0)),
            (2, 1000, date(2024, 3, 1, 0))
        ]
    );
    assert_eq!(charges(&t), vec![(s1("s1"), 3, 1000, date(2024, 4, 1, 0))]);
    let g = grants(&t);
    assert_eq!(g.len(), 1);
    assert_eq!(month_of(g[0]), 3);
    assert_eq!(g[0].granted_at, date(2024, 4, 1, 0));
    assert_eq!(g[0].expires_at, Some(date(2024, 5, 1, 0)));
    assert!(refunds(&t).is_empty());
    assert_nothing_granted_expired(&t, now);
    // Same calendar, period 3 current, and it renews as usual afterwards.
    let cur = t.state.current.as_ref().unwrap();
    assert_eq!(cur.anchor, date(2024, 1, 1, 0));
    assert_eq!(
        (cur.period, cur.period_start, cur.period_end),
        (3, date(2024, 4, 1, 0), date(2024, 5, 1, 0))
    );
    assert_eq!(cur.paid, eur(1000));
    assert!(t.state.has_access(now));
    let next = tick_subscriptions(&t.state, &cat, date(2024, 5, 1, 0));
    assert_eq!(
        charges(&next),
        vec![(s1("s1"), 4, 1000, date(2024, 5, 1, 0))]
    );
    assert!(skipped(&next).is_empty());
}

#[test]
fn a_renewal_caught_up_late_but_within_its_month_is_charged_and_granted_as_usual() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 1, 0));
    let renewal = date(2024, 2, 1, 0);
    for late in [HOUR_MS, 20 * DAY_MS] {
        let t = tick_subscriptions(&state, &cat, renewal + late);
        assert_eq!(charges(&t), vec![(s1("s1"), 1, 1000, renewal)]);
        assert!(skipped(&t).is_empty());
        let g = grants(&t);
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].granted_at, g[0].expires_at),
            (renewal, Some(date(2024, 3, 1, 0)))
        );
    }
}

#[test]
fn the_boundary_is_the_expiry_itself_expired_means_expires_at_at_or_before_now() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 31, 10));
    // Period 1 runs Feb 29 10:00 .. Mar 31 10:00 (the calendar clamps the day).
    let end_of_period_1 = date(2024, 3, 31, 10);
    // One millisecond before its end, its month still runs: charged and granted.
    let t = tick_subscriptions(&state, &cat, end_of_period_1 - 1);
    assert_eq!(
        charges(&t),
        vec![(s1("s1"), 1, 1000, date(2024, 2, 29, 10))]
    );
    assert_eq!(grants(&t)[0].expires_at, Some(end_of_period_1));
    assert!(skipped(&t).is_empty());
    // At its end exactly, its credits would expire on arrival: skipped; period 2,
    // which starts at that instant, is charged and granted.
    let t = tick_subscriptions(&state, &cat, end_of_period_1);
    assert_eq!(skipped(&t), vec![(1, 1000, date(2024, 2, 29, 10))]);
    assert_eq!(charges(&t), vec![(s1("s1"), 2, 1000, end_of_period_1)]);
    let g = grants(&t);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (month_of(g[0]), g[0].expires_at),
        (2, Some(date(2024, 4, 30, 10)))
    );
    assert_nothing_granted_expired(&t, end_of_period_1);
}

#[test]
fn an_annual_plan_renewed_months_late_owes_back_the_months_already_over() {
    let cat = catalogue();
    // A year with the sweeper awake, then down from just before the renewal.
    let first_year = swept(
        &start("basic-y", date(2024, 1, 1, 0)),
        &cat,
        date(2024, 12, 31, 0),
    );
    assert_eq!(grants(&first_year).len(), 11, "months 1..=11");
    let now = date(2025, 4, 15, 0);
    let t = tick_subscriptions(&first_year.state, &cat, now);
    let renewal = date(2025, 1, 1, 0);
    assert_eq!(charges(&t), vec![(s1("s1"), 1, 10_000, renewal)]);
    assert!(skipped(&t).is_empty());
    // Jan, Feb and Mar 2025 were over at the catch-up: their share of the annual
    // price, 3/12 of 10 000, is owed back at the renewal.
    assert_eq!(
        refunds(&t),
        vec![(
            2_500,
            MoneyRefundReason::MissedMonths {
                period: 1,
                first_month: 12,
                months: 3
            },
            renewal
        )]
    );
    let g = grants(&t);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (month_of(g[0]), g[0].expires_at),
        (15, Some(date(2025, 5, 1, 0)))
    );
    assert_nothing_granted_expired(&t, now);
    assert_eq!(t.state.current.as_ref().unwrap().missed_months, 3);

    // The rest of the year is granted as usual; the next renewal is whole again.
    let rest = swept(&t.state, &cat, date(2026, 1, 1, 0));
    assert_eq!(grants(&rest).len(), 8 + 1, "months 16..=23, then month 24");
    assert!(refunds(&rest).is_empty());
    assert_eq!(
        charges(&rest),
        vec![(s1("s1"), 2, 10_000, date(2026, 1, 1, 0))]
    );
    assert_eq!(rest.state.current.as_ref().unwrap().missed_months, 0);

    // Cancelled in June: months charged are the three it had (Apr, May, Jun) at the
    // monthly price, out of what is left after the missed months: 7 500 - 3 000.
    let june = date(2025, 6, 10, 0);
    let to_june = swept(&t.state, &cat, june);
    let c = cancel_subscription(&to_june.state, &cat, june).unwrap();
    assert_eq!(
        refunds(&c),
        vec![(
            4_500,
            MoneyRefundReason::AnnualProration {
                months_charged: 3,
                month_price: eur(1000)
            },
            june
        )]
    );
    assert_eq!(
        c.state.current.as_ref().unwrap().ends_at(),
        Some(date(2025, 7, 1, 0))
    );
}

#[test]
fn an_outage_inside_a_paid_annual_period_owes_back_its_months_and_never_more_than_their_share() {
    let cat = catalogue();
    let to_march = swept(
        &start("basic-y", date(2024, 1, 1, 0)),
        &cat,
        date(2024, 3, 1, 0),
    );
    // Down from Mar 1 to Jun 10: Apr and May were over (Mar was granted on time).
    let t = tick_subscriptions(&to_march.state, &cat, date(2024, 6, 10, 0));
    assert!(charges(&t).is_empty());
    assert_eq!(
        refunds(&t),
        vec![(
            1_667,
            MoneyRefundReason::MissedMonths {
                period: 0,
                first_month: 3,
                months: 2
            },
            date(2024, 4, 1, 0)
        )]
    );
    assert_eq!(
        grants(&t).iter().map(|l| month_of(l)).collect::<Vec<_>>(),
        vec![5]
    );
    // Down again from Jul 1 to Oct 15: Aug and Sep. Together the four months owe
    // back 4/12 of the price rounded up once (3 334), not twice (1 667 + 1 667).
    let to_july = swept(&t.state, &cat, date(2024, 7, 1, 0));
    let t2 = tick_subscriptions(&to_july.state, &cat, date(2024, 10, 15, 0));
    let second: Vec<i64> = refunds(&t2).iter().map(|r| r.0).collect();
    assert_eq!(second, vec![3_334 - 1_667]);
    assert_eq!(t2.state.current.as_ref().unwrap().missed_months, 4);
}

#[test]
fn cancellations_that_took_effect_during_the_outage_end_it_uncharged() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 1, 0));
    let renewal = date(2024, 2, 1, 0);
    let now = date(2024, 4, 15, 0);

    // In time: ends at the renewal, as ever.
    let c = cancel_subscription(&state, &cat, renewal - 25 * HOUR_MS).unwrap();
    let t = tick_subscriptions(&c.state, &cat, now);
    assert!(charges(&t).is_empty() && skipped(&t).is_empty());
    assert_eq!(ends(&t), vec![(s1("s1"), EndReason::Cancelled, renewal)]);

    // Too late to stop the renewal: the period it renews into was over at the
    // catch-up, so it is skipped, and the subscription ends at its end.
    let late = cancel_subscription(&state, &cat, renewal - 23 * HOUR_MS).unwrap();
    let t = tick_subscriptions(&late.state, &cat, now);
    assert!(charges(&t).is_empty());
    assert_eq!(skipped(&t), vec![(1, 1000, renewal)]);
    assert_eq!(
        ends(&t),
        vec![(s1("s1"), EndReason::Cancelled, date(2024, 3, 1, 0))]
    );
    assert!(grants(&t).is_empty());
    assert!(t.state.current.is_none());
}

#[test]
fn an_annual_plan_cancelled_late_and_caught_up_after_its_last_month_is_not_charged() {
    let cat = catalogue();
    let renewal = date(2025, 1, 1, 0);
    let state = swept(
        &start("basic-y", date(2024, 1, 1, 0)),
        &cat,
        renewal - 23 * HOUR_MS,
    )
    .state;
    // 23 h before the renewal: it renews, then keeps one month (Jan 2025).
    let c = cancel_subscription(&state, &cat, renewal - 23 * HOUR_MS).unwrap();
    // Woken within that month: charged, the rest prorated, January granted.
    let within = tick_subscriptions(&c.state, &cat, date(2025, 1, 20, 0));
    assert_eq!(charges(&within), vec![(s1("s1"), 1, 10_000, renewal)]);
    assert_eq!(
        refunds(&within).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![9_000]
    );
    assert_eq!(grants(&within).len(), 1);
    // Woken after it: the one month it paid for is over, so nothing is charged.
    let after = tick_subscriptions(&c.state, &cat, date(2025, 3, 15, 0));
    assert!(charges(&after).is_empty() && refunds(&after).is_empty());
    assert_eq!(skipped(&after), vec![(1, 10_000, renewal)]);
    assert_eq!(
        ends(&after),
        vec![(s1("s1"), EndReason::Cancelled, date(2025, 2, 1, 0))]
    );
    assert!(grants(&after).is_empty());
}

#[test]
fn a_queued_plan_that_started_during_the_outage_owes_back_its_prepaid_month() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 1, 0));
    let q = subscribe(&state, &cat, "pro-m", "s2", date(2024, 1, 10, 0)).unwrap();
    assert_eq!(charges(&q), vec![(s1("s2"), 0, 2500, date(2024, 1, 10, 0))]);
    let now = date(2024, 4, 15, 0);
    let t = tick_subscriptions(&q.state, &cat, now);
    let switched = date(2024, 2, 1, 0);
    assert_eq!(ends(&t), vec![(s1("s1"), EndReason::Switched, switched)]);
    // s2 started on time on its calendar (Feb 1); its first month, paid in January,
    // was over before anyone looked: owed back in full.
    assert_eq!(
        refunds(&t),
        vec![(
            2500,
            MoneyRefundReason::MissedMonths {
                period: 0,
                first_month: 0,
                months: 1
            },
            switched
        )]
    );
    assert_eq!(skipped(&t), vec![(1, 2500, date(2024, 3, 1, 0))]);
    assert_eq!(charges(&t), vec![(s1("s2"), 2, 2500, date(2024, 4, 1, 0))]);
    let cur = t.state.current.as_ref().unwrap();
    assert_eq!((cur.id.as_str(), cur.anchor), ("s2", switched));
    assert_eq!(
        grants(&t).iter().map(|l| month_of(l)).collect::<Vec<_>>(),
        vec![2]
    );
    assert_nothing_granted_expired(&t, now);
}

#[test]
fn the_period_it_wakes_in_pays_the_price_in_effect_at_its_start() {
    let mut cat = catalogue();
    let t0 = date(2024, 1, 1, 0);
    let state = start("basic-m", t0);
    let p = &mut cat.plans[0];
    p.prices = schedule_price_change(
        &p.prices,
        eur(1200),
        t0,
        date(2024, 3, 15, 0),
        DEFAULT_PRICE_NOTICE_MS,
    )
    .unwrap();
    let t = tick_subscriptions(&state, &cat, date(2024, 4, 15, 0));
    // The skipped periods record the price they would have cost then.
    assert_eq!(
        skipped(&t),
        vec![
            (1, 1000, date(2024, 2, 1, 0)),
            (2, 1000, date(2024, 3, 1, 0))
        ]
    );
    assert_eq!(charges(&t), vec![(s1("s1"), 3, 1200, date(2024, 4, 1, 0))]);
    assert_eq!(t.state.current.as_ref().unwrap().paid, eur(1200));
}

#[test]
fn a_plan_gone_from_the_catalogue_ends_at_its_first_renewal_even_if_skipped() {
    let mut cat = catalogue();
    let state = start("pro-m", date(2024, 1, 1, 0));
    cat.plans.retain(|p| p.id != "pro-m");
    let t = tick_subscriptions(&state, &cat, date(2024, 6, 1, 0));
    assert!(charges(&t).is_empty() && skipped(&t).is_empty());
    assert_eq!(
        ends(&t),
        vec![(s1("s1"), EndReason::PlanUnavailable, date(2024, 2, 1, 0))]
    );
    assert!(t.state.current.is_none());
}

#[test]
fn a_decade_down_is_one_skip_per_period_and_one_charge() {
    let cat = catalogue();
    let state = start("basic-m", date(2024, 1, 1, 0));
    let now = add_months(date(2024, 1, 1, 0), 120) + DAY_MS;
    let t = tick_subscriptions(&state, &cat, now);
    assert_eq!(skipped(&t).len(), 119);
    assert_eq!(charges(&t), vec![(s1("s1"), 120, 1000, now - DAY_MS)]);
    assert_eq!(grants(&t).len(), 1);
    assert!(refunds(&t).is_empty());
}
