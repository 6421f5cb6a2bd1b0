//! Remote GPU worker nodes (`kinema worker`): a control plane with no workers of its
//! own, nodes that lease over `WorkerService` with worker keys, uploads that reach the
//! artifact store once, a node killed mid-job whose job finishes on another, drains,
//! and keys that only reach their own jobs.

mod common;

use common::nodes::{remote_devices, worker_key, Node};
use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

const CONTROL_PLANE: &[&str] = &["--cpu-workers", "0"];

fn opts() -> Opts {
    Opts {
        fault_injection: true,
        extra_args: CONTROL_PLANE,
        lease_ms: Some(2_000),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_nodes_run_jobs_and_a_killed_nodes_job_finishes_elsewhere() {
    let dir = TestDir::new();
    let server = Server::start(&dir, opts()).await;
    let admin = server.admin().await;
    let account = admin.create_account("nodes").await;
    admin.grant(&account, 10_000).await;
    let (_, key_a) = worker_key(&admin, "node a").await;
    let (_, key_b) = worker_key(&admin, "node b").await;
    let mut a = Node::start(&dir, &server.url(), &key_a, "a", &["--cpu-workers", "1"]);
    let b = Node::start(&dir, &server.url(), &key_b, "b", &["--cpu-workers", "1"]);
    let devices = remote_devices(&admin, 2).await;
    assert!(
        devices.iter().any(|d| d.owner.ends_with("/a-w0")),
        "{devices:?}"
    );
    assert!(
        devices.iter().any(|d| d.owner.ends_with("/b-w0")),
        "{devices:?}"
    );

    // Jobs run on the nodes; each video reaches the artifact store once and downloads
    // with the SHA-256 the job records.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            admin
                .create_job(job_request(&account, 64, 48, 9, 8, 2))
                .await
                .id,
        );
    }
    for id in &ids {
        let (_, done) = admin.wait_terminal(&account, id).await;
        assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
        let video = done
            .artifacts
            .iter()
            .find(|x| x.kind == pb::ArtifactKind::Video as i32)
            .expect("video artifact");
        let (data, total) = admin
            .download(&account, id, pb::ArtifactKind::Video, 0)
            .await
            .expect("download");
        assert_eq!(
            (data.len() as u64, sha256_hex(&data)),
            (total, video.sha256.clone())
        );
        assert_eq!(done.usage.as_ref().map(|u| u.attempts), Some(1));
    }

    // A job runs slowly on whichever node takes it; that node dies mid-job. The lease
    // lapses, the job goes back to the queue and finishes on the other node, debited
    // once.
    let slow = admin
        .create_job(with_meta(
            job_request(&account, 64, 48, 9, 8, 8),
            &[("kinema.step_delay_ms", "800")],
        ))
        .await;
    admin.wait_step(&account, &slow.id, 1).await;
    // The device running it says so in its next status report (every 2 s).
    let find_holder = async {
        loop {
            let holder = remote_devices(&admin, 2)
                .await
                .into_iter()
                .find(|w| w.current_job_ids.contains(&slow.id));
            if let Some(w) = holder {
                return w.owner;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let holder = bounded("the device running the slow job", find_holder).await;
    let mut survivor = if holder.ends_with("/a-w0") {
        a.kill().await;
        b
    } else {
        let mut dead = b;
        dead.kill().await;
        a
    };
    let (_, done) = admin.wait_terminal(&account, &slow.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    assert_eq!(done.usage.as_ref().map(|u| u.attempts), Some(2));
    let entries = admin.ledger(&account, Some(&slow.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
        "debited once, never refunded"
    );

    // SIGTERM drains the node and it exits.
    assert!(survivor.terminate().await.success());
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_remote_device_stops_leasing() {
    let dir = TestDir::new();
    let server = Server::start(&dir, opts()).await;
    let admin = server.admin().await;
    let account = admin.create_account("drain").await;
    admin.grant(&account, 1_000).await;
    let (_, key) = worker_key(&admin, "node").await;
    let _node = Node::start(&dir, &server.url(), &key, "n", &["--cpu-workers", "1"]);
    let owner = remote_devices(&admin, 1).await[0].owner.clone();
    let drained = admin
        .admin()
        .drain_worker(pb::DrainWorkerRequest {
            owner: owner.clone(),
        })
        .await
        .expect("DrainWorker")
        .into_inner();
    assert_eq!(drained.state, pb::WorkerState::Draining as i32);
    // The node hears of it at its next report and stops leasing: a job stays queued.
    let wait = async {
        loop {
            let w = remote_devices(&admin, 1).await;
            if w[0].state == pb::WorkerState::Draining as i32 && w[0].current_job_ids.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    bounded("the node reports DRAINING", wait).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let job = admin
        .create_job(job_request(&account, 64, 48, 9, 8, 2))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        state(&admin.get_job(&account, &job.id).await),
        JobState::Queued
    );
    let unknown = admin
        .admin()
        .drain_worker(pb::DrainWorkerRequest {
            owner: "key_none/nowhere-w0".into(),
        })
        .await;
    assert_status(
        &expect_err("draining nothing", unknown),
        Code::NotFound,
        "WORKER_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_keys_reach_only_worker_calls_and_their_own_jobs() {
    let dir = TestDir::new();
    let server = Server::start(&dir, opts()).await;
    let admin = server.admin().await;
    let account = admin.create_account("keys").await;
    admin.grant(&account, 1_000).await;
    let account_key = admin.create_key(KeyRole::Account, &account).await;
    let (w1_id, w1) = worker_key(&admin, "one").await;
    let (_, w2) = worker_key(&admin, "two").await;
    let register = |node: &str| pb::RegisterWorkerRequest {
        node: node.into(),
        devices: vec!["cpu".into()],
        models: vec!["testsrc".into()],
    };

    // Without a worker key, WorkerService is closed.
    for (key, code, reason) in [
        (None, Code::Unauthenticated, "API_KEY_MISSING"),
        (
            Some("kin_not_a_key"),
            Code::Unauthenticated,
            "API_KEY_INVALID",
        ),
        (Some(account_key.as_str()), Code::PermissionDenied, "ROLE"),
        (
            Some(server.admin_key.as_str()),
            Code::PermissionDenied,
            "ROLE",
        ),
    ] {
        let refused = admin
            .with_key(key)
            .workers()
            .register_worker(register("x"))
            .await;
        assert_status(&expect_err("RegisterWorker", refused), code, reason);
    }
    // And a worker key reaches nothing else.
    let w1_client = admin.with_key(Some(&w1));
    let refused = w1_client.jobs().list_models(pb::ListModelsRequest {}).await;
    assert_status(
        &expect_err("ListModels with a worker key", refused),
        Code::PermissionDenied,
        "ROLE",
    );

    // Node one leases a job.
    let owner1 = w1_client
        .workers()
        .register_worker(register("one"))
        .await
        .unwrap()
        .into_inner()
        .owners[0]
        .clone();
    assert!(owner1.starts_with(&format!("{w1_id}/")), "{owner1}");
    let job = admin
        .create_job(job_request(&account, 64, 48, 9, 8, 2))
        .await;
    let leased = w1_client
        .workers()
        .lease_job(pb::LeaseJobRequest {
            owner: owner1.clone(),
            models: vec!["testsrc".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .expect("a job to lease");
    assert_eq!(leased.id, job.id);

    // Node two can neither see, report on, upload for nor end it: not found, whether it
    // names its own owner or node one's.
    let w2_client = admin.with_key(Some(&w2));
    let owner2 = w2_client
        .workers()
        .register_worker(register("two"))
        .await
        .unwrap()
        .into_inner()
        .owners[0]
        .clone();
    for owner in [&owner2, &owner1] {
        let mut w = w2_client.workers();
        let progress = w
            .report_progress(pb::ReportProgressRequest {
                owner: owner.clone(),
                job_id: job.id.clone(),
                stage: pb::JobStage::Denoising as i32,
                step: 1,
            })
            .await;
        assert_status(
            &expect_err("progress on another's job", progress),
            Code::NotFound,
            "JOB_NOT_FOUND",
        );
        let complete = w
            .complete_job(pb::CompleteJobRequest {
                owner: owner.clone(),
                job_id: job.id.clone(),
                ..Default::default()
            })
            .await;
        assert_status(
            &expect_err("completing another's job", complete),
            Code::NotFound,
            "JOB_NOT_FOUND",
        );
        let fail = w
            .fail_job(pb::FailJobRequest {
                owner: owner.clone(),
                job_id: job.id.clone(),
                failure: Some(pb::JobFailure {
                    code: "MODEL_ERROR".into(),
                    message: "x".into(),
                    retryable: false,
                }),
                ..Default::default()
            })
            .await;
        assert_status(
            &expect_err("failing another's job", fail),
            Code::NotFound,
            "JOB_NOT_FOUND",
        );
        let seen = w
            .get_leased_job(pb::GetLeasedJobRequest {
                owner: owner.clone(),
                job_id: job.id.clone(),
            })
            .await;
        assert_status(
            &expect_err("reading another's job", seen),
            Code::NotFound,
            "JOB_NOT_FOUND",
        );
        let upload = w
            .upload_artifact(tokio_stream::iter(vec![
                pb::UploadArtifactRequest {
                    part: Some(pb::upload_artifact_request::Part::Header(
                        pb::ArtifactUpload {
                            owner: owner.clone(),
                            job_id: job.id.clone(),
                            name: "video.mp4".into(),
                        },
                    )),
                },
                pb::UploadArtifactRequest {
                    part: Some(pb::upload_artifact_request::Part::Data(
                        b"not a video".to_vec(),
                    )),
                },
            ]))
            .await;
        assert_status(
            &expect_err("uploading for another's job", upload),
            Code::NotFound,
            "JOB_NOT_FOUND",
        );
    }

    // Node one uploads and completes it; the video is what it sent.
    let mut w = w1_client.workers();
    let body = b"a video, as far as this test knows".to_vec();
    let stored = w
        .upload_artifact(tokio_stream::iter(vec![
            pb::UploadArtifactRequest {
                part: Some(pb::upload_artifact_request::Part::Header(
                    pb::ArtifactUpload {
                        owner: owner1.clone(),
                        job_id: job.id.clone(),
                        name: "video.mp4".into(),
                    },
                )),
            },
            pb::UploadArtifactRequest {
                part: Some(pb::upload_artifact_request::Part::Data(body[..10].to_vec())),
            },
            pb::UploadArtifactRequest {
                part: Some(pb::upload_artifact_request::Part::Data(body[10..].to_vec())),
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stored.bytes, stored.sha256.clone()),
        (body.len() as u64, sha256_hex(&body))
    );
    let finished = w
        .complete_job(pb::CompleteJobRequest {
            owner: owner1.clone(),
            job_id: job.id.clone(),
            artifacts: vec![pb::CompletedArtifact {
                kind: pb::ArtifactKind::Video as i32,
                mime: "video/mp4".into(),
                location: stored.location.clone(),
                bytes: stored.bytes,
                sha256: stored.sha256.clone(),
            }],
            usage_json: "{}".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finished.job.unwrap().state, pb::JobState::Succeeded as i32);
    let (data, _) = admin
        .download(&account, &job.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download");
    assert_eq!(data, body);

    // A revoked worker key is refused at once.
    admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest { key_id: w1_id })
        .await
        .unwrap();
    let refused = w1_client.workers().register_worker(register("one")).await;
    assert_status(
        &expect_err("a revoked worker key", refused),
        Code::Unauthenticated,
        "API_KEY_INVALID",
    );
    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_remote_node_and_a_drained_node_hands_its_job_back() {
    let dir = TestDir::new();
    let server = Server::start(&dir, opts()).await;
    let admin = server.admin().await;
    let account = admin.create_account("cancel and drain").await;
    admin.grant(&account, 1_000).await;
    let (_, key) = worker_key(&admin, "node").await;
    let mut node = Node::start(
        &dir,
        &server.url(),
        &key,
        "n",
        &["--cpu-workers", "1", "--drain-grace-ms", "300"],
    );
    remote_devices(&admin, 1).await;
    let slow = || {
        with_meta(
            job_request(&account, 64, 48, 9, 8, 20),
            &[("kinema.step_delay_ms", "300")],
        )
    };

    // A cancel while the node runs the job stops it at its next step, refunded.
    let job = admin.create_job(slow()).await;
    admin.wait_step(&account, &job.id, 1).await;
    admin.cancel(&account, &job.id).await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Cancelled, "{}", describe_job(&done));
    assert_eq!(
        (done.debited_credits, done.refunded_credits),
        (done.quoted_credits, done.quoted_credits)
    );
    let stopped_at = done.progress.as_ref().map(|p| p.step).unwrap_or_default();
    assert!(stopped_at < 20, "stopped at step {stopped_at} of 20");

    // SIGTERM drains the node: past its grace, its running job goes back to the
    // queue, debited once, and a node started later finishes it.
    let job = admin.create_job(slow()).await;
    admin.wait_step(&account, &job.id, 1).await;
    assert!(node.terminate().await.success());
    let back = admin.get_job(&account, &job.id).await;
    assert_eq!(state(&back), JobState::Queued, "{}", describe_job(&back));
    let _other = Node::start(&dir, &server.url(), &key, "m", &["--cpu-workers", "1"]);
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    assert_eq!(done.usage.as_ref().map(|u| u.attempts), Some(2));
    assert_eq!(
        kinds(&admin.ledger(&account, Some(&job.id)).await),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit]
    );
    assert_ledger_verifies(&server.data_dir);
}
