//! The store's money paths on SQLite and PostgreSQL (each scenario runs on both): every job state change with
//! its ledger effect, and the docs/api.md, "Money" invariants after each scenario.

use std::sync::Arc;

use kinema_store::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

#[macro_use]
mod common;

use sqlx::Connection;

struct Fixture {
    store: Store,
    account: String,
    /// The database's URL, to reach past the store (corrupting rows on purpose).
    url: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        Fixture {
            store,
            account,
            url: db.url.clone(),
        }
    }

    /// Runs raw SQL on the database, bypassing the store (to corrupt it on purpose).
    async fn raw(&self, sql: &str) {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.unwrap();
    }
}

/// The common test job with the largest seed (it must survive the round trip).
fn new_job(account: &str, quote: i64) -> NewJob {
    let mut job = common::new_job(account, quote);
    job.params.seed = u64::MAX;
    job
}

async fn submit(f: &Fixture, quote: i64, now: i64) -> Job {
    f.store
        .submit_job(new_job(&f.account, quote), "test", now)
        .await
        .unwrap()
        .job()
        .clone()
}

/// A job of `quote` credits from a fresh grant of 50, leased by OWNER (RUNNING, debited).
async fn started(f: &Fixture, quote: i64) -> Job {
    f.store
        .grant_credits(&f.account, 50, None, "", "admin", T0)
        .await
        .unwrap();
    let job = submit(f, quote, T0).await;
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    job
}

fn failure(code: &str, retryable: bool) -> Failure {
    Failure {
        code: code.into(),
        message: "test".into(),
        retryable,
    }
}

async fn entries(f: &Fixture) -> Vec<LedgerEntry> {
    f.store
        .ledger_entries(&f.account, None, 0, 10_000)
        .await
        .unwrap()
}

fn kinds(entries: &[LedgerEntry], job: &str) -> Vec<EntryKind> {
    entries
        .iter()
        .filter(|e| e.job_id.as_deref() == Some(job))
        .map(|e| e.kind)
        .collect()
}

/// docs/api.md, "Money" invariants, recomputed from the entries alone.
async fn assert_invariants(f: &Fixture, now: i64) {
    let all = entries(f).await;
    let sum = |k: EntryKind| {
        all.iter()
            .filter(|e| e.kind == k)
            .map(|e| e.amount)
            .sum::<i64>()
    };
    let granted = sum(EntryKind::Grant);
    let balance = f.store.balance(&f.account, now).await.unwrap();
    assert_eq!(
        granted,
        balance.total + sum(EntryKind::Debit) - sum(EntryKind::Refund) + sum(EntryKind::Expire),
        "conservation: granted = remaining + debited - refunded + expired"
    );
    for job in f
        .store
        .list_jobs(&f.account, &[], i64::MAX, 10_000)
        .await
        .unwrap()
    {
        assert!(job.debited == 0 || job.debited == job.quoted, "{job:?}");
        assert!(job.refunded == 0 || job.refunded == job.debited, "{job:?}");
        if job.refunded > 0 {
            assert!(
                matches!(job.state, JobState::Failed | JobState::Cancelled),
                "{job:?}"
            );
        }
        let k = kinds(&all, &job.id);
        assert!(k.iter().filter(|k| **k == EntryKind::Debit).count() <= 1);
        assert!(k.iter().filter(|k| **k == EntryKind::Refund).count() <= 1);
        if job.state == JobState::Succeeded {
            assert_eq!(job.refunded, 0);
        }
    }
    for lot in &balance.lots {
        assert!(
            lot.remaining >= 0 && lot.remaining <= lot.original,
            "{lot:?}"
        );
    }
    // And `kinema ledger verify`'s full recomputation agrees.
    let report = f.store.verify_ledger(None).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.entries_checked, all.len());
}

async fn debit_takes_lots_earliest_expiry_first_and_refund_returns_them(f: Fixture) {
    let never = f
        .store
        .grant_credits(&f.account, 10, None, "", "admin", T0)
        .await
        .unwrap()
        .0;
    let late = f
        .store
        .grant_credits(&f.account, 10, Some(T0 + 30 * DAY), "", "admin", T0)
        .await
        .unwrap()
        .0;
    let soon = f
        .store
        .grant_credits(&f.account, 10, Some(T0 + 2 * DAY), "", "admin", T0)
        .await
        .unwrap()
        .0;

    let job = submit(&f, 25, T0 + 1).await;
    assert_eq!(
        (job.state, job.held, job.debited),
        (JobState::Queued, 25, 0)
    );
    let b = f.store.balance(&f.account, T0 + 1).await.unwrap();
    assert_eq!((b.total, b.held, b.available), (30, 25, 5));
    assert_eq!(
        b.lots.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![soon.id, late.id, never.id]
    );

    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, T0 + 2)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(
        (leased.state, leased.held, leased.debited, leased.attempts),
        (JobState::Running, 0, 25, 1)
    );
    let all = entries(&f).await;
    let debit = all.iter().find(|e| e.kind == EntryKind::Debit).unwrap();
    let taken: Vec<(i64, i64)> = debit
        .allocations
        .iter()
        .map(|a| (a.lot_id, a.amount))
        .collect();
    assert_eq!(taken, vec![(soon.id, 10), (late.id, 10), (never.id, 5)]);
    assert_eq!((debit.balance_after, debit.held_after), (5, 0));

    let failure = Failure {
        code: "MODEL_ERROR".into(),
        message: "boom".into(),
        retryable: false,
    };
    let failed = f
        .store
        .fail_job(&job.id, OWNER, &failure, &Usage::default(), T0 + 3)
        .await
        .unwrap();
    assert_eq!((failed.state, failed.refunded), (JobState::Failed, 25));
    assert_eq!(failed.failure.unwrap().code, "MODEL_ERROR");
    let b = f.store.balance(&f.account, T0 + 3).await.unwrap();
    assert_eq!((b.total, b.available), (30, 30));
    assert!(b.lots.iter().all(|l| l.remaining == 10));
    // The worker cannot end it twice: the second write finds no lease.
    assert!(matches!(
        f.store
            .fail_job(&job.id, OWNER, &failure, &Usage::default(), T0 + 4)
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert_eq!(
        kinds(&entries(&f).await, &job.id),
        vec![EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert_invariants(&f, T0 + 4).await;
}

async fn refund_of_credits_from_an_expired_lot_goes_to_a_refund_lot(f: Fixture) {
    let short = f
        .store
        .grant_credits(&f.account, 8, Some(T0 + DAY), "", "admin", T0)
        .await
        .unwrap()
        .0;
    f.store
        .grant_credits(&f.account, 4, None, "", "admin", T0)
        .await
        .unwrap();
    let job = submit(&f, 10, T0).await;
    f.store
        .lease_next_job(OWNER, LEASE, T0)
        .await
        .unwrap()
        .job
        .unwrap();
    // The job fails after the short lot expired.
    let later = T0 + DAY + 5;
    let failure = Failure {
        code: "OUT_OF_MEMORY".into(),
        message: "oom".into(),
        retryable: true,
    };
    f.store
        .fail_job(&job.id, OWNER, &failure, &Usage::default(), later)
        .await
        .unwrap();
    let b = f.store.balance(&f.account, later).await.unwrap();
    let refund_lot = b
        .lots
        .iter()
        .find(|l| l.source == "refund")
        .expect("a refund lot");
    assert_eq!(refund_lot.original, 8);
    assert_eq!(
        refund_lot.expires_at,
        Some(later + kinema_ledger::DEFAULT_REFUND_GRACE_MS)
    );
    assert_eq!(b.total, 12);
    assert!(
        !b.lots.iter().any(|l| l.id == short.id),
        "the expired lot is not usable"
    );
    let all = entries(&f).await;
    // The short lot had nothing left when it expired: no EXPIRE amount to write.
    assert!(all.iter().all(|e| e.kind != EntryKind::Expire));
    assert_invariants(&f, later).await;
}

async fn submission_beyond_available_is_refused_and_writes_nothing(f: Fixture) {
    f.store
        .grant_credits(&f.account, 10, None, "", "admin", T0)
        .await
        .unwrap();
    submit(&f, 7, T0).await;
    let before = entries(&f).await.len();
    let refused = f.store.submit_job(new_job(&f.account, 4), "test", T0).await;
    assert!(matches!(
        refused,
        Err(StoreError::InsufficientCredits {
            needed: 4,
            available: 3
        })
    ));
    assert_eq!(entries(&f).await.len(), before);
    assert_eq!(
        f.store
            .list_jobs(&f.account, &[], i64::MAX, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_invariants(&f, T0).await;
}

async fn idempotent_retries_return_the_same_job_and_conflicts_are_refused(f: Fixture) {
    f.store
        .grant_credits(&f.account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    let mut req = new_job(&f.account, 5);
    req.idempotency_key = Some("k1".into());
    let first = f.store.submit_job(req.clone(), "t", T0).await.unwrap();
    let again = f.store.submit_job(req.clone(), "t", T0 + 1).await.unwrap();
    assert!(matches!(first, Submitted::Created(_)));
    assert!(matches!(&again, Submitted::Existing(j) if j.id == first.job().id));
    req.request_hash = "other".into();
    assert!(matches!(
        f.store.submit_job(req, "t", T0).await,
        Err(StoreError::IdempotencyConflict)
    ));
    let mut ext = new_job(&f.account, 5);
    ext.external_id = Some("order-1".into());
    f.store.submit_job(ext.clone(), "t", T0).await.unwrap();
    assert!(matches!(
        f.store.submit_job(ext, "t", T0).await,
        Err(StoreError::ExternalIdConflict { .. })
    ));
    let b = f.store.balance(&f.account, T0).await.unwrap();
    assert_eq!(b.held, 10, "one hold per created job");
}

async fn lots_that_expire_while_queued_fail_the_job_at_start_without_a_debit(f: Fixture) {
    f.store
        .grant_credits(&f.account, 10, Some(T0 + DAY), "", "admin", T0)
        .await
        .unwrap();
    let job = submit(&f, 6, T0).await;
    let leased = f
        .store
        .lease_next_job(OWNER, LEASE, T0 + DAY)
        .await
        .unwrap();
    assert!(leased.job.is_none());
    let refused = &leased.refused[0];
    assert_eq!(
        (
            refused.id.as_str(),
            refused.state,
            refused.debited,
            refused.held
        ),
        (job.id.as_str(), JobState::Failed, 0, 0)
    );
    assert_eq!(
        refused.failure.as_ref().unwrap().code,
        "INSUFFICIENT_CREDITS"
    );
    let all = entries(&f).await;
    assert_eq!(
        kinds(&all, &job.id),
        vec![EntryKind::Hold, EntryKind::Release]
    );
    assert_eq!(
        all.iter()
            .filter(|e| e.kind == EntryKind::Expire)
            .map(|e| e.amount)
            .sum::<i64>(),
        10
    );
    assert_invariants(&f, T0 + DAY).await;
}

async fn cancel_releases_queued_holds_and_refunds_running_jobs(f: Fixture) {
    f.store
        .grant_credits(&f.account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    let running = submit(&f, 10, T0).await;
    let queued = submit(&f, 20, T0).await;
    assert_eq!(
        f.store
            .get_job(None, &queued.id)
            .await
            .unwrap()
            .unwrap()
            .queue_position,
        Some(1)
    );
    f.store
        .lease_next_job(OWNER, LEASE, T0)
        .await
        .unwrap()
        .job
        .unwrap();

    let c = f
        .store
        .cancel_job(&f.account, &queued.id, "key:x", T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        (c.job.state, c.stop_requested, c.job.held, c.job.debited),
        (JobState::Cancelled, false, 0, 0)
    );
    let c = f
        .store
        .cancel_job(&f.account, &running.id, "key:x", T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        (c.job.state, c.stop_requested, c.job.cancel_requested),
        (JobState::Running, true, true)
    );
    let ack = f
        .store
        .report_progress(&running.id, OWNER, Stage::Denoising, 2, LEASE, T0 + 2)
        .await
        .unwrap();
    assert!(ack.cancel_requested);
    let done = f
        .store
        .finish_cancelled(&running.id, OWNER, &Usage::default(), T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.debited, done.refunded),
        (JobState::Cancelled, 10, 10)
    );
    // Terminal: no change.
    let again = f
        .store
        .cancel_job(&f.account, &running.id, "key:x", T0 + 4)
        .await
        .unwrap();
    assert_eq!(
        (again.job.state, again.stop_requested),
        (JobState::Cancelled, false)
    );
    // Another account's job is not found.
    let other = f.store.create_account("Other", None, T0).await.unwrap();
    assert!(matches!(
        f.store.cancel_job(&other.id, &running.id, "k", T0).await,
        Err(StoreError::NotFound(kinema_store::NotFound::Job))
    ));
    let all = entries(&f).await;
    assert_eq!(
        kinds(&all, &queued.id),
        vec![EntryKind::Hold, EntryKind::Release]
    );
    assert_eq!(
        kinds(&all, &running.id),
        vec![EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert_eq!(
        f.store.balance(&f.account, T0 + 4).await.unwrap().available,
        100
    );
    assert_invariants(&f, T0 + 4).await;
}

async fn a_cancel_that_lands_after_the_last_step_still_wins(f: Fixture) {
    f.store
        .grant_credits(&f.account, 50, None, "", "admin", T0)
        .await
        .unwrap();
    let job = submit(&f, 10, T0).await;
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    f.store
        .cancel_job(&f.account, &job.id, "k", T0 + 1)
        .await
        .unwrap();
    let artifact = Artifact {
        kind: ArtifactKind::Video,
        mime: "video/mp4".into(),
        bytes: 1,
        sha256: "00".into(),
        location: format!("{}/video.mp4", job.id),
        expires_at: T0 + DAY,
        removal: None,
    };
    let done = f
        .store
        .complete_job(&job.id, OWNER, &[artifact], &Usage::default(), T0 + 2)
        .await
        .unwrap()
        .job;
    assert_eq!((done.state, done.refunded), (JobState::Cancelled, 10));
    assert!(done.artifacts.is_empty());
    assert_invariants(&f, T0 + 2).await;
}

async fn success_records_artifacts_and_keeps_the_debit(f: Fixture) {
    f.store
        .grant_credits(&f.account, 50, None, "", "admin", T0)
        .await
        .unwrap();
    let job = submit(&f, 10, T0).await;
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    let artifact = Artifact {
        kind: ArtifactKind::Video,
        mime: "video/mp4".into(),
        bytes: 1234,
        sha256: "ab".into(),
        location: format!("{}/video.mp4", job.id),
        expires_at: T0 + DAY,
        removal: None,
    };
    let usage = Usage {
        device: "cpu".into(),
        total_ms: 42,
        ..Usage::default()
    };
    let done = f
        .store
        .complete_job(
            &job.id,
            OWNER,
            std::slice::from_ref(&artifact),
            &usage,
            T0 + 5,
        )
        .await
        .unwrap()
        .job;
    assert_eq!(
        (done.state, done.debited, done.refunded),
        (JobState::Succeeded, 10, 0)
    );
    assert_eq!(done.artifacts, vec![artifact]);
    assert_eq!(done.usage, usage);
    assert_eq!(done.finished_at, Some(T0 + 5));
    assert_eq!(done.params.seed, u64::MAX, "seeds keep all 64 bits");
    assert_invariants(&f, T0 + 5).await;
}

async fn lost_workers_requeue_without_a_second_debit_until_attempts_run_out(f: Fixture) {
    f.store
        .grant_credits(&f.account, 50, None, "", "admin", T0)
        .await
        .unwrap();
    let job = submit(&f, 10, T0).await;
    for attempt in 1..=2u32 {
        let leased = f
            .store
            .lease_next_job(OWNER, LEASE, T0)
            .await
            .unwrap()
            .job
            .unwrap();
        assert_eq!(leased.attempts, attempt);
        let report = f
            .store
            .recover_lost_jobs(Some(""), "", 3, T0 + 1)
            .await
            .unwrap();
        assert_eq!(report.requeued.len(), 1);
    }
    // A lease that has not lapsed is left alone when only lapsed ones are recovered.
    f.store
        .lease_next_job(OWNER, LEASE, T0)
        .await
        .unwrap()
        .job
        .unwrap();
    assert!(f
        .store
        .recover_lost_jobs(None, "", 3, T0 + LEASE - 1)
        .await
        .unwrap()
        .failed
        .is_empty());
    // The caller's own jobs are alive, whatever their lease says.
    assert!(f
        .store
        .recover_lost_jobs(None, OWNER, 3, T0 + LEASE)
        .await
        .unwrap()
        .failed
        .is_empty());
    let report = f
        .store
        .recover_lost_jobs(None, "", 3, T0 + LEASE)
        .await
        .unwrap();
    let failed = &report.failed[0];
    assert_eq!(
        (
            failed.state,
            failed.attempts,
            failed.debited,
            failed.refunded
        ),
        (JobState::Failed, 3, 10, 10)
    );
    assert_eq!(failed.failure.as_ref().unwrap().code, "WORKER_LOST");
    assert_eq!(
        kinds(&entries(&f).await, &job.id),
        vec![EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert_invariants(&f, T0 + LEASE).await;
}

/// The database itself refuses a second DEBIT or REFUND for a job, whatever writes
/// it: here raw inserts past the store, after the job was debited and refunded.
async fn the_database_refuses_a_second_debit_or_refund_for_a_job(f: Fixture) {
    let job = started(&f, 10).await;
    let failure = failure("MODEL_ERROR", false);
    f.store
        .fail_job(&job.id, OWNER, &failure, &Usage::default(), T0 + 1)
        .await
        .unwrap();
    for kind in ["REFUND", "DEBIT"] {
        let sql = format!(
            "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, actor, \
             balance_after, held_after, memo, created_at) VALUES ('{}', '{kind}', 10, '[]', \
             '{}', 'test', 0, 0, '', {})",
            f.account,
            job.id,
            T0 + 2
        );
        let mut conn = sqlx::AnyConnection::connect(&f.url).await.unwrap();
        let refused = sqlx::query(&sql).execute(&mut conn).await.unwrap_err();
        let unique = refused
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation());
        assert!(unique, "a second {kind}: {refused}");
        conn.close().await.unwrap();
    }
    assert_eq!(
        kinds(&entries(&f).await, &job.id),
        vec![EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert_invariants(&f, T0 + 2).await;
}

/// A cancel requested while the job ran wins over the failure its worker reports, as
/// it does over a success or a retry: CANCELLED, refunded once.
async fn a_failure_reported_after_a_cancel_request_ends_the_job_cancelled(f: Fixture) {
    let job = started(&f, 10).await;
    let asked = f
        .store
        .cancel_job(&f.account, &job.id, "k", T0 + 1)
        .await
        .unwrap();
    assert!(asked.stop_requested);
    let failure = failure("MODEL_ERROR", false);
    let ended = f
        .store
        .fail_job(&job.id, OWNER, &failure, &Usage::default(), T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        (ended.state, ended.failure.is_none(), ended.refunded),
        (JobState::Cancelled, true, 10)
    );
    assert_eq!(
        kinds(&entries(&f).await, &job.id),
        vec![EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert_invariants(&f, T0 + 2).await;
}

/// A start a draining worker hands back is counted (`attempts` counts every start)
/// but does not use the retry budget (`handed_back`).
async fn a_drained_job_goes_back_to_the_queue_without_using_its_retry_budget(f: Fixture) {
    let job = started(&f, 10).await;
    let back = f.store.requeue_job(&job.id, OWNER, T0).await.unwrap();
    assert_eq!(
        (back.state, back.attempts, back.handed_back, back.debited),
        (JobState::Queued, 1, 1, 10)
    );
    let again = f
        .store
        .lease_next_job("worker-b", LEASE, T0)
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!((again.attempts, again.debited), (2, 10));
    assert!(matches!(
        f.store
            .report_progress(&job.id, OWNER, Stage::Denoising, 1, LEASE, T0)
            .await,
        Err(StoreError::LeaseLost)
    ));
    // Two starts, one handed back: a budget of two starts has one left.
    let failure = failure("STORAGE_ERROR", true);
    let retried = f
        .store
        .retry_job(
            &job.id,
            "worker-b",
            &failure,
            2,
            false,
            &Usage::default(),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(
        kinds(&entries(&f).await, &job.id),
        vec![EntryKind::Hold, EntryKind::Debit]
    );
}

async fn parallel_submissions_never_overspend(f: Fixture) {
    f.store
        .grant_credits(&f.account, 70, None, "", "admin", T0)
        .await
        .unwrap();
    let store = Arc::new(f.store.clone());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let account = f.account.clone();
            tokio::spawn(async move { store.submit_job(new_job(&account, 7), "t", T0).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(StoreError::InsufficientCredits { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(f.store.balance(&f.account, T0).await.unwrap().available, 0);
}

/// A balance read while jobs start sees each start whole: the debit and the hold it
/// releases together, never the lot spent with the hold still counted (or the reverse).
async fn balances_read_during_starts_are_consistent(f: Fixture) {
    const JOBS: usize = 40;
    f.store
        .grant_credits(&f.account, 7 * JOBS as i64, None, "", "admin", T0)
        .await
        .unwrap();
    for _ in 0..JOBS {
        f.store
            .submit_job(new_job(&f.account, 7), "t", T0)
            .await
            .unwrap();
    }
    let starter = {
        let store = f.store.clone();
        tokio::spawn(async move {
            for i in 0..JOBS {
                let leased = store.lease_next_job(OWNER, LEASE, T0 + 1).await.unwrap();
                assert!(leased.job.is_some(), "job {i} should start");
            }
        })
    };
    let mut reads = 0;
    while !starter.is_finished() {
        let balance = f.store.balance(&f.account, T0 + 1).await.unwrap();
        assert_eq!(balance.available, 0, "read {reads}: {balance:?}");
        assert_eq!(balance.total, balance.held, "read {reads}");
        reads += 1;
    }
    starter.await.unwrap();
    let balance = f.store.balance(&f.account, T0 + 1).await.unwrap();
    assert_eq!((balance.total, balance.held), (0, 0));
}

async fn keys_are_stored_hashed_and_revocable(f: Fixture) {
    let (key, secret) = f
        .store
        .create_api_key(Role::Account, Some(&f.account), "ci", T0)
        .await
        .unwrap();
    assert!(secret.starts_with("kin_") && secret.starts_with(&key.prefix));
    let found = f
        .store
        .authenticate(&secret, T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.last_used_at),
        (key.id.as_str(), Some(T0 + 1))
    );
    assert!(f
        .store
        .authenticate("kin_wrong", T0)
        .await
        .unwrap()
        .is_none());
    assert_eq!(f.store.count_live_keys(Role::Account).await.unwrap(), 1);
    f.store.revoke_api_key(&key.id, T0 + 2).await.unwrap();
    assert_eq!(f.store.count_live_keys(Role::Account).await.unwrap(), 0);
    assert!(f
        .store
        .authenticate(&secret, T0 + 3)
        .await
        .unwrap()
        .is_none());
    assert!(f
        .store
        .create_api_key(Role::Account, None, "x", T0)
        .await
        .is_err());
    assert!(f
        .store
        .create_api_key(Role::Platform, Some(&f.account), "x", T0)
        .await
        .is_err());
}

#[tokio::test]
async fn ledger_entries_cannot_be_changed_or_deleted() {
    use sqlx::{Connection, Executor};
    for kind in [common::Kind::Sqlite, common::Kind::Postgres] {
        let db = common::TestDb::new(kind, StorePolicy::default()).await;
        let account = db.store.create_account("A", None, T0).await.unwrap();
        db.store
            .grant_credits(&account.id, 5, None, "", "admin", T0)
            .await
            .unwrap();
        let update = "UPDATE ledger_entries SET amount = 500";
        let delete = "DELETE FROM ledger_entries";
        match kind {
            common::Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                assert!(conn.execute(update).await.is_err(), "{kind:?}");
                assert!(conn.execute(delete).await.is_err(), "{kind:?}");
            }
            common::Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                assert!(conn.execute(update).await.is_err(), "{kind:?}");
                assert!(conn.execute(delete).await.is_err(), "{kind:?}");
            }
        }
        db.finish().await;
    }
}

async fn verify_names_each_row_changed_behind_the_ledger(f: Fixture) {
    let never = f
        .store
        .grant_credits(&f.account, 50, None, "", "admin", T0)
        .await
        .unwrap()
        .0;
    let done = submit(&f, 10, T0).await;
    f.store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    f.store
        .complete_job(&done.id, OWNER, &[], &Usage::default(), T0 + 1)
        .await
        .unwrap();
    let queued = submit(&f, 5, T0 + 2).await;
    let clean = f.store.verify_ledger(None).await.unwrap();
    assert!(clean.is_clean(), "{:#?}", clean.problems);
    assert_eq!(clean.lots[&never.id].remaining, 40);
    assert_eq!(clean.jobs[&done.id].debited, 10);

    // A lot that lost credits without an entry, and a queued job whose hold vanished.
    f.raw(&format!(
        "UPDATE lots SET remaining = remaining - 3 WHERE id = {}",
        never.id
    ))
    .await;
    f.raw(&format!(
        "UPDATE jobs SET held = 0 WHERE id = '{}'",
        queued.id
    ))
    .await;
    let report = f.store.verify_ledger(None).await.unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        report
            .problems
            .contains(&kinema_ledger::Problem::LotRemainingMismatch {
                lot_id: never.id,
                stored: 37,
                recomputed: 40
            }),
        "{problems:#?}"
    );
    assert!(
        report
            .problems
            .contains(&kinema_ledger::Problem::JobMismatch {
                job_id: queued.id.clone(),
                field: "held",
                stored: 0,
                recomputed: 5
            }),
        "{problems:#?}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, kinema_ledger::Problem::ConservationViolated { account_id, .. } if *account_id == f.account)),
        "{problems:#?}"
    );
    // Scoped to another account, the damage is not there.
    let other = f.store.create_account("Other", None, T0).await.unwrap();
    assert!(f
        .store
        .verify_ledger(Some(&other.id))
        .await
        .unwrap()
        .is_clean());

    // An entry appended by hand that names a lot which does not exist.
    f.raw(&format!(
        "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, actor, \
         balance_after, held_after, memo, created_at) VALUES ('{}', 'GRANT', 7, \
         '[{{\"lot_id\":999999,\"amount\":7}}]', NULL, 'intruder', 47, 5, '', {})",
        f.account,
        T0 + 3
    ))
    .await;
    let report = f.store.verify_ledger(None).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, kinema_ledger::Problem::LotMissing { lot_id: 999999, .. })),
        "{:#?}",
        report.problems
    );
}

on_both_backends!(
    verify_names_each_row_changed_behind_the_ledger,
    debit_takes_lots_earliest_expiry_first_and_refund_returns_them,
    refund_of_credits_from_an_expired_lot_goes_to_a_refund_lot,
    submission_beyond_available_is_refused_and_writes_nothing,
    idempotent_retries_return_the_same_job_and_conflicts_are_refused,
    lots_that_expire_while_queued_fail_the_job_at_start_without_a_debit,
    cancel_releases_queued_holds_and_refunds_running_jobs,
    a_cancel_that_lands_after_the_last_step_still_wins,
    success_records_artifacts_and_keeps_the_debit,
    lost_workers_requeue_without_a_second_debit_until_attempts_run_out,
    a_drained_job_goes_back_to_the_queue_without_using_its_retry_budget,
    the_database_refuses_a_second_debit_or_refund_for_a_job,
    a_failure_reported_after_a_cancel_request_ends_the_job_cancelled,
    parallel_submissions_never_overspend,
    balances_read_during_starts_are_consistent,
    keys_are_stored_hashed_and_revocable,
);
