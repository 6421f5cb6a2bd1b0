//! PostgreSQL announces job changes (migration 0005): a listener hears each committed
//! change of state, stage, step or cancel request once, in commit order, nothing for
//! lease renewals or rolled-back transactions, and each payload brings the job a
//! watcher holds up to the job as the store reads it.

use kinema_params::GenerationParams;
use std::collections::BTreeMap;

use kinema_store::*;
use sqlx::{Connection, Executor, PgConnection};

#[allow(dead_code)] // the SQLite half of the shared helpers
mod common;

const T0: i64 = 1_700_000_000_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

fn new_job(account: &str) -> NewJob {
    NewJob {
        account_id: account.to_string(),
        external_id: None,
        idempotency_key: None,
        request_hash: "h".into(),
        params: GenerationParams {
            model: "testsrc".into(),
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
        quote: 3,
        member_id: None,
        priority: JobPriority::Normal,
        batch_key: None,
    }
}

/// Follows one job as a watch does: each change heard is applied to the job held, which
/// must then be the job the store reads.
struct Follower {
    store: Store,
    listener: JobChangeListener,
    held: Job,
}

impl Follower {
    async fn next(&mut self) -> JobChange {
        let heard = tokio::time::timeout(std::time::Duration::from_secs(30), self.listener.next())
            .await
            .expect("a notification within 30 s")
            .expect("listening");
        match heard {
            Heard::Change(c) => *c,
            Heard::Gap(why) => panic!("unexpected gap: {why}"),
        }
    }

    /// The next change heard is `state`/`stage`/`step`, and applying it to the job held
    /// gives the job as stored.
    async fn expect(&mut self, state: JobState, stage: Option<Stage>, step: u32) -> JobChange {
        let change = self.next().await;
        assert_eq!(change.job_id, self.held.id);
        assert_eq!(
            (change.state, change.stage, change.progress_step),
            (state, stage, step),
            "{change:?}"
        );
        change.apply_to(&mut self.held);
        let mut stored = self
            .store
            .get_job(None, &self.held.id)
            .await
            .unwrap()
            .unwrap();
        stored.queue_position = None;
        if !state.is_terminal() {
            assert_eq!(
                self.held, stored,
                "the change brings the held job up to date"
            );
        }
        change
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_hears_every_committed_change_of_a_job_in_order() {
    let db = common::TestDb::new(common::Kind::Postgres, StorePolicy::default()).await;
    let store = db.store.clone();
    let listener = JobChangeListener::connect(&db.url).await.unwrap();
    let account = store.create_account("A", None, T0).await.unwrap().id;
    store
        .grant_credits(&account, 100, None, "", "admin", T0)
        .await
        .unwrap();

    let job = store
        .submit_job(new_job(&account), "test", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let mut f = Follower {
        store: store.clone(),
        listener,
        held: job.clone(),
    };
    let inserted = f.expect(JobState::Queued, None, 0).await;
    assert_eq!((inserted.held, inserted.debited), (3, 0));
    assert!(inserted.written_at > 0);

    let leased = store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    assert_eq!(leased.job.unwrap().id, job.id);
    let started = f
        .expect(JobState::Running, Some(Stage::EncodingText), 0)
        .await;
    assert_eq!((started.held, started.debited, started.attempts), (0, 3, 1));
    assert_eq!(started.lease_owner.as_deref(), Some(OWNER));

    let report = |stage, step| store.report_progress(&job.id, OWNER, stage, step, LEASE, T0);
    report(Stage::Denoising, 1).await.unwrap();
    f.expect(JobState::Running, Some(Stage::Denoising), 1).await;
    // A heartbeat (same stage and step) renews the lease and announces nothing.
    report(Stage::Denoising, 1).await.unwrap();
    // A rolled-back change announces nothing either.
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("UPDATE jobs SET progress_step = 3 WHERE id = $1")
        .bind(&job.id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute("ROLLBACK").await.unwrap();
    report(Stage::Denoising, 2).await.unwrap();
    // So the next change heard is step 2.
    f.expect(JobState::Running, Some(Stage::Denoising), 2).await;

    // A retryable failure puts it back in the queue, debit kept; then it starts again.
    let failure = Failure {
        code: "MODEL_ERROR".into(),
        message: "flaky".into(),
        retryable: true,
    };
    let usage = Usage {
        device: "cpu".into(),
        ..Usage::default()
    };
    let requeued = store
        .retry_job(&job.id, OWNER, &failure, 3, true, &usage, T0)
        .await
        .unwrap();
    assert_eq!(requeued.state, JobState::Queued);
    let back = f.expect(JobState::Queued, None, 0).await;
    assert!(back.run_alone && back.lease_owner.is_none());
    assert_eq!(back.usage.map(|u| u.device), Some("cpu".to_string()));
    store.lease_next_job(OWNER, LEASE, T0).await.unwrap();
    let again = f
        .expect(JobState::Running, Some(Stage::EncodingText), 0)
        .await;
    assert_eq!((again.attempts, again.debited), (2, 3));

    // A cancel request is announced, then the ending with its refund.
    let cancel = store
        .cancel_job(&account, &job.id, "test", T0)
        .await
        .unwrap();
    assert!(cancel.stop_requested);
    let requested = f
        .expect(JobState::Running, Some(Stage::EncodingText), 0)
        .await;
    assert!(requested.cancel_requested);
    store
        .finish_cancelled(&job.id, OWNER, &usage, T0 + 1)
        .await
        .unwrap();
    let ended = f
        .expect(JobState::Cancelled, Some(Stage::EncodingText), 0)
        .await;
    assert_eq!((ended.refunded, ended.finished_at), (3, Some(T0 + 1)));

    // Only now does anything else arrive: a second job's submission.
    let other = store
        .submit_job(new_job(&account), "test", T0)
        .await
        .unwrap()
        .job()
        .clone();
    let next = f.next().await;
    assert_eq!((next.job_id, next.state), (other.id, JobState::Queued));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_cut_reconnects_and_says_changes_were_missed() {
    let db = common::TestDb::new(common::Kind::Postgres, StorePolicy::default()).await;
    let store = db.store.clone();
    let mut listener = JobChangeListener::connect(&db.url).await.unwrap();
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let cut: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(JOB_LISTENER_APPLICATION_NAME)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, vec![(true,)], "one listener connection, cut");
    let heard = listener.next().await.unwrap();
    assert!(matches!(heard, Heard::Gap(_)), "{heard:?}");
    // Listening again: the next change is heard.
    let account = store.create_account("A", None, T0).await.unwrap().id;
    store
        .grant_credits(&account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    let job = store
        .submit_job(new_job(&account), "test", T0)
        .await
        .unwrap()
        .job()
        .clone();
    match listener.next().await.unwrap() {
        Heard::Change(c) => assert_eq!(c.job_id, job.id),
        other => panic!("expected the submission, heard {other:?}"),
    }
    db.finish().await;
}
