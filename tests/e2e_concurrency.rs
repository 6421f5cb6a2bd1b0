//! Concurrency (issue 4): 1,000 parallel submissions against credits for exactly 50
//! jobs admit exactly 50 — on the embedded SQLite store, and on PostgreSQL through two
//! `kinema serve` processes sharing one database. The ledger verifies afterwards.
//! The storm passes the server's limit of calls at once (`--max-concurrent-rpcs`); the
//! calls it sheds are retried after the delay it asks for, as a client would.

mod common;

use common::postgres::PgDatabase;
use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

const SUBMISSIONS: usize = 1000;
const ADMITTED: usize = 50;
/// Channels per server the submissions are spread over.
const CHANNELS: usize = 4;

/// 16 px, 8 frames at 8 fps, 1 step: the smallest job (2 credits).
fn tiny(account: &str, i: usize) -> pb::CreateJobRequest {
    let mut req = job_request(account, 16, 16, 8, 8, 1);
    req.prompt = format!("submission {i}");
    req
}

/// Submits `SUBMISSIONS` jobs at once, round-robin over `clients`; returns the
/// admitted jobs (every refusal must be INSUFFICIENT_CREDITS).
async fn storm(clients: &[Client], account: &str) -> Vec<pb::Job> {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..SUBMISSIONS {
        let client = clients[i % clients.len()].clone();
        let req = tiny(account, i);
        calls.spawn(async move { create_retrying_when_shed(&client, req).await });
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
    assert_eq!(
        (admitted.len(), refused),
        (ADMITTED, SUBMISSIONS - ADMITTED)
    );
    admitted
}

/// CreateJob, retried after the server's retry delay while the call is shed as
/// OVERLOADED (a shed call never reached the handler: nothing was held).
async fn create_retrying_when_shed(
    client: &Client,
    req: pb::CreateJobRequest,
) -> Result<pb::Job, tonic::Status> {
    loop {
        match client.create_job_raw(req.clone()).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert_status(&s, Code::ResourceExhausted, "OVERLOADED");
                let delay = s
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("a shed call says when to retry");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

async fn platform_clients(server: &Server, key: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..CHANNELS {
        out.push(server.client(Some(key)).await);
    }
    out
}

async fn settle(client: &Client, account: &str, admitted: &[pb::Job], quote: i64) {
    for job in admitted {
        let (_, done) = client.wait_terminal(account, &job.id).await;
        assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
        assert_eq!(done.debited_credits, quote);
    }
    let balance = client.balance(account).await;
    assert_eq!((balance.total, balance.held, balance.available), (0, 0, 0));
    let entries = client.ledger(account, None).await;
    assert_eq!(entries_of(&entries, LedgerEntryKind::Hold).len(), ADMITTED);
    assert_eq!(entries_of(&entries, LedgerEntryKind::Debit).len(), ADMITTED);
    assert!(entries
        .iter()
        .all(|e| e.balance_after >= 0 && e.held_after >= 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_parallel_submissions_admit_exactly_fifty_on_sqlite() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("storm").await;
    let key = admin.create_key(KeyRole::Platform, "").await;
    let quote = expected_quote(16, 16, 8, 8, 1);
    admin.grant(&account, quote * ADMITTED as i64).await;
    let clients = platform_clients(&server, &key).await;
    let admitted = storm(&clients, &account).await;
    assert_eq!(admin.balance(&account).await.available, 0);
    settle(&admin, &account, &admitted, quote).await;
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_parallel_submissions_on_two_servers_sharing_postgres_admit_exactly_fifty() {
    let db = PgDatabase::create().await;
    let opts = Opts {
        database_url: Some(db.url),
        ..Opts::default()
    };
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let a = Server::start(&dir_a, opts).await;
    // The first server created the admin key in the shared database; the second finds
    // one and creates none, so it gets the same key file.
    std::fs::copy(&a.admin_key_file, dir_b.data_dir().join("admin-api-key")).unwrap();
    let b = Server::start(&dir_b, opts).await;
    assert_eq!(a.admin_key, b.admin_key);
    let admin = a.admin().await;
    let account = admin.create_account("storm").await;
    let key = admin.create_key(KeyRole::Platform, "").await;
    let quote = expected_quote(16, 16, 8, 8, 1);
    admin.grant(&account, quote * ADMITTED as i64).await;
    let mut clients = platform_clients(&a, &key).await;
    clients.extend(platform_clients(&b, &key).await);
    let admitted = storm(&clients, &account).await;
    assert_eq!(b.admin().await.balance(&account).await.available, 0);
    settle(&admin, &account, &admitted, quote).await;
    let (ok, text) = ledger_verify(&["--database-url", db.url]);
    assert!(ok && text.contains("ledger is consistent"), "{text}");
    drop((a, b));
}
