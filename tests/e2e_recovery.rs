//! End to end: the server is killed mid-job and restarted on the same data dir; jobs
//! resume without a second debit, or fail with a refund once their retries are spent.
//! Parallel submissions never overspend (docs/api.md, "Money").

mod common;

use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_crash_without_a_second_debit() {
    let dir = TestDir::new();
    let mut server = Server::start(&dir, Opts::faults()).await;
    let admin = server.admin().await;
    let account = admin.create_account("survivor").await;
    const GRANTED: i64 = 50;
    admin.grant(&account, GRANTED).await;
    let platform_key = admin.create_key(KeyRole::Platform, "").await;
    let platform = admin.with_key(Some(&platform_key));

    let (w, h, frames, fps, steps) = (32, 32, 9, 8, 30);
    let quote = expected_quote(w, h, frames, fps, steps);
    let job = platform
        .create_job(with_meta(
            job_request(&account, w, h, frames, fps, steps),
            &[("kinema.step_delay_ms", "150")],
        ))
        .await;
    let running = platform.wait_step(&account, &job.id, 2).await;
    assert_eq!(running.usage.as_ref().unwrap().attempts, 1);
    assert_eq!(running.debited_credits, quote);

    server.kill().await;
    let server = Server::start(&dir, Opts::faults()).await;
    let platform = server.client(Some(&platform_key)).await;

    let (_, done) = platform.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    assert_eq!(
        done.usage.as_ref().unwrap().attempts,
        2,
        "{}",
        describe_job(&done)
    );
    assert_eq!((done.debited_credits, done.refunded_credits), (quote, 0));
    assert!(done.failure.is_none(), "{:?}", done.failure);
    let entries = platform.ledger(&account, Some(&job.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
        "{entries:#?}"
    );
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (GRANTED - quote, 0, GRANTED - quote)
    );
    let (video, total) = platform
        .download(&account, &job.id, kinema_proto::v1::ArtifactKind::Video, 0)
        .await
        .expect("video");
    assert_eq!(video.len() as u64, total);
    let path = dir.path().join("resumed.mp4");
    std::fs::write(&path, &video).unwrap();
    assert_eq!(ffprobe(&path)["nb_read_frames"], frames.to_string());
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_three_times_fails_and_is_refunded() {
    let dir = TestDir::new();
    let mut server = Server::start(&dir, Opts::faults()).await;
    let admin_key = server.admin_key.clone();
    let admin = server.admin().await;
    let account = admin.create_account("unlucky").await;
    const GRANTED: i64 = 50;
    admin.grant(&account, GRANTED).await;

    let (w, h, frames, fps, steps) = (32, 32, 9, 8, 50);
    let quote = expected_quote(w, h, frames, fps, steps);
    let job = admin
        .create_job(with_meta(
            job_request(&account, w, h, frames, fps, steps),
            &[("kinema.step_delay_ms", "200")],
        ))
        .await;
    for attempt in 1..=3 {
        let admin = server.client(Some(&admin_key)).await;
        let running = admin.wait_step(&account, &job.id, 1).await;
        assert_eq!(
            running.usage.as_ref().unwrap().attempts,
            attempt,
            "{}",
            describe_job(&running)
        );
        server.kill().await;
        server = Server::start(&dir, Opts::faults()).await;
        assert_eq!(
            server.admin_key, admin_key,
            "the admin key survives restarts"
        );
    }
    let admin = server.client(Some(&admin_key)).await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Failed, "{}", describe_job(&done));
    assert_eq!(
        done.failure.as_ref().map(|f| f.code.as_str()),
        Some("WORKER_LOST")
    );
    assert_eq!(done.usage.as_ref().unwrap().attempts, 3);
    assert_eq!(
        (done.debited_credits, done.refunded_credits),
        (quote, quote)
    );
    let entries = admin.ledger(&account, Some(&job.id)).await;
    assert_eq!(
        kinds(&entries),
        [
            LedgerEntryKind::Hold,
            LedgerEntryKind::Debit,
            LedgerEntryKind::Refund
        ],
        "one debit across three attempts, one refund: {entries:#?}"
    );
    let balance = admin.balance(&account).await;
    assert_eq!((balance.total, balance.held), (GRANTED, 0));
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_submissions_never_overspend() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("busy").await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let (w, h, frames, fps, steps) = (16, 16, 8, 8, 1);
    let quote = expected_quote(w, h, frames, fps, steps);
    const ADMITTED: usize = 5;
    admin.grant(&account, quote * ADMITTED as i64).await;

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let platform = platform.clone();
        let mut req = job_request(&account, w, h, frames, fps, steps);
        req.prompt = format!("submission {i}");
        calls.spawn(async move { platform.create_job_raw(req).await });
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    while let Some(result) = bounded("parallel CreateJob", calls.join_next()).await {
        match result.expect("task") {
            Ok(job) => admitted.push(job),
            Err(s) => {
                assert_status(&s, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
                refused += 1;
            }
        }
    }
    assert_eq!((admitted.len(), refused), (ADMITTED, 20 - ADMITTED));
    let balance = platform.balance(&account).await;
    assert!(
        balance.available == 0 && balance.total - balance.held >= 0,
        "{balance:?}"
    );

    for job in &admitted {
        let (_, done) = platform.wait_terminal(&account, &job.id).await;
        assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    }
    let balance = platform.balance(&account).await;
    assert_eq!((balance.total, balance.held, balance.available), (0, 0, 0));
    let entries = platform.ledger(&account, None).await;
    assert_eq!(entries_of(&entries, LedgerEntryKind::Hold).len(), ADMITTED);
    assert_eq!(entries_of(&entries, LedgerEntryKind::Debit).len(), ADMITTED);
    assert!(entries
        .iter()
        .all(|e| e.balance_after >= 0 && e.held_after >= 0));
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = TestDir::new();
    let mut server = Server::start(&dir, Opts::default()).await;
    let log = dir.path().join("second.log");
    let mut second = serve_command(&dir.data_dir(), Opts::default(), &log)
        .spawn()
        .expect("spawn");
    let status = bounded("second server exits", second.wait())
        .await
        .expect("wait");
    assert!(
        !status.success(),
        "a second server on a data dir in use must fail; stderr:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(stderr.contains("in use"), "says why: {stderr}");
    // The first one is unharmed.
    assert!(server.is_running());
    let admin = server.admin().await;
    admin.create_account("still-here").await;
}
