//! The named scenarios of issue 4's "Done when" that are pure rules, one test each,
//! on the in-memory model (ledger checked clean at the end of each).

mod common;

use common::sweeper::swept;
use common::Model;
use kinema_ledger::calendar::{join_instant, CivilDate, DAY_MS, HOUR_MS};
use kinema_ledger::{
    admin_grant, advance_postpaid, cancel_queued_plan, cancel_subscription, charge_job,
    postpaid_can_submit, postpaid_status, purchase_pack, schedule_price_change, start_trial,
    subscribe, terminate_subscriptions, tick_subscriptions, top_up, Allocation, Catalogue,
    Currency, EntryKind, LedgerError, Money, MoneyRefundReason, Pack, Plan, PlanInterval,
    PostpaidAccount, PostpaidEffect, PostpaidPolicy, PostpaidStatus, PriceHistory,
    SubscriptionEffect, SubscriptionState, TrialOffer, UnixMillis, Validity,
    DEFAULT_PRICE_NOTICE_MS, DEFAULT_REFUND_GRACE_MS, DEFAULT_TRIAL_MS,
};

const ACC: &str = "acct-1";

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
        credits_per_month: 300,
        prices: PriceHistory::new(eur(price), 0).unwrap(),
        monthly_counterpart: counterpart.map(str::to_string),
        seats: 1,
        extra_seat_price: None,
    };
    Catalogue {
        packs: vec![Pack {
            id: "starter".into(),
            credits: 100,
            validity: Validity::Millis(30 * DAY_MS),
            prices: PriceHistory::new(eur(990), 0).unwrap(),
        }],
        plans: vec![
            plan("creator-m", PlanInterval::Monthly, 1_500, None),
            plan("creator-y", PlanInterval::Annual, 15_000, Some("creator-m")),
            plan("studio-m", PlanInterval::Monthly, 4_000, None),
        ],
    }
}

fn charges(effects: &[SubscriptionEffect]) -> Vec<(i64, UnixMillis)> {
    effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::Charge { amount, at, .. } => Some((amount.minor, *at)),
            _ => None,
        })
        .collect()
}

fn refunds(effects: &[SubscriptionEffect]) -> Vec<(i64, MoneyRefundReason)> {
    effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::RefundOwed { amount, reason, .. } => Some((amount.minor, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn fifo_by_expiry_across_three_lots() {
    let mut m = Model::new(1_000);
    let never = m.grant(ACC, &admin_grant(50, None, m.now).unwrap());
    let late = m.grant(
        ACC,
        &admin_grant(40, Some(m.now + 20 * DAY_MS), m.now).unwrap(),
    );
    let soon = m.grant(
        ACC,
        &admin_grant(30, Some(m.now + 5 * DAY_MS), m.now).unwrap(),
    );
    let job = m.submit(ACC, 80).unwrap();
    let taken = m.start(&job).unwrap();
    assert_eq!(
        taken,
        vec![
            Allocation {
                lot_id: soon,
                amount: 30
            },
            Allocation {
                lot_id: late,
                amount: 40
            },
            Allocation {
                lot_id: never,
                amount: 10
            },
        ]
    );
    m.succeed(&job);
    assert_eq!(m.lot(never).remaining, 40);
    m.assert_clean();
}

#[test]
fn refund_into_an_expired_lot() {
    let mut m = Model::new(0);
    let short = m.grant(ACC, &admin_grant(30, Some(10 * DAY_MS), 0).unwrap());
    let long = m.grant(ACC, &admin_grant(30, None, 0).unwrap());
    let job = m.submit(ACC, 40).unwrap();
    m.start(&job).unwrap();
    m.advance(12 * DAY_MS); // the short lot expired while the job ran
    m.fail(&job);
    // 30 back into a new refund lot expiring refund_grace after the refund, 10 to the live one.
    let refund = m.entries.last().unwrap().clone();
    assert_eq!(refund.kind, EntryKind::Refund);
    assert_eq!(refund.amount, 40);
    assert_eq!(m.lot(short).remaining, 0);
    assert_eq!(m.lot(long).remaining, 30);
    let refund_lot = m.lots.last().unwrap();
    assert_eq!(refund_lot.original, 30);
    assert_eq!(
        refund_lot.expires_at,
        Some(12 * DAY_MS + DEFAULT_REFUND_GRACE_MS)
    );
    assert_eq!(m.job(&job).refunded, 40);
    m.assert_clean();
}

#[test]
fn expiry_at_the_exact_instant() {
    let mut m = Model::new(0);
    let lot = m.grant(ACC, &admin_grant(25, Some(1_000), 0).unwrap());
    m.now = 999;
    assert_eq!(m.available(ACC), 25);
    m.now = 1_000;
    // Unusable from the instant, before any sweep wrote the EXPIRE.
    assert_eq!(m.available(ACC), 0);
    assert!(matches!(
        m.submit(ACC, 1),
        Err(LedgerError::InsufficientCredits { .. })
    ));
    let expire = m.entries.last().unwrap();
    assert_eq!(
        (expire.kind, expire.amount, expire.created_at),
        (EntryKind::Expire, 25, 1_000)
    );
    assert_eq!(m.lot(lot).remaining, 0);
    // A job queued before the expiry and started at it fails, nothing debited.
    let mut m = Model::new(0);
    m.grant(ACC, &admin_grant(25, Some(1_000), 0).unwrap());
    let job = m.submit(ACC, 20).unwrap();
    m.now = 1_000;
    assert!(matches!(
        m.start(&job),
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(m.job(&job).debited, 0);
    assert_eq!(m.job(&job).held, 0);
    m.assert_clean();
}

#[test]
fn trial_twice_refused() {
    let mut m = Model::new(0);
    let offer = TrialOffer {
        credits: 60,
        duration_ms: DEFAULT_TRIAL_MS,
    };
    let trial = start_trial(None, &offer, m.now).unwrap();
    let lot = m.grant(ACC, &trial.lot);
    assert_eq!(m.lot(lot).expires_at, Some(14 * DAY_MS));
    assert_eq!(
        start_trial(Some(&trial.trial), &offer, DAY_MS),
        Err(LedgerError::TrialAlreadyUsed { used_at: 0 })
    );
    // Its credits expire with it, and the trial still cannot be taken again.
    m.now = 14 * DAY_MS;
    m.sweep();
    assert_eq!(m.available(ACC), 0);
    assert!(start_trial(Some(&trial.trial), &offer, m.now).is_err());
    m.assert_clean();
}

#[test]
fn monthly_renewal_cancel_25h_vs_23h_before_renewal() {
    let cat = catalogue();
    let start = date(2025, 1, 31, 12);
    let renewal = date(2025, 2, 28, 12);
    let next_renewal = date(2025, 3, 31, 12);
    let sub = subscribe(
        &SubscriptionState::default(),
        &cat,
        "creator-m",
        "s1",
        start,
    )
    .unwrap();

    // 25 h before: no renewal, access until the period ends.
    let early = cancel_subscription(&sub.state, &cat, renewal - 25 * HOUR_MS).unwrap();
    assert!(refunds(&early.effects).is_empty());
    assert!(early.state.has_access(renewal - 1));
    let after = tick_subscriptions(&early.state, &cat, renewal + DAY_MS);
    assert!(charges(&after.effects).is_empty());
    assert!(!after.state.has_access(renewal));
    assert!(after.state.current.is_none());

    // 23 h before: renews once more, ends at the end of the next period.
    let late = cancel_subscription(&sub.state, &cat, renewal - 23 * HOUR_MS).unwrap();
    let renewed = tick_subscriptions(&late.state, &cat, renewal);
    assert_eq!(charges(&renewed.effects), vec![(1_500, renewal)]);
    assert!(renewed.state.has_access(next_renewal - 1));
    let ended = tick_subscriptions(&renewed.state, &cat, next_renewal);
    assert!(charges(&ended.effects).is_empty());
    assert!(ended.state.current.is_none());

    // Month grants expire at the end of their month of the subscription.
    let mut m = Model::new(start);
    for e in sub.effects.iter().chain(&renewed.effects) {
        if let SubscriptionEffect::GrantLot(lot) = e {
            m.now = lot.granted_at;
            m.grant(ACC, lot);
        }
    }
    let exp: Vec<_> = m.lots.iter().map(|l| l.expires_at).collect();
    assert_eq!(exp, vec![Some(renewal), Some(next_renewal)]);
    m.assert_clean();
}

#[test]
fn annual_cancel_in_month_5_refunds_the_annual_price_minus_5_monthly_prices() {
    let cat = catalogue();
    let start = date(2025, 1, 15, 0);
    let sub = subscribe(
        &SubscriptionState::default(),
        &cat,
        "creator-y",
        "s1",
        start,
    )
    .unwrap();
    assert_eq!(charges(&sub.effects), vec![(15_000, start)]);
    let in_month_5 = date(2025, 6, 1, 0); // month 5 runs May 15 .. June 15
                                          // The sweeper grants months 2..5 on the way, each at its start.
    let to_month_5 = swept(&sub.state, &cat, in_month_5);
    let c = cancel_subscription(&to_month_5.state, &cat, in_month_5).unwrap();
    assert_eq!(
        refunds(&c.effects),
        vec![(
            15_000 - 5 * 1_500,
            MoneyRefundReason::AnnualProration {
                months_charged: 5,
                month_price: eur(1_500)
            }
        )]
    );
    // Access to the end of the fifth month, whose credits were granted; no more.
    assert_eq!(
        c.state.current.as_ref().unwrap().ends_at(),
        Some(date(2025, 6, 15, 0))
    );
    let end = tick_subscriptions(&c.state, &cat, date(2026, 1, 15, 0));
    assert!(end.state.current.is_none());
    let grants = to_month_5
        .effects
        .iter()
        .chain(&c.effects)
        .chain(&end.effects)
        .filter(|e| matches!(e, SubscriptionEffect::GrantLot(_)))
        .count();
    assert_eq!(
        grants, 4,
        "months 2..5 granted on the way (month 1 at subscribe)"
    );
    assert!(charges(&end.effects).is_empty());
    // Never below zero: an expensive month makes the refund 0, not negative.
    let in_month_12 = swept(&sub.state, &cat, date(2025, 12, 20, 0));
    let c12 = cancel_subscription(&in_month_12.state, &cat, date(2025, 12, 20, 0)).unwrap();
    assert!(refunds(&c12.effects).is_empty());
}

#[test]
fn queued_plan_refunded_before_start() {
    let cat = catalogue();
    let start = date(2025, 3, 1, 0);
    let renewal = date(2025, 4, 1, 0);
    let sub = subscribe(
        &SubscriptionState::default(),
        &cat,
        "creator-m",
        "s1",
        start,
    )
    .unwrap();
    let q = subscribe(&sub.state, &cat, "studio-m", "s2", date(2025, 3, 10, 0)).unwrap();
    assert_eq!(charges(&q.effects), vec![(4_000, date(2025, 3, 10, 0))]);
    assert_eq!(q.state.queued_starts_at(), Some(renewal));
    let c = cancel_queued_plan(&q.state, &cat, date(2025, 3, 20, 0)).unwrap();
    assert_eq!(
        refunds(&c.effects),
        vec![(4_000, MoneyRefundReason::QueuedPlanCancelled)]
    );
    assert!(c.state.queued.is_none());
    // The current plan renews as if nothing happened.
    let r = tick_subscriptions(&c.state, &cat, renewal);
    assert_eq!(charges(&r.effects), vec![(1_500, renewal)]);
    // Once started it is an ordinary subscription: no full refund any more.
    let started = tick_subscriptions(&q.state, &cat, renewal);
    assert_eq!(started.state.current.as_ref().unwrap().id, "s2");
    assert_eq!(
        cancel_queued_plan(&started.state, &cat, renewal + 1),
        Err(LedgerError::NoQueuedPlan)
    );
    let cancel_started = cancel_subscription(&started.state, &cat, renewal + 1).unwrap();
    assert!(refunds(&cancel_started.effects).is_empty());
}

#[test]
fn price_change_with_29_vs_30_days_notice() {
    let cat = catalogue();
    let pack = cat.pack("starter").unwrap();
    let announced = 10 * DAY_MS;
    let too_soon = schedule_price_change(
        &pack.prices,
        eur(1_290),
        announced,
        announced + 29 * DAY_MS,
        DEFAULT_PRICE_NOTICE_MS,
    );
    let err = too_soon.unwrap_err();
    assert!(matches!(err, LedgerError::PriceNoticeTooShort { .. }));
    assert_eq!(err.contract_reason(), Some("PRICE_NOTICE_TOO_SHORT"));
    let prices = schedule_price_change(
        &pack.prices,
        eur(1_290),
        announced,
        announced + 30 * DAY_MS,
        DEFAULT_PRICE_NOTICE_MS,
    )
    .unwrap();
    let pack = Pack {
        prices,
        ..pack.clone()
    };
    // A purchase pays the price in effect at that moment.
    let before = purchase_pack(&pack, announced + 30 * DAY_MS - 1).unwrap();
    let after = purchase_pack(&pack, announced + 30 * DAY_MS).unwrap();
    assert_eq!((before.price, after.price), (eur(990), eur(1_290)));
    let mut m = Model::new(after.lot.granted_at);
    let lot = m.grant(ACC, &after.lot);
    assert_eq!(m.lot(lot).expires_at, Some(m.now + 30 * DAY_MS));
    assert_eq!(m.entries[0].kind, EntryKind::Purchase);
    m.assert_clean();
}

#[test]
fn arrears_then_suspended_after_24h_then_terminated_after_15_days() {
    let p = PostpaidPolicy::default();
    let t0 = date(2025, 5, 1, 9);
    let acct = PostpaidAccount::new(eur(500));
    let t = charge_job(&acct, &p, "job-1", eur(800), t0).unwrap();
    assert!(t
        .effects
        .contains(&PostpaidEffect::ArrearsStarted { at: t0 }));
    let acct = t.account;
    assert!(postpaid_can_submit(&acct, &p, t0 + 24 * HOUR_MS - 1).is_ok());
    let suspended = advance_postpaid(&acct, &p, t0 + 24 * HOUR_MS);
    assert_eq!(
        suspended.effects,
        vec![PostpaidEffect::Suspended {
            at: t0 + 24 * HOUR_MS
        }]
    );
    let err = postpaid_can_submit(&suspended.account, &p, t0 + 24 * HOUR_MS).unwrap_err();
    assert_eq!(err.contract_reason(), Some("ACCOUNT_SUSPENDED"));
    let terminate_at = t0 + 24 * HOUR_MS + 15 * DAY_MS;
    assert!(advance_postpaid(&suspended.account, &p, terminate_at - 1)
        .effects
        .is_empty());
    let terminated = advance_postpaid(&suspended.account, &p, terminate_at);
    assert_eq!(
        terminated.effects,
        vec![PostpaidEffect::Terminated { at: terminate_at }]
    );
    assert_eq!(
        postpaid_status(&terminated.account, &p, terminate_at),
        PostpaidStatus::Terminated { at: terminate_at }
    );
}

#[test]
fn top_up_reactivates() {
    let p = PostpaidPolicy::default();
    let t0 = 0;
    let acct = charge_job(&PostpaidAccount::new(eur(0)), &p, "job-1", eur(700), t0)
        .unwrap()
        .account;
    let suspended = advance_postpaid(&acct, &p, 3 * DAY_MS).account;
    assert!(postpaid_can_submit(&suspended, &p, 3 * DAY_MS).is_err());
    let up = top_up(&suspended, &p, eur(700), 3 * DAY_MS).unwrap();
    assert!(up
        .effects
        .contains(&PostpaidEffect::Reactivated { at: 3 * DAY_MS }));
    assert!(postpaid_can_submit(&up.account, &p, 3 * DAY_MS).is_ok());
    // Well past the old termination instant: still active.
    assert_eq!(
        postpaid_status(&up.account, &p, 30 * DAY_MS),
        PostpaidStatus::Active
    );
    assert!(advance_postpaid(&up.account, &p, 30 * DAY_MS)
        .effects
        .is_empty());
}

#[test]
fn termination_for_violation_forfeits() {
    let cat = catalogue();
    let mut m = Model::new(0);
    let sub = subscribe(&SubscriptionState::default(), &cat, "creator-y", "s1", 0).unwrap();
    for e in &sub.effects {
        if let SubscriptionEffect::GrantLot(lot) = e {
            m.grant(ACC, lot);
        }
    }
    m.grant(ACC, &admin_grant(50, Some(DAY_MS), 0).unwrap());
    m.grant(ACC, &admin_grant(70, None, 0).unwrap());
    let running = m.submit(ACC, 20).unwrap();
    m.start(&running).unwrap();
    let queued = m.submit(ACC, 10).unwrap();
    m.advance(2 * DAY_MS);
    let forfeited = m.forfeit(ACC);
    // The debit took 20 from the 50 expiring first, whose other 30 expired before the
    // forfeit; 300 + 70 forfeited; the queued hold released; no refund of anything.
    assert_eq!(forfeited, 370);
    let expired: i64 = m
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Expire)
        .map(|e| e.amount)
        .sum();
    assert_eq!(expired, 30);
    assert_eq!(m.available(ACC), 0);
    assert_eq!(m.job(&queued).held, 0);
    let end = terminate_subscriptions(&sub.state, &cat, m.now);
    assert!(refunds(&end.effects).is_empty());
    assert!(end.state.current.is_none());
    m.assert_clean();
}
