//! Plans caught up after the server was down, on SQLite and PostgreSQL: renewals whose
//! months were all over are skipped (RENEWAL_SKIPPED, no charge), missed months of a
//! charged period are owed back, and no lot is granted already expired
//! (docs/subscriptions-catch-up.md). Every scenario ends with the ledger verified.

use kinema_ledger::calendar::{add_months, DAY_MS};
use kinema_ledger::{Catalogue, Currency, Money, Plan, PlanInterval, PriceHistory};
use kinema_store::*;
use sqlx::Connection;

const T0: i64 = 1_700_000_000_000;

#[macro_use]
mod common;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn catalogue() -> Catalogue {
    let prices = |m| PriceHistory::new(eur(m), 0).unwrap();
    Catalogue {
        packs: vec![],
        plans: vec![
            Plan {
                id: "basic-monthly".into(),
                interval: PlanInterval::Monthly,
                credits_per_month: 1000,
                prices: prices(1900),
                monthly_counterpart: None,
                seats: 1,
                extra_seat_price: None,
            },
            Plan {
                id: "basic-annual".into(),
                interval: PlanInterval::Annual,
                credits_per_month: 1000,
                prices: prices(19_000),
                monthly_counterpart: Some("basic-monthly".into()),
                seats: 1,
                extra_seat_price: None,
            },
        ],
    }
}

struct Fixture {
    store: Store,
    account: String,
    cat: Catalogue,
    url: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        Fixture {
            store,
            account,
            cat: catalogue(),
            url: db.url.clone(),
        }
    }

    async fn events(&self) -> Vec<BillingEvent> {
        self.store
            .billing_events(&self.account, 0, 10_000)
            .await
            .unwrap()
    }

    async fn grants(&self) -> Vec<LedgerEntry> {
        self.store
            .ledger_entries(&self.account, None, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::SubscriptionGrant)
            .collect()
    }

    async fn tick(&self, now: i64) {
        self.store
            .tick_due_subscriptions(&self.cat, now, 100)
            .await
            .unwrap();
    }

    /// The stored subscription state (JSON), read past the store.
    async fn stored_state(&self) -> String {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        let s: String = sqlx::query_scalar("SELECT state FROM subscriptions")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        s
    }

    /// Runs raw SQL on the database, bypassing the store.
    async fn raw(&self, sql: &str) {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.unwrap();
    }

    async fn assert_verified(&self) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
        let money = self.store.verify_money(None).await.unwrap();
        assert!(money.is_clean(), "{:#?}", money.problems);
    }
}

fn of_kind(events: &[BillingEvent], kind: BillingEventKind) -> Vec<&BillingEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// Down for three months: the two renewals that were over are RENEWAL_SKIPPED events
/// without an amount, only the month it wakes in is charged and granted.
async fn a_monthly_plan_down_three_months_is_charged_for_the_current_month_only(f: Fixture) {
    f.store
        .subscribe(&f.cat, &f.account, "basic-monthly", Some("pay-1"), "p", T0)
        .await
        .unwrap();
    // Woken by the account reading its plans (the sweeper's path is the next test's).
    let now = add_months(T0, 3) + 10 * DAY_MS;
    let change = f
        .store
        .subscriptions(&f.cat, &f.account, now)
        .await
        .unwrap();
    assert_eq!(change.lots.len(), 1);
    assert_eq!(change.lots[0].expires_at, Some(add_months(T0, 4)));
    assert_eq!(change.events.len(), 4, "{:#?}", change.events);

    let events = f.events().await;
    let charges: Vec<(i64, i64)> = of_kind(&events, BillingEventKind::Charge)
        .iter()
        .map(|e| (e.amount.unwrap().minor, e.effective_at))
        .collect();
    assert_eq!(charges, vec![(1900, T0), (1900, add_months(T0, 3))]);
    let skipped = of_kind(&events, BillingEventKind::RenewalSkipped);
    assert_eq!(
        skipped.iter().map(|e| e.effective_at).collect::<Vec<_>>(),
        vec![add_months(T0, 1), add_months(T0, 2)]
    );
    for e in &skipped {
        assert_eq!(e.amount, None, "a skipped renewal moves no money");
        assert_eq!(e.plan_id.as_deref(), Some("basic-monthly"));
        let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(detail["effect"], "renewal_skipped");
        assert_eq!(detail["price"]["minor"], 1900);
    }
    assert!(of_kind(&events, BillingEventKind::RefundOwed).is_empty());

    // Month 0 at the start, month 3 now.
    assert_eq!(f.grants().await.len(), 2);
    assert_eq!(
        f.store.balance(&f.account, now).await.unwrap().available,
        1000
    );
    f.assert_verified().await;
}

/// An annual plan whose state was stored before `missed_months` existed: it still
/// loads, and the months an outage passed over are owed back, not granted.
async fn an_annual_plan_stored_before_the_upgrade_owes_back_its_missed_months(f: Fixture) {
    f.store
        .subscribe(&f.cat, &f.account, "basic-annual", Some("pay-y"), "p", T0)
        .await
        .unwrap();
    for month in 1..=2 {
        f.tick(add_months(T0, month)).await;
    }
    assert!(f.stored_state().await.contains("\"missed_months\":0,"));
    f.raw("UPDATE subscriptions SET state = REPLACE(state, '\"missed_months\":0,', '')")
        .await;
    assert!(!f.stored_state().await.contains("missed_months"));

    // Down from month 2 to a few days into month 5: months 3 and 4 are over.
    let now = add_months(T0, 5) + 3 * DAY_MS;
    f.tick(now).await;
    let events = f.events().await;
    let owed = of_kind(&events, BillingEventKind::RefundOwed);
    assert_eq!(owed.len(), 1);
    // 2/12 of 19 000, rounded up.
    assert_eq!(owed[0].amount, Some(eur(3167)));
    assert_eq!(owed[0].effective_at, add_months(T0, 3));
    let detail: serde_json::Value = serde_json::from_str(&owed[0].detail).unwrap();
    assert_eq!(
        detail["reason"]["missed_months"],
        serde_json::json!({ "period": 0, "first_month": 3, "months": 2 })
    );
    assert_eq!(of_kind(&events, BillingEventKind::Charge).len(), 1);
    // Months 0, 1, 2 and 5.
    assert_eq!(f.grants().await.len(), 4);
    assert!(f.stored_state().await.contains("\"missed_months\":2,"));
    assert_eq!(
        f.store.balance(&f.account, now).await.unwrap().available,
        1000
    );
    f.assert_verified().await;
}

on_both_backends!(
    a_monthly_plan_down_three_months_is_charged_for_the_current_month_only,
    an_annual_plan_stored_before_the_upgrade_owes_back_its_missed_months,
);
