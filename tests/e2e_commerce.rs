//! End to end with `--test-clock`: the credit rules of docs/api.md, "Money" through the
//! gRPC API of the real `kinema serve` — FIFO by expiry, refund into an expired lot,
//! expiry at the exact instant, one trial, packs and payment refs, price notice,
//! termination for violation — each ending with `kinema ledger verify` passing.

mod common;

use common::commerce::*;
use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

fn clock() -> Opts {
    Opts {
        test_clock: true,
        ..Opts::default()
    }
}

fn clock_and_faults() -> Opts {
    Opts {
        test_clock: true,
        fault_injection: true,
        ..Opts::default()
    }
}

/// 40 frames at 8 fps, 64 px: 5 s x 2 credits/s = 10 credits at the default 8 steps.
fn ten_credit_job(account: &str) -> pb::CreateJobRequest {
    job_request(account, 64, 64, 40, 8, 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_takes_lots_earliest_expiry_first() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("fifo").await;
    let now = admin.now().await;
    // Granted in the opposite order of their expiry.
    let never = admin.grant(&account, 4).await;
    let late = admin.grant_expiring(&account, 4, now + 30 * DAY).await;
    let soon = admin.grant_expiring(&account, 4, now + 2 * DAY).await;
    let balance = admin.balance(&account).await;
    assert_eq!(
        balance.lots.iter().map(|l| l.id).collect::<Vec<_>>(),
        [soon, late, never],
        "GetBalance lists lots in debit order"
    );
    let req = ten_credit_job(&account);
    assert_eq!(expected_quote(64, 64, 40, 8, 8), 10);
    let job = admin.create_job(req).await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    let entries = admin.ledger(&account, Some(&job.id)).await;
    let debit = entries_of(&entries, LedgerEntryKind::Debit)[0];
    let taken: Vec<(i64, i64)> = debit
        .allocations
        .iter()
        .map(|a| (a.lot_id, a.amount))
        .collect();
    assert_eq!(taken, [(soon, 4), (late, 4), (never, 2)]);
    let balance = admin.balance(&account).await;
    assert_eq!(
        balance
            .lots
            .iter()
            .map(|l| (l.id, l.remaining))
            .collect::<Vec<_>>(),
        [(never, 2)]
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_into_an_expired_lot_goes_to_a_new_refund_lot() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock_and_faults()).await;
    let admin = server.admin().await;
    let account = admin.create_account("refund").await;
    let now = admin.now().await;
    let short = admin.grant_expiring(&account, 60, now + DAY).await;
    let never = admin.grant(&account, 100).await;
    // 80 steps: quote 10 x 80 / 8 = 100. It fails at step 30, well after the clock
    // moves past the short lot's expiry below (one step takes 100 ms).
    let req = with_meta(
        job_request(&account, 64, 64, 40, 8, 80),
        &[
            ("kinema.step_delay_ms", "100"),
            ("kinema.fail_at", "step:30"),
        ],
    );
    let job = admin.create_job(req).await;
    assert_eq!(job.quoted_credits, 100);
    let running = admin.wait_step(&account, &job.id, 1).await;
    assert_eq!(running.debited_credits, 100);
    let failed_at = admin.advance(DAY + HOUR).await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Failed, "{}", describe_job(&done));
    assert_eq!(done.refunded_credits, 100);
    let entries = admin.ledger(&account, Some(&job.id)).await;
    let debit = entries_of(&entries, LedgerEntryKind::Debit)[0];
    let mut taken: Vec<(i64, i64)> = debit
        .allocations
        .iter()
        .map(|a| (a.lot_id, a.amount))
        .collect();
    taken.sort();
    assert_eq!(taken, [(short, 60), (never, 40)]);
    let refund = entries_of(&entries, LedgerEntryKind::Refund)[0];
    assert!(
        refund
            .allocations
            .iter()
            .any(|a| a.lot_id == never && a.amount == 40),
        "the live lot gets its own credits back: {refund:?}"
    );
    assert!(
        !refund.allocations.iter().any(|a| a.lot_id == short),
        "nothing goes back into the expired lot"
    );
    let balance = admin.balance(&account).await;
    let refund_lot = balance
        .lots
        .iter()
        .find(|l| l.source == "refund")
        .expect("a refund lot");
    assert_eq!(refund_lot.original, 60);
    // The clock stood still at `failed_at` while the job failed.
    assert_eq!(millis(&refund_lot.expires_at), failed_at + 7 * DAY);
    assert_eq!(balance.total, 160);
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_expire_at_the_exact_instant() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("expiry").await;
    let now = admin.now().await;
    let expires_at = now + DAY;
    let lot = admin.grant_expiring(&account, 30, expires_at).await;
    admin.advance_to(expires_at - 1).await;
    assert_eq!(admin.balance(&account).await.available, 30);
    assert!(entries_of(&admin.ledger(&account, None).await, LedgerEntryKind::Expire).is_empty());
    admin.advance_to(expires_at).await;
    assert_eq!(admin.balance(&account).await.available, 0);
    let entries = admin.ledger(&account, None).await;
    let expired = entries_of(&entries, LedgerEntryKind::Expire);
    assert_eq!(
        expired.len(),
        1,
        "the sweep wrote the EXPIRE entry: {entries:#?}"
    );
    assert_eq!(
        (expired[0].amount, expired[0].allocations[0].lot_id),
        (30, lot)
    );
    assert_eq!(millis(&expired[0].created_at), expires_at);
    let refused = admin.create_job_raw(ten_credit_job(&account)).await;
    assert_status(
        &expect_err("a job on expired credits", refused),
        Code::FailedPrecondition,
        "INSUFFICIENT_CREDITS",
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_trial_is_refused_even_after_the_first_ends() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("trial").await;
    let key = admin.create_key(KeyRole::Account, &account).await;
    let owner = admin.with_key(Some(&key));
    let trial = owner
        .billing()
        .start_trial(pb::StartTrialRequest {
            account_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let lot = trial.lot.unwrap();
    assert_eq!(lot.original, 100);
    assert_eq!(millis(&trial.ends_at) - millis(&trial.started_at), 14 * DAY);
    assert_eq!(millis(&lot.expires_at), millis(&trial.ends_at));
    let a = owner.account(&account).await;
    assert_eq!(millis(&a.trial_ends_at), millis(&trial.ends_at));
    for advance in [0, 15 * DAY] {
        admin.advance(advance).await;
        let again = owner
            .billing()
            .start_trial(pb::StartTrialRequest {
                account_id: String::new(),
            })
            .await;
        assert_status(
            &expect_err("a second trial", again),
            Code::FailedPrecondition,
            "TRIAL_ALREADY_USED",
        );
    }
    assert_eq!(
        owner.balance(&account).await.total,
        0,
        "trial credits ended with it"
    );
    let trials = entries_of(&admin.ledger(&account, None).await, LedgerEntryKind::Trial).len();
    assert_eq!(trials, 1);
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_are_bought_once_per_payment_ref_at_the_price_in_effect() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let account = admin.create_account("packs").await;
    let account_key = admin.create_key(KeyRole::Account, &account).await;
    let now = admin.now().await;

    // Price changes: 29 days of notice is refused, 30 days accepted.
    let schedule = |days: i64| pb::SchedulePriceChangeRequest {
        item_kind: pb::CatalogItemKind::Pack as i32,
        item_id: "starter".into(),
        price: Some(eur(1299)),
        effective_at: Some(timestamp(now + days * DAY)),
    };
    let short = admin.billing().schedule_price_change(schedule(29)).await;
    assert_status(
        &expect_err("29 days of notice", short),
        Code::FailedPrecondition,
        "PRICE_NOTICE_TOO_SHORT",
    );
    let by_platform = platform.billing().schedule_price_change(schedule(30)).await;
    assert_status(
        &expect_err("a platform key schedules prices", by_platform),
        Code::PermissionDenied,
        "ROLE",
    );
    let scheduled = admin
        .billing()
        .schedule_price_change(schedule(30))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.current_price.unwrap().minor, 999);
    assert_eq!(
        millis(&scheduled.scheduled_prices[0].effective_at),
        now + 30 * DAY
    );
    let catalog = platform
        .billing()
        .list_catalog(pb::ListCatalogRequest {})
        .await
        .unwrap()
        .into_inner();
    let starter = catalog.packs.iter().find(|p| p.id == "starter").unwrap();
    assert_eq!(starter.price.as_ref().unwrap().minor, 999);
    assert_eq!(starter.scheduled_prices.len(), 1, "only the 30-day change");

    // A purchase: one lot, expiring at purchase + validity; the same ref is one purchase.
    let first = platform
        .purchase(&account, "starter", "pay-1")
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.price.as_ref().unwrap().minor, 999);
    let lot = first.lot.unwrap();
    assert_eq!(
        (lot.original, millis(&lot.expires_at)),
        (500, now + 90 * DAY)
    );
    let again = platform
        .purchase(&account, "starter", "pay-1")
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.lot.unwrap().id, lot.id);
    let other_pack = platform.purchase(&account, "studio", "pay-1").await;
    assert_status(
        &expect_err("one ref, another pack", other_pack),
        Code::AlreadyExists,
        "PAYMENT_REF_CONFLICT",
    );
    let by_account = admin
        .with_key(Some(&account_key))
        .purchase(&account, "starter", "pay-2")
        .await;
    assert_status(
        &expect_err("an account key records payments", by_account),
        Code::PermissionDenied,
        "ROLE",
    );
    let unknown = platform.purchase(&account, "nope", "pay-3").await;
    assert_status(
        &expect_err("an unknown pack", unknown),
        Code::NotFound,
        "PACK_NOT_FOUND",
    );
    let no_ref = platform.purchase(&account, "starter", "").await;
    assert_invalid_field(&expect_err("no payment ref", no_ref), "payment_ref");
    let purchases = entries_of(
        &admin.ledger(&account, None).await,
        LedgerEntryKind::Purchase,
    )
    .len();
    assert_eq!(purchases, 1);
    assert_eq!(admin.balance(&account).await.total, 500);

    // From the effective instant, purchases pay the new price.
    admin.advance_to(now + 30 * DAY).await;
    let later = platform
        .purchase(&account, "starter", "pay-4")
        .await
        .unwrap();
    assert_eq!(later.price.unwrap().minor, 1299);
    let events = admin.billing_events(&account).await;
    assert_eq!(amounts(&events, "PACK_PURCHASE"), [999, 1299]);
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_for_violation_forfeits_every_credit() {
    let dir = TestDir::new();
    let server = Server::start(&dir, clock()).await;
    let admin = server.admin().await;
    let account = admin.create_account("violator").await;
    admin.grant(&account, 50).await;
    admin.purchase(&account, "starter", "pay-v").await.unwrap();
    admin.subscribe(&account, "basic-monthly").await.unwrap();
    let job = admin.create_job(ten_credit_job(&account)).await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    assert_eq!(admin.balance(&account).await.total, 50 + 500 + 1000 - 10);

    let r = admin
        .admin()
        .terminate_account(pb::TerminateAccountRequest {
            account_id: account.clone(),
            reason: "violation: prohibited content".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.forfeited_credits, 1540);
    let a = r.account.unwrap();
    assert_eq!(a.status, pb::AccountStatus::Terminated as i32);
    assert_eq!(a.status_reason, "violation: prohibited content");
    assert_eq!(admin.balance(&account).await.total, 0);
    let entries = admin.ledger(&account, None).await;
    let forfeits = entries_of(&entries, LedgerEntryKind::Forfeit);
    assert_eq!(forfeits.iter().map(|e| e.amount).sum::<i64>(), 1540);
    let events = admin.billing_events(&account).await;
    assert!(
        amounts(&events, "REFUND_OWED").is_empty(),
        "no refund of the plan"
    );
    assert!(admin.subscription(&account).await.current.is_none());
    let refused = admin.create_job_raw(ten_credit_job(&account)).await;
    assert_status(
        &expect_err("a job on a terminated account", refused),
        Code::FailedPrecondition,
        "ACCOUNT_CLOSED",
    );
    // Its videos are deleted with it: refused as such from the termination on, before
    // the sweeper has removed the files.
    let going = admin
        .download(&account, &job.id, pb::ArtifactKind::Video, 0)
        .await;
    assert_status(
        &expect_err("a video of a terminated account", going),
        Code::NotFound,
        "ARTIFACT_DELETED",
    );
    let buy = admin.purchase(&account, "starter", "pay-w").await;
    assert_status(
        &expect_err("buying after termination", buy),
        Code::FailedPrecondition,
        "ACCOUNT_CLOSED",
    );
    // The next sweep purges its videos and prompts.
    admin.advance(1).await;
    let purged = admin.get_job(&account, &job.id).await;
    assert_eq!(purged.prompt, "");
    let gone = admin
        .download(&account, &job.id, pb::ArtifactKind::Video, 0)
        .await;
    assert_status(
        &expect_err("a purged video", gone),
        Code::NotFound,
        "ARTIFACT_DELETED",
    );
    assert_ledger_verifies(&server.data_dir);
}

/// `kinema ledger verify` names a difference and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_fails_naming_a_row_changed_behind_its_back() {
    use sqlx::{Connection, Executor};
    let dir = TestDir::new();
    let mut server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("tamper").await;
    let lot = admin.grant(&account, 70).await;
    let text = assert_ledger_verifies(&server.data_dir);
    assert!(text.contains("checked 1 entries"), "{text}");
    server.terminate().await;
    let db = server.data_dir.join("kinema.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    conn.execute(format!("UPDATE lots SET remaining = 69 WHERE id = {lot}").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (ok, text) = ledger_verify(&["--data-dir", server.data_dir.to_str().unwrap()]);
    assert!(!ok, "verify must fail:\n{text}");
    assert!(
        text.contains(&format!("lot {lot}: stored remaining 69, entries say 70")),
        "{text}"
    );
    assert!(text.contains("credits not conserved"), "{text}");
    let (ok, text) = ledger_verify(&["--data-dir", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!ok && text.contains("no database"), "{text}");
}
