//! What sqlx's `Any` driver costs per statement next to the native SQLite and
//! PostgreSQL drivers, on the store's own schema and statements.
//!
//! `cargo bench -p kinema-store --bench drivers [-- --statements N --rounds R]`
//! (PostgreSQL at `KINEMA_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `--no-postgres` skips it).
//!
//! Three statements the store runs on every job, each `N` times per round on one
//! connection, the drivers taking turns round by round so drift hits both alike:
//! a point read of a job row decoded into 16 columns, an UPDATE by primary key, and an
//! INSERT … RETURNING into the ledger. Each run is one transaction, and SQLite runs
//! with `synchronous = OFF`, so a statement's cost is not hidden behind a commit's
//! fsync (the store itself commits durably).

use kinema_params::GenerationParams;
use std::time::Instant;

use kinema_store::{JobPriority, NewJob, Store, StorePolicy};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Executor, PgConnection, SqliteConnection};

type JobColumns = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    f64,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    String,
);

const READ: &str = "SELECT id, account_id, model, prompt, width, height, num_frames, steps, \
     guidance_scale, seed, state, quoted, held, debited, created_at, metadata \
     FROM jobs WHERE id = $1";
const UPDATE: &str = "UPDATE jobs SET progress_step = $1 WHERE id = $2";
const INSERT: &str = "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, \
     actor, balance_after, held_after, memo, created_at) \
     VALUES ($1, 'ADJUST', 0, '[]', $2, 'bench', 0, 0, '', $3) RETURNING id";

struct Args {
    statements: u32,
    rounds: u32,
    postgres: bool,
}

fn args() -> Args {
    let mut a = Args {
        statements: 2_000,
        rounds: 5,
        postgres: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = |name: &str| -> u32 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a positive number"))
        };
        match flag.as_str() {
            "--statements" => a.statements = number("--statements"),
            "--rounds" => a.rounds = number("--rounds"),
            "--no-postgres" => a.postgres = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Jobs the statements cycle through: one row updated thousands of times in one
/// transaction would measure PostgreSQL's growing chain of row versions instead.
const JOBS: usize = 100;

/// An account and its jobs, written through the store so the schema is the real one.
async fn seed(store: &Store) -> (String, Vec<String>) {
    let account = store
        .create_account("bench", None, 0)
        .await
        .expect("account");
    store
        .grant_credits(&account.id, 1_000_000_000, None, "", "bench", 0)
        .await
        .expect("grant");
    let mut jobs = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        jobs.push(submit(store, &account.id).await);
    }
    (account.id, jobs)
}

async fn submit(store: &Store, account_id: &str) -> String {
    let job = store
        .submit_job(
            NewJob {
                account_id: account_id.to_string(),
                external_id: None,
                idempotency_key: None,
                request_hash: String::new(),
                params: GenerationParams {
                    model: "testsrc".into(),
                    prompt: "a drivers benchmark".into(),
                    negative_prompt: String::new(),
                    width: 320,
                    height: 192,
                    num_frames: 33,
                    fps: 16,
                    steps: 20,
                    guidance_scale: 5.0,
                    seed: 7,
                    output: "mp4".into(),
                    preview: None,
                    ..GenerationParams::default()
                },
                callback_url: String::new(),
                metadata: Default::default(),
                quote: 10,
                member_id: None,
                priority: JobPriority::Normal,
                batch_key: None,
            },
            "bench",
            0,
        )
        .await
        .expect("job");
    job.job().id.clone()
}

/// Runs the three statements `n` times on one connection; returns µs per statement.
macro_rules! run_statements {
    ($conn:expr, $n:expr, $account:expr, $jobs:expr) => {{
        let conn = $conn;
        // One transaction around each run: the cost measured is the statements', not
        // a commit's fsync.
        conn.execute("BEGIN").await.expect("begin");
        let mut out = [0f64; 3];
        let start = Instant::now();
        for i in 0..$n {
            let row: JobColumns = sqlx::query_as(READ)
                .bind(&$jobs[i as usize % JOBS])
                .fetch_one(&mut *conn)
                .await
                .expect("read");
            std::hint::black_box(row);
        }
        out[0] = start.elapsed().as_secs_f64() * 1e6 / f64::from($n);
        let start = Instant::now();
        for i in 0..$n {
            sqlx::query(UPDATE)
                .bind(i64::from(i))
                .bind(&$jobs[i as usize % JOBS])
                .execute(&mut *conn)
                .await
                .expect("update");
        }
        out[1] = start.elapsed().as_secs_f64() * 1e6 / f64::from($n);
        let start = Instant::now();
        for i in 0..$n {
            let id: i64 = sqlx::query_scalar(INSERT)
                .bind($account)
                .bind(&$jobs[i as usize % JOBS])
                .bind(i64::from(i))
                .fetch_one(&mut *conn)
                .await
                .expect("insert");
            std::hint::black_box(id);
        }
        out[2] = start.elapsed().as_secs_f64() * 1e6 / f64::from($n);
        conn.execute("COMMIT").await.expect("commit");
        out
    }};
}

struct Tally {
    any: Vec<[f64; 3]>,
    native: Vec<[f64; 3]>,
}

impl Tally {
    fn report(&self, backend: &str) {
        println!(
            "{backend}: µs per statement, median of {} rounds",
            self.any.len()
        );
        println!("  statement        Any   native   Any/native");
        for (i, name) in ["read job row", "update by id", "insert ledger"]
            .iter()
            .enumerate()
        {
            let any = median(self.any.iter().map(|r| r[i]).collect());
            let native = median(self.native.iter().map(|r| r[i]).collect());
            println!(
                "  {name:<14} {any:>7.1} {native:>8.1} {:>10.2}",
                any / native
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn sqlite(a: &Args) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("drivers.db");
    let store = Store::open_sqlite(&path, StorePolicy::default())
        .await
        .expect("open");
    let (account, jobs) = seed(&store).await;
    store.close().await;
    let url = format!("sqlite://{}", path.display());
    let pragmas = "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF";
    let any_options: AnyConnectOptions = url.parse().expect("url");
    let mut any = AnyConnection::connect_with(&any_options)
        .await
        .expect("any");
    any.execute(pragmas).await.expect("pragmas");
    let mut native = SqliteConnection::connect(&url).await.expect("native");
    native.execute(pragmas).await.expect("pragmas");
    let mut tally = Tally {
        any: Vec::new(),
        native: Vec::new(),
    };
    for _ in 0..a.rounds {
        tally
            .any
            .push(run_statements!(&mut any, a.statements, &account, &jobs));
        tally
            .native
            .push(run_statements!(&mut native, a.statements, &account, &jobs));
    }
    tally.report("SQLite (WAL, synchronous=OFF)");
}

async fn postgres(a: &Args) {
    let admin = std::env::var("KINEMA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let database = format!("kinema_drivers_{}", std::process::id());
    let mut conn = PgConnection::connect(&admin).await.expect("postgres");
    conn.execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("create database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{database}", &admin[..i]),
        None => panic!("no database in {admin}"),
    };
    let store = Store::open(&url, StorePolicy::default())
        .await
        .expect("open");
    let (account, jobs) = seed(&store).await;
    store.close().await;
    let any_options: AnyConnectOptions = url.parse().expect("url");
    let mut any = AnyConnection::connect_with(&any_options)
        .await
        .expect("any");
    let mut native = PgConnection::connect(&url).await.expect("native");
    let mut tally = Tally {
        any: Vec::new(),
        native: Vec::new(),
    };
    for _ in 0..a.rounds {
        tally
            .any
            .push(run_statements!(&mut any, a.statements, &account, &jobs));
        tally
            .native
            .push(run_statements!(&mut native, a.statements, &account, &jobs));
    }
    any.close().await.ok();
    native.close().await.ok();
    tally.report("PostgreSQL (TCP)");
    conn.execute(format!("DROP DATABASE {database}").as_str())
        .await
        .expect("drop database");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    sqlx::any::install_default_drivers();
    let a = args();
    sqlite(&a).await;
    if a.postgres {
        postgres(&a).await;
    }
}
