//! A whole cluster on loopback: a real PostgreSQL, a real S3-compatible server
//! (s3s-fs), two `kinema serve` replicas with no workers of their own, and two
//! `kinema worker` nodes, one connected to each replica. Jobs submitted round-robin to
//! both replicas all finish; every video downloads through either replica with its
//! recorded SHA-256; a node killed mid-job has its job finished by the other; a watch
//! on one replica sees every step of a job a node leased through the other; the ledger
//! verifies, and no job was debited (or succeeded) twice.

mod common;

use common::nodes::{remote_devices, worker_key, Node};
use common::postgres::PgDatabase;
use common::s3::s3_env;
use common::*;
use kinema_artifacts::test_server::S3Server;
use kinema_proto::v1 as pb;

const BUCKET: &str = "kinema-cluster";
const JOBS: usize = 200;

fn video(job: &pb::Job) -> &pb::Artifact {
    job.artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Video as i32)
        .unwrap_or_else(|| panic!("no video: {}", describe_job(job)))
}

/// Waits until a device lists `job_id` among its current jobs; returns its owner.
async fn holder_of(admin: &Client, job_id: &str) -> String {
    let find = async {
        loop {
            if let Some(w) = remote_devices(admin, 2)
                .await
                .into_iter()
                .find(|w| w.current_job_ids.iter().any(|j| j == job_id))
            {
                return w.owner;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    bounded("the device running the job", find).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_and_two_nodes_run_every_job_once() {
    let s3 = S3Server::start(BUCKET);
    let db = PgDatabase::create().await;
    let opts = Opts {
        database_url: Some(db.url),
        fault_injection: true,
        lease_ms: Some(2_000),
        extra_args: &[
            "--cpu-workers",
            "0",
            "--artifacts",
            "s3://kinema-cluster/videos",
        ],
        env: s3_env(&s3),
        ..Opts::default()
    };
    let (dir_a, dir_b, dir_nodes) = (TestDir::new(), TestDir::new(), TestDir::new());
    let a = Server::start(&dir_a, opts).await;
    std::fs::copy(&a.admin_key_file, dir_b.data_dir().join("admin-api-key")).unwrap();
    let b = Server::start(&dir_b, opts).await;
    let (admin_a, admin_b) = (a.admin().await, b.admin().await);
    let account = admin_a.create_account("cluster").await;
    admin_a.grant(&account, 100_000).await;
    let (_, key_1) = worker_key(&admin_a, "node 1").await;
    let (_, key_2) = worker_key(&admin_a, "node 2").await;

    // Node 1 alone, connected to replica A: a watch on replica B sees every step of a
    // job it leased through A, in order, and its end.
    let mut node_1 = Node::start(&dir_nodes, &a.url(), &key_1, "one", &["--cpu-workers", "1"]);
    remote_devices(&admin_b, 1).await;
    let watched = admin_a
        .create_job(with_meta(
            job_request(&account, 64, 48, 9, 8, 6),
            &[("kinema.step_delay_ms", "150")],
        ))
        .await;
    let mut watch = admin_b.watch(&account, &watched.id).await;
    let done = watch.until(is_terminal).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    let steps: Vec<u32> = watch
        .events
        .iter()
        .filter_map(|e| e.job.as_ref())
        .filter(|j| j.stage == JobStage::Denoising as i32)
        .filter_map(|j| j.progress.as_ref().map(|p| p.step))
        .filter(|s| *s > 0)
        .collect();
    let mut distinct = steps.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        (1..=6).collect::<Vec<_>>(),
        "steps seen on B: {steps:?}"
    );

    // Node 2 joins through replica B; jobs go round-robin to both replicas.
    let node_2 = Node::start(&dir_nodes, &b.url(), &key_2, "two", &["--cpu-workers", "1"]);
    remote_devices(&admin_a, 2).await;
    let admins = [&admin_a, &admin_b];
    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let job = admins[i % 2]
            .create_job(job_request(&account, 32, 32, 5, 8, 1))
            .await;
        ids.push(job.id);
    }
    for (i, id) in ids.iter().enumerate() {
        let (_, done) = admins[i % 2].wait_terminal(&account, id).await;
        assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
        // Through the replica the job was not submitted to.
        let other = admins[(i + 1) % 2];
        let (data, total) = other
            .download(&account, id, pb::ArtifactKind::Video, 0)
            .await
            .unwrap_or_else(|s| panic!("download of {id} through the other replica: {s:?}"));
        let artifact = video(&done);
        assert_eq!(total, artifact.bytes);
        assert_eq!(sha256_hex(&data), artifact.sha256, "{id}");
    }
    // Both nodes worked.
    let devices = remote_devices(&admin_a, 2).await;
    assert!(
        devices.iter().all(|d| d.jobs_done > 0),
        "jobs done per device: {:?}",
        devices
            .iter()
            .map(|d| (&d.owner, d.jobs_done))
            .collect::<Vec<_>>()
    );

    // A node dies mid-job: its lease lapses and the other node finishes the job.
    let slow = admin_b
        .create_job(with_meta(
            job_request(&account, 64, 48, 9, 8, 8),
            &[("kinema.step_delay_ms", "700")],
        ))
        .await;
    admin_b.wait_step(&account, &slow.id, 1).await;
    let holder = holder_of(&admin_a, &slow.id).await;
    let mut survivor = if holder.ends_with("/one-w0") {
        node_1.kill().await;
        node_2
    } else {
        let mut dead = node_2;
        dead.kill().await;
        node_1
    };
    let (_, finished) = admin_a.wait_terminal(&account, &slow.id).await;
    assert_eq!(
        state(&finished),
        JobState::Succeeded,
        "{}",
        describe_job(&finished)
    );
    assert_eq!(finished.usage.as_ref().map(|u| u.attempts), Some(2));
    let (data, _) = admin_b
        .download(&account, &slow.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("the finished job's video");
    assert_eq!(sha256_hex(&data), video(&finished).sha256);

    // Every job debited once and never refunded; the ledger verifies.
    let entries = admin_a.ledger(&account, None).await;
    let mut all = ids.clone();
    all.push(watched.id.clone());
    all.push(slow.id.clone());
    for id in &all {
        let of_job: Vec<LedgerEntryKind> = kinds(
            &entries
                .iter()
                .filter(|e| e.job_id == *id)
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            of_job,
            [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
            "the ledger of {id}"
        );
    }
    assert!(survivor.terminate().await.success());
    assert_verify_passes(&["--database-url", db.url]);
}
