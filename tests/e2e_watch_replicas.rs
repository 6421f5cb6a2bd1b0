//! End to end with two `kinema serve` replicas on one PostgreSQL: a job runs on
//! replica A, and a watch opened on replica B hears every step of it, in order, from
//! the database's notifications (docs/api.md, "Watching"), and still ends correctly
//! when B's listener loses its connection while the job finishes.
//!
//! `--nocapture` shows the delivery latency: from a step's row being written (the
//! trigger's clock, just before the commit) to the event reaching B's client.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::postgres::PgDatabase;
use common::*;
use kinema_proto::v1 as pb;
use kinema_store::{JOB_CHANGES_CHANNEL, JOB_LISTENER_APPLICATION_NAME};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio_stream::StreamExt;

/// Replica B's one CPU worker may hold 10 MiB of models, less than testsrc's 64 MiB:
/// it never takes a job, so every job runs on A.
const NO_ROOM: &[&str] = &["--device-memory-gb", "0.01"];

struct Replicas {
    a: Server,
    b: Server,
    _dirs: (TestDir, TestDir),
}

async fn two_replicas(db: &PgDatabase) -> Replicas {
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let a = Server::start(
        &dir_a,
        Opts {
            database_url: Some(db.url),
            fault_injection: true,
            ..Opts::default()
        },
    )
    .await;
    // The admin key lives in the shared database: B finds it and creates none.
    std::fs::copy(&a.admin_key_file, dir_b.data_dir().join("admin-api-key")).unwrap();
    let b = Server::start(
        &dir_b,
        Opts {
            database_url: Some(db.url),
            fault_injection: true,
            extra_args: NO_ROOM,
            ..Opts::default()
        },
    )
    .await;
    Replicas {
        a,
        b,
        _dirs: (dir_a, dir_b),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// An open watch whose events are stamped with the time they reached the client.
struct TimedWatch {
    stream: tonic::Streaming<pb::JobEvent>,
    events: Vec<(pb::JobEvent, i64)>,
}

impl TimedWatch {
    async fn open(client: &Client, account: &str, job_id: &str) -> TimedWatch {
        let stream = bounded(
            "WatchJob",
            client.jobs().watch_job(pb::WatchJobRequest {
                account_id: account.into(),
                job_id: job_id.into(),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("WatchJob {job_id}: {s:?}"))
        .into_inner();
        TimedWatch {
            stream,
            events: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<pb::Job> {
        let next = tokio::time::timeout(TIMEOUT, self.stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event for {TIMEOUT:?}; events: {}", self.trace()));
        let event = match next {
            Some(Ok(e)) => e,
            Some(Err(s)) => panic!("watch failed: {s:?}"),
            None => return None,
        };
        let job = event.job.clone().expect("event without a job");
        self.events.push((event, now_ms()));
        Some(job)
    }

    async fn until(&mut self, done: impl Fn(&pb::Job) -> bool) -> pb::Job {
        loop {
            match self.next().await {
                Some(job) if done(&job) => return job,
                Some(_) => {}
                None => panic!("the watch ended early; events: {}", self.trace()),
            }
        }
    }

    async fn read_until_end(&mut self) {
        while self.next().await.is_some() {}
    }

    fn trace(&self) -> String {
        let lines: Vec<String> = self.events.iter().map(|(e, _)| describe(e)).collect();
        format!("{lines:#?}")
    }

    fn kinds(&self) -> Vec<JobEventKind> {
        self.events
            .iter()
            .map(|(e, _)| JobEventKind::try_from(e.kind).unwrap_or(JobEventKind::Unspecified))
            .collect()
    }

    /// The denoising step of every event while the job was denoising.
    fn denoising_steps(&self) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|(e, _)| e.job.as_ref())
            .filter(|j| j.stage == JobStage::Denoising as i32)
            .filter_map(|j| j.progress.as_ref().map(|p| p.step))
            .collect()
    }
}

fn step(j: &pb::Job) -> u32 {
    j.progress.as_ref().map_or(0, |p| p.step)
}

/// Records, from a LISTEN of its own, when each denoising step of a job was written
/// (the trigger's `at`).
async fn record_writes(url: &str, job_id: String) -> Arc<Mutex<HashMap<u32, i64>>> {
    let written = Arc::new(Mutex::new(HashMap::new()));
    let mut listener = PgListener::connect(url).await.expect("test listener");
    listener.listen(JOB_CHANGES_CHANNEL).await.expect("LISTEN");
    let into = written.clone();
    tokio::spawn(async move {
        while let Ok(n) = listener.recv().await {
            let Ok(p) = serde_json::from_str::<serde_json::Value>(n.payload()) else {
                continue;
            };
            if p["id"] == job_id.as_str() && p["stage"] == "DENOISING" {
                if let (Some(step), Some(at)) = (p["step"].as_u64(), p["at"].as_i64()) {
                    into.lock().unwrap().insert(step as u32, at);
                }
            }
        }
    });
    written
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_another_replica_hears_every_step_in_order_and_the_end() {
    const STEPS: u32 = 100;
    let db = PgDatabase::create().await;
    let r = two_replicas(&db).await;
    let (admin_a, admin_b) = (r.a.admin().await, r.b.admin().await);
    let account = admin_a.create_account("watched").await;
    admin_a.grant(&account, 100_000).await;

    // A blocker keeps A's worker busy until the watch is open, so the watch sees the
    // job from the queue on.
    let blocker = admin_a
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin_a.wait_step(&account, &blocker.id, 1).await;
    let job = admin_a
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, STEPS),
            &[("kinema.step_delay_ms", "10")],
        ))
        .await;
    let written = record_writes(db.url, job.id.clone()).await;
    let mut watch = TimedWatch::open(&admin_b, &account, &job.id).await;
    let first = watch.next().await.expect("a snapshot");
    assert_eq!(state(&first), JobState::Queued, "{}", watch.trace());
    admin_a.cancel(&account, &blocker.id).await;

    watch.read_until_end().await;
    let kinds = watch.kinds();
    assert_eq!(kinds[0], JobEventKind::Snapshot);
    assert!(
        !kinds[1..].contains(&JobEventKind::Snapshot),
        "no SNAPSHOT besides the first: {}",
        watch.trace()
    );
    // Every step, once each, in order.
    let steps: Vec<u32> = watch
        .denoising_steps()
        .into_iter()
        .filter(|s| *s > 0)
        .collect();
    assert_eq!(
        steps,
        (1..=STEPS).collect::<Vec<_>>(),
        "events: {}",
        watch.trace()
    );
    let states: Vec<i32> = watch
        .events
        .iter()
        .filter(|(e, _)| e.kind == JobEventKind::StateChanged as i32)
        .map(|(e, _)| e.job.as_ref().unwrap().state)
        .collect();
    assert_eq!(
        states,
        vec![JobState::Running as i32, JobState::Succeeded as i32],
        "{}",
        watch.trace()
    );
    // The end is read whole: artifacts and money as GetJob shows them.
    let (last, _) = watch.events.last().unwrap();
    let end = last.job.clone().unwrap();
    assert_eq!(end, admin_b.get_job(&account, &job.id).await);
    assert!(!end.artifacts.is_empty() && end.debited_credits > 0);
    assert_eq!(step(&end), STEPS);

    // Delivery latency, reported (not asserted).
    let written = written.lock().unwrap().clone();
    let mut to_client = Vec::new();
    let mut to_replica = Vec::new();
    for (event, received) in &watch.events {
        let j = event.job.as_ref().unwrap();
        if event.kind != JobEventKind::Progress as i32 || j.stage != JobStage::Denoising as i32 {
            continue;
        }
        if let Some(at) = written.get(&step(j)) {
            to_client.push(received - at);
            let time = event.time.as_ref().unwrap();
            to_replica.push(time.seconds * 1000 + i64::from(time.nanos) / 1_000_000 - at);
        }
    }
    to_client.sort_unstable();
    to_replica.sort_unstable();
    if !to_client.is_empty() {
        eprintln!(
            "step written on A -> event built on B: p50 {} ms, p99 {} ms; -> B's client: p50 {} ms, p99 {} ms, max {} ms ({} steps)",
            percentile(&to_replica, 0.5),
            percentile(&to_replica, 0.99),
            percentile(&to_client, 0.5),
            percentile(&to_client, 0.99),
            to_client.last().unwrap(),
            to_client.len()
        );
    }
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_correctly_when_its_listener_missed_the_end() {
    let db = PgDatabase::create().await;
    let r = two_replicas(&db).await;
    let (admin_a, admin_b) = (r.a.admin().await, r.b.admin().await);
    let account = admin_a.create_account("watched").await;
    admin_a.grant(&account, 100_000).await;
    // Both replicas' pools open a few connections now, so they need no new ones while
    // the database refuses connections below.
    let mut warm = tokio::task::JoinSet::new();
    for client in [&admin_a, &admin_b] {
        for _ in 0..8 {
            let (client, account) = (client.clone(), account.clone());
            warm.spawn(async move { client.balance(&account).await });
        }
    }
    while warm.join_next().await.is_some() {}

    let job = admin_a
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, 12),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    let mut watch = TimedWatch::open(&admin_b, &account, &job.id).await;
    watch
        .until(|j| j.stage == JobStage::Denoising as i32 && step(j) >= 2)
        .await;

    // Cut every replica's listener and keep it from connecting again until the job
    // has ended: B's listener misses the rest of the job, its end included.
    let mut maintenance = PgConnection::connect(db.admin_url()).await.unwrap();
    let mut test_db = PgConnection::connect(db.url).await.unwrap();
    let allow = |on: bool| format!("ALTER DATABASE {} ALLOW_CONNECTIONS {on}", db.name());
    sqlx::query(&allow(false))
        .execute(&mut maintenance)
        .await
        .unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1) AS t",
    )
    .bind(JOB_LISTENER_APPLICATION_NAME)
    .fetch_one(&mut test_db)
    .await
    .unwrap();
    assert_eq!(cut, 2, "one listener per replica");
    bounded("the job's end", async {
        loop {
            let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(&job.id)
                .fetch_one(&mut test_db)
                .await
                .unwrap();
            if state == "SUCCEEDED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    sqlx::query(&allow(true))
        .execute(&mut maintenance)
        .await
        .unwrap();

    // Connected again, B's listener tells the watch to re-read: it sends the job as it
    // now is, SUCCEEDED, and ends.
    watch.read_until_end().await;
    let (last, _) = watch.events.last().unwrap();
    assert_eq!(
        JobEventKind::try_from(last.kind),
        Ok(JobEventKind::Snapshot),
        "{}",
        watch.trace()
    );
    let end = last.job.clone().unwrap();
    assert_eq!(state(&end), JobState::Succeeded, "{}", watch.trace());
    assert_eq!(end, admin_b.get_job(&account, &job.id).await);
    let steps = watch.denoising_steps();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps only grow: {steps:?}"
    );
    let log = std::fs::read_to_string(&r.b.log).unwrap();
    assert!(
        log.contains("watches re-read their jobs"),
        "B's log says its listener connected again"
    );
    drop(r);
}
