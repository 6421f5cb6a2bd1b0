//! End to end with several CPU workers (`--cpu-workers 2`): SIGKILL while both run a
//! job, restart, and every job ends SUCCEEDED or FAILED with its refund, never both,
//! never lost; ListWorkers / DrainWorker over gRPC and the CLI; the Prometheus
//! exporter (`--metrics-listen`).

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

const TWO_WORKERS: &[&str] = &["--cpu-workers", "2"];

async fn workers(client: &Client) -> Vec<pb::Worker> {
    client
        .admin()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("ListWorkers")
        .into_inner()
        .workers
}

async fn running(client: &Client, account: &str) -> Vec<pb::Job> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .jobs()
            .list_jobs(pb::ListJobsRequest {
                account_id: account.into(),
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListJobs")
            .into_inner();
        out.extend(
            page.jobs
                .into_iter()
                .filter(|j| state(j) == JobState::Running),
        );
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_two_workers_survive_a_sigkill() {
    let dir = TestDir::new();
    let opts = || Opts {
        fault_injection: true,
        extra_args: TWO_WORKERS,
        ..Opts::default()
    };
    let mut server = Server::start(&dir, opts()).await;
    let admin_key = server.admin_key.clone();
    let admin = server.admin().await;
    let before = workers(&admin).await;
    assert_eq!(before.len(), 2, "{before:#?}");
    assert_ne!(before[0].owner, before[1].owner);
    assert!(before.iter().all(|w| w.device == "cpu"), "{before:#?}");

    let account = admin.create_account("two-workers").await;
    const GRANTED: i64 = 500;
    admin.grant(&account, GRANTED).await;
    let (w, h, frames, fps, steps) = (32, 32, 5, 8, 20);
    let quote = expected_quote(w, h, frames, fps, steps);
    let mut ids = Vec::new();
    for i in 0..6 {
        let meta: &[(&str, &str)] = match i {
            // One fails for good (no retry), one fails at storage every time.
            4 => &[("kinema.fail_at", "step:3"), ("kinema.step_delay_ms", "50")],
            5 => &[("kinema.fail_at", "store")],
            _ => &[("kinema.step_delay_ms", "100")],
        };
        let job = admin
            .create_job(with_meta(
                job_request(&account, w, h, frames, fps, steps),
                meta,
            ))
            .await;
        ids.push(job.id);
    }
    // Kill while both workers run a job.
    bounded("two jobs running", async {
        loop {
            if running(&admin, &account).await.len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let busy = workers(&admin).await;
    assert!(
        busy.iter().all(|w| w.current_job_ids.len() == 1),
        "{busy:#?}"
    );
    server.kill().await;

    let server = Server::start(&dir, opts()).await;
    let admin = server.client(Some(&admin_key)).await;
    let mut succeeded = 0;
    for id in &ids {
        let (_, done) = admin.wait_terminal(&account, id).await;
        let ctx = describe_job(&done);
        let kinds = kinds(&admin.ledger(&account, Some(id)).await);
        match state(&done) {
            JobState::Succeeded => {
                succeeded += 1;
                assert_eq!(
                    (done.debited_credits, done.refunded_credits),
                    (quote, 0),
                    "{ctx}"
                );
                assert_eq!(
                    kinds,
                    [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
                    "{ctx}"
                );
            }
            JobState::Failed => {
                assert_eq!(
                    (done.debited_credits, done.refunded_credits),
                    (quote, quote),
                    "{ctx}"
                );
                assert_eq!(
                    kinds,
                    [
                        LedgerEntryKind::Hold,
                        LedgerEntryKind::Debit,
                        LedgerEntryKind::Refund
                    ],
                    "{ctx}"
                );
            }
            other => panic!("{other:?}: {ctx}"),
        }
    }
    assert_eq!(succeeded, 4, "the four clean jobs succeed");
    let balance = admin.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held),
        (GRANTED - 4 * quote, 0),
        "{balance:?}"
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_listed_drained_and_measured() {
    let metrics_addr = free_loopback_addr();
    let args: &'static [&'static str] = Box::leak(Box::new([
        "--cpu-workers",
        "2",
        "--metrics-listen",
        metrics_addr,
        "--preload",
        "testsrc",
    ]));
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            fault_injection: true,
            extra_args: args,
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    // --preload: both workers load testsrc before any job asks for it.
    bounded("preloaded", async {
        loop {
            let listed = workers(&admin).await;
            if listed.iter().all(|w| {
                w.resident_models
                    .iter()
                    .map(|r| r.model.as_str())
                    .collect::<Vec<_>>()
                    == ["testsrc"]
            }) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let account = admin.create_account("measured").await;
    admin.grant(&account, 500).await;
    let ok = admin
        .create_job(job_request(&account, 32, 32, 3, 8, 2))
        .await;
    let bad = admin
        .create_job(with_meta(
            job_request(&account, 32, 32, 3, 8, 2),
            &[("kinema.fail_at", "encode_video")],
        ))
        .await;
    assert_eq!(
        state(&admin.wait_terminal(&account, &ok.id).await.1),
        JobState::Succeeded
    );
    assert_eq!(
        state(&admin.wait_terminal(&account, &bad.id).await.1),
        JobState::Failed
    );

    let text = scrape_metrics(metrics_addr).await;
    for needle in [
        "kinema_jobs_finished_total{",
        "state=\"SUCCEEDED\"",
        "code=\"ENCODER_ERROR\"",
        "kinema_leases_total",
        "kinema_model_loads_total",
        "kinema_stage_seconds",
        "kinema_queue_wait_seconds",
        "kinema_model_resident_bytes{device=\"cpu\"}",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }

    // The CLI lists both workers; testsrc is resident where it ran.
    let (success, out) = server.cli(&["workers", "list", "--json"]).await;
    assert!(success, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2, "{out}");
    let done: u64 = list.iter().map(|w| w["jobs_done"].as_u64().unwrap()).sum();
    assert_eq!(done, 2, "{out}");
    assert!(
        list.iter()
            .any(|w| w["resident_models"][0]["model"] == "testsrc"),
        "{out}"
    );

    // Drain one: it shows DRAINING and the other takes the next jobs.
    let owner = list[0]["owner"].as_str().unwrap().to_string();
    let (success, out) = server.cli(&["workers", "drain", &owner]).await;
    assert!(success && out.contains("draining"), "{out}");
    let listed = workers(&admin).await;
    let drained = listed.iter().find(|w| w.owner == owner).unwrap();
    assert_eq!(drained.state, pb::WorkerState::Draining as i32);
    let next = admin
        .create_job(job_request(&account, 32, 32, 3, 8, 2))
        .await;
    assert_eq!(
        state(&admin.wait_terminal(&account, &next.id).await.1),
        JobState::Succeeded
    );
    let after = workers(&admin).await;
    let drained_after = after.iter().find(|w| w.owner == owner).unwrap();
    assert_eq!(drained_after.jobs_done, drained.jobs_done, "{after:#?}");

    let err = admin
        .admin()
        .drain_worker(pb::DrainWorkerRequest {
            owner: "nobody".into(),
        })
        .await
        .expect_err("unknown worker");
    assert_status(&err, Code::NotFound, "WORKER_NOT_FOUND");
    let account_key = admin.create_key(KeyRole::Account, &account).await;
    let err = admin
        .with_key(Some(&account_key))
        .admin()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect_err("admin only");
    assert_eq!(err.code(), Code::PermissionDenied);
}
