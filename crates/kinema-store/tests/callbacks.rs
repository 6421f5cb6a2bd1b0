//! Callbacks' outbox on SQLite and PostgreSQL (each scenario runs on both): the
//! deliveries are written with the start and the end that cause them (and only for
//! jobs with a callback URL), claimed once until their hold passes, recorded attempt
//! by attempt; the accounts' signing secrets rotate with an overlap.

use kinema_params::GenerationParams;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use kinema_store::*;

const T0: i64 = 1_700_000_000_000;

static NEXT: AtomicUsize = AtomicUsize::new(0);

#[macro_use]
mod common;

struct Fixture {
    store: Store,
    account: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        store
            .grant_credits(&account, 1000, None, "", "admin", T0)
            .await
            .unwrap();
        Fixture { store, account }
    }

    async fn submit(&self, callback_url: &str) -> Job {
        let new = NewJob {
            account_id: self.account.clone(),
            external_id: Some(format!("order-{}", NEXT.fetch_add(1, Ordering::Relaxed))),
            idempotency_key: None,
            request_hash: "h".into(),
            params: GenerationParams {
                model: "testsrc".into(),
                prompt: "a secret prompt".into(),
                negative_prompt: "a secret negative".into(),
                width: 64,
                height: 64,
                num_frames: 9,
                fps: 8,
                steps: 4,
                guidance_scale: 5.0,
                seed: 7,
                output: "h264".into(),
                preview: None,
                ..GenerationParams::default()
            },
            callback_url: callback_url.into(),
            member_id: None,
            metadata: BTreeMap::from([("k".to_string(), "private".to_string())]),
            quote: 10,
            priority: JobPriority::Normal,
            batch_key: None,
        };
        self.store
            .submit_job(new, "test", T0)
            .await
            .unwrap()
            .job()
            .clone()
    }
}

async fn start_and_end_write_one_delivery_each(f: Fixture) {
    let with = f.submit("https://hooks.example.com/k").await;
    let without = f.submit("").await;
    let leased = f.store.lease_next_job("w1", 60_000, T0 + 1).await.unwrap();
    assert_eq!(
        leased.job.as_ref().map(|j| j.id.as_str()),
        Some(with.id.as_str())
    );
    let after_start = f.store.job_callbacks(&with.id).await.unwrap();
    assert_eq!(after_start.len(), 1);
    let running = &after_start[0];
    assert_eq!(running.event, CallbackEvent::Running);
    assert_eq!(running.state, CallbackState::Pending);
    assert_eq!(running.url, "https://hooks.example.com/k");
    assert_eq!(running.next_attempt_at, T0 + 1);
    let body: serde_json::Value = serde_json::from_str(&running.body).unwrap();
    assert_eq!(body["id"], running.id.as_str());
    assert_eq!(body["type"], "job.running");
    assert_eq!(body["job"]["state"], "RUNNING");
    assert_eq!(
        body["job"]["external_id"],
        with.external_id.as_deref().unwrap()
    );
    assert!(!running.body.contains("secret"), "{}", running.body);
    assert!(!running.body.contains("private"), "{}", running.body);

    // A retried start is not told again; the end is.
    let requeued = f
        .store
        .retry_job(
            &with.id,
            "w1",
            &Failure {
                code: "X".into(),
                message: "boom".into(),
                retryable: true,
            },
            3,
            false,
            &Usage::default(),
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(requeued.state, JobState::Queued);
    f.store.lease_next_job("w1", 60_000, T0 + 3).await.unwrap();
    assert_eq!(f.store.job_callbacks(&with.id).await.unwrap().len(), 1);
    f.store
        .fail_job(
            &with.id,
            "w1",
            &Failure {
                code: "X".into(),
                message: "boom".into(),
                retryable: false,
            },
            &Usage::default(),
            T0 + 4,
        )
        .await
        .unwrap();
    let all = f.store.job_callbacks(&with.id).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.event).collect::<Vec<_>>(),
        [CallbackEvent::Running, CallbackEvent::Failed]
    );
    let ended: serde_json::Value = serde_json::from_str(&all[1].body).unwrap();
    assert_eq!(ended["job"]["state"], "FAILED");
    assert_eq!(ended["job"]["refunded_credits"], 10);
    assert_eq!(ended["job"]["failure"]["code"], "X");

    // A job without a URL writes none; a queued job cancelled is told its end only.
    f.store
        .cancel_job(&f.account, &without.id, "t", T0 + 5)
        .await
        .unwrap();
    assert!(f.store.job_callbacks(&without.id).await.unwrap().is_empty());
    let queued = f.submit("https://hooks.example.com/k").await;
    f.store
        .cancel_job(&f.account, &queued.id, "t", T0 + 6)
        .await
        .unwrap();
    let cancelled = f.store.job_callbacks(&queued.id).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].event, CallbackEvent::Cancelled);
    assert_eq!(f.store.pending_callbacks().await.unwrap(), 3);
}

async fn claims_hold_deliveries_until_recorded(f: Fixture) {
    let job = f.submit("https://hooks.example.com/k").await;
    f.store
        .cancel_job(&f.account, &job.id, "t", T0 + 10)
        .await
        .unwrap();
    // Not due before it was written.
    assert!(f
        .store
        .claim_due_callbacks(T0 + 9, 10, 1000)
        .await
        .unwrap()
        .is_empty());
    let claimed = f
        .store
        .claim_due_callbacks(T0 + 10, 10, 1000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].next_attempt_at, T0 + 1010);
    // Held: a second loop finds nothing until the hold passes (a crashed sender's).
    assert!(f
        .store
        .claim_due_callbacks(T0 + 500, 10, 1000)
        .await
        .unwrap()
        .is_empty());
    let again = f
        .store
        .claim_due_callbacks(T0 + 1010, 10, 1000)
        .await
        .unwrap();
    assert_eq!(again[0].id, claimed[0].id);

    let failed = CallbackAttempt {
        status: Some(500),
        error: "HTTP 500".into(),
        next: AttemptNext::RetryAt(T0 + 5000),
    };
    f.store
        .record_callback_attempt(&claimed[0].id, failed, T0 + 1020)
        .await
        .unwrap();
    let d = &f.store.job_callbacks(&job.id).await.unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (CallbackState::Pending, 1, Some(500))
    );
    assert_eq!(d.next_attempt_at, T0 + 5000);
    let ok = CallbackAttempt {
        status: Some(204),
        error: String::new(),
        next: AttemptNext::Delivered,
    };
    f.store
        .record_callback_attempt(&d.id, ok.clone(), T0 + 5001)
        .await
        .unwrap();
    let d = &f.store.job_callbacks(&job.id).await.unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.delivered_at),
        (CallbackState::Delivered, 2, Some(T0 + 5001))
    );
    // A delivered event is not recorded again nor claimed again.
    f.store
        .record_callback_attempt(&d.id, ok, T0 + 6000)
        .await
        .unwrap();
    assert_eq!(f.store.job_callbacks(&job.id).await.unwrap()[0].attempts, 2);
    assert!(f
        .store
        .claim_due_callbacks(T0 + 99_999, 10, 1000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.store.pending_callbacks().await.unwrap(), 0);

    let give_up = f.submit("https://hooks.example.com/k").await;
    f.store
        .cancel_job(&f.account, &give_up.id, "t", T0 + 10)
        .await
        .unwrap();
    let c = f
        .store
        .claim_due_callbacks(T0 + 10, 10, 1000)
        .await
        .unwrap();
    let refused = CallbackAttempt {
        status: None,
        error: "refused".into(),
        next: AttemptNext::GiveUp,
    };
    f.store
        .record_callback_attempt(&c[0].id, refused, T0 + 11)
        .await
        .unwrap();
    let d = &f.store.job_callbacks(&give_up.id).await.unwrap()[0];
    assert_eq!(
        (d.state, d.failed_at),
        (CallbackState::Failed, Some(T0 + 11))
    );
}

async fn secrets_rotate_with_an_overlap(f: Fixture) {
    assert!(f
        .store
        .live_callback_secrets(&f.account, T0)
        .await
        .unwrap()
        .is_empty());
    let first = f
        .store
        .rotate_callback_secret(&f.account, "s1", 3600_000, T0)
        .await
        .unwrap();
    assert_eq!(first.previous_retire_at, None);
    let second = f
        .store
        .rotate_callback_secret(&f.account, "s2", 3600_000, T0 + 10)
        .await
        .unwrap();
    assert_eq!(second.previous_retire_at, Some(T0 + 10 + 3600_000));
    assert_eq!(
        f.store
            .live_callback_secrets(&f.account, T0 + 20)
            .await
            .unwrap(),
        ["s2", "s1"]
    );
    assert_eq!(
        f.store
            .live_callback_secrets(&f.account, T0 + 10 + 3600_000)
            .await
            .unwrap(),
        ["s2"]
    );
    assert!(matches!(
        f.store
            .rotate_callback_secret("acct_nobody", "s", 0, T0)
            .await,
        Err(StoreError::NotFound(NotFound::Account))
    ));
}

async fn a_deleted_accounts_deliveries_end_and_forget(f: Fixture) {
    let leaving = f
        .store
        .create_account("Leaving", None, T0)
        .await
        .unwrap()
        .id;
    f.store
        .grant_credits(&leaving, 10, None, "", "admin", T0)
        .await
        .unwrap();
    let other = Fixture {
        store: f.store.clone(),
        account: leaving.clone(),
    };
    f.store
        .rotate_callback_secret(&leaving, "s1", 0, T0)
        .await
        .unwrap();
    let job = other.submit("https://hooks.example.com/k").await;
    f.store.lease_next_job("w1", 60_000, T0 + 1).await.unwrap();
    f.store
        .complete_job(&job.id, "w1", &[], &Usage::default(), T0 + 2)
        .await
        .unwrap();
    assert_eq!(f.store.pending_callbacks().await.unwrap(), 2);
    let catalogue = kinema_ledger::Catalogue {
        packs: vec![],
        plans: vec![],
    };
    f.store
        .delete_account(&catalogue, &leaving, 0, "owner", T0 + 3)
        .await
        .unwrap();
    let ended = f.store.job_callbacks(&job.id).await.unwrap();
    assert_eq!(ended.len(), 2);
    for d in &ended {
        assert_eq!(
            (d.state, d.failed_at),
            (CallbackState::Failed, Some(T0 + 3))
        );
        assert_eq!((d.url.as_str(), d.body.as_str()), ("", "{}"));
        assert_eq!(d.last_error, "account deleted");
    }
    assert_eq!(f.store.pending_callbacks().await.unwrap(), 0);
    assert!(f
        .store
        .live_callback_secrets(&leaving, T0 + 3)
        .await
        .unwrap()
        .is_empty());
}

on_both_backends!(
    start_and_end_write_one_delivery_each,
    claims_hold_deliveries_until_recorded,
    secrets_rotate_with_an_overlap,
    a_deleted_accounts_deliveries_end_and_forget,
);
