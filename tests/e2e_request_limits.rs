//! End to end: what one request may carry, and backpressure at the edge
//! (docs/api.md, "Request limits"; docs/operations.md, "Request limits"). Oversized
//! metadata, names and echoes are refused with a field violation and change nothing;
//! a grant that would overflow a balance is INVALID_ARGUMENT; past
//! --max-concurrent-rpcs a call is shed with OVERLOADED while health checks still
//! answer.

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_are_refused_and_change_nothing() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("bounded").await;
    admin.grant(&account, 100).await;
    let good = || job_request(&account, 64, 64, 9, 8, 4);
    let entries_before = admin.ledger(&account, None).await;

    // Metadata: one 3.5 MB value (once accepted), too many entries, a key too long,
    // and entries each within bounds but too much together.
    let big_value = with_meta(good(), &[("blob", &"z".repeat(3_500_000))]);
    let mut many = good();
    for i in 0..33 {
        many.metadata.insert(format!("k{i}"), "v".into());
    }
    let long_key = with_meta(good(), &[(&"k".repeat(129), "v")]);
    let mut too_much = good();
    for i in 0..9 {
        too_much.metadata.insert(format!("k{i}"), "y".repeat(2048));
    }
    for (what, req) in [
        ("a 3.5 MB metadata value", big_value),
        ("33 metadata entries", many),
        ("a 129-byte metadata key", long_key),
        ("18 KiB of metadata", too_much),
    ] {
        let s = expect_err(what, admin.create_job_raw(req).await);
        assert_invalid_field(&s, "metadata");
        assert!(
            s.message().len() < 4096,
            "{what}: {} bytes",
            s.message().len()
        );
    }
    // The largest metadata allowed is stored and comes back whole.
    let mut largest = good();
    for i in 0..8 {
        largest.metadata.insert(format!("k{i}"), "m".repeat(2000));
    }
    let job = admin.create_job(largest.clone()).await;
    assert_eq!(job.metadata, largest.metadata);

    // An unknown model's 10 KB name: a field violation with its ErrorInfo, the name
    // echoed cut short (whole, it overflowed gRPC's header limit and the client got
    // RESOURCE_EXHAUSTED with no reason).
    let s = expect_err(
        "a 10 KB model name",
        admin
            .create_job_raw(pb::CreateJobRequest {
                model: "m".repeat(10_000),
                ..good()
            })
            .await,
    );
    assert_invalid_field(&s, "model");
    assert!(s.message().len() < 1024, "{}", s.message());
    assert!(
        s.message().contains("(10000 characters)"),
        "{}",
        s.message()
    );
    assert!(
        s.message().contains("available: testsrc"),
        "{}",
        s.message()
    );

    // Names, memos and reasons are bounded too.
    let long = "n".repeat(257);
    let refused = admin
        .admin()
        .create_account(pb::CreateAccountRequest {
            name: long.clone(),
            ..Default::default()
        })
        .await;
    assert_invalid_field(&expect_err("account name", refused), "name");
    let refused = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            role: KeyRole::Account as i32,
            account_id: account.clone(),
            name: long.clone(),
        })
        .await;
    assert_invalid_field(&expect_err("key name", refused), "name");
    let refused = admin
        .billing()
        .grant_credits(pb::GrantCreditsRequest {
            account_id: account.clone(),
            credits: 1,
            memo: long.clone(),
            ..Default::default()
        })
        .await;
    assert_invalid_field(&expect_err("grant memo", refused), "memo");
    let refused = admin
        .admin()
        .suspend_account(pb::SuspendAccountRequest {
            account_id: account.clone(),
            reason: long.clone(),
        })
        .await;
    assert_invalid_field(&expect_err("suspension reason", refused), "reason");

    // Only the one good job moved money.
    let after = admin.ledger(&account, None).await;
    let new = &after[entries_before.len()..];
    assert!(
        !new.is_empty() && new.iter().all(|e| e.job_id == job.id),
        "{:?}",
        kinds(&after)
    );
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    let total = admin.balance(&account).await.total;
    assert_eq!(total, 100 - done.debited_credits + done.refunded_credits);

    // A grant that would overflow the balance: INVALID_ARGUMENT on `credits`, not
    // INTERNAL, and the balance stays as it was.
    let top = i64::MAX - total - 5;
    admin.grant(&account, top).await;
    let refused = admin
        .billing()
        .grant_credits(pb::GrantCreditsRequest {
            account_id: account.clone(),
            credits: 10,
            ..Default::default()
        })
        .await;
    let s = expect_err("an overflowing grant", refused);
    assert_invalid_field(&s, "credits");
    assert!(s.message().contains("overflow"), "{}", s.message());
    let balance = admin.balance(&account).await;
    assert_eq!(balance.total, i64::MAX - 5);
    // Up to the last credit is fine.
    admin.grant(&account, 5).await;
    assert_eq!(admin.balance(&account).await.total, i64::MAX);
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_calls_are_shed_and_health_still_answers() {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            extra_args: &["--max-concurrent-rpcs", "1"],
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("busy").await;
    let worker_key = admin.create_key(KeyRole::Worker, "").await;

    // An upload whose client sends nothing holds the only permit: its handler waits
    // for the first message. It is itself shed when it races one of the balance calls
    // below for the permit; then it is started again.
    let uploads = admin.with_key(Some(&worker_key)).workers();
    let start_upload = || {
        let mut uploads = uploads.clone();
        tokio::spawn(async move {
            uploads
                .upload_artifact(tokio_stream::pending::<pb::UploadArtifactRequest>())
                .await
        })
    };
    let mut held = start_upload();

    let get_balance = || async {
        admin
            .billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: account.clone(),
            })
            .await
    };
    let shed = bounded("a call to be shed", async {
        loop {
            match get_balance().await {
                Err(s) if s.code() == Code::ResourceExhausted => break s,
                _ if held.is_finished() => {
                    match (&mut held).await.expect("the upload task") {
                        Err(s) => assert_status(&s, Code::ResourceExhausted, "OVERLOADED"),
                        Ok(_) => panic!("an upload of no messages succeeded"),
                    }
                    held = start_upload();
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_status(&shed, Code::ResourceExhausted, "OVERLOADED");
    let details = shed.get_error_details();
    assert!(details.retry_info().and_then(|r| r.retry_delay).is_some());
    assert_eq!(
        details.error_info().unwrap().metadata["max_concurrent_rpcs"],
        "1"
    );

    // Health checks are never shed.
    let mut health = HealthClient::new(server.channel().await);
    let serving = health
        .check(HealthCheckRequest {
            service: "kinema.v1.JobService".into(),
        })
        .await
        .expect("a health check while overloaded")
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);

    // When the upload ends, its permit is back.
    held.abort();
    let _ = held.await;
    bounded("the permit to come back", async {
        while get_balance().await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_for_an_unknown_method_fails_the_start() {
    let dir = TestDir::new();
    let out = tokio::process::Command::new(KINEMA)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.data_dir())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rpc-timeout-method",
            "NoSuchCall=1s",
        ])
        .output()
        .await
        .expect("running kinema serve");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("NoSuchCall"), "{text}");
    assert!(text.contains("no unary RPC"), "{text}");
}
