//! End to end: refused requests get the right gRPC status and `ErrorInfo` reason, and
//! hold or charge nothing; idempotent retries (docs/api.md, "Jobs").

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_charge_nothing() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("careful").await;
    let other = admin.create_account("other").await;
    const GRANTED: i64 = 40;
    admin.grant(&account, GRANTED).await;
    admin.grant(&other, 10).await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let account_key = admin.with_key(Some(&admin.create_key(KeyRole::Account, &account).await));

    // Another account's finished job, for the not-found case.
    let foreign = platform
        .create_job(job_request(&other, 32, 32, 2, 8, 1))
        .await;
    platform.wait_terminal(&other, &foreign.id).await;

    let entries_before = platform.ledger(&account, None).await;
    let good = || job_request(&account, 64, 64, 9, 8, 4);

    let invalid: Vec<(&str, pb::CreateJobRequest, &str)> = vec![
        (
            "unknown model",
            pb::CreateJobRequest {
                model: "no-such-model".into(),
                ..good()
            },
            "model",
        ),
        (
            "width 0",
            pb::CreateJobRequest {
                width: Some(0),
                ..good()
            },
            "width",
        ),
        (
            "width 100000",
            pb::CreateJobRequest {
                width: Some(100_000),
                ..good()
            },
            "width",
        ),
        (
            "width 330",
            pb::CreateJobRequest {
                width: Some(330),
                ..good()
            },
            "width",
        ),
        (
            "height 8",
            pb::CreateJobRequest {
                height: Some(8),
                ..good()
            },
            "height",
        ),
        (
            "steps 0",
            pb::CreateJobRequest {
                steps: Some(0),
                ..good()
            },
            "steps",
        ),
        (
            "steps 201",
            pb::CreateJobRequest {
                steps: Some(201),
                ..good()
            },
            "steps",
        ),
        (
            "num_frames 0",
            pb::CreateJobRequest {
                num_frames: Some(0),
                ..good()
            },
            "num_frames",
        ),
        (
            "num_frames 242",
            pb::CreateJobRequest {
                num_frames: Some(242),
                ..good()
            },
            "num_frames",
        ),
        (
            "fps 0",
            pb::CreateJobRequest {
                fps: Some(0),
                ..good()
            },
            "fps",
        ),
        (
            "fps 61",
            pb::CreateJobRequest {
                fps: Some(61),
                ..good()
            },
            "fps",
        ),
        (
            "empty prompt",
            pb::CreateJobRequest {
                prompt: String::new(),
                ..good()
            },
            "prompt",
        ),
        (
            "blank prompt",
            pb::CreateJobRequest {
                prompt: " \n\t ".into(),
                ..good()
            },
            "prompt",
        ),
        (
            "prompt too long",
            pb::CreateJobRequest {
                prompt: "x".repeat(2001),
                ..good()
            },
            "prompt",
        ),
    ];
    for (what, req, field) in &invalid {
        for client in [&platform, &account_key] {
            let s = expect_err(what, client.jobs().create_job(req.clone()).await);
            assert_invalid_field(&s, field);
        }
    }
    // The longest prompt allowed is fine for EstimateCost, and a bad size is refused
    // there too.
    let ok = platform
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(pb::CreateJobRequest {
                prompt: "x".repeat(2000),
                ..good()
            }),
        })
        .await
        .expect("2000-char prompt")
        .into_inner();
    assert_eq!(ok.credits, expected_quote(64, 64, 9, 8, 4));
    let s = expect_err(
        "EstimateCost width 330",
        platform
            .jobs()
            .estimate_cost(pb::EstimateCostRequest {
                job: Some(pb::CreateJobRequest {
                    width: Some(330),
                    ..good()
                }),
            })
            .await,
    );
    assert_invalid_field(&s, "width");

    // Authentication.
    let anonymous = admin.with_key(None);
    let s = expect_err("no key", anonymous.jobs().create_job(good()).await);
    assert_status(&s, Code::Unauthenticated, "API_KEY_MISSING");
    let s = expect_err(
        "no key",
        anonymous
            .billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: account.clone(),
            })
            .await,
    );
    assert_status(&s, Code::Unauthenticated, "API_KEY_MISSING");
    let wrong = admin.with_key(Some("kin_this_is_not_a_key_0123456789abcdef"));
    let s = expect_err("wrong key", wrong.jobs().create_job(good()).await);
    assert_status(&s, Code::Unauthenticated, "API_KEY_INVALID");
    let s = expect_err(
        "wrong key",
        wrong
            .billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: account.clone(),
            })
            .await,
    );
    assert_status(&s, Code::Unauthenticated, "API_KEY_INVALID");
    let s = expect_err(
        "wrong key",
        wrong
            .jobs()
            .get_job(pb::GetJobRequest {
                account_id: other.clone(),
                job_id: foreign.id.clone(),
            })
            .await,
    );
    assert_status(&s, Code::Unauthenticated, "API_KEY_INVALID");

    // More than the account has: 1080p tier, 241 frames at 1 fps, 200 steps.
    let huge = pb::CreateJobRequest {
        width: Some(1920),
        height: Some(1088),
        num_frames: Some(241),
        fps: Some(1),
        steps: Some(200),
        ..good()
    };
    let huge_quote = expected_quote(1920, 1088, 241, 1, 200);
    assert!(huge_quote > GRANTED);
    let estimate = platform
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(huge.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(estimate.credits, huge_quote);
    let s = expect_err(
        "insufficient credits",
        platform.create_job_raw(huge.clone()).await,
    );
    assert_status(&s, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    // One credit more than the account has is too much: 2 credits/s x 18 s x 9/8 steps.
    let one_more = pb::CreateJobRequest {
        num_frames: Some(18),
        fps: Some(1),
        steps: Some(9),
        ..good()
    };
    assert_eq!(expected_quote(64, 64, 18, 1, 9), GRANTED + 1);
    let s = expect_err(
        "insufficient credits",
        account_key.create_job_raw(one_more).await,
    );
    assert_status(&s, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");

    // Roles: account keys do not grant credits or mint other keys.
    let s = expect_err(
        "account key granting",
        account_key
            .billing()
            .grant_credits(pb::GrantCreditsRequest {
                account_id: account.clone(),
                credits: 1000,
                ..Default::default()
            })
            .await,
    );
    assert_status(&s, Code::PermissionDenied, "ROLE");
    let s = expect_err(
        "platform key granting",
        platform
            .billing()
            .grant_credits(pb::GrantCreditsRequest {
                account_id: account.clone(),
                credits: 1000,
                ..Default::default()
            })
            .await,
    );
    assert_status(&s, Code::PermissionDenied, "ROLE");
    let s = expect_err(
        "account key minting a platform key",
        account_key
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                role: KeyRole::Platform as i32,
                ..Default::default()
            })
            .await,
    );
    assert_status(&s, Code::PermissionDenied, "ROLE");

    // Another account's job is not found, for either key kind.
    for client in [&platform, &account_key] {
        let s = expect_err(
            "foreign job",
            client
                .jobs()
                .get_job(pb::GetJobRequest {
                    account_id: account.clone(),
                    job_id: foreign.id.clone(),
                })
                .await,
        );
        assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
        let s = expect_err(
            "foreign job",
            client
                .jobs()
                .cancel_job(pb::CancelJobRequest {
                    account_id: account.clone(),
                    job_id: foreign.id.clone(),
                })
                .await,
        );
        assert_status(&s, Code::NotFound, "JOB_NOT_FOUND");
    }

    // Nothing of the above held or charged anything.
    let balance = platform.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (GRANTED, 0, GRANTED)
    );
    let entries_after = platform.ledger(&account, None).await;
    assert_eq!(
        entries_after, entries_before,
        "no ledger entry for a refused request"
    );
    let jobs = platform
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "no job was created: {jobs:?}");
    let foreign_after = platform.get_job(&other, &foreign.id).await;
    assert_eq!(state(&foreign_after), JobState::Succeeded);
    assert!(!foreign_after.cancel_requested);
}

/// A size the model allows but its price book does not reach is refused on the side
/// at fault: the tiny model takes up to 128 px and is priced only up to 64 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_above_every_priced_tier_is_refused_on_its_side() {
    let dir = TestDir::new();
    wan::write_tiny_wan_models_file_priced(&dir.data_dir(), 3, 64);
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("tall").await;
    let tall = pb::CreateJobRequest {
        model: wan::TINY_WAN.into(),
        ..job_request(&account, 48, 96, 5, 8, 3)
    };
    let s = expect_err(
        "EstimateCost height 96",
        admin
            .jobs()
            .estimate_cost(pb::EstimateCostRequest {
                job: Some(tall.clone()),
            })
            .await,
    );
    assert_invalid_field(&s, "height");
    let s = expect_err("CreateJob height 96", admin.create_job_raw(tall).await);
    assert_invalid_field(&s, "height");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_create_one_job() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("retrier").await;
    const GRANTED: i64 = 40;
    admin.grant(&account, GRANTED).await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));

    let req = pb::CreateJobRequest {
        idempotency_key: "order-1234".into(),
        ..job_request(&account, 32, 32, 8, 8, 2)
    };
    let quote = expected_quote(32, 32, 8, 8, 2);
    let first = platform.create_job(req.clone()).await;
    let second = platform.create_job(req.clone()).await;
    assert_eq!(
        second.id, first.id,
        "the same key and request give the same job"
    );
    assert_eq!(second.quoted_credits, quote);

    let s = expect_err(
        "same key, different prompt",
        platform
            .create_job_raw(pb::CreateJobRequest {
                prompt: "a different prompt".into(),
                ..req.clone()
            })
            .await,
    );
    assert_status(&s, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    let s = expect_err(
        "same key, different size",
        platform
            .create_job_raw(pb::CreateJobRequest {
                width: Some(48),
                ..req.clone()
            })
            .await,
    );
    assert_status(&s, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");

    let (_, done) = platform.wait_terminal(&account, &first.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    // A retry after the job finished still gives the same job, not a second charge.
    let third = platform.create_job(req.clone()).await;
    assert_eq!(third.id, first.id);
    assert_eq!(state(&third), JobState::Succeeded);

    let entries = platform.ledger(&account, Some(&first.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
        "{entries:#?}"
    );
    let all = platform.ledger(&account, None).await;
    assert_eq!(
        entries_of(&all, LedgerEntryKind::Hold).len(),
        1,
        "one HOLD in the whole account"
    );
    let balance = platform.balance(&account).await;
    assert_eq!((balance.total, balance.held), (GRANTED - quote, 0));
    let jobs = platform
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);

    // The same key on another account is another job.
    let other = admin.create_account("other-retrier").await;
    admin.grant(&other, GRANTED).await;
    let elsewhere = platform
        .create_job(pb::CreateJobRequest {
            account_id: other.clone(),
            ..req
        })
        .await;
    assert_ne!(elsewhere.id, first.id);
    assert_eq!(elsewhere.account_id, other);
}
