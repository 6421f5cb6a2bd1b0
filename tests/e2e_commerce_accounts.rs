//! End to end with `--test-clock`: pay-as-you-go accounts and the account lifecycle
//! (docs/api.md, "Postpaid accounts") — arrears, suspension after the grace, termination after the
//! suspension limit with videos deleted, top-up reactivation, operator suspension, and
//! deletion refused with every reason — each ending with `kinema ledger verify`.

mod common;

use common::commerce::*;
use common::*;
use kinema_ledger::calendar::add_months;
use kinema_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

fn clock_and_faults() -> Opts {
    Opts {
        test_clock: true,
        fault_injection: true,
        ..Opts::default()
    }
}

/// 40 frames at 8 fps, 64 px: a quote of 10 credits, 10 cents for a postpaid account.
fn small_job(account: &str) -> pb::CreateJobRequest {
    job_request(account, 64, 64, 40, 8, 8)
}

async fn run_to_success(client: &Client, account: &str) -> pb::Job {
    let job = client.create_job(small_job(account)).await;
    let (_, done) = client.wait_terminal(account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    done
}

fn phase(a: &pb::Account) -> pb::PostpaidPhase {
    pb::PostpaidPhase::try_from(a.postpaid.as_ref().expect("postpaid").phase)
        .unwrap_or(pb::PostpaidPhase::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrears_suspend_after_24_hours_and_terminate_after_15_days_deleting_videos() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let account = admin.create_postpaid_account("payg").await;
    let done = run_to_success(&admin, &account).await;
    assert_eq!(done.quoted_credits, 10);
    assert_eq!((done.debited_credits, done.charged_minor), (0, 10));
    assert_eq!(done.price_currency, "EUR");
    let charged_at = admin.now().await;
    let a = admin.account(&account).await;
    assert_eq!(phase(&a), pb::PostpaidPhase::InArrears);
    let pp = a.postpaid.unwrap();
    assert_eq!(pp.balance.unwrap().minor, -10);
    assert_eq!(millis(&pp.suspends_at), charged_at + DAY);
    let events = admin.billing_events(&account).await;
    assert_eq!(amounts(&events, "USAGE_CHARGE"), [10]);

    // Within the grace it keeps working; at 24 h it is suspended.
    admin.advance_to(charged_at + DAY - 1).await;
    let ok = admin.create_job(small_job(&account)).await;
    admin.cancel(&account, &ok.id).await;
    admin.advance_to(charged_at + DAY).await;
    let refused = admin.create_job_raw(small_job(&account)).await;
    assert_status(
        &expect_err("a job while suspended", refused),
        Code::FailedPrecondition,
        "ACCOUNT_SUSPENDED",
    );
    let a = admin.account(&account).await;
    assert_eq!(a.status, pb::AccountStatus::Suspended as i32);
    let pp = a.postpaid.unwrap();
    assert_eq!(millis(&pp.terminates_at), charged_at + DAY + 15 * DAY);
    let (video, _) = admin
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("videos are kept while suspended");
    assert!(!video.is_empty());

    // Fifteen days suspended: terminated, videos and prompts deleted.
    admin.advance_to(charged_at + DAY + 15 * DAY - 1).await;
    assert_eq!(
        admin.account(&account).await.status,
        pb::AccountStatus::Suspended as i32
    );
    admin.advance_to(charged_at + DAY + 15 * DAY).await;
    let a = admin.account(&account).await;
    assert_eq!(a.status, pb::AccountStatus::Terminated as i32);
    assert_eq!(a.status_reason, "arrears");
    let gone = admin
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await;
    // Its retention (7 days) ended before the termination did: expired, not deleted
    // with the account.
    assert_status(
        &expect_err("a video past its retention", gone),
        Code::NotFound,
        "ARTIFACT_EXPIRED",
    );
    let closed = admin.create_job_raw(small_job(&account)).await;
    assert_status(
        &expect_err("a job on a terminated account", closed),
        Code::FailedPrecondition,
        "ACCOUNT_CLOSED",
    );
    let job = admin.get_job(&account, &done.id).await;
    assert_eq!(job.prompt, "", "prompts are deleted");
    let kinds: Vec<String> = admin
        .billing_events(&account)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in ["ARREARS_STARTED", "ARREARS_SUSPENDED", "ARREARS_TERMINATED"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let late = admin.top_up(&account, 1000, "too-late").await;
    assert_status(
        &expect_err("topping up a closed account", late),
        Code::FailedPrecondition,
        "ACCOUNT_CLOSED",
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrears_suspension_ends_the_watches_of_the_jobs_it_cancels() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let payg = admin.create_postpaid_account("payg").await;
    run_to_success(&admin, &payg).await;
    let charged_at = admin.now().await;
    // A slow job of another account keeps the worker busy, so payg's job stays queued.
    let other = admin.create_account("other").await;
    admin.grant(&other, 1000).await;
    let slow = admin
        .create_job(with_meta(
            job_request(&other, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&other, &slow.id, 1).await;
    let queued = admin.create_job(small_job(&payg)).await;
    let mut watch = admin.watch(&payg, &queued.id).await;

    // The sweep at 24 h suspends the account and cancels the job: the watch says so
    // (it does not wait for a poll that, on SQLite, never comes).
    admin.advance_to(charged_at + DAY).await;
    let ended = watch.until(is_terminal).await;
    assert_eq!(
        state(&ended),
        JobState::Cancelled,
        "{}",
        describe_job(&ended)
    );
    assert_eq!(ended.charged_minor, 0);

    admin.cancel(&other, &slow.id).await;
    admin.wait_terminal(&other, &slow.id).await;
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_to_zero_reactivates_a_suspended_account_at_once() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let account = admin.create_postpaid_account("topup").await;
    run_to_success(&platform, &account).await;
    run_to_success(&platform, &account).await;
    admin.advance(DAY).await;
    assert_eq!(
        phase(&platform.account(&account).await),
        pb::PostpaidPhase::Suspended
    );

    let partial = platform.top_up(&account, 15, "pay-1").await.unwrap();
    assert!(partial.created);
    let pp = partial.postpaid.unwrap();
    assert_eq!(pp.balance.unwrap().minor, -5);
    assert_eq!(
        pp.phase,
        pb::PostpaidPhase::Suspended as i32,
        "still below zero"
    );
    let refused = platform.create_job_raw(small_job(&account)).await;
    assert_status(
        &expect_err("still suspended", refused),
        Code::FailedPrecondition,
        "ACCOUNT_SUSPENDED",
    );

    let full = platform.top_up(&account, 5, "pay-2").await.unwrap();
    let pp = full.postpaid.unwrap();
    assert_eq!(
        (pp.balance.unwrap().minor, pp.phase),
        (0, pb::PostpaidPhase::Active as i32)
    );
    let replay = platform.top_up(&account, 5, "pay-2").await.unwrap();
    assert!(!replay.created);
    assert_eq!(
        replay.postpaid.unwrap().balance.unwrap().minor,
        0,
        "one top-up per ref"
    );
    assert_eq!(
        platform.account(&account).await.status,
        pb::AccountStatus::Active as i32
    );
    run_to_success(&platform, &account).await;
    let events = admin.billing_events(&account).await;
    assert_eq!(amounts(&events, "TOP_UP"), [15, 5]);
    assert_eq!(amounts(&events, "REACTIVATED").len(), 1);
    let prepaid = admin.create_account("prepaid").await;
    let wrong = platform.top_up(&prepaid, 5, "pay-3").await;
    assert_status(
        &expect_err("a prepaid top-up", wrong),
        Code::FailedPrecondition,
        "BILLING_MODE",
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_suspension_cancels_queued_jobs_and_reinstatement_restores_service() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let account = admin.create_account("suspended").await;
    admin.grant(&account, 1000).await;
    // A slow job keeps the worker busy, so the second one stays queued.
    let running = admin
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&account, &running.id, 1).await;
    let queued = admin.create_job(small_job(&account)).await;
    assert_eq!(admin.balance(&account).await.held, 10);
    let r = admin
        .admin()
        .suspend_account(pb::SuspendAccountRequest {
            account_id: account.clone(),
            reason: "chargeback".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.account.unwrap().status,
        pb::AccountStatus::Suspended as i32
    );
    assert_eq!(r.cancelled_jobs.len(), 1);
    assert_eq!(r.cancelled_jobs[0].id, queued.id);
    assert_eq!(r.cancelled_jobs[0].state, JobState::Cancelled as i32);
    assert_eq!(
        admin.balance(&account).await.held,
        0,
        "its hold is released"
    );
    let refused = admin.create_job_raw(small_job(&account)).await;
    assert_status(
        &expect_err("suspended", refused),
        Code::FailedPrecondition,
        "ACCOUNT_SUSPENDED",
    );
    let entries = admin.ledger(&account, Some(&queued.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Release]
    );

    admin
        .admin()
        .reinstate_account(pb::ReinstateAccountRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap();
    admin.cancel(&account, &running.id).await;
    admin.wait_terminal(&account, &running.id).await;
    run_to_success(&admin, &account).await;
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_refused_listing_every_reason_until_none_is_left() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let account = admin.create_account("leaving").await;
    let key = admin.create_key(KeyRole::Account, &account).await;
    let owner = admin.with_key(Some(&key));
    let t0 = admin.now().await;
    admin.grant_expiring(&account, 40, t0 + 2 * DAY).await;
    admin.subscribe(&account, "basic-monthly").await.unwrap();
    let running = admin
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&account, &running.id, 1).await;

    let refused = owner
        .admin()
        .delete_account(pb::DeleteAccountRequest {
            account_id: String::new(),
        })
        .await;
    let status = expect_err("deletion with everything left", refused);
    assert_status(
        &status,
        Code::FailedPrecondition,
        "ACCOUNT_DELETION_REFUSED",
    );
    let info = status.get_error_details().error_info().unwrap().clone();
    assert_eq!(
        info.metadata.get("reasons").map(String::as_str),
        Some("HAS_CREDITS,UNFINISHED_JOBS,RUNNING_SUBSCRIPTION,ACCOUNT_TOO_YOUNG")
    );
    for code in [
        "HAS_CREDITS",
        "UNFINISHED_JOBS",
        "RUNNING_SUBSCRIPTION",
        "ACCOUNT_TOO_YOUNG",
    ] {
        assert!(
            status.message().contains(code),
            "{code} in {:?}",
            status.message()
        );
        assert!(
            info.metadata.contains_key(code),
            "{code} in {:?}",
            info.metadata
        );
    }
    assert!(info.metadata["RUNNING_SUBSCRIPTION"].contains("basic-monthly"));
    assert_eq!(
        owner.account(&account).await.status,
        pb::AccountStatus::Active as i32
    );

    // The reasons go away one by one: the job ends, the plan is cancelled (access to
    // the end of its month), the grant expires.
    owner.cancel(&account, &running.id).await;
    owner.wait_terminal(&account, &running.id).await;
    owner.cancel_plan(&account, false).await.unwrap();
    admin.advance_to(t0 + 3 * DAY).await;
    let still = owner
        .admin()
        .delete_account(pb::DeleteAccountRequest {
            account_id: String::new(),
        })
        .await;
    let status = expect_err("deletion three days in", still);
    assert_status(
        &status,
        Code::FailedPrecondition,
        "ACCOUNT_DELETION_REFUSED",
    );
    let info = status.get_error_details().error_info().unwrap().clone();
    assert_eq!(
        info.metadata.get("reasons").map(String::as_str),
        Some("HAS_CREDITS,RUNNING_SUBSCRIPTION,ACCOUNT_TOO_YOUNG")
    );
    assert_eq!(
        owner.balance(&account).await.total,
        1000,
        "the month's credits"
    );
    // The month ends: the plan with its credits; the account is a month old.
    admin.advance_to(add_months(t0, 1)).await;
    let deleted = owner
        .admin()
        .delete_account(pb::DeleteAccountRequest {
            account_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let a = deleted.account.unwrap();
    assert_eq!(
        (a.status, a.name.as_str()),
        (pb::AccountStatus::Deleted as i32, "")
    );
    let revoked = owner.balance_raw(&account).await;
    assert_status(
        &expect_err("a deleted account's key", revoked),
        Code::Unauthenticated,
        "API_KEY_INVALID",
    );
    // Its jobs are deleted: not even the operator finds them.
    let gone = admin
        .jobs()
        .get_job(pb::GetJobRequest {
            account_id: account.clone(),
            job_id: running.id.clone(),
        })
        .await;
    assert_status(
        &expect_err("a deleted account's job", gone),
        Code::NotFound,
        "JOB_NOT_FOUND",
    );
    let entries = admin.ledger(&account, None).await;
    assert!(!entries.is_empty(), "the ledger keeps its entries");
    assert!(
        entries.iter().all(|e| e.memo.is_empty()),
        "personal data removed"
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_catalogue_plans_credits_and_accounts() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let (ok, text) = server.cli(&["catalog"]).await;
    assert!(
        ok && text.contains("starter") && text.contains("basic-annual"),
        "{text}"
    );
    let (ok, text) = server.cli(&["catalog", "--print-default"]).await;
    assert!(ok && text.contains("[[packs]]"), "{text}");

    let (ok, text) = server.cli(&["accounts", "create", "CLI user"]).await;
    assert!(ok, "{text}");
    let account = text
        .lines()
        .find_map(|l| l.strip_prefix("account    "))
        .expect("the new account's id")
        .trim()
        .to_string();
    let with = |args: &[&str]| {
        let mut v = vec!["--account", account.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let server = &server;
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            server.cli(&refs).await
        }
    };
    let (ok, text) = run(with(&[
        "credits",
        "buy",
        "starter",
        "--payment-ref",
        "cli-1",
    ]))
    .await;
    assert!(ok && text.contains("500 credits"), "{text}");
    let (ok, text) = run(with(&[
        "credits",
        "buy",
        "starter",
        "--payment-ref",
        "cli-1",
    ]))
    .await;
    assert!(ok && text.contains("already"), "{text}");
    let (ok, text) = run(with(&["plans", "subscribe", "basic-monthly"])).await;
    assert!(ok && text.contains("plan       basic-monthly"), "{text}");
    let (ok, text) = run(with(&["plans", "cancel"])).await;
    assert!(ok && text.contains("ends"), "{text}");
    let (ok, text) = run(with(&["credits", "events"])).await;
    assert!(
        ok && text.contains("PACK_PURCHASE") && text.contains("CHARGE"),
        "{text}"
    );
    let (ok, text) = run(with(&["credits", "balance"])).await;
    assert!(ok && text.contains("1500 available"), "{text}");

    let (ok, text) = run(with(&["accounts", "suspend", "--reason", "review"])).await;
    assert!(ok && text.contains("SUSPENDED (review)"), "{text}");
    let (ok, text) = run(with(&["accounts", "reinstate"])).await;
    assert!(ok && text.contains("status     ACTIVE"), "{text}");
    let (ok, text) = run(with(&["accounts", "delete"])).await;
    assert!(!ok, "{text}");
    for reason in [
        "ACCOUNT_DELETION_REFUSED",
        "HAS_CREDITS",
        "RUNNING_SUBSCRIPTION",
        "ACCOUNT_TOO_YOUNG",
    ] {
        assert!(text.contains(reason), "{reason} in {text}");
    }
    let (ok, text) = run(with(&["accounts", "terminate"])).await;
    assert!(ok && text.contains("forfeited  1500 credits"), "{text}");
    let (ok, text) = run(with(&["accounts", "get"])).await;
    assert!(ok && text.contains("TERMINATED (violation)"), "{text}");

    let (ok, text) = server
        .cli(&["accounts", "create", "Payg", "--postpaid"])
        .await;
    assert!(ok && text.contains("billing    POSTPAID"), "{text}");
    let payg = text
        .lines()
        .find_map(|l| l.strip_prefix("account    "))
        .unwrap()
        .trim()
        .to_string();
    let (ok, text) = server
        .cli(&[
            "--account",
            &payg,
            "credits",
            "top-up",
            "250",
            "--payment-ref",
            "cli-t",
        ])
        .await;
    assert!(ok && text.contains("2.50 EUR"), "{text}");
    assert_ledger_verifies(&server.data_dir);
}
