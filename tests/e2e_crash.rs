//! Crash test (issue 4): the server is SIGKILLed at random points during a mixed
//! workload (submissions, failures, cancels, pack purchases with retried payment refs),
//! restarted, and `kinema ledger verify` passes with nothing lost or doubled: every
//! acknowledged job and purchase is there exactly once. On SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::PgDatabase;
use common::*;
use kinema_proto::v1 as pb;

const ROUNDS: usize = 3;

/// A small deterministic generator (the seed is printed, so a failure can be replayed
/// with KINEMA_CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Whether a refused call is part of the workload (anything else: the server is gone).
fn keeps_going(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists
    )
}

#[derive(Default)]
struct Acked {
    jobs: BTreeSet<String>,
    /// Payment refs whose purchase was acknowledged.
    refs: BTreeSet<String>,
}

/// One client's workload until the server dies under it.
async fn workload(client: Client, account: String, seed: u64, acked: Arc<Mutex<Acked>>) {
    let mut rng = Rng(seed);
    for i in 0.. {
        let r = rng.below(10);
        let ok = if r < 6 {
            let mut req = job_request(&account, 16, 16, 2, 8, 2);
            req.prompt = format!("crash {seed} {i}");
            req.idempotency_key = format!("k-{seed}-{i}");
            let meta: &[(&str, &str)] = match rng.below(4) {
                0 => &[("kinema.fail_at", "step:1")],
                1 => &[("kinema.step_delay_ms", "20")],
                _ => &[],
            };
            match client.create_job_raw(with_meta(req, meta)).await {
                Ok(job) => {
                    let id = job.id.clone();
                    acked.lock().unwrap().jobs.insert(id.clone());
                    if rng.below(3) == 0 {
                        let _ = client
                            .jobs()
                            .cancel_job(pb::CancelJobRequest {
                                account_id: account.clone(),
                                job_id: id,
                            })
                            .await;
                    }
                    true
                }
                Err(s) => keeps_going(&s),
            }
        } else {
            // A platform retrying a payment: the ref may repeat.
            let reference = format!("pay-{seed}-{}", rng.below(5));
            match client
                .billing()
                .purchase_pack(pb::PurchasePackRequest {
                    account_id: account.clone(),
                    pack_id: "starter".into(),
                    payment_ref: reference.clone(),
                })
                .await
            {
                Ok(_) => {
                    acked.lock().unwrap().refs.insert(reference);
                    true
                }
                Err(s) => keeps_going(&s),
            }
        };
        if !ok {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_doubles_nothing_on_sqlite() {
    crash_rounds(None).await;
}

/// The same on PostgreSQL (a fresh database for the run). A killed server's running
/// jobs come back only when their lease lapses (a replica cannot tell a dead peer from
/// a slow one), so the lease is short here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_doubles_nothing_on_postgres() {
    let db = PgDatabase::create().await;
    crash_rounds(Some(db.url)).await;
    drop(db);
}

/// `kinema ledger verify` on the server's database.
fn assert_verifies(server: &Server, database_url: Option<&str>) {
    match database_url {
        Some(url) => {
            assert_verify_passes(&["--database-url", url]);
        }
        None => {
            assert_ledger_verifies(&server.data_dir);
        }
    }
}

async fn crash_rounds(database_url: Option<&'static str>) {
    let seed = std::env::var("KINEMA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("KINEMA_CRASH_SEED={seed}");
    let opts = Opts {
        database_url,
        lease_ms: database_url.map(|_| 2_000),
        ..Opts::faults()
    };
    let mut rng = Rng(seed);
    let dir = TestDir::new();
    let mut server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("crash").await;
    admin.grant(&account, 1_000_000).await;
    let acked = Arc::new(Mutex::new(Acked::default()));

    for round in 0..ROUNDS {
        let admin = server.admin().await;
        let mut tasks = Vec::new();
        for t in 0..3u64 {
            tasks.push(tokio::spawn(workload(
                admin.clone(),
                account.clone(),
                seed ^ (round as u64 * 31 + t + 1),
                acked.clone(),
            )));
        }
        // Somewhere in the middle of it.
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1300))).await;
        server.kill().await;
        for t in tasks {
            let _ = bounded("workload after the kill", t).await;
        }
        server = Server::start(&dir, opts).await;
        assert_verifies(&server, database_url);
    }

    // Everything acknowledged is there, once; every job reaches an end.
    let admin = server.admin().await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(!acked.jobs.is_empty(), "the workload ran");
    eprintln!(
        "{} jobs and {} purchases acknowledged across {ROUNDS} crashes",
        acked.jobs.len(),
        acked.refs.len()
    );
    for id in &acked.jobs {
        let (_, job) = admin.wait_terminal(&account, id).await;
        let entries = admin.ledger(&account, Some(id)).await;
        let holds = entries_of(&entries, LedgerEntryKind::Hold).len();
        let debits = entries_of(&entries, LedgerEntryKind::Debit).len();
        let refunds = entries_of(&entries, LedgerEntryKind::Refund).len();
        assert_eq!(holds, 1, "{}: {entries:#?}", describe_job(&job));
        assert!(debits <= 1 && refunds <= 1, "{}", describe_job(&job));
    }
    let entries = admin.ledger(&account, None).await;
    let purchases: BTreeSet<String> = entries_of(&entries, LedgerEntryKind::Purchase)
        .iter()
        .map(|e| e.memo.clone())
        .collect();
    let count = entries_of(&entries, LedgerEntryKind::Purchase).len();
    assert_eq!(count, purchases.len(), "one purchase per payment ref");
    assert!(
        acked.refs.is_subset(&purchases),
        "acknowledged {:?}, recorded {purchases:?}",
        acked.refs
    );
    assert_verifies(&server, database_url);
}
