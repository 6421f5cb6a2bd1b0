//! `kinema bench ledger`: what a credit cycle costs against the database's own limit.

use kinema_engine::GenerationParams;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kinema_store::{Failure, LeaseFilter, NewJob, Store, StorePolicy, Usage};
use sqlx::{Connection, Executor};

use crate::cli::{BenchCommand, BenchLedgerArgs};

pub async fn run(conn: &crate::cli::Connection, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ledger(args) => ledger(args).await,
        BenchCommand::Load(args) => super::bench_load::run(conn, *args).await,
        BenchCommand::Calls(args) => super::bench_calls::run(args).await,
    }
}

/// A scratch database: a SQLite file in a temporary directory, or a PostgreSQL
/// database created for the run and dropped after it.
enum Scratch {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl Scratch {
    async fn open(args: &BenchLedgerArgs) -> anyhow::Result<(Scratch, Store, String)> {
        match &args.postgres {
            None => {
                let dir = tempfile::tempdir().context("temporary directory")?;
                let store =
                    Store::open_sqlite(&dir.path().join("bench.db"), StorePolicy::default())
                        .await?;
                Ok((
                    Scratch::Sqlite { _dir: dir },
                    store,
                    "sqlite (WAL, synchronous=FULL)".into(),
                ))
            }
            Some(admin_url) => {
                let name = format!("kinema_bench_{}_{:08x}", std::process::id(), rand_u32());
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .context("connecting to PostgreSQL")?;
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .context("creating the scratch database")?;
                conn.close().await?;
                let url = match admin_url.rsplit_once('/') {
                    Some((base, _)) if base.contains("://") && !base.ends_with('/') => {
                        format!("{base}/{name}")
                    }
                    _ => bail!("--postgres must be a URL naming a database (postgres://…/db)"),
                };
                let store = Store::open(&url, StorePolicy::default()).await?;
                let version: String = {
                    let mut c = sqlx::PgConnection::connect(&url).await?;
                    sqlx::query_scalar("SHOW server_version")
                        .fetch_one(&mut c)
                        .await?
                };
                Ok((
                    Scratch::Postgres {
                        admin_url: admin_url.clone(),
                        name,
                    },
                    store,
                    format!("postgresql {version} (synchronous_commit as configured)"),
                ))
            }
        }
    }

    async fn drop_database(self) {
        if let Scratch::Postgres { admin_url, name } = self {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

fn rand_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn job(account: &str) -> NewJob {
    NewJob {
        account_id: account.to_string(),
        external_id: None,
        idempotency_key: None,
        request_hash: "bench".into(),
        params: GenerationParams {
            model: "testsrc".into(),
            prompt: "bench".into(),
            negative_prompt: String::new(),
            width: 16,
            height: 16,
            num_frames: 1,
            fps: 8,
            steps: 1,
            guidance_scale: 1.0,
            seed: 0,
            output: "mp4".into(),
            preview: None,
            ..GenerationParams::default()
        },
        callback_url: String::new(),
        metadata: BTreeMap::new(),
        quote: 1,
        member_id: None,
        priority: kinema_store::JobPriority::Normal,
        batch_key: None,
    }
}

/// The model of the backlog's jobs, which the cycles' workers never lease.
const BACKLOG_MODEL: &str = "bench-backlog";

/// `cycles` hold -> debit -> refund cycles on one account: submit (HOLD), lease
/// (DEBIT), fail (REFUND); with `retry`, the first start fails retryably and the job
/// is leased again before it fails for good. The job leased may be another client's;
/// each client ends what it leased.
async fn cycles(
    store: Store,
    account: String,
    client: u32,
    cycles: u32,
    retry: bool,
) -> anyhow::Result<()> {
    let owner = format!("bench-worker-{client}");
    let filter = LeaseFilter::models(["testsrc"]);
    let failure = Failure {
        code: "BENCH".into(),
        message: "benchmark cycle".into(),
        retryable: false,
    };
    let lease = || async {
        store
            .lease_matching(&owner, &filter, 60_000, now_ms())
            .await?
            .job
            .context("no queued job to lease")
    };
    for _ in 0..cycles {
        store.submit_job(job(&account), "bench", now_ms()).await?;
        // The job leased may be another client's; with `retry`, a job's first start
        // goes back to the queue, so a client leases until it holds one to fail.
        loop {
            let leased = lease().await?;
            if retry && leased.attempts == 1 {
                let retryable = Failure {
                    retryable: true,
                    ..failure.clone()
                };
                let usage = Usage::default();
                store
                    .retry_job(&leased.id, &owner, &retryable, 2, false, &usage, now_ms())
                    .await?;
                continue;
            }
            store
                .fail_job(&leased.id, &owner, &failure, &Usage::default(), now_ms())
                .await?;
            break;
        }
    }
    Ok(())
}

/// `n` queued jobs for a model the cycles never lease, 500 to an account.
async fn fill_backlog(store: &Store, n: u32) -> anyhow::Result<()> {
    const PER_ACCOUNT: u32 = 500;
    let mut left = n;
    let mut a = 0;
    while left > 0 {
        let account = store
            .create_account(&format!("backlog-{a}"), None, now_ms())
            .await?
            .id;
        let k = left.min(PER_ACCOUNT);
        store
            .grant_credits(&account, i64::from(k), None, "", "bench", now_ms())
            .await?;
        for _ in 0..k {
            let mut new = job(&account);
            new.params.model = BACKLOG_MODEL.into();
            store.submit_job(new, "bench", now_ms()).await?;
        }
        left -= k;
        a += 1;
    }
    Ok(())
}

/// What one concurrency level measured.
struct Level {
    concurrency: u32,
    raw: Duration,
    cycles: Duration,
}

impl Level {
    fn raw_rate(&self, args: &BenchLedgerArgs) -> f64 {
        f64::from(args.raw) / self.raw.as_secs_f64()
    }

    fn cycle_rate(&self, args: &BenchLedgerArgs) -> f64 {
        f64::from(args.cycles) / self.cycles.as_secs_f64()
    }
}

async fn ledger(args: BenchLedgerArgs) -> anyhow::Result<()> {
    if args.cycles == 0 || args.raw == 0 || args.concurrency.contains(&0) {
        bail!("--raw, --cycles and --concurrency must be at least 1");
    }
    if args.concurrency.is_empty() {
        bail!("--concurrency needs at least one level");
    }
    let (scratch, store, backend) = Scratch::open(&args).await?;
    if let Err(e) = fill_backlog(&store, args.backlog).await {
        store.close().await;
        scratch.drop_database().await;
        return Err(e);
    }
    let mut levels = Vec::new();
    for &concurrency in &args.concurrency {
        match measure(&store, &args, concurrency).await {
            Ok(level) => levels.push(level),
            Err(e) => {
                store.close().await;
                scratch.drop_database().await;
                return Err(e);
            }
        }
    }
    let ledger_ok = store.verify_ledger(None).await?.is_clean();
    store.close().await;
    scratch.drop_database().await;
    if args.json {
        let levels: Vec<_> = levels
            .iter()
            .map(|l| {
                serde_json::json!({
                    "concurrency": l.concurrency,
                    "raw_per_second": l.raw_rate(&args),
                    "cycles_per_second": l.cycle_rate(&args),
                    "ratio_to_raw": l.cycle_rate(&args) / l.raw_rate(&args),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "backend": backend,
                "raw_transactions": args.raw,
                "cycles": args.cycles,
                "rounds": args.rounds,
                "backlog": args.backlog,
                "retry": args.retry,
                "levels": levels,
                "ledger_verified": ledger_ok,
            })
        );
    } else {
        println!("backend      {backend}");
        let (shape, transactions) = if args.retry {
            ("hold -> debit -> retry -> restart -> refund", 5)
        } else {
            ("hold -> debit -> refund", 3)
        };
        println!(
            "per level    {} one-row durable transactions (raw) and {} {shape} cycles \
             ({transactions} transactions each), alternating in {} rounds; {} jobs queued \
             throughout",
            args.raw, args.cycles, args.rounds, args.backlog
        );
        for l in &levels {
            let (raw, cycles) = (l.raw_rate(&args), l.cycle_rate(&args));
            println!(
                "clients {:<4} raw {raw:>6.0}/s   cycles {cycles:>6.0}/s   ratio {:.2} \
                 (a cycle costs {:.1} raw transactions)",
                l.concurrency,
                cycles / raw,
                raw / cycles
            );
        }
        println!(
            "ledger       {}",
            if ledger_ok { "verified" } else { "PROBLEMS" }
        );
    }
    if !ledger_ok {
        bail!("the ledger does not verify after the benchmark");
    }
    Ok(())
}

/// Raw commits (one client, one after another) and cycles (`concurrency` clients)
/// measured in alternating rounds, so both see the same disk (a shared machine's
/// fsync latency drifts within seconds).
async fn measure(store: &Store, args: &BenchLedgerArgs, concurrency: u32) -> anyhow::Result<Level> {
    let rounds = args.rounds.clamp(1, args.raw.min(args.cycles));
    let accounts = setup_clients(store, args, concurrency).await?;
    let mut level = Level {
        concurrency,
        raw: Duration::ZERO,
        cycles: Duration::ZERO,
    };
    for round in 0..rounds {
        level.raw += store
            .bench_raw_commits(share(args.raw, rounds, round))
            .await?;
        let n = share(args.cycles, rounds, round);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (c, account) in accounts.iter().enumerate() {
            let k = share(n, concurrency, c as u32);
            tasks.spawn(cycles(
                store.clone(),
                account.clone(),
                c as u32,
                k,
                args.retry,
            ));
        }
        while let Some(r) = tasks.join_next().await {
            r.context("benchmark task")??;
        }
        level.cycles += start.elapsed();
    }
    Ok(level)
}

/// Part `i` of `total` split in `parts` (the first ones take the remainder).
fn share(total: u32, parts: u32, i: u32) -> u32 {
    total / parts + u32::from(i < total % parts)
}

/// One account per client, with credits for every cycle it may run.
async fn setup_clients(
    store: &Store,
    args: &BenchLedgerArgs,
    concurrency: u32,
) -> anyhow::Result<Vec<String>> {
    let mut accounts = Vec::new();
    for client in 0..concurrency {
        let account = store
            .create_account(&format!("bench-{concurrency}-{client}"), None, now_ms())
            .await?
            .id;
        store
            .grant_credits(
                &account,
                i64::from(args.cycles) + 1,
                None,
                "",
                "bench",
                now_ms(),
            )
            .await?;
        accounts.push(account);
    }
    Ok(accounts)
}
