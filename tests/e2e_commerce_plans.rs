//! End to end with `--test-clock`: subscriptions (docs/api.md, "Catalogue, purchases and plans") through the gRPC
//! API — monthly renewal and the 24-hour cancellation rule, annual proration, queued
//! plans — each ending with `kinema ledger verify` passing.

mod common;

use common::commerce::*;
use common::*;
use kinema_ledger::calendar::add_months;
use kinema_proto::v1 as pb;
use tonic::Code;

fn clock() -> Opts {
    Opts {
        test_clock: true,
        ..Opts::default()
    }
}

fn grants(entries: &[pb::LedgerEntry]) -> usize {
    entries_of(entries, LedgerEntryKind::SubscriptionGrant).len()
}

/// Two monthly subscribers cancel before the same renewal: 25 h ahead stops it,
/// 23 h ahead is too late (it renews once more and ends a period later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_plan_cancelled_25_hours_ahead_stops_23_hours_ahead_renews() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let early = admin.create_account("early").await;
    let late = admin.create_account("late").await;
    let t0 = admin.now().await;
    for account in [&early, &late] {
        let s = admin.subscribe(account, "basic-monthly").await.unwrap();
        let cur = s.current.expect("in force");
        assert_eq!(millis(&cur.period_end), add_months(t0, 1));
        assert!(cur.renews);
        assert_eq!(s.lots.len(), 1);
        assert_eq!(millis(&s.lots[0].expires_at), add_months(t0, 1));
        assert_eq!(amounts(&s.events, "CHARGE"), [1900]);
        assert_eq!(admin.balance(account).await.available, 1000);
    }
    let renewal = add_months(t0, 1);
    admin.advance_to(renewal - 25 * HOUR).await;
    let c = admin.cancel_plan(&early, false).await.unwrap();
    let cur = c.current.unwrap();
    assert!(!cur.renews);
    assert_eq!(millis(&cur.cancellation.unwrap().ends_at), renewal);
    admin.advance_to(renewal - 23 * HOUR).await;
    let c = admin.cancel_plan(&late, false).await.unwrap();
    let cur = c.current.unwrap();
    assert!(cur.renews, "23 h ahead is too late to stop this renewal");
    assert_eq!(
        millis(&cur.cancellation.unwrap().ends_at),
        add_months(t0, 2)
    );

    // Access to the end of the period, then the renewal instant.
    assert_eq!(admin.balance(&early).await.available, 1000);
    admin.advance_to(renewal).await;
    assert!(admin.subscription(&early).await.current.is_none());
    assert_eq!(admin.balance(&early).await.available, 0);
    assert_eq!(
        amounts(&admin.billing_events(&early).await, "CHARGE"),
        [1900]
    );
    let renewed = admin.subscription(&late).await.current.expect("renewed");
    assert_eq!(renewed.period, 1);
    assert_eq!(
        amounts(&admin.billing_events(&late).await, "CHARGE"),
        [1900, 1900]
    );
    assert_eq!(
        admin.balance(&late).await.available,
        1000,
        "a new month of credits"
    );

    admin.advance_to(add_months(t0, 2)).await;
    assert!(admin.subscription(&late).await.current.is_none());
    assert_eq!(
        amounts(&admin.billing_events(&late).await, "CHARGE").len(),
        2
    );
    assert_eq!(grants(&admin.ledger(&late, None).await), 2);
    assert!(amounts(&admin.billing_events(&late).await, "REFUND_OWED").is_empty());
    assert_ledger_verifies(&server.data_dir);
}

/// An annual plan cancelled in its fifth month: the five months started are charged
/// at the monthly plan's price, the rest of the annual price is owed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annual_plan_cancelled_in_month_five_refunds_the_rest() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("annual").await;
    let t0 = admin.now().await;
    let s = admin.subscribe(&account, "basic-annual").await.unwrap();
    let cur = s.current.unwrap();
    assert_eq!(millis(&cur.period_end), add_months(t0, 12));
    assert_eq!(cur.paid.unwrap().minor, 19_000);
    // Month by month, as a sweeper would see it.
    for m in 1..=4 {
        admin.advance_to(add_months(t0, m)).await;
    }
    admin.advance(3 * DAY).await;
    assert_eq!(grants(&admin.ledger(&account, None).await), 5);
    assert_eq!(
        admin.balance(&account).await.available,
        1000,
        "only the current month"
    );
    let c = admin.cancel_plan(&account, false).await.unwrap();
    assert_eq!(amounts(&c.events, "REFUND_OWED"), [19_000 - 5 * 1900]);
    let cur = c.current.unwrap();
    assert_eq!(
        millis(&cur.cancellation.unwrap().ends_at),
        add_months(t0, 5)
    );
    assert_eq!(
        amounts(&admin.billing_events(&account).await, "REFUND_OWED"),
        [9500]
    );
    admin.advance_to(add_months(t0, 5)).await;
    assert!(admin.subscription(&account).await.current.is_none());
    assert_eq!(
        grants(&admin.ledger(&account, None).await),
        5,
        "no sixth month"
    );
    assert_eq!(admin.balance(&account).await.available, 0);
    assert_ledger_verifies(&server.data_dir);
}

/// A plan bought while another runs waits for it to end, and can be cancelled before
/// it starts for a full refund; the current plan then renews as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_plan_is_refunded_in_full_before_it_starts() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("queued").await;
    let t0 = admin.now().await;
    admin.subscribe(&account, "basic-monthly").await.unwrap();
    admin.advance(DAY).await;
    let q = admin.subscribe(&account, "pro-monthly").await.unwrap();
    let queued = q.queued.expect("queued");
    assert_eq!(queued.plan_id, "pro-monthly");
    assert_eq!(millis(&queued.starts_at), add_months(t0, 1));
    assert_eq!(queued.paid.unwrap().minor, 7900);
    assert!(q.lots.is_empty(), "nothing granted before it starts");
    assert!(!q.current.unwrap().renews, "the current plan makes way");
    let twice = admin.subscribe(&account, "basic-annual").await;
    assert_status(
        &expect_err("a second queued plan", twice),
        Code::FailedPrecondition,
        "PLAN_ALREADY_QUEUED",
    );

    let c = admin.cancel_plan(&account, true).await.unwrap();
    assert!(c.queued.is_none());
    assert_eq!(amounts(&c.events, "REFUND_OWED"), [7900]);
    assert!(c.current.unwrap().renews, "the current plan renews again");
    let again = admin.cancel_plan(&account, true).await;
    assert_status(
        &expect_err("nothing queued", again),
        Code::FailedPrecondition,
        "NO_QUEUED_PLAN",
    );

    admin.advance_to(add_months(t0, 1)).await;
    let s = admin.subscription(&account).await;
    let cur = s.current.unwrap();
    assert_eq!((cur.plan_id.as_str(), cur.period), ("basic-monthly", 1));
    let events = admin.billing_events(&account).await;
    assert_eq!(amounts(&events, "CHARGE"), [1900, 7900, 1900]);
    assert_eq!(amounts(&events, "REFUND_OWED"), [7900]);
    assert_ledger_verifies(&server.data_dir);
}
