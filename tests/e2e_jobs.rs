//! End to end: a platform backend drives `kinema serve` through a job's whole life —
//! quote, submit, watch, download — and through failures and cancels, checking the
//! credits at each end (docs/api.md, "Jobs").

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

/// Starts a long job in an account of its own so the worker (one job at a time) is
/// busy: jobs submitted meanwhile stay QUEUED until the blocker is cancelled.
async fn start_blocker(admin: &Client) -> (String, String) {
    let account = admin.create_account("blocker").await;
    admin.grant(&account, 1000).await;
    let req = with_meta(
        job_request(&account, 16, 16, 1, 8, 200),
        &[("kinema.step_delay_ms", "100")],
    );
    let job = admin.create_job(req).await;
    admin.wait_step(&account, &job.id, 1).await;
    (account, job.id)
}

async fn stop_blocker(admin: &Client, blocker: &(String, String)) {
    admin.cancel(&blocker.0, &blocker.1).await;
    let (_, job) = admin.wait_terminal(&blocker.0, &blocker.1).await;
    assert_eq!(state(&job), JobState::Cancelled, "{}", describe_job(&job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_as_a_platform() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::faults()).await;
    let admin = server.admin().await;

    // The operator sets up an account and a platform key; the platform does the rest.
    let account = admin.create_account("studio").await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    const GRANTED: i64 = 100;
    let lot = admin.grant(&account, GRANTED).await;
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (GRANTED, 0, GRANTED)
    );

    let models = platform
        .jobs()
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert!(
        models.iter().any(|m| m.id == "testsrc"),
        "testsrc is offered: {models:?}"
    );

    let (w, h, frames, fps, steps) = (160, 96, 17, 8, 4);
    let req = with_meta(
        job_request(&account, w, h, frames, fps, steps),
        &[("kinema.step_delay_ms", "20")],
    );
    let estimate = platform
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(req.clone()),
        })
        .await
        .expect("EstimateCost")
        .into_inner();
    let quote = expected_quote(w, h, frames, fps, steps);
    assert_eq!(estimate.credits, quote, "2 credits/s x 17/8 s, rounded up");
    assert_eq!(
        (
            estimate.width,
            estimate.height,
            estimate.num_frames,
            estimate.fps,
            estimate.steps
        ),
        (w, h, frames, fps, steps)
    );
    assert_eq!(estimate.video_millis, 2125);
    assert_eq!(estimate.resolution_tier, "480p");

    // Keep the worker busy so the watch below starts while the job is still queued
    // and so sees every event of its run.
    let blocker = start_blocker(&admin).await;
    let job = platform.create_job(req).await;
    assert_eq!(job.account_id, account);
    assert_eq!(state(&job), JobState::Queued);
    assert_eq!(
        job.quoted_credits, estimate.credits,
        "the job records the quote EstimateCost gave"
    );
    assert_eq!((job.debited_credits, job.refunded_credits), (0, 0));
    assert_eq!(job.queue_position, Some(0));
    assert_eq!(
        (job.width, job.height, job.num_frames, job.fps, job.steps),
        (w, h, frames, fps, steps)
    );
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (GRANTED, quote, GRANTED - quote),
        "held at submission"
    );

    let mut watch = platform.watch(&account, &job.id).await;
    let snapshot = watch.until(|_| true).await;
    assert_eq!(
        state(&snapshot),
        JobState::Queued,
        "snapshot taken while queued"
    );
    stop_blocker(&admin, &blocker).await;
    let done = watch.until(is_terminal).await;
    assert!(
        watch.ends().await,
        "the stream ends after the terminal event"
    );
    let events = watch.events;

    assert_eq!(
        events[0].kind,
        JobEventKind::Snapshot as i32,
        "first event is the snapshot"
    );
    assert_eq!(
        state(events[0].job.as_ref().unwrap()),
        JobState::Queued,
        "snapshot taken while queued"
    );
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    assert!(
        events[1..]
            .iter()
            .all(|e| e.kind != JobEventKind::Snapshot as i32),
        "only the first event is a snapshot"
    );
    // Every progress step, strictly increasing, and stages in order.
    let steps_seen: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == JobEventKind::Progress as i32)
        .map(|e| e.job.as_ref().unwrap().progress.as_ref().unwrap().step)
        .collect();
    assert_eq!(
        steps_seen,
        (1..=steps).collect::<Vec<_>>(),
        "progress events: {steps_seen:?}"
    );
    for e in events
        .iter()
        .filter(|e| e.kind == JobEventKind::Progress as i32)
    {
        let p = e.job.as_ref().unwrap().progress.unwrap();
        assert_eq!(p.total_steps, steps);
        assert!((0.0..=1.0).contains(&p.fraction));
    }
    let mut stages: Vec<i32> = events
        .iter()
        .map(|e| e.job.as_ref().unwrap())
        .filter(|j| j.state == JobState::Running as i32)
        .map(|j| j.stage)
        .collect();
    stages.dedup();
    let expected: Vec<i32> = [
        JobStage::EncodingText,
        JobStage::Denoising,
        JobStage::Decoding,
        JobStage::EncodingVideo,
        JobStage::Storing,
    ]
    .iter()
    .map(|s| *s as i32)
    .collect();
    assert_eq!(stages, expected, "stages while running, in order");
    let mut states: Vec<i32> = events
        .iter()
        .map(|e| e.job.as_ref().unwrap().state)
        .collect();
    states.dedup();
    assert_eq!(
        states,
        [JobState::Queued, JobState::Running, JobState::Succeeded]
            .map(|s| s as i32)
            .to_vec(),
        "state changes"
    );
    let fractions: Vec<f32> = events
        .iter()
        .map(|e| e.job.as_ref().unwrap().progress.as_ref().unwrap().fraction)
        .collect();
    assert!(
        fractions.windows(2).all(|w| w[0] <= w[1]),
        "progress fraction never goes back: {fractions:?}"
    );
    assert_eq!(*fractions.last().unwrap(), 1.0);

    // The finished job as GetJob sees it.
    let done = platform.get_job(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded);
    assert_eq!(
        (
            done.quoted_credits,
            done.debited_credits,
            done.refunded_credits
        ),
        (quote, quote, 0)
    );
    assert!(done.failure.is_none(), "{:?}", done.failure);
    let ts = |t: &Option<prost_types::Timestamp>| {
        let t = (*t).expect("timestamp");
        (t.seconds, t.nanos)
    };
    assert!(ts(&done.created_at) <= ts(&done.started_at));
    assert!(ts(&done.started_at) <= ts(&done.finished_at));
    assert_eq!(done.usage.as_ref().unwrap().attempts, 1);
    let video = done
        .artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Video as i32)
        .expect("video artifact")
        .clone();
    let poster = done
        .artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Poster as i32)
        .expect("poster artifact")
        .clone();
    assert_eq!(video.mime, "video/mp4");
    assert_eq!(poster.mime, "image/png");
    assert!(video.expires_at.is_some());

    // Download the video: reassembled chunks match the artifact's size and hash.
    let (bytes, total) = platform
        .download(&account, &job.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download video");
    assert_eq!(bytes.len() as u64, video.bytes);
    assert_eq!(total, video.bytes);
    assert_eq!(sha256_hex(&bytes), video.sha256.to_lowercase());
    let path = dir.path().join("video.mp4");
    std::fs::write(&path, &bytes).unwrap();
    let probe = ffprobe(&path);
    assert_eq!(probe["codec_name"], "h264", "{probe}");
    assert_eq!(probe["pix_fmt"], "yuv420p", "{probe}");
    assert_eq!(probe["width"], w, "{probe}");
    assert_eq!(probe["height"], h, "{probe}");
    assert_eq!(probe["r_frame_rate"], "8/1", "{probe}");
    assert_eq!(probe["nb_read_frames"], frames.to_string(), "{probe}");

    // Resuming from an offset gives exactly the tail.
    let offset = bytes.len() as u64 / 3 + 1;
    let (tail, total) = platform
        .download(&account, &job.id, pb::ArtifactKind::Video, offset)
        .await
        .expect("download tail");
    assert_eq!(total, video.bytes);
    assert_eq!(
        tail,
        bytes[offset as usize..],
        "download from offset {offset}"
    );
    let (empty, _) = platform
        .download(&account, &job.id, pb::ArtifactKind::Video, video.bytes)
        .await
        .expect("download from the end");
    assert!(empty.is_empty());
    let s = expect_err(
        "download past the end",
        platform
            .download(&account, &job.id, pb::ArtifactKind::Video, video.bytes + 1)
            .await,
    );
    assert_invalid_field(&s, "offset");

    let (png, _) = platform
        .download(&account, &job.id, pb::ArtifactKind::Poster, 0)
        .await
        .expect("download poster");
    assert_eq!(png.len() as u64, poster.bytes);
    assert_eq!(sha256_hex(&png), poster.sha256.to_lowercase());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "poster is a PNG");

    // Credits: quote debited, nothing held, nothing refunded.
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (GRANTED - quote, 0, GRANTED - quote)
    );
    let entries = platform.ledger(&account, None).await;
    assert_eq!(
        kinds(&entries),
        [
            LedgerEntryKind::Grant,
            LedgerEntryKind::Hold,
            LedgerEntryKind::Debit
        ],
        "ledger: {entries:#?}"
    );
    assert_eq!(entries[0].amount, GRANTED);
    assert_eq!(entries[0].allocations.len(), 1);
    assert_eq!(entries[0].allocations[0].lot_id, lot);
    let hold = &entries[1];
    assert_eq!(
        (hold.amount, hold.job_id.as_str()),
        (quote, job.id.as_str())
    );
    let debit = &entries[2];
    assert_eq!(
        (debit.amount, debit.job_id.as_str()),
        (quote, job.id.as_str())
    );
    assert_eq!(
        allocated(debit),
        quote,
        "debit allocations sum to the quote"
    );
    assert!(debit.allocations.iter().all(|a| a.lot_id == lot));
    assert_eq!(debit.balance_after, GRANTED - quote);
    assert_eq!(debit.held_after, 0);
    assert!(
        entries.windows(2).all(|w| w[0].id < w[1].id),
        "entries oldest first"
    );
    let for_job = platform.ledger(&account, Some(&job.id)).await;
    assert_eq!(
        kinds(&for_job),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit]
    );
    assert!(entries_of(&for_job, LedgerEntryKind::Refund).is_empty());

    // The job is listed.
    let listed = platform
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [job.id.as_str()]
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_keys_only_see_their_own_account() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let a = admin.create_account("alice").await;
    let b = admin.create_account("bob").await;
    admin.grant(&a, 30).await;
    admin.grant(&b, 70).await;
    let alice = admin.with_key(Some(&admin.create_key(KeyRole::Account, &a).await));
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));

    // Bob's finished job, with artifacts.
    let bob_job = platform.create_job(job_request(&b, 32, 32, 3, 8, 2)).await;
    let (_, bob_done) = platform.wait_terminal(&b, &bob_job.id).await;
    assert_eq!(
        state(&bob_done),
        JobState::Succeeded,
        "{}",
        describe_job(&bob_done)
    );

    // Alice's key cannot reach it, whichever account it names: exactly "not found".
    for named in [b.as_str(), a.as_str(), ""] {
        let s = expect_err(
            "GetJob of another account's job",
            alice
                .jobs()
                .get_job(pb::GetJobRequest {
                    account_id: named.into(),
                    job_id: bob_job.id.clone(),
                })
                .await,
        );
        assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
    }
    let s = expect_err(
        "CancelJob of another account's job",
        alice
            .jobs()
            .cancel_job(pb::CancelJobRequest {
                account_id: b.clone(),
                job_id: bob_job.id.clone(),
            })
            .await,
    );
    assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
    let s = expect_err(
        "WatchJob of another account's job",
        alice
            .jobs()
            .watch_job(pb::WatchJobRequest {
                account_id: b.clone(),
                job_id: bob_job.id.clone(),
            })
            .await
            .map(|_| ()),
    );
    assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
    let s = expect_err(
        "DownloadArtifact of another account's job",
        alice
            .download(&b, &bob_job.id, pb::ArtifactKind::Video, 0)
            .await
            .map(|_| ()),
    );
    assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
    // The not-found is indistinguishable from a job that does not exist.
    let s = expect_err(
        "GetJob of a job that does not exist",
        alice
            .jobs()
            .get_job(pb::GetJobRequest {
                account_id: b.clone(),
                job_id: "job_does_not_exist".into(),
            })
            .await,
    );
    assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");

    // Bob's job is untouched.
    let bob_after = platform.get_job(&b, &bob_job.id).await;
    assert_eq!(state(&bob_after), JobState::Succeeded);
    assert!(!bob_after.cancel_requested);
    assert_eq!(bob_after.refunded_credits, 0);

    // Naming Bob's account, Alice's key acts on Alice's own.
    let balance = alice.balance(&b).await;
    assert_eq!(
        (balance.account_id.as_str(), balance.total),
        (a.as_str(), 30)
    );
    let ledger = alice.ledger(&b, None).await;
    assert_eq!(kinds(&ledger), [LedgerEntryKind::Grant]);
    assert!(ledger.iter().all(|e| e.account_id == a));
    let listed = alice
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        listed.is_empty(),
        "Alice lists none of Bob's jobs: {listed:?}"
    );
    let own = alice.create_job(job_request(&b, 32, 32, 3, 8, 2)).await;
    assert_eq!(
        own.account_id, a,
        "a job submitted naming Bob lands on Alice's account"
    );
    assert_eq!(
        platform.balance(&b).await.total,
        70 - bob_done.debited_credits,
        "Bob's credits untouched"
    );
    let (_, own_done) = alice.wait_terminal("", &own.id).await;
    assert_eq!(state(&own_done), JobState::Succeeded);
    assert_eq!(alice.balance("").await.total, 30 - own_done.debited_credits);
    // And the platform, naming Alice, sees the job; naming Bob, it does not.
    platform.get_job(&a, &own.id).await;
    let s = expect_err(
        "GetJob naming the wrong account",
        platform
            .jobs()
            .get_job(pb::GetJobRequest {
                account_id: b.clone(),
                job_id: own.id.clone(),
            })
            .await,
    );
    assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_refunded_in_full() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::faults()).await;
    let admin = server.admin().await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    const GRANTED: i64 = 50;
    let (w, h, frames, fps, steps) = (64, 48, 5, 8, 3);
    let quote = expected_quote(w, h, frames, fps, steps);

    let cases = [
        ("encode_text", "MODEL_ERROR"),
        ("step:2", "MODEL_ERROR"),
        ("decode", "MODEL_ERROR"),
        ("encode_video", "ENCODER_ERROR"),
        ("store", "STORAGE_ERROR"),
    ];
    // One account per fault, all submitted at once.
    let mut submitted = Vec::new();
    for (fail_at, code) in cases {
        let account = admin
            .create_account(&format!("fault-{}", fail_at.replace(':', "-")))
            .await;
        admin.grant(&account, GRANTED).await;
        let job = platform
            .create_job(with_meta(
                job_request(&account, w, h, frames, fps, steps),
                &[("kinema.fail_at", fail_at)],
            ))
            .await;
        assert_eq!(job.quoted_credits, quote);
        submitted.push((fail_at, code, account, job.id));
    }
    for (fail_at, code, account, id) in &submitted {
        let (_, job) = platform.wait_terminal(account, id).await;
        let ctx = format!("fail_at={fail_at}: {}", describe_job(&job));
        assert_eq!(state(&job), JobState::Failed, "{ctx}");
        let failure = job
            .failure
            .clone()
            .unwrap_or_else(|| panic!("no failure: {ctx}"));
        assert_eq!(failure.code, *code, "{ctx}");
        assert!(!failure.message.is_empty(), "{ctx}");
        assert_eq!(
            (job.debited_credits, job.refunded_credits),
            (quote, quote),
            "{ctx}"
        );
        assert!(
            job.artifacts.is_empty(),
            "no artifacts of a failed job: {ctx}"
        );
        let s = expect_err(
            "download of a failed job",
            platform
                .download(account, id, pb::ArtifactKind::Video, 0)
                .await
                .map(|_| ()),
        );
        assert_eq!(s.code(), Code::NotFound, "{ctx}: {s:?}");

        let entries = platform.ledger(account, Some(id)).await;
        assert_eq!(
            kinds(&entries),
            [
                LedgerEntryKind::Hold,
                LedgerEntryKind::Debit,
                LedgerEntryKind::Refund
            ],
            "{ctx}: {entries:#?}"
        );
        let (debit, refund) = (&entries[1], &entries[2]);
        assert_eq!((debit.amount, refund.amount), (quote, quote), "{ctx}");
        assert_eq!(allocated(refund), quote, "{ctx}");
        let mut to = refund.allocations.clone();
        let mut from = debit.allocations.clone();
        to.sort_by_key(|a| a.lot_id);
        from.sort_by_key(|a| a.lot_id);
        assert_eq!(
            to, from,
            "each credit goes back to the lot it came from: {ctx}"
        );
        let balance = platform.balance(account).await;
        assert_eq!(
            (balance.total, balance.held, balance.available),
            (GRANTED, 0, GRANTED),
            "{ctx}"
        );
    }
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_running_and_finished_jobs() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::faults()).await;
    let admin = server.admin().await;
    let account = admin.create_account("canceller").await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    const GRANTED: i64 = 200;
    admin.grant(&account, GRANTED).await;

    // A long running job (50 steps x 300 ms) ...
    let (w, h, frames, fps, steps) = (16, 16, 9, 8, 50);
    let running_quote = expected_quote(w, h, frames, fps, steps);
    let running = platform
        .create_job(with_meta(
            job_request(&account, w, h, frames, fps, steps),
            &[("kinema.step_delay_ms", "300")],
        ))
        .await;
    platform.wait_step(&account, &running.id, 1).await;
    let before = platform.balance(&account).await;
    assert_eq!(
        (before.total, before.held),
        (GRANTED - running_quote, 0),
        "running job debited"
    );

    // ... keeps a second one queued: cancelling it is immediate, its hold released.
    let queued = platform
        .create_job(job_request(&account, 32, 32, 8, 8, 8))
        .await;
    assert_eq!(state(&queued), JobState::Queued);
    assert_eq!(platform.balance(&account).await.held, queued.quoted_credits);
    let cancelled = platform.cancel(&account, &queued.id).await;
    assert_eq!(
        state(&cancelled),
        JobState::Cancelled,
        "{}",
        describe_job(&cancelled)
    );
    assert_eq!(
        (cancelled.debited_credits, cancelled.refunded_credits),
        (0, 0)
    );
    assert!(cancelled.finished_at.is_some());
    let entries = platform.ledger(&account, Some(&queued.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Release],
        "{entries:#?}"
    );
    assert_eq!(entries[1].amount, queued.quoted_credits);
    let after = platform.balance(&account).await;
    assert_eq!(
        (after.total, after.held, after.available),
        (before.total, 0, before.total),
        "balance unchanged"
    );
    // A late watcher of the cancelled job gets its state and the stream ends.
    let (events, seen) = platform.wait_terminal(&account, &queued.id).await;
    assert_eq!((events.len(), state(&seen)), (1, JobState::Cancelled));

    // Cancelling the running job: it stops within a step, CANCELLED, debit refunded.
    let requested = platform.cancel(&account, &running.id).await;
    assert!(requested.cancel_requested, "{}", describe_job(&requested));
    assert!(
        matches!(state(&requested), JobState::Running | JobState::Cancelled),
        "{}",
        describe_job(&requested)
    );
    let (_, stopped) = platform.wait_terminal(&account, &running.id).await;
    assert_eq!(
        state(&stopped),
        JobState::Cancelled,
        "{}",
        describe_job(&stopped)
    );
    let progress = stopped.progress.unwrap();
    assert!(
        progress.step < steps,
        "stopped early, at step {} of {}",
        progress.step,
        progress.total_steps
    );
    assert_eq!(
        (stopped.debited_credits, stopped.refunded_credits),
        (running_quote, running_quote)
    );
    assert!(stopped.artifacts.is_empty());
    assert!(stopped.failure.is_none(), "{:?}", stopped.failure);
    let entries = platform.ledger(&account, Some(&running.id)).await;
    assert_eq!(
        kinds(&entries),
        [
            LedgerEntryKind::Hold,
            LedgerEntryKind::Debit,
            LedgerEntryKind::Refund
        ]
    );
    let balance = platform.balance(&account).await;
    assert_eq!((balance.total, balance.held), (GRANTED, 0));

    // A finished job: cancelling changes nothing.
    let done = platform
        .create_job(job_request(&account, 32, 32, 2, 8, 1))
        .await;
    let (_, done) = platform.wait_terminal(&account, &done.id).await;
    assert_eq!(state(&done), JobState::Succeeded);
    let entries_before = platform.ledger(&account, None).await.len();
    for job in [&cancelled, &stopped, &done] {
        let again = platform.cancel(&account, &job.id).await;
        assert_eq!(again.state, job.state, "{}", describe_job(&again));
        assert_eq!(again.finished_at, job.finished_at);
        assert_eq!(
            (again.debited_credits, again.refunded_credits),
            (job.debited_credits, job.refunded_credits)
        );
        assert_eq!(again.artifacts, job.artifacts);
    }
    assert_eq!(
        platform.ledger(&account, None).await.len(),
        entries_before,
        "no ledger entry for a no-op cancel"
    );
    let (video, _) = platform
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("still downloadable");
    assert!(!video.is_empty());
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held),
        (GRANTED - done.debited_credits, 0)
    );
    assert_ledger_verifies(&server.data_dir);
}
