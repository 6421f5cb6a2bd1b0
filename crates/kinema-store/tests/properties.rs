//! Property test of the store (issue 4): random interleavings of grants, purchases
//! (with repeated payment refs), trials, plan events, submissions, starts, successes,
//! failures, cancels, clock moves, sweeps and terminations run against SQLite and
//! PostgreSQL; after every step `verify_ledger` must find nothing wrong (no negative
//! lot, conservation, per-job debit and refund rules, balances recomputed from the
//! entries equal the stored ones) and the stored balance must agree with it.

use std::collections::BTreeMap;

use kinema_ledger::calendar::{DAY_MS, HOUR_MS};
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
    ]
}

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

struct World {
    store: Store,
    cat: Catalogue,
    account: String,
    now: i64,
    refs: u32,
    queued: Vec<String>,
    running: Vec<String>,
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
                s.subscribe(&self.cat, &a, &self.cat.plans[*plan].id, None, "prop", now)
                    .await?;
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
                self.queued.push(job.job().id.clone());
            }
            Op::Start => {
                let leased = s.lease_next_job(OWNER, LEASE, now).await?;
                for refused in &leased.refused {
                    self.queued.retain(|id| *id != refused.id);
                }
                if let Some(job) = leased.job {
                    self.queued.retain(|id| *id != job.id);
                    self.running.push(job.id);
                }
            }
            Op::Succeed => {
                if let Some(id) = self.running.pop() {
                    s.complete_job(&id, OWNER, &[], &Usage::default(), now)
                        .await?;
                }
            }
            Op::Fail => {
                if let Some(id) = self.running.pop() {
                    let failure = Failure {
                        code: "MODEL_ERROR".into(),
                        message: "random".into(),
                        retryable: false,
                    };
                    s.fail_job(&id, OWNER, &failure, &Usage::default(), now)
                        .await?;
                }
            }
            Op::CancelQueued => {
                if let Some(id) = self.queued.pop() {
                    s.cancel_job(&a, &id, "prop", now).await?;
                }
            }
            Op::CancelRunning => {
                if let Some(id) = self.running.pop() {
                    let c = s.cancel_job(&a, &id, "prop", now).await?;
                    assert!(c.stop_requested);
                    s.finish_cancelled(&id, OWNER, &Usage::default(), now)
                        .await?;
                }
            }
            Op::Advance { hours } => self.now += hours * HOUR_MS,
            Op::Sweep => {
                s.expire_due_lots_everywhere(now, 100).await?;
                s.tick_due_subscriptions(&self.cat, now, 100).await?;
            }
            Op::Terminate => {
                let t = s
                    .terminate_account(&self.cat, &a, "violation", "prop", now)
                    .await?;
                let mut stopping = t.stopping.clone();
                let mut running = self.running.clone();
                stopping.sort();
                running.sort();
                assert_eq!(stopping, running, "every running job is asked to stop");
                self.queued.clear();
                // Their workers finish the cancel; the refund is forfeited too.
                for id in std::mem::take(&mut self.running) {
                    s.finish_cancelled(&id, OWNER, &Usage::default(), now)
                        .await?;
                }
                assert_eq!(s.balance(&a, now).await?.total, 0, "everything forfeited");
            }
        }
        Ok(())
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
    }
}

fn new_job(account: &str, quote: i64) -> NewJob {
    NewJob {
        account_id: account.to_string(),
        external_id: None,
        idempotency_key: None,
        request_hash: "h".into(),
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
        output_format: "mp4".into(),
        callback_url: String::new(),
        metadata: BTreeMap::new(),
        quote,
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
                let mut world = World {
                    store: db.store.clone(),
                    cat: catalogue(),
                    account,
                    now: T0,
                    refs: 0,
                    queued: Vec::new(),
                    running: Vec::new(),
                };
                for (step, op) in ops.iter().enumerate() {
                    if let Err(e) = world.apply(op).await {
                        assert!(expected(&e), "step {step} ({op:?}): unexpected {e}");
                    }
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
