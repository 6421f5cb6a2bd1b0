//! Commerce in the store, on SQLite and PostgreSQL (each scenario runs on both):
//! packs and payment refs, trials, price changes with notice, subscriptions, postpaid
//! arrears, and the account lifecycle. Every scenario ends with `verify_ledger` clean.

use kinema_ledger::calendar::{add_months, DAY_MS, HOUR_MS};
use kinema_ledger::{
    Catalogue, Currency, LedgerError, Money, Pack, Plan, PlanInterval, PriceHistory,
    SubscriptionEffect, TrialOffer, Validity, DEFAULT_PRICE_NOTICE_MS,
};
use kinema_store::*;

const T0: i64 = 1_700_000_000_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

#[macro_use]
mod common;

use common::new_job;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn catalogue() -> Catalogue {
    let prices = |m| PriceHistory::new(eur(m), 0).unwrap();
    Catalogue {
        packs: vec![
            Pack {
                id: "starter".into(),
                credits: 500,
                validity: Validity::Millis(90 * DAY_MS),
                prices: prices(999),
            },
            Pack {
                id: "big".into(),
                credits: 3000,
                validity: Validity::Never,
                prices: prices(4999),
            },
        ],
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
            Plan {
                id: "pro-monthly".into(),
                interval: PlanInterval::Monthly,
                credits_per_month: 5000,
                prices: prices(7900),
                monthly_counterpart: None,
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

    /// Runs raw SQL on the database, bypassing the store (to corrupt it on purpose).
    async fn raw(&self, sql: &str) {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.unwrap();
    }

    async fn entries(&self) -> Vec<LedgerEntry> {
        self.store
            .ledger_entries(&self.account, None, 0, 10_000)
            .await
            .unwrap()
    }

    async fn events(&self) -> Vec<BillingEvent> {
        self.store
            .billing_events(&self.account, 0, 10_000)
            .await
            .unwrap()
    }

    async fn available(&self, now: i64) -> i64 {
        self.store
            .balance(&self.account, now)
            .await
            .unwrap()
            .available
    }

    async fn assert_verified(&self) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
    }
}

fn video(job_id: &str, expires_at: i64) -> Artifact {
    Artifact {
        kind: ArtifactKind::Video,
        mime: "video/mp4".into(),
        bytes: 10,
        sha256: "00".into(),
        location: format!("{job_id}/video.mp4"),
        expires_at,
        removal: None,
    }
}

fn kinds_of(events: &[BillingEvent]) -> Vec<BillingEventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn money_of(events: &[BillingEvent], kind: BillingEventKind) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.amount.map(|m| m.minor).unwrap_or_default())
        .collect()
}

async fn a_pack_is_bought_once_per_payment_ref(f: Fixture) {
    let first = f
        .store
        .purchase_pack(&f.cat, &f.account, "starter", "pay-1", "platform", T0)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.payment.amount, eur(999));
    assert_eq!(
        (
            first.lot.original,
            first.lot.expires_at,
            first.lot.source.as_str()
        ),
        (500, Some(T0 + 90 * DAY_MS), "pack:starter")
    );
    // The same ref again (a platform retry): the same purchase, nothing new.
    let again = f
        .store
        .purchase_pack(&f.cat, &f.account, "starter", "pay-1", "platform", T0 + 5)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.lot.id, first.lot.id);
    assert_eq!(f.available(T0 + 5).await, 500);
    // The ref paid for something else: refused, nothing written.
    let before = f.entries().await.len();
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &f.account, "big", "pay-1", "platform", T0)
            .await,
        Err(StoreError::PaymentRefConflict { .. })
    ));
    let other = f.store.create_account("Other", None, T0).await.unwrap();
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &other.id, "starter", "pay-1", "platform", T0)
            .await,
        Err(StoreError::PaymentRefConflict { .. })
    ));
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &f.account, "nope", "pay-2", "platform", T0)
            .await,
        Err(StoreError::Ledger(LedgerError::UnknownPack(_)))
    ));
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &f.account, "starter", "  ", "platform", T0)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(f.entries().await.len(), before);
    let purchases: Vec<_> = f
        .entries()
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Purchase)
        .collect();
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].memo, "pay-1");
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::PackPurchase),
        vec![999]
    );
    // Pack credits never expiring come last in the debit order.
    f.store
        .purchase_pack(&f.cat, &f.account, "big", "pay-3", "platform", T0)
        .await
        .unwrap();
    assert_eq!(f.available(T0 + 90 * DAY_MS).await, 3000, "starter expired");
    f.assert_verified().await;
}

async fn parallel_purchases_with_one_payment_ref_grant_once(f: Fixture) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = f.store.clone();
            let cat = f.cat.clone();
            let account = f.account.clone();
            tokio::spawn(async move {
                store
                    .purchase_pack(&cat, &account, "starter", "pay-race", "platform", T0)
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(f.available(T0).await, 500);
    f.assert_verified().await;
}

async fn a_trial_is_granted_once_ever(f: Fixture) {
    let offer = TrialOffer {
        credits: 100,
        duration_ms: 14 * DAY_MS,
    };
    let t = f
        .store
        .start_trial(&f.account, &offer, "platform", T0)
        .await
        .unwrap();
    assert_eq!(t.trial.ends_at, T0 + 14 * DAY_MS);
    assert_eq!(
        (t.lot.original, t.lot.expires_at),
        (100, Some(T0 + 14 * DAY_MS))
    );
    for at in [T0 + 1, T0 + 400 * DAY_MS] {
        assert!(matches!(
            f.store
                .start_trial(&f.account, &offer, "platform", at)
                .await,
            Err(StoreError::Ledger(LedgerError::TrialAlreadyUsed {
                used_at: T0
            }))
        ));
    }
    assert_eq!(f.available(T0 + 14 * DAY_MS - 1).await, 100);
    assert_eq!(f.available(T0 + 14 * DAY_MS).await, 0);
    let trials = f
        .entries()
        .await
        .iter()
        .filter(|e| e.kind == EntryKind::Trial)
        .count();
    assert_eq!(trials, 1);
    f.assert_verified().await;
}

async fn price_changes_need_thirty_days_notice(f: Fixture) {
    let too_soon = f
        .store
        .schedule_price_change(
            &f.cat,
            ItemKind::Pack,
            "starter",
            eur(1299),
            T0 + 29 * DAY_MS,
            DEFAULT_PRICE_NOTICE_MS,
            "admin",
            T0,
        )
        .await;
    assert!(
        matches!(&too_soon, Err(StoreError::Ledger(e)) if e.contract_reason() == Some("PRICE_NOTICE_TOO_SHORT")),
        "{too_soon:?}"
    );
    assert_eq!(
        f.store.catalogue(&f.cat).await.unwrap(),
        f.cat,
        "nothing written"
    );
    let history = f
        .store
        .schedule_price_change(
            &f.cat,
            ItemKind::Pack,
            "starter",
            eur(1299),
            T0 + 30 * DAY_MS,
            DEFAULT_PRICE_NOTICE_MS,
            "admin",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(history.entries.len(), 2);
    let cat = f.store.catalogue(&f.cat).await.unwrap();
    let starter = cat.pack("starter").unwrap();
    assert_eq!(starter.prices.scheduled_after(T0).len(), 1);
    assert!(matches!(
        f.store
            .schedule_price_change(
                &f.cat,
                ItemKind::Plan,
                "nope",
                eur(1),
                T0 + 40 * DAY_MS,
                DEFAULT_PRICE_NOTICE_MS,
                "admin",
                T0
            )
            .await,
        Err(StoreError::Ledger(LedgerError::UnknownPlan(_)))
    ));
    // A purchase pays the price in effect at its moment.
    let before = f
        .store
        .purchase_pack(
            &f.cat,
            &f.account,
            "starter",
            "p1",
            "x",
            T0 + 30 * DAY_MS - 1,
        )
        .await
        .unwrap();
    let after = f
        .store
        .purchase_pack(&f.cat, &f.account, "starter", "p2", "x", T0 + 30 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(
        (before.payment.amount, after.payment.amount),
        (eur(999), eur(1299))
    );
    f.assert_verified().await;
}

/// A monthly plan: charged and granted at the start, renewed on the calendar; a
/// cancellation 25 h before the renewal stops it, one 23 h before does not.
async fn a_monthly_plan_renews_unless_cancelled_a_day_ahead(f: Fixture) {
    let s = f
        .store
        .subscribe(
            &f.cat,
            &f.account,
            "basic-monthly",
            Some("sub-pay-1"),
            "p",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(s.lots.len(), 1);
    assert_eq!(s.lots[0].expires_at, Some(add_months(T0, 1)));
    assert_eq!(f.available(T0).await, 1000);
    let renewal = add_months(T0, 1);
    let cur = s.state.current.clone().unwrap();
    assert_eq!(cur.period_end, renewal);
    // Replaying the payment changes nothing.
    let again = f
        .store
        .subscribe(
            &f.cat,
            &f.account,
            "basic-monthly",
            Some("sub-pay-1"),
            "p",
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.state, s.state);

    // The sweeper's tick at the renewal instant: charged again, a new month of credits.
    assert_eq!(
        f.store
            .tick_due_subscriptions(&f.cat, renewal - 1, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store
            .tick_due_subscriptions(&f.cat, renewal, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::Charge),
        vec![1900, 1900]
    );
    assert_eq!(
        f.available(renewal).await,
        1000,
        "month 0's credits expired"
    );

    // 23 h before the next renewal: too late, it renews once more.
    let second = add_months(T0, 2);
    let late = f
        .store
        .cancel_subscription(
            &f.cat,
            &f.account,
            &CancelTarget::Current,
            "p",
            second - 23 * HOUR_MS,
        )
        .await
        .unwrap();
    assert_eq!(
        late.state.current.as_ref().unwrap().ends_at(),
        Some(add_months(T0, 3))
    );
    f.store
        .tick_due_subscriptions(&f.cat, second, 100)
        .await
        .unwrap();
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::Charge).len(),
        3
    );
    let ended = f
        .store
        .subscriptions(&f.cat, &f.account, add_months(T0, 3))
        .await
        .unwrap();
    assert!(ended.state.current.is_none());
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::Charge).len(),
        3,
        "no renewal after the cancellation takes effect"
    );
    assert!(money_of(&f.events().await, BillingEventKind::RefundOwed).is_empty());
    f.assert_verified().await;
}

async fn cancelling_25_hours_ahead_stops_the_renewal(f: Fixture) {
    f.store
        .subscribe(&f.cat, &f.account, "basic-monthly", None, "p", T0)
        .await
        .unwrap();
    let renewal = add_months(T0, 1);
    let c = f
        .store
        .cancel_subscription(
            &f.cat,
            &f.account,
            &CancelTarget::Current,
            "p",
            renewal - 25 * HOUR_MS,
        )
        .await
        .unwrap();
    assert_eq!(c.state.current.as_ref().unwrap().ends_at(), Some(renewal));
    // Access until the end of the period.
    assert_eq!(f.available(renewal - 1).await, 1000);
    f.store
        .tick_due_subscriptions(&f.cat, renewal, 100)
        .await
        .unwrap();
    let after = f
        .store
        .subscriptions(&f.cat, &f.account, renewal)
        .await
        .unwrap();
    assert!(after.state.current.is_none());
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::Charge),
        vec![1900]
    );
    assert_eq!(f.available(renewal).await, 0);
    f.assert_verified().await;
}

async fn an_annual_plan_cancelled_in_month_five_refunds_the_rest(f: Fixture) {
    f.store
        .subscribe(
            &f.cat,
            &f.account,
            "basic-annual",
            Some("annual-1"),
            "p",
            T0,
        )
        .await
        .unwrap();
    // Into the fifth month (months 0..=4 started), with the sweeper granting each month.
    let in_month_5 = add_months(T0, 4) + 3 * DAY_MS;
    for month in 1..=4 {
        f.store
            .tick_due_subscriptions(&f.cat, add_months(T0, month), 100)
            .await
            .unwrap();
    }
    let c = f
        .store
        .cancel_subscription(&f.cat, &f.account, &CancelTarget::Current, "p", in_month_5)
        .await
        .unwrap();
    let refunds: Vec<i64> = c
        .effects
        .iter()
        .filter_map(|e| match e {
            SubscriptionEffect::RefundOwed { amount, .. } => Some(amount.minor),
            _ => None,
        })
        .collect();
    assert_eq!(refunds, vec![19_000 - 5 * 1900]);
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::RefundOwed),
        vec![9500]
    );
    assert_eq!(
        c.state.current.as_ref().unwrap().ends_at(),
        Some(add_months(T0, 5))
    );
    let grants = f
        .entries()
        .await
        .iter()
        .filter(|e| e.kind == EntryKind::SubscriptionGrant)
        .count();
    assert_eq!(grants, 5);
    f.assert_verified().await;
}

async fn a_queued_plan_is_refunded_in_full_before_it_starts(f: Fixture) {
    f.store
        .subscribe(&f.cat, &f.account, "basic-monthly", None, "p", T0)
        .await
        .unwrap();
    let q = f
        .store
        .subscribe(&f.cat, &f.account, "pro-monthly", None, "p", T0 + DAY_MS)
        .await
        .unwrap();
    let queued = q.state.queued.clone().unwrap();
    assert_eq!(q.state.queued_starts_at(), Some(add_months(T0, 1)));
    assert!(q.lots.is_empty(), "nothing granted before it starts");
    assert!(matches!(
        f.store
            .cancel_subscription(
                &f.cat,
                &f.account,
                &CancelTarget::Id("sub_nope".into()),
                "p",
                T0
            )
            .await,
        Err(StoreError::NotFound(kinema_store::NotFound::Subscription))
    ));
    let c = f
        .store
        .cancel_subscription(
            &f.cat,
            &f.account,
            &CancelTarget::Id(queued.id.clone()),
            "p",
            T0 + 2 * DAY_MS,
        )
        .await
        .unwrap();
    assert!(c.state.queued.is_none());
    assert!(
        c.state.current.as_ref().unwrap().cancellation.is_none(),
        "the current one renews again"
    );
    assert_eq!(
        money_of(&f.events().await, BillingEventKind::RefundOwed),
        vec![7900]
    );
    assert!(matches!(
        f.store
            .cancel_subscription(
                &f.cat,
                &f.account,
                &CancelTarget::Queued,
                "p",
                T0 + 2 * DAY_MS
            )
            .await,
        Err(StoreError::Ledger(LedgerError::NoQueuedPlan))
    ));
    f.assert_verified().await;
}

async fn postpaid_arrears_suspend_after_grace_and_terminate_after_the_limit(f: Fixture) {
    let policy = f.store.policy().clone();
    let acct = f
        .store
        .create_account_with("Payg", None, BillingMode::Postpaid, T0)
        .await
        .unwrap()
        .id;
    // Prepaid things are refused for it.
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &acct, "starter", "pp-1", "p", T0)
            .await,
        Err(StoreError::BillingMode { .. })
    ));
    let job = f
        .store
        .submit_job(new_job(&acct, 40), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    assert_eq!((job.billing, job.held), (JobBilling::Postpaid, 0));
    let price = policy.usage_price.checked_mul(40).unwrap();
    assert_eq!(job.price, Some(price));
    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, T0)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(leased.debited, 0);
    let done = f
        .store
        .complete_job(
            &job.id,
            OWNER,
            &[video(&job.id, T0 + 7 * DAY_MS)],
            &Usage::default(),
            T0 + 10,
        )
        .await
        .unwrap();
    assert_eq!(done.job.charged_minor, price.minor);
    assert!(done.cancelled.is_empty());
    let pp = f.store.postpaid_account(&acct).await.unwrap().unwrap();
    assert_eq!(pp.balance.minor, -price.minor);
    assert_eq!(pp.arrears_since, Some(T0 + 10));
    // A failed job is not charged.
    let failing = f
        .store
        .submit_job(new_job(&acct, 40), "p", T0 + 20)
        .await
        .unwrap()
        .job()
        .clone();
    f.store.lease_next_job(OWNER, LEASE, T0 + 20).await.unwrap();
    let failure = Failure {
        code: "MODEL_ERROR".into(),
        message: "x".into(),
        retryable: false,
    };
    let failed = f
        .store
        .fail_job(&failing.id, OWNER, &failure, &Usage::default(), T0 + 21)
        .await
        .unwrap();
    assert_eq!(failed.charged_minor, 0);

    let suspends = T0 + 10 + policy.postpaid.grace_ms;
    let queued = f
        .store
        .submit_job(new_job(&acct, 1), "p", suspends - 1)
        .await
        .unwrap()
        .job()
        .id
        .clone();
    let refused = f.store.submit_job(new_job(&acct, 1), "p", suspends).await;
    assert!(
        matches!(refused, Err(StoreError::AccountNotActive { .. })),
        "{refused:?}"
    );
    let view = f
        .store
        .account_view(&acct, suspends)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, AccountStatus::Suspended);
    assert_eq!(
        f.store
            .advance_postpaid_accounts(suspends - 1, 100)
            .await
            .unwrap()
            .len(),
        0
    );
    let advanced = f
        .store
        .advance_postpaid_accounts(suspends, 100)
        .await
        .unwrap();
    assert_eq!(advanced.len(), 1);
    assert_eq!(advanced[0].account_id, acct);
    // Suspended as an operator suspends: the queued job is cancelled, never charged,
    // and reported (the server tells its watchers).
    let cancelled = f.store.get_job(None, &queued).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.state, cancelled.charged_minor),
        (JobState::Cancelled, 0)
    );
    assert_eq!(advanced[0].cancelled, vec![cancelled]);
    let terminates = suspends + policy.postpaid.suspension_limit_ms;
    assert!(f
        .store
        .advance_postpaid_accounts(terminates - 1, 100)
        .await
        .unwrap()
        .is_empty());
    let advanced = f
        .store
        .advance_postpaid_accounts(terminates, 100)
        .await
        .unwrap();
    let ids: Vec<&str> = advanced.iter().map(|a| a.account_id.as_str()).collect();
    assert_eq!(ids, [acct.as_str()]);
    assert!(advanced[0].cancelled.is_empty(), "nothing was left queued");
    let account = f.store.get_account(&acct).await.unwrap().unwrap();
    assert_eq!(
        (account.status, account.status_reason.as_str()),
        (AccountStatus::Terminated, "arrears")
    );
    // Its queued job was cancelled; its content is purged once its files are gone.
    assert_eq!(
        f.store.accounts_to_purge(10).await.unwrap(),
        vec![acct.clone()]
    );
    let files = f.store.account_artifacts(&acct).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(
        !f.store.finish_purge(&acct, terminates).await.unwrap(),
        "a file is left"
    );
    for a in &files {
        f.store
            .mark_artifact_deleted(&a.job_id, &a.kind, terminates)
            .await
            .unwrap();
    }
    assert!(f.store.finish_purge(&acct, terminates).await.unwrap());
    let purged = f.store.get_job(None, &job.id).await.unwrap().unwrap();
    assert_eq!(purged.params.prompt, "");
    assert!(purged.artifacts.iter().all(|a| a.expires_at <= terminates));
    assert!(f.store.accounts_to_purge(10).await.unwrap().is_empty());
    assert!(matches!(
        f.store
            .top_up(&acct, eur(10_000), "late-pay", terminates + 1)
            .await,
        Err(StoreError::AccountClosed { .. })
    ));
    let events = kinds_of(&f.store.billing_events(&acct, 0, 100).await.unwrap());
    for k in [
        BillingEventKind::UsageCharge,
        BillingEventKind::ArrearsStarted,
        BillingEventKind::ArrearsSuspended,
        BillingEventKind::ArrearsTerminated,
    ] {
        assert!(events.contains(&k), "{k:?} in {events:?}");
    }
    f.assert_verified().await;
}

/// A postpaid account in arrears since `charged_at` (a job of `quote` credits charged
/// then), and the instant its grace runs out.
async fn in_arrears(f: &Fixture, quote: i64, charged_at: i64) -> (String, i64) {
    let policy = f.store.policy().clone();
    let acct = f
        .store
        .create_account_with("Payg", None, BillingMode::Postpaid, T0)
        .await
        .unwrap()
        .id;
    let first = f
        .store
        .submit_job(new_job(&acct, quote), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    f.store
        .complete_job(&first.id, OWNER, &[], &Usage::default(), charged_at)
        .await
        .unwrap();
    (acct, charged_at + policy.postpaid.grace_ms)
}

/// A worker that reaches a postpaid account's queued job after its grace ran out, but
/// before the sweeper came by, suspends the account (as the sweep would have) and
/// cancels the job instead of starting it.
async fn a_lease_after_the_grace_suspends_instead_of_starting(f: Fixture) {
    let (acct, suspends) = in_arrears(&f, 40, T0 + 10).await;
    let queued = f
        .store
        .submit_job(new_job(&acct, 1), "p", suspends - 1)
        .await
        .unwrap()
        .job()
        .clone();

    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, suspends)
        .await
        .unwrap();
    assert!(leased.job.is_none(), "{:?}", leased.job);
    let ids: Vec<(&str, JobState)> = leased
        .refused
        .iter()
        .map(|j| (j.id.as_str(), j.state))
        .collect();
    assert_eq!(ids, [(queued.id.as_str(), JobState::Cancelled)]);
    let job = f.store.get_job(None, &queued.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.charged_minor), (JobState::Cancelled, 0));
    let view = f
        .store
        .account_view(&acct, suspends)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, AccountStatus::Suspended);
    let kinds: Vec<BillingEventKind> = f
        .store
        .billing_events(&acct, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == BillingEventKind::ArrearsSuspended)
            .count(),
        1
    );
    // The sweep that follows finds nothing left to do.
    assert!(f
        .store
        .advance_postpaid_accounts(suspends, 100)
        .await
        .unwrap()
        .is_empty());
    f.assert_verified().await;
}

/// A postpaid job still running when its account's grace runs out: its charge at the
/// end applies the suspension, and the account's queued job is cancelled and reported.
async fn a_charge_after_the_grace_suspends_and_reports_the_cancelled(f: Fixture) {
    let (acct, suspends) = in_arrears(&f, 40, T0 + 10).await;
    let running = f
        .store
        .submit_job(new_job(&acct, 1), "p", T0 + 20)
        .await
        .unwrap()
        .job()
        .clone();
    f.store.lease_next_job(OWNER, LEASE, T0 + 20).await.unwrap();
    let queued = f
        .store
        .submit_job(new_job(&acct, 1), "p", suspends - 1)
        .await
        .unwrap()
        .job()
        .clone();

    let done = f
        .store
        .complete_job(&running.id, OWNER, &[], &Usage::default(), suspends)
        .await
        .unwrap();
    assert_eq!(done.job.state, JobState::Succeeded);
    assert!(done.job.charged_minor > 0);
    let ids: Vec<(&str, JobState)> = done
        .cancelled
        .iter()
        .map(|j| (j.id.as_str(), j.state))
        .collect();
    assert_eq!(ids, [(queued.id.as_str(), JobState::Cancelled)]);
    let view = f
        .store
        .account_view(&acct, suspends)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, AccountStatus::Suspended);
    f.assert_verified().await;
}

async fn a_top_up_to_zero_reactivates_at_once(f: Fixture) {
    let policy = f.store.policy().clone();
    let (acct, suspended_at) = in_arrears(&f, 25, T0).await;
    let owed = policy.usage_price.checked_mul(25).unwrap();
    f.store
        .advance_postpaid_accounts(suspended_at, 10)
        .await
        .unwrap();
    assert!(f
        .store
        .submit_job(new_job(&acct, 1), "p", suspended_at)
        .await
        .is_err());
    // A partial top-up keeps it suspended; the rest ends the suspension at once.
    let partial = f
        .store
        .top_up(
            &acct,
            Money::new(owed.minor - 1, owed.currency),
            "t1",
            suspended_at,
        )
        .await
        .unwrap();
    assert!(partial.account.balance.is_negative());
    assert!(f
        .store
        .submit_job(new_job(&acct, 1), "p", suspended_at)
        .await
        .is_err());
    let full = f
        .store
        .top_up(&acct, Money::new(1, owed.currency), "t2", suspended_at)
        .await
        .unwrap();
    assert_eq!(full.account.balance.minor, 0);
    assert!(full
        .effects
        .contains(&kinema_ledger::PostpaidEffect::Reactivated { at: suspended_at }));
    let replay = f
        .store
        .top_up(&acct, Money::new(1, owed.currency), "t2", suspended_at)
        .await
        .unwrap();
    assert!(!replay.created);
    assert_eq!(
        replay.account.balance.minor, 0,
        "a replayed top-up adds nothing"
    );
    f.store
        .submit_job(new_job(&acct, 1), "p", suspended_at)
        .await
        .unwrap();
    assert!(matches!(
        f.store.top_up(&f.account, eur(5), "t3", T0).await,
        Err(StoreError::BillingMode { .. })
    ));
    f.assert_verified().await;
    let money = f.store.verify_money(None).await.unwrap();
    assert!(money.is_clean(), "{:?}", money.problems);
    assert_eq!((money.accounts_checked, money.jobs_checked), (1, 2));
    // A balance changed behind the billing events is named.
    f.raw(&format!(
        "UPDATE postpaid_accounts SET balance_minor = 500 WHERE account_id = '{acct}'"
    ))
    .await;
    let money = f.store.verify_money(None).await.unwrap();
    assert_eq!(money.problems.len(), 1, "{:?}", money.problems);
    assert!(
        money.problems[0].contains("stored money balance 500"),
        "{:?}",
        money.problems
    );
}

async fn suspension_cancels_queued_jobs_and_releases_their_holds(f: Fixture) {
    f.store
        .grant_credits(&f.account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    let running = f
        .store
        .submit_job(new_job(&f.account, 10), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    let queued = f
        .store
        .submit_job(new_job(&f.account, 30), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let s = f
        .store
        .suspend_account(&f.account, "operator", "admin", T0 + 1)
        .await
        .unwrap();
    assert_eq!(s.account.status, AccountStatus::Suspended);
    assert_eq!(
        s.cancelled
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        vec![queued.id.as_str()]
    );
    assert_eq!(s.cancelled[0].state, JobState::Cancelled);
    let b = f.store.balance(&f.account, T0 + 1).await.unwrap();
    assert_eq!((b.held, b.available), (0, 90));
    assert!(matches!(
        f.store
            .submit_job(new_job(&f.account, 1), "p", T0 + 2)
            .await,
        Err(StoreError::AccountNotActive { .. })
    ));
    // The running job goes on.
    assert_eq!(
        f.store
            .get_job(None, &running.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Running
    );
    let r = f
        .store
        .reinstate_account(&f.account, "admin", T0 + 3)
        .await
        .unwrap();
    assert_eq!(r.account.status, AccountStatus::Active);
    f.store
        .submit_job(new_job(&f.account, 1), "p", T0 + 4)
        .await
        .unwrap();
    f.assert_verified().await;
}

async fn termination_for_violation_forfeits_everything(f: Fixture) {
    f.store
        .grant_credits(&f.account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    f.store
        .purchase_pack(&f.cat, &f.account, "starter", "pay-t", "p", T0)
        .await
        .unwrap();
    f.store
        .subscribe(&f.cat, &f.account, "basic-monthly", None, "p", T0)
        .await
        .unwrap();
    let running = f
        .store
        .submit_job(new_job(&f.account, 10), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    let queued = f
        .store
        .submit_job(new_job(&f.account, 20), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let t = f
        .store
        .terminate_account(&f.cat, &f.account, "violation", "admin", T0 + 5)
        .await
        .unwrap();
    assert_eq!(t.account.status, AccountStatus::Terminated);
    assert_eq!(t.cancelled[0].id, queued.id);
    assert_eq!(t.stopping, vec![running.id.clone()]);
    assert_eq!(t.forfeited, 100 + 500 + 1000 - 10);
    assert_eq!(f.store.balance(&f.account, T0 + 5).await.unwrap().total, 0);
    let sub = f
        .store
        .subscriptions(&f.cat, &f.account, T0 + 6)
        .await
        .unwrap();
    assert!(!sub.state.is_running());
    assert!(
        money_of(&f.events().await, BillingEventKind::RefundOwed).is_empty(),
        "no refund"
    );
    // The running job stops: its debit comes back and is forfeited with the rest.
    let stopped = f
        .store
        .finish_cancelled(&running.id, OWNER, &Usage::default(), T0 + 7)
        .await
        .unwrap();
    assert_eq!((stopped.state, stopped.refunded), (JobState::Cancelled, 10));
    assert_eq!(f.store.balance(&f.account, T0 + 7).await.unwrap().total, 0);
    let forfeits: i64 = f
        .entries()
        .await
        .iter()
        .filter(|e| e.kind == EntryKind::Forfeit)
        .map(|e| e.amount)
        .sum();
    assert_eq!(forfeits, 1600);
    assert!(matches!(
        f.store
            .purchase_pack(&f.cat, &f.account, "starter", "pay-u", "p", T0 + 8)
            .await,
        Err(StoreError::AccountClosed { .. })
    ));
    assert!(matches!(
        f.store.reinstate_account(&f.account, "admin", T0 + 8).await,
        Err(StoreError::AccountClosed { .. })
    ));
    f.assert_verified().await;
}

async fn deletion_is_refused_with_every_reason_then_allowed(f: Fixture) {
    const WEEK: i64 = 7 * DAY_MS;
    f.store
        .grant_credits(
            &f.account,
            50,
            Some(T0 + 3 * DAY_MS),
            "a memo naming Ann",
            "admin",
            T0,
        )
        .await
        .unwrap();
    f.store
        .subscribe(&f.cat, &f.account, "basic-monthly", None, "p", T0)
        .await
        .unwrap();
    let job = f
        .store
        .submit_job(new_job(&f.account, 5), "p", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let refused = f
        .store
        .delete_account(&f.cat, &f.account, WEEK, "owner", T0 + DAY_MS)
        .await;
    let Err(StoreError::DeletionRefused(reasons)) = refused else {
        panic!("{refused:?}");
    };
    let codes: Vec<&str> = reasons.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        vec![
            "HAS_CREDITS",
            "UNFINISHED_JOBS",
            "RUNNING_SUBSCRIPTION",
            "ACCOUNT_TOO_YOUNG"
        ]
    );
    let payg = f
        .store
        .create_account_with("Payg", None, BillingMode::Postpaid, T0)
        .await
        .unwrap()
        .id;
    f.store.top_up(&payg, eur(100), "tp", T0).await.unwrap();
    let Err(StoreError::DeletionRefused(reasons)) = f
        .store
        .delete_account(&f.cat, &payg, WEEK, "owner", T0 + WEEK)
        .await
    else {
        panic!("a balance refuses deletion");
    };
    assert_eq!(
        reasons.iter().map(|r| r.code()).collect::<Vec<_>>(),
        vec!["HAS_MONEY_BALANCE"]
    );

    // Clear every reason: cancel the job and the plan, let the credits expire, wait.
    f.store
        .cancel_job(&f.account, &job.id, "owner", T0 + DAY_MS)
        .await
        .unwrap();
    f.store
        .cancel_subscription(
            &f.cat,
            &f.account,
            &CancelTarget::Current,
            "owner",
            T0 + DAY_MS,
        )
        .await
        .unwrap();
    let later = add_months(T0, 1);
    let d = f
        .store
        .delete_account(&f.cat, &f.account, WEEK, "owner", later)
        .await
        .unwrap();
    assert_eq!(
        (d.account.status, d.account.name.as_str()),
        (AccountStatus::Deleted, "")
    );
    // Its jobs are deleted for every reader; their money rows stay for the ledger.
    assert!(f.store.get_job(None, &job.id).await.unwrap().is_none());
    assert!(f
        .store
        .list_jobs(&f.account, &[], i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    let stored: (String, String) = {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&f.url).await.unwrap();
        sqlx::query_as(&format!(
            "SELECT prompt, request_hash FROM jobs WHERE id = '{}'",
            job.id
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    assert_eq!(stored, (String::new(), String::new()), "no prompt left");
    let entries = f.entries().await;
    assert!(!entries.is_empty(), "the ledger keeps its entries");
    assert!(
        entries.iter().all(|e| e.memo.is_empty()),
        "memos are blanked"
    );
    assert!(matches!(
        f.store
            .delete_account(&f.cat, &f.account, WEEK, "owner", later)
            .await,
        Err(StoreError::AccountClosed { .. })
    ));
    f.assert_verified().await;
}

async fn the_sweeper_expires_lots_at_their_instant(f: Fixture) {
    let lot = f
        .store
        .grant_credits(&f.account, 30, Some(T0 + DAY_MS), "", "admin", T0)
        .await
        .unwrap()
        .0;
    assert_eq!(
        f.store
            .expire_due_lots_everywhere(T0 + DAY_MS - 1, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.available(T0 + DAY_MS - 1).await, 30);
    // Unusable from the instant, before the sweeper runs.
    assert_eq!(f.available(T0 + DAY_MS).await, 0);
    assert_eq!(
        f.store
            .expire_due_lots_everywhere(T0 + DAY_MS, 100)
            .await
            .unwrap(),
        1
    );
    let expired: Vec<_> = f
        .entries()
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Expire)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].amount, expired[0].allocations[0].lot_id),
        (30, lot.id)
    );
    assert_eq!(
        f.store
            .expire_due_lots_everywhere(T0 + 2 * DAY_MS, 100)
            .await
            .unwrap(),
        0
    );
    f.assert_verified().await;
}

on_both_backends!(
    a_pack_is_bought_once_per_payment_ref,
    parallel_purchases_with_one_payment_ref_grant_once,
    a_trial_is_granted_once_ever,
    price_changes_need_thirty_days_notice,
    a_monthly_plan_renews_unless_cancelled_a_day_ahead,
    cancelling_25_hours_ahead_stops_the_renewal,
    an_annual_plan_cancelled_in_month_five_refunds_the_rest,
    a_queued_plan_is_refunded_in_full_before_it_starts,
    postpaid_arrears_suspend_after_grace_and_terminate_after_the_limit,
    a_lease_after_the_grace_suspends_instead_of_starting,
    a_charge_after_the_grace_suspends_and_reports_the_cancelled,
    a_top_up_to_zero_reactivates_at_once,
    suspension_cancels_queued_jobs_and_releases_their_holds,
    termination_for_violation_forfeits_everything,
    deletion_is_refused_with_every_reason_then_allowed,
    the_sweeper_expires_lots_at_their_instant,
);
