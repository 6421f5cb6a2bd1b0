//! The queue's order on SQLite and PostgreSQL (each scenario runs on both): priority
//! classes, per-account fair share, placement filters, batch companions, queue
//! positions that agree with the order leases actually take, and queue bounds.

use kinema_params::GenerationParams;
use std::collections::{BTreeMap, HashSet};

use kinema_store::*;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

#[macro_use]
mod common;

struct Fixture {
    store: Store,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        Fixture {
            store: db.store.clone(),
        }
    }

    /// A prepaid account with `credits` that never expire.
    async fn account(&self, name: &str, credits: i64) -> String {
        let id = self.store.create_account(name, None, T0).await.unwrap().id;
        self.store
            .grant_credits(&id, credits, None, "", "admin", T0)
            .await
            .unwrap();
        id
    }

    async fn submit(&self, spec: Spec<'_>) -> Job {
        self.store
            .submit_job(spec.into_new_job(), "test", T0)
            .await
            .unwrap()
            .job()
            .clone()
    }

    async fn lease(&self, filter: &LeaseFilter) -> Option<Job> {
        self.store
            .lease_matching(OWNER, filter, LEASE, T0)
            .await
            .unwrap()
            .job
    }

    async fn job(&self, id: &str) -> Job {
        self.store.get_job(None, id).await.unwrap().unwrap()
    }

    async fn debits(&self, account: &str, job: &str) -> usize {
        self.store
            .ledger_entries(account, Some(job), 0, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == EntryKind::Debit)
            .count()
    }

    async fn assert_clean(&self) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
    }
}

#[derive(Clone, Copy)]
struct Spec<'a> {
    account: &'a str,
    model: &'a str,
    priority: JobPriority,
    batch_key: Option<&'a str>,
    quote: i64,
}

impl<'a> Spec<'a> {
    fn new(account: &'a str) -> Self {
        Spec {
            account,
            model: "testsrc",
            priority: JobPriority::Normal,
            batch_key: None,
            quote: 1,
        }
    }

    fn model(self, model: &'a str) -> Self {
        Spec { model, ..self }
    }

    fn priority(self, priority: JobPriority) -> Self {
        Spec { priority, ..self }
    }

    fn batch(self, key: &'a str) -> Self {
        Spec {
            batch_key: Some(key),
            ..self
        }
    }

    fn into_new_job(self) -> NewJob {
        NewJob {
            account_id: self.account.to_string(),
            external_id: None,
            idempotency_key: None,
            request_hash: "h".into(),
            params: GenerationParams {
                model: self.model.into(),
                prompt: "a fox".into(),
                negative_prompt: String::new(),
                width: 64,
                height: 64,
                num_frames: 9,
                fps: 8,
                steps: 4,
                guidance_scale: 5.0,
                seed: 7,
                output: "mp4".into(),
                preview: None,
                ..GenerationParams::default()
            },
            callback_url: String::new(),
            metadata: BTreeMap::new(),
            quote: self.quote,
            member_id: None,
            priority: self.priority,
            batch_key: self.batch_key.map(str::to_string),
        }
    }
}

async fn a_flooding_account_does_not_starve_a_single_job(f: Fixture) {
    let a = f.account("Flood", 10_000).await;
    let b = f.account("Single", 10).await;
    for _ in 0..200 {
        f.submit(Spec::new(&a)).await;
    }
    let single = f.submit(Spec::new(&b)).await;
    // Equal standing (nothing running, never served): the tie goes by account id, so
    // b's job is first or right after a's first.
    let placed = f.job(&single.id).await;
    assert!(placed.queue_position.unwrap() <= 1, "{placed:?}");
    let first = f.lease(&LeaseFilter::any()).await.unwrap();
    let second = f.lease(&LeaseFilter::any()).await.unwrap();
    assert!(
        [&first.id, &second.id].contains(&&single.id),
        "b's job is among the first two leased: {} {}",
        first.account_id,
        second.account_id
    );
    // Started and debited exactly as before fair share: RUNNING, one DEBIT.
    let started = f.job(&single.id).await;
    assert_eq!(started.state, JobState::Running);
    assert_eq!(started.debited, started.quoted);
    assert_eq!(f.debits(&b, &single.id).await, 1);
    f.assert_clean().await;
}

async fn one_device_alternates_accounts_as_jobs_finish(f: Fixture) {
    let a = f.account("Flood", 10_000).await;
    let b = f.account("Other", 10_000).await;
    for _ in 0..20 {
        f.submit(Spec::new(&a)).await;
    }
    // Runs a's first job to completion, as a single device would.
    let first = f.lease(&LeaseFilter::any()).await.unwrap();
    assert_eq!(first.account_id, a);
    for _ in 0..3 {
        f.submit(Spec::new(&b)).await;
    }
    let mut order = Vec::new();
    let mut running = first;
    for _ in 0..8 {
        f.store
            .complete_job(&running.id, OWNER, &[], &Usage::default(), T0)
            .await
            .unwrap();
        running = f.lease(&LeaseFilter::any()).await.unwrap();
        order.push(if running.account_id == a { 'a' } else { 'b' });
    }
    // Equal running counts: the account served least recently goes first.
    assert_eq!(order.iter().collect::<String>(), "bababaaa");
    f.assert_clean().await;
}

async fn higher_classes_are_leased_first(f: Fixture) {
    let a = f.account("A", 100).await;
    let b = f.account("B", 100).await;
    let low = f.submit(Spec::new(&a).priority(JobPriority::Low)).await;
    let normal_a = f.submit(Spec::new(&a)).await;
    let normal_b = f.submit(Spec::new(&b)).await;
    let high = f.submit(Spec::new(&b).priority(JobPriority::High)).await;
    assert_eq!(high.priority, JobPriority::High);
    assert_eq!(f.job(&high.id).await.queue_position, Some(0));
    assert_eq!(f.job(&low.id).await.queue_position, Some(3));
    let mut order = Vec::new();
    while let Some(job) = f.lease(&LeaseFilter::any()).await {
        order.push(job.id);
    }
    assert_eq!(order[0], high.id);
    // b now runs one job: a's NORMAL job is next, then b's, then the LOW one.
    assert_eq!(order[1..], [normal_a.id, normal_b.id, low.id]);
}

async fn a_filter_leases_only_models_the_device_holds(f: Fixture) {
    let a = f.account("A", 100).await;
    let big = f.submit(Spec::new(&a).model("wan-14b")).await;
    let small1 = f.submit(Spec::new(&a)).await;
    let small2 = f.submit(Spec::new(&a)).await;
    assert!(f
        .lease(&LeaseFilter::models(Vec::<String>::new()))
        .await
        .is_none());
    let cpu = LeaseFilter::models(["testsrc", "wan-1.3b"]);
    assert_eq!(f.lease(&cpu).await.unwrap().id, small1.id);
    assert_eq!(f.lease(&cpu).await.unwrap().id, small2.id);
    // Nothing the device can hold is left; the big model's job waits, untouched.
    assert!(f.lease(&cpu).await.is_none());
    let waiting = f.job(&big.id).await;
    assert_eq!(waiting.state, JobState::Queued);
    assert_eq!(waiting.debited, 0);
    assert_eq!(waiting.queue_position, Some(0));
    let gpu = LeaseFilter::models(["wan-14b"]);
    assert_eq!(f.lease(&gpu).await.unwrap().id, big.id);
    f.assert_clean().await;
}

async fn companions_share_the_leaders_key_skip_run_alone_and_are_debited_once(f: Fixture) {
    let a = f.account("A", 100).await;
    let b = f.account("B", 100).await;
    // c's credits expire before its job reaches the front.
    let c = f.store.create_account("C", None, T0).await.unwrap().id;
    f.store
        .grant_credits(&c, 5, Some(T0 + DAY), "", "admin", T0)
        .await
        .unwrap();
    // HIGH, so it leads whatever the accounts' ids (ties between accounts that never
    // ran anything go by id).
    let leader = f
        .submit(Spec::new(&a).batch("k1").priority(JobPriority::High))
        .await;
    let a2 = f.submit(Spec::new(&a).batch("k1")).await;
    let alone = f.submit(Spec::new(&a).batch("k1")).await;
    let other_key = f.submit(Spec::new(&b).batch("k2")).await;
    let unkeyed = f.submit(Spec::new(&b)).await;
    let b1 = f.submit(Spec::new(&b).batch("k1")).await;
    let expired = f.submit(Spec::new(&c).batch("k1")).await;
    let b2 = f.submit(Spec::new(&b).batch("k1")).await;
    let b3 = f.submit(Spec::new(&b).batch("k1")).await;
    f.store.set_run_alone(&alone.id, true).await.unwrap();
    assert!(f.job(&alone.id).await.run_alone);

    let now = T0 + DAY;
    let led = f
        .store
        .lease_next_job(OWNER, LEASE, now)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(led.id, leader.id);
    // One companion: fair order takes b's (b runs nothing, a runs the leader).
    let one = f
        .store
        .lease_companions(OWNER, &led, 1, LEASE, now)
        .await
        .unwrap();
    assert!(one.job.is_none());
    assert_eq!(ids(&one.companions), [&b1.id]);
    let mut refused = one.refused;
    let two = f
        .store
        .lease_companions(OWNER, &led, 2, LEASE, now)
        .await
        .unwrap();
    // c's job came up (c runs nothing; before b's if c's id sorts first) and could no
    // longer be covered: refused as at a normal start, and not counted as a companion.
    refused.extend(two.refused);
    assert_eq!(ids(&refused), [&expired.id]);
    let refused = f.job(&expired.id).await;
    assert_eq!(refused.state, JobState::Failed);
    assert_eq!(
        refused.failure.as_ref().map(|x| x.code.as_str()),
        Some("INSUFFICIENT_CREDITS")
    );
    assert_eq!((refused.debited, refused.held), (0, 0));
    // a and b run one each; a was served longer ago.
    assert_eq!(ids(&two.companions), [&a2.id, &b2.id]);
    for (account, id) in [(&a, &leader.id), (&a, &a2.id), (&b, &b1.id), (&b, &b2.id)] {
        let job = f.job(id).await;
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.lease_owner.as_deref(), Some(OWNER));
        assert_eq!(job.debited, job.quoted);
        assert_eq!(f.debits(account, id).await, 1, "{id} debited once");
    }
    for id in [&alone.id, &other_key.id, &unkeyed.id, &b3.id] {
        assert_eq!(f.job(id).await.state, JobState::Queued);
    }
    // a and b run two each, b served last: a's run_alone job leads next, and gets no
    // companion although b3 shares its key.
    let lone = f.lease(&LeaseFilter::any()).await.unwrap();
    assert_eq!(lone.id, alone.id);
    let none = f
        .store
        .lease_companions(OWNER, &lone, 10, LEASE, now)
        .await
        .unwrap();
    assert!(none.companions.is_empty() && none.refused.is_empty());
    // A leader without a key gets none either.
    let next = f.lease(&LeaseFilter::any()).await.unwrap();
    assert_eq!(next.id, other_key.id);
    let next = f.lease(&LeaseFilter::any()).await.unwrap();
    assert_eq!(next.id, unkeyed.id);
    assert!(f
        .store
        .lease_companions(OWNER, &next, 10, LEASE, now)
        .await
        .unwrap()
        .companions
        .is_empty());
    assert_eq!(f.job(&b3.id).await.state, JobState::Queued);
    f.assert_clean().await;
}

fn ids(jobs: &[Job]) -> Vec<&String> {
    jobs.iter().map(|j| &j.id).collect()
}

async fn queue_positions_match_the_order_leases_take(f: Fixture) {
    let a = f.account("A", 1_000).await;
    let b = f.account("B", 1_000).await;
    let c = f.account("C", 1_000).await;
    let d = f.account("D", 1_000).await;
    // Running jobs first: a runs 2, c runs 1 (leased through a filter on their model).
    for account in [&a, &a, &c] {
        f.submit(Spec::new(account).model("setup")).await;
    }
    let setup = LeaseFilter::models(["setup"]);
    for _ in 0..3 {
        f.lease(&setup).await.unwrap();
    }
    let mut queued = Vec::new();
    for (account, n, priority) in [
        (&a, 5, JobPriority::Normal),
        (&b, 3, JobPriority::Normal),
        (&c, 4, JobPriority::Normal),
        (&d, 2, JobPriority::Normal),
        (&b, 1, JobPriority::High),
        (&a, 2, JobPriority::Low),
        (&d, 1, JobPriority::Low),
        (&a, 1, JobPriority::High),
    ] {
        for _ in 0..n {
            queued.push(f.submit(Spec::new(account).priority(priority)).await.id);
        }
    }
    let mut positions = BTreeMap::new();
    for id in &queued {
        positions.insert(id.clone(), f.job(id).await.queue_position.unwrap());
    }
    let distinct: HashSet<u32> = positions.values().copied().collect();
    assert_eq!(
        distinct.len(),
        queued.len(),
        "positions are distinct: {positions:?}"
    );
    let mut leased = Vec::new();
    while let Some(job) = f.lease(&LeaseFilter::any()).await {
        leased.push(job.id);
    }
    assert_eq!(leased.len(), queued.len());
    for (index, id) in leased.iter().enumerate() {
        assert_eq!(
            positions[id] as usize, index,
            "job {id} was told position {} and was leased {index}th",
            positions[id]
        );
    }
}

async fn concurrent_leases_take_each_job_once(f: Fixture) {
    let accounts = [
        f.account("A", 1_000).await,
        f.account("B", 1_000).await,
        f.account("C", 1_000).await,
    ];
    let mut ids = HashSet::new();
    for i in 0..60 {
        ids.insert(f.submit(Spec::new(&accounts[i % 3])).await.id);
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            let mut mine = Vec::new();
            while let Some(job) = store.lease_next_job(&owner, LEASE, T0).await.unwrap().job {
                assert_eq!(job.lease_owner.as_deref(), Some(owner.as_str()));
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut leased = Vec::new();
    for t in tasks {
        leased.extend(t.await.unwrap());
    }
    assert_eq!(leased.len(), ids.len(), "every job leased exactly once");
    assert_eq!(leased.iter().cloned().collect::<HashSet<_>>(), ids);
    for (i, account) in accounts.iter().enumerate() {
        let entries = f
            .store
            .ledger_entries(account, None, 0, 1000)
            .await
            .unwrap();
        let debits = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Debit)
            .count();
        assert_eq!(debits, 20, "account {i}: one debit per job");
    }
    f.assert_clean().await;
}

/// The operator's listings: every account's queued and running jobs (not finished
/// ones) page by page in submission order, and every account page by page.
async fn live_jobs_and_accounts_page_across_accounts(f: Fixture) {
    let a = f.account("A", 100).await;
    let b = f.account("B", 100).await;
    let a1 = f.submit(Spec::new(&a)).await;
    let b1 = f.submit(Spec::new(&b)).await;
    let a2 = f.submit(Spec::new(&a)).await;
    let b2 = f.submit(Spec::new(&b)).await;
    f.store.cancel_job(&b, &b2.id, "test", T0).await.unwrap();
    let running = f.lease(&LeaseFilter::any()).await.expect("a job to lease");

    let first = f.store.list_live_jobs(0, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [a1.id.as_str(), b1.id.as_str()]);
    let rest = f.store.list_live_jobs(first[1].seq, 10).await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [a2.id.as_str()], "the cancelled job is not live");
    for j in first.iter().chain(&rest) {
        if j.id == running.id {
            assert_eq!(j.state, JobState::Running);
        } else {
            assert_eq!(j.state, JobState::Queued);
            assert!(j.queue_position.is_some(), "{} has a queue position", j.id);
        }
    }

    let c = f.account("C", 1).await;
    let page = f.store.list_accounts(None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let last = &page[1];
    let more = f
        .store
        .list_accounts(Some((last.created_at, &last.id)), 10)
        .await
        .unwrap();
    let mut all: Vec<String> = page.iter().chain(&more).map(|x| x.id.clone()).collect();
    assert_eq!(all.len(), 3, "every account once: {all:?}");
    all.sort();
    let mut expected = vec![a, b, c];
    expected.sort();
    assert_eq!(all, expected);
}

on_both_backends!(
    live_jobs_and_accounts_page_across_accounts,
    a_flooding_account_does_not_starve_a_single_job,
    one_device_alternates_accounts_as_jobs_finish,
    higher_classes_are_leased_first,
    a_filter_leases_only_models_the_device_holds,
    companions_share_the_leaders_key_skip_run_alone_and_are_debited_once,
    queue_positions_match_the_order_leases_take,
    concurrent_leases_take_each_job_once,
);

/// Queue bounds need their own policy, so these run outside `on_both_backends!`.
async fn queue_bounds_refuse_without_side_effects(kind: common::Kind) {
    let policy = StorePolicy {
        queue: QueueLimits {
            per_account: 3,
            total: 5,
        },
        ..StorePolicy::default()
    };
    let db = common::TestDb::new(kind, policy).await;
    let f = Fixture::new(&db).await;
    let a = f.account("A", 100).await;
    let b = f.account("B", 100).await;
    let mut a_jobs = Vec::new();
    for i in 0..3 {
        let mut new = Spec::new(&a).into_new_job();
        new.idempotency_key = Some(format!("a-{i}"));
        a_jobs.push(
            f.store
                .submit_job(new, "test", T0)
                .await
                .unwrap()
                .job()
                .clone(),
        );
    }
    let before = f.store.balance(&a, T0).await.unwrap();
    let entries_before = f
        .store
        .ledger_entries(&a, None, 0, 1000)
        .await
        .unwrap()
        .len();
    let refused = f
        .store
        .submit_job(Spec::new(&a).into_new_job(), "test", T0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::QueueFull {
                limit: QueueLimit::PerAccount,
                max: 3,
                queued: 3
            }
        ),
        "{refused:?}"
    );
    assert_eq!(f.store.balance(&a, T0).await.unwrap(), before);
    assert_eq!(
        f.store
            .ledger_entries(&a, None, 0, 1000)
            .await
            .unwrap()
            .len(),
        entries_before
    );
    assert_eq!(
        f.store
            .list_jobs(&a, &[], i64::MAX, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    // An idempotent retry of a job already queued is not a new job: it comes back.
    let mut retry = Spec::new(&a).into_new_job();
    retry.idempotency_key = Some("a-0".into());
    let again = f.store.submit_job(retry, "test", T0).await.unwrap();
    assert!(matches!(again, Submitted::Existing(ref j) if j.id == a_jobs[0].id));

    f.submit(Spec::new(&b)).await;
    f.submit(Spec::new(&b)).await;
    let refused = f
        .store
        .submit_job(Spec::new(&b).into_new_job(), "test", T0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::QueueFull {
                limit: QueueLimit::Total,
                max: 5,
                queued: 5
            }
        ),
        "{refused:?}"
    );
    // A lease makes room.
    f.lease(&LeaseFilter::any()).await.unwrap();
    f.submit(Spec::new(&b)).await;
    f.assert_clean().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bounds_sqlite() {
    queue_bounds_refuse_without_side_effects(common::Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bounds_postgres() {
    queue_bounds_refuse_without_side_effects(common::Kind::Postgres).await;
}
