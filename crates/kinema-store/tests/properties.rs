//! Property test of the store (issue 4): random interleavings of grants, purchases
//! (with repeated payment refs), trials, plan events, price changes, submissions,
//! starts, successes, failures, cancels, clock moves, sweeps and terminations on a
//! prepaid account, and submissions, charges, top-ups and arrears on a postpaid one,
//! run against SQLite and PostgreSQL. After every step `verify_ledger` must find
//! nothing wrong (no negative lot, conservation, per-job debit and refund rules,
//! balances recomputed from the entries equal the stored ones), the stored balance
//! must agree with it, and `verify_money` must find the postpaid balance equal to its
//! top-ups less its usage charges, each succeeded postpaid job charged once.

use kinema_params::GenerationParams;
use std::collections::BTreeMap;

use kinema_ledger::calendar::{DAY_MS, HOUR_MS};
use kinema_ledger::PostpaidPhase;
use kinema_ledger::{
    Catalogue, Currency, Money, Pack, Plan, PlanInterval, PriceHistory, TrialOffer, Validity,
};
use kinema_store::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

mod common;

const T0: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const LEASE: i64 = 60_000;
const OWNER: &str = "prop-worker";

fn catalogue() -> Catalogue {
    let prices = |m| PriceHistory::new(Money::new(m, Currency::EUR), 0).unwrap();
    let plan = |id: &str, interval, credits, price, counterpart: Option<&str>| Plan {
        id: id.into(),
        interval,
        credits_per_month: credits,
        prices: prices(price),
        monthly_counterpart: counterpart.map(str::to_string),
        seats: 1,
        extra_seat_price: None,
    };
    Catalogue {
        packs: vec![
            Pack {
                id: "small".into(),
                credits: 40,
                validity: Validity::Millis(20 * DAY_MS),
                prices: prices(500),
            },
            Pack {
                id: "forever".into(),
                credits: 25,
                validity: Validity::Never,
                prices: prices(900),
            },
        ],
        plans: vec![
            plan("basic-m", PlanInterval::Monthly, 60, 1000, None),
            plan("basic-y", PlanInterval::Annual, 60, 10_000, Some("basic-m")),
            plan("pro-m", PlanInterval::Monthly, 150, 3000, None),
        ],
    }
}

#[derive(Debug, Clone)]
enum Op {
    Grant {
        credits: i64,
        ttl_hours: Option<i64>,
    },
    Buy {
        pack: usize,
        reuse_ref: bool,
    },
    Trial,
    Subscribe {
        plan: usize,
    },
    CancelPlan {
        queued: bool,
    },
    Submit {
        quote: i64,
    },
    Start,
    Succeed,
    Fail,
    CancelQueued,
    CancelRunning,
    Advance {
        hours: i64,
    },
    Sweep,
    Terminate,
    /// A new price for a pack (`item` 0..2) or plan (2..5), `notice_days` ahead.
    SchedulePrice {
        item: usize,
        minor: i64,
        notice_days: i64,
    },
    PostpaidSubmit {
        quote: i64,
    },
    TopUp {
        minor: i64,
        reuse_ref: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..50, proptest::option::of(1i64..600))
            .prop_map(|(credits, ttl_hours)| Op::Grant { credits, ttl_hours }),
        2 => (0usize..2, any::<bool>()).prop_map(|(pack, reuse_ref)| Op::Buy { pack, reuse_ref }),
        1 => Just(Op::Trial),
        2 => (0usize..3).prop_map(|plan| Op::Subscribe { plan }),
        1 => any::<bool>().prop_map(|queued| Op::CancelPlan { queued }),
        5 => (1i64..40).prop_map(|quote| Op::Submit { quote }),
        4 => Just(Op::Start),
        2 => Just(Op::Succeed),
        2 => Just(Op::Fail),
        1 => Just(Op::CancelQueued),
        1 => Just(Op::CancelRunning),
        3 => (1i64..24 * 20).prop_map(|hours| Op::Advance { hours }),
        2 => Just(Op::Sweep),
        1 => Just(Op::Terminate),
        2 => (0usize..5, 0i64..5000, 20i64..40)
            .prop_map(|(item, minor, notice_days)| Op::SchedulePrice { item, minor, notice_days }),
        4 => (1i64..400).prop_map(|quote| Op::PostpaidSubmit { quote }),
        2 => (1i64..600, any::<bool>()).prop_map(|(minor, reuse_ref)| Op::TopUp { minor, reuse_ref }),
    ]
}

const NOTICE_MS: i64 = 30 * DAY_MS;

/// Errors a random operation may meet; anything else fails the test.
fn expected(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::InsufficientCredits { .. }
            | StoreError::AccountNotActive { .. }
            | StoreError::AccountClosed { .. }
            | StoreError::Ledger(_)
    )
}

/// A job the test started, and whose account it is.
#[derive(Debug, Clone)]
struct Tracked {
    id: String,
    account: String,
}

/// The prices the test scheduled: per item, the list price at T0 and each change as
/// (effective_at, price) in the order scheduled.
#[derive(Debug, Default)]
struct PriceModel {
    changes: BTreeMap<(bool, String), Vec<(i64, i64)>>,
}

impl PriceModel {
    /// The price in effect at `now`: the latest change effective by then (the one
    /// scheduled last among those effective at the same instant), else the list price.
    fn at(&self, plan: bool, id: &str, list: i64, now: i64) -> i64 {
        self.changes
            .get(&(plan, id.to_string()))
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, (at, _))| *at <= now)
            .max_by_key(|(i, (at, _))| (*at, *i))
            .map_or(list, |(_, (_, minor))| *minor)
    }
}

struct World {
    store: Store,
    cat: Catalogue,
    account: String,
    /// The postpaid account.
    payg: String,
    now: i64,
    refs: u32,
    top_up_refs: u32,
    queued: Vec<Tracked>,
    running: Vec<Tracked>,
    prices: PriceModel,
}

impl World {
    async fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        let s = &self.store;
        let a = self.account.clone();
        let now = self.now;
        match op {
            Op::Grant { credits, ttl_hours } => {
                s.grant_credits(
                    &a,
                    *credits,
                    ttl_hours.map(|h| now + h * HOUR_MS),
                    "",
                    "prop",
                    now,
                )
                .await?;
            }
            Op::Buy { pack, reuse_ref } => {
                if !reuse_ref || self.refs == 0 {
                    self.refs += 1;
                }
                let id = &self.cat.packs[*pack].id;
                let r = s
                    .purchase_pack(
                        &self.cat,
                        &a,
                        id,
                        &format!("{a}-{}", self.refs),
                        "prop",
                        now,
                    )
                    .await;
                match r {
                    // The same ref for another pack: refused, as it must be.
                    Err(StoreError::PaymentRefConflict { .. }) if *reuse_ref => {}
                    Ok(bought) if bought.created => {
                        let list = self.cat.packs[*pack].prices.entries[0].price.minor;
                        assert_eq!(
                            bought.payment.amount.minor,
                            self.prices.at(false, id, list, now),
                            "a purchase pays the price in effect"
                        );
                    }
                    other => {
                        other?;
                    }
                }
            }
            Op::Trial => {
                let offer = TrialOffer {
                    credits: 30,
                    duration_ms: 14 * DAY_MS,
                };
                s.start_trial(&a, &offer, "prop", now).await?;
            }
            Op::Subscribe { plan } => {
                let plan = &self.cat.plans[*plan];
                let change = s
                    .subscribe(&self.cat, &a, &plan.id, None, "prop", now)
                    .await?;
                let list = plan.prices.entries[0].price.minor;
                for charge in change
                    .events
                    .iter()
                    .filter(|e| e.kind == BillingEventKind::Charge && e.effective_at == now)
                {
                    assert_eq!(
                        charge.amount.map(|m| m.minor),
                        Some(self.prices.at(true, &plan.id, list, now)),
                        "a subscription is charged the price in effect"
                    );
                }
            }
            Op::CancelPlan { queued } => {
                let target = if *queued {
                    CancelTarget::Queued
                } else {
                    CancelTarget::Current
                };
                s.cancel_subscription(&self.cat, &a, &target, "prop", now)
                    .await?;
            }
            Op::Submit { quote } => {
                let job = s.submit_job(new_job(&a, *quote), "prop", now).await?;
                self.queued.push(Tracked {
                    id: job.job().id.clone(),
                    account: a.clone(),
                });
            }
            Op::Start => {
                let leased = s.lease_next_job(OWNER, LEASE, now).await?;
                for refused in &leased.refused {
                    self.queued.retain(|j| j.id != refused.id);
                }
                if let Some(job) = leased.job {
                    self.queued.retain(|j| j.id != job.id);
                    self.running.push(Tracked {
                        id: job.id,
                        account: job.account_id,
                    });
                }
            }
            Op::Succeed => {
                if let Some(j) = self.running.pop() {
                    s.complete_job(&j.id, OWNER, &[], &Usage::default(), now)
                        .await?;
                }
            }
            Op::Fail => {
                if let Some(j) = self.running.pop() {
                    let failure = Failure {
                        code: "MODEL_ERROR".into(),
                        message: "random".into(),
                        retryable: false,
                    };
                    s.fail_job(&j.id, OWNER, &failure, &Usage::default(), now)
                        .await?;
                }
            }
            Op::CancelQueued => {
                if let Some(j) = self.queued.pop() {
                    s.cancel_job(&j.account, &j.id, "prop", now).await?;
                }
            }
            Op::CancelRunning => {
                if let Some(j) = self.running.pop() {
                    let c = s.cancel_job(&j.account, &j.id, "prop", now).await?;
                    assert!(c.stop_requested);
                    s.finish_cancelled(&j.id, OWNER, &Usage::default(), now)
                        .await?;
                }
            }
            Op::Advance { hours } => self.now += hours * HOUR_MS,
            Op::Sweep => {
                s.expire_due_lots_everywhere(now, 100).await?;
                s.tick_due_subscriptions(&self.cat, now, 100).await?;
                s.advance_postpaid_accounts(now, 100).await?;
            }
            Op::Terminate => {
                let t = s
                    .terminate_account(&self.cat, &a, "violation", "prop", now)
                    .await?;
                let mut stopping = t.stopping.clone();
                let mut running: Vec<String> = self
                    .running
                    .iter()
                    .filter(|j| j.account == a)
                    .map(|j| j.id.clone())
                    .collect();
                stopping.sort();
                running.sort();
                assert_eq!(stopping, running, "every running job is asked to stop");
                // Their workers finish the cancel; the refund is forfeited too.
                for id in running {
                    s.finish_cancelled(&id, OWNER, &Usage::default(), now)
                        .await?;
                }
                assert_eq!(s.balance(&a, now).await?.total, 0, "everything forfeited");
            }
            Op::SchedulePrice {
                item,
                minor,
                notice_days,
            } => {
                let (kind, id, plan) = if *item < 2 {
                    (ItemKind::Pack, self.cat.packs[*item].id.clone(), false)
                } else {
                    (ItemKind::Plan, self.cat.plans[*item - 2].id.clone(), true)
                };
                let effective_at = now + notice_days * DAY_MS;
                let r = s
                    .schedule_price_change(
                        &self.cat,
                        kind,
                        &id,
                        Money::new(*minor, Currency::EUR),
                        effective_at,
                        NOTICE_MS,
                        "prop",
                        now,
                    )
                    .await;
                if notice_days * DAY_MS < NOTICE_MS {
                    assert!(
                        matches!(
                            r,
                            Err(StoreError::Ledger(
                                kinema_ledger::LedgerError::PriceNoticeTooShort { .. }
                            ))
                        ),
                        "{notice_days} days of notice must be refused: {r:?}"
                    );
                } else {
                    r?;
                    self.prices
                        .changes
                        .entry((plan, id))
                        .or_default()
                        .push((effective_at, *minor));
                }
            }
            Op::PostpaidSubmit { quote } => {
                let p = self.payg.clone();
                let before = s.postpaid_account(&p).await?.expect("postpaid balance");
                let policy = *s.postpaid_policy();
                // docs/api.md, "Postpaid accounts": in arrears past the grace (or terminated), no new jobs.
                let suspended = before.terminated_at.is_some()
                    || (before.balance.minor < 0
                        && before
                            .arrears_since
                            .is_some_and(|since| now >= since + policy.grace_ms));
                let r = s.submit_job(new_job(&p, *quote), "prop", now).await;
                assert_eq!(r.is_err(), suspended, "{before:?} at {now}: {r:?}");
                let job = r?;
                assert_eq!(job.job().held, 0, "postpaid jobs hold no credits");
                self.queued.push(Tracked {
                    id: job.job().id.clone(),
                    account: p,
                });
            }
            Op::TopUp { minor, reuse_ref } => {
                if !reuse_ref || self.top_up_refs == 0 {
                    self.top_up_refs += 1;
                }
                let r = s
                    .top_up(
                        &self.payg,
                        Money::new(*minor, Currency::EUR),
                        &format!("{}-{}", self.payg, self.top_up_refs),
                        now,
                    )
                    .await;
                match r {
                    // The same ref for another amount: refused.
                    Err(StoreError::PaymentRefConflict { .. }) if *reuse_ref => {}
                    Ok(t) if t.created && t.account.balance.minor >= 0 => {
                        // Back to zero or above ends arrears or suspension at once.
                        assert_eq!(t.account.arrears_since, None);
                        assert_eq!(t.account.phase, PostpaidPhase::Active);
                    }
                    other => {
                        other?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops the jobs that left the queue or stopped running by other hands (a
    /// suspension, a termination, a failed start).
    async fn resync(&mut self) {
        let mut keep = Vec::new();
        for j in std::mem::take(&mut self.queued) {
            let job = self.store.get_job(None, &j.id).await.unwrap().unwrap();
            if job.state == JobState::Queued {
                keep.push(j);
            }
        }
        self.queued = keep;
        let mut keep = Vec::new();
        for j in std::mem::take(&mut self.running) {
            let job = self.store.get_job(None, &j.id).await.unwrap().unwrap();
            if job.state == JobState::Running {
                keep.push(j);
            }
        }
        self.running = keep;
    }

    /// The invariants after every step.
    async fn check(&self, step: usize, op: &Op) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(
            report.is_clean(),
            "after step {step} ({op:?}): {:#?}",
            report.problems
        );
        let balance = self.store.balance(&self.account, self.now).await.unwrap();
        assert!(balance
            .lots
            .iter()
            .all(|l| l.remaining > 0 && l.remaining <= l.original));
        // The stored balance is the entries' recomputation, restricted to live lots.
        let live: i64 = report
            .lots
            .iter()
            .filter(|(id, _)| balance.lots.iter().any(|l| l.id == **id))
            .map(|(_, l)| l.remaining)
            .sum();
        assert_eq!(balance.total, live, "after step {step} ({op:?})");
        let held: i64 = report.jobs.values().map(|j| j.held).sum();
        assert_eq!(balance.held, held, "after step {step} ({op:?})");
        // The postpaid balance is its top-ups less its usage charges, each succeeded
        // postpaid job charged once and no other.
        let money = self.store.verify_money(None).await.unwrap();
        assert!(
            money.is_clean(),
            "after step {step} ({op:?}): {:#?}",
            money.problems
        );
        // A suspended (or terminated) postpaid account has nothing queued.
        let pp = self
            .store
            .postpaid_account(&self.payg)
            .await
            .unwrap()
            .unwrap();
        if pp.phase >= PostpaidPhase::Suspended {
            let queued = self
                .store
                .list_jobs(&self.payg, &[JobState::Queued], i64::MAX, 100)
                .await
                .unwrap();
            assert!(
                queued.is_empty(),
                "after step {step} ({op:?}): {pp:?} with {} queued",
                queued.len()
            );
        }
    }
}

fn new_job(account: &str, quote: i64) -> NewJob {
    NewJob {
        account_id: account.to_string(),
        external_id: None,
        idempotency_key: None,
        request_hash: "h".into(),
        params: GenerationParams {
            model: "testsrc".into(),
            prompt: "p".into(),
            negative_prompt: String::new(),
            width: 16,
            height: 16,
            num_frames: 1,
            fps: 8,
            steps: 1,
            guidance_scale: 1.0,
            seed: 0,
            output: "mp4".into(),
            preview: None,
            ..GenerationParams::default()
        },
        callback_url: String::new(),
        metadata: BTreeMap::new(),
        quote,
        member_id: None,
        priority: JobPriority::Normal,
        batch_key: None,
    }
}

fn run(kind: common::Kind) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("KINEMA_STORE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        // Shrinking replays whole sequences against fresh databases: keep it short.
        max_shrink_iters: 64,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                let db = common::TestDb::new(kind, StorePolicy::default()).await;
                let account = db.store.create_account("prop", None, T0).await.unwrap().id;
                let payg = db
                    .store
                    .create_account_with("payg", None, BillingMode::Postpaid, T0)
                    .await
                    .unwrap()
                    .id;
                let mut world = World {
                    store: db.store.clone(),
                    cat: catalogue(),
                    account,
                    payg,
                    now: T0,
                    refs: 0,
                    top_up_refs: 0,
                    queued: Vec::new(),
                    running: Vec::new(),
                    prices: PriceModel::default(),
                };
                for (step, op) in ops.iter().enumerate() {
                    if let Err(e) = world.apply(op).await {
                        assert!(expected(&e), "step {step} ({op:?}): unexpected {e}");
                    }
                    world.resync().await;
                    world.check(step, op).await;
                }
                db.finish().await;
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_interleavings_keep_the_ledger_sound_on_sqlite() {
    run(common::Kind::Sqlite);
}

#[test]
fn random_interleavings_keep_the_ledger_sound_on_postgres() {
    run(common::Kind::Postgres);
}
