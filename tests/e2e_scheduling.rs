//! End to end: the queue's order and bounds through the real `kinema serve` (issue 5):
//! one account flooding the queue does not starve another's single job; priority
//! needs the right key; a full queue is RESOURCE_EXHAUSTED with QUEUE_FULL and a
//! retry delay, and nothing is held.

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    let t = ts.as_ref().expect("timestamp");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_starts_before_a_flooding_accounts_backlog_on_one_device() {
    single_job_against_a_flood(&["--cpu-workers", "1"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_starts_before_a_flooding_accounts_backlog_on_two_devices() {
    single_job_against_a_flood(&["--cpu-workers", "2"], 2).await;
}

async fn single_job_against_a_flood(devices_args: &'static [&'static str], devices: usize) {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            fault_injection: true,
            extra_args: devices_args,
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let flood = admin.create_account("flood").await;
    let single = admin.create_account("single").await;
    admin.grant(&flood, 10_000).await;
    admin.grant(&single, 100).await;
    // Each job takes a known time: 4 steps of 150 ms.
    let slow = |account: &str| {
        with_meta(
            job_request(account, 16, 16, 1, 8, 4),
            &[("kinema.step_delay_ms", "150")],
        )
    };
    let mut flood_jobs = Vec::new();
    for _ in 0..8 {
        flood_jobs.push(admin.create_job(slow(&flood)).await.id);
    }
    // The flood is being worked through when the other account submits.
    admin.wait_step(&flood, &flood_jobs[0], 1).await;
    let lone = admin.create_job(slow(&single)).await;
    assert_eq!(
        lone.queue_position,
        Some(0),
        "the flooding account runs a job, the other runs none: its job is next"
    );
    let (_, lone) = admin.wait_terminal(&single, &lone.id).await;
    assert_eq!(state(&lone), JobState::Succeeded, "{}", describe_job(&lone));
    let lone_submitted = millis(&lone.created_at);
    let lone_started = millis(&lone.started_at);
    let mut overtaking = Vec::new();
    for id in &flood_jobs {
        let job = admin.get_job(&flood, id).await;
        if let Some(started) = job.started_at.as_ref().map(|_| millis(&job.started_at)) {
            if started >= lone_submitted && started < lone_started {
                overtaking.push(job.id.clone());
            }
        }
    }
    assert!(
        overtaking.len() <= devices,
        "after the single job was queued, {} of the flooding account's jobs started \
         before it ({overtaking:?}); at most one per device may",
        overtaking.len()
    );
    // The flood still ends, every job once.
    for id in &flood_jobs {
        admin.cancel(&flood, id).await;
    }
    for id in &flood_jobs {
        let (_, job) = admin.wait_terminal(&flood, id).await;
        assert!(
            matches!(state(&job), JobState::Succeeded | JobState::Cancelled),
            "{}",
            describe_job(&job)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_with_a_retry_delay_and_holds_nothing() {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            fault_injection: true,
            extra_args: &[
                "--max-queued-per-account",
                "3",
                "--max-queued",
                "5",
                "--cpu-workers",
                "1",
            ],
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let a = admin.create_account("a").await;
    let b = admin.create_account("b").await;
    admin.grant(&a, 1_000).await;
    admin.grant(&b, 1_000).await;
    // A long job keeps the one device busy so the rest stay queued.
    let blocker = admin
        .create_job(with_meta(
            job_request(&a, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&a, &blocker.id, 1).await;
    let queued = |account: &str| job_request(account, 16, 16, 1, 8, 4);
    for _ in 0..3 {
        admin.create_job(queued(&a)).await;
    }
    let before = admin.balance(&a).await;
    let entries_before = admin.ledger(&a, None).await.len();
    let status = expect_err(
        "a fourth queued job of one account",
        admin.create_job_raw(queued(&a)).await,
    );
    assert_status(&status, Code::ResourceExhausted, "QUEUE_FULL");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("per_account")
    );
    assert_eq!(info.metadata.get("max").map(String::as_str), Some("3"));
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(delay > std::time::Duration::ZERO, "{delay:?}");
    let after = admin.balance(&a).await;
    assert_eq!(
        (after.total, after.held, after.available),
        (before.total, before.held, before.available)
    );
    assert_eq!(
        admin.ledger(&a, None).await.len(),
        entries_before,
        "nothing held"
    );

    // Another account fills the server's bound.
    admin.create_job(queued(&b)).await;
    admin.create_job(queued(&b)).await;
    let status = expect_err("a sixth queued job", admin.create_job_raw(queued(&b)).await);
    assert_status(&status, Code::ResourceExhausted, "QUEUE_FULL");
    let details = status.get_error_details();
    assert_eq!(
        details
            .error_info()
            .and_then(|i| i.metadata.get("limit").cloned())
            .as_deref(),
        Some("total")
    );
    assert!(details.retry_info().is_some());
    let jobs = admin
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: b.clone(),
            ..Default::default()
        })
        .await
        .expect("ListJobs")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 2, "the refused submission left no job");
    // Queue positions follow fair share: b runs nothing, a runs the blocker, so b's
    // first job comes first and a's three and b's second alternate after it.
    let mut positions: Vec<u32> = jobs.iter().filter_map(|j| j.queue_position).collect();
    positions.sort();
    assert_eq!(positions, [0, 2]);
    admin.cancel(&a, &blocker.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_needs_a_platform_or_admin_key() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("acme").await;
    admin.grant(&account, 100).await;
    let own = admin.with_key(Some(&admin.create_key(KeyRole::Account, &account).await));
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let high = |req: pb::CreateJobRequest| pb::CreateJobRequest {
        priority: pb::JobPriority::High as i32,
        ..req
    };
    let status = expect_err(
        "HIGH with an account key",
        own.create_job_raw(high(job_request("", 16, 16, 1, 8, 4)))
            .await,
    );
    assert_status(&status, Code::PermissionDenied, "ROLE");
    assert_eq!(
        admin.ledger(&account, None).await.len(),
        1,
        "only the grant"
    );
    let low = own
        .create_job(pb::CreateJobRequest {
            priority: pb::JobPriority::Low as i32,
            ..job_request("", 16, 16, 1, 8, 4)
        })
        .await;
    assert_eq!(low.priority, pb::JobPriority::Low as i32);
    let job = platform
        .create_job(high(job_request(&account, 16, 16, 1, 8, 4)))
        .await;
    assert_eq!(job.priority, pb::JobPriority::High as i32);
    let unset = own.create_job(job_request("", 16, 16, 1, 8, 4)).await;
    assert_eq!(unset.priority, pb::JobPriority::Normal as i32);
    for id in [&low.id, &job.id, &unset.id] {
        let (_, done) = admin.wait_terminal(&account, id).await;
        assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_resource_exhausted_until_the_delay_passes() {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            extra_args: &["--rate-limit-rps", "1", "--rate-limit-burst", "5"],
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("acme").await;
    let busy = admin.with_key(Some(&admin.create_key(KeyRole::Account, &account).await));
    let quiet = admin.with_key(Some(&admin.create_key(KeyRole::Account, &account).await));
    let list = |c: &Client| {
        let mut jobs = c.jobs();
        async move {
            jobs.list_models(pb::ListModelsRequest {})
                .await
                .map(|r| r.into_inner())
        }
    };
    for i in 0..5 {
        list(&busy)
            .await
            .unwrap_or_else(|s| panic!("call {i} within the burst: {s:?}"));
    }
    let status = expect_err("a sixth call at once", list(&busy).await);
    assert_status(&status, Code::ResourceExhausted, "RATE_LIMITED");
    let details = status.get_error_details();
    assert_eq!(
        details
            .error_info()
            .and_then(|i| i.metadata.get("limit_rps").cloned())
            .as_deref(),
        Some("1")
    );
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(1),
        "{delay:?}"
    );
    // Another key is not held back by this one.
    list(&quiet).await.expect("another key");
    // After the advised delay the key may call again.
    tokio::time::sleep(delay).await;
    list(&busy).await.expect("after the retry delay");
}
