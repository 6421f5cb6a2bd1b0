//! End to end, on the test clock: retention (docs/api.md, "Retention"). A finished
//! job's video goes after --artifact-ttl-hours; its prompt, negative prompt and
//! metadata after --prompt-log-ttl-hours, from every API and from the database's
//! files (SQLite) — while the job, its money and its ledger stay and verify. A job
//! that finished later keeps its prompt until its own time.

mod common;

use common::commerce::{millis, DAY, HOUR};
use common::postgres::PgDatabase;
use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

const TTLS: &[&str] = &["--artifact-ttl-hours", "24", "--prompt-log-ttl-hours", "48"];

/// What one job was sent with: markers no other bytes of the run contain.
struct Sent {
    job: pb::Job,
    prompt: String,
    negative: String,
    meta_value: String,
}

async fn submit(client: &Client, account: &str, tag: &str, fail: bool) -> Sent {
    let unique = format!("{tag}{:016x}", rand_u64());
    let prompt = format!("a lighthouse at dusk, marker-p-{unique}");
    let negative = format!("blurry, marker-n-{unique}");
    let meta_value = format!("order-marker-m-{unique}");
    let mut req = pb::CreateJobRequest {
        prompt: prompt.clone(),
        negative_prompt: negative.clone(),
        ..job_request(account, 32, 32, 3, 8, 2)
    };
    req.metadata
        .insert("customer_order".into(), meta_value.clone());
    if fail {
        req.metadata
            .insert("kinema.fail_at".into(), "encode_video".into());
    }
    let job = client.create_job(req).await;
    let (_, job) = client.wait_terminal(account, &job.id).await;
    Sent {
        job,
        prompt,
        negative,
        meta_value,
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// The job as GetJob, ListJobs and a watch's snapshot show it: all three agree.
async fn seen(client: &Client, account: &str, job_id: &str) -> pb::Job {
    let got = client.get_job(account, job_id).await;
    let listed = client
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .expect("ListJobs")
        .into_inner()
        .jobs
        .into_iter()
        .find(|j| j.id == job_id)
        .expect("listed");
    let mut watch = client.watch(account, job_id).await;
    let snapshot = watch.until(|_| true).await;
    for other in [&listed, &snapshot] {
        assert_eq!(
            (&other.prompt, &other.negative_prompt, &other.metadata),
            (&got.prompt, &got.negative_prompt, &got.metadata),
            "every API shows the same request data"
        );
        assert_eq!(other.prompt_purged_at, got.prompt_purged_at);
    }
    got
}

fn assert_kept(job: &pb::Job, sent: &Sent) {
    assert_eq!(job.prompt, sent.prompt);
    assert_eq!(job.negative_prompt, sent.negative);
    assert_eq!(job.metadata["customer_order"], sent.meta_value);
    assert!(job.prompt_purged_at.is_none());
}

fn assert_purged(job: &pb::Job, sent: &Sent) {
    assert_eq!(job.prompt, "", "prompt purged");
    assert_eq!(job.negative_prompt, "");
    assert!(job.metadata.is_empty(), "{:?}", job.metadata);
    assert!(job.prompt_purged_at.is_some());
    // The job and its money stay.
    assert_eq!(job.id, sent.job.id);
    assert_eq!(job.state, sent.job.state);
    assert_eq!(
        (
            job.quoted_credits,
            job.debited_credits,
            job.refunded_credits
        ),
        (
            sent.job.quoted_credits,
            sent.job.debited_credits,
            sent.job.refunded_credits
        )
    );
    assert_eq!(job.finished_at, sent.job.finished_at);
}

/// Every file of the data dir's database (SQLite: the database, its WAL and shared
/// memory) searched for `marker`.
fn database_files_contain(data_dir: &std::path::Path, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("kinema.db") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("database file");
        if bytes.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            found.push(name);
        }
    }
    found
}

async fn retention_on(database_url: Option<&'static str>) {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            test_clock: true,
            fault_injection: true,
            database_url,
            extra_args: TTLS,
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("retention").await;
    admin.grant(&account, 1_000).await;
    let ledger_before = admin.ledger(&account, None).await.len();

    let early_ok = submit(&admin, &account, "a", false).await;
    let early_failed = submit(&admin, &account, "b", true).await;
    assert_eq!(state(&early_ok.job), JobState::Succeeded);
    assert_eq!(state(&early_failed.job), JobState::Failed);
    for sent in [&early_ok, &early_failed] {
        let job = seen(&admin, &account, &sent.job.id).await;
        assert_kept(&job, sent);
        // Visible: when the request data goes, and when the video does.
        let finished = millis(&job.finished_at);
        assert_eq!(millis(&job.prompt_expires_at), finished + 48 * HOUR);
        for a in &job.artifacts {
            assert_eq!(millis(&a.expires_at), finished + 24 * HOUR);
        }
    }
    if database_url.is_none() {
        assert!(!database_files_contain(&server.data_dir, &early_ok.prompt).is_empty());
    }

    // A day on: the video is gone, the prompts are not.
    admin.advance(DAY + HOUR).await;
    let s = expect_err(
        "a video past its artifact_ttl",
        admin
            .download(&account, &early_ok.job.id, pb::ArtifactKind::Video, 0)
            .await,
    );
    assert_status(&s, Code::NotFound, "ARTIFACT_EXPIRED");
    assert_kept(&seen(&admin, &account, &early_ok.job.id).await, &early_ok);
    let late = submit(&admin, &account, "c", false).await;

    // Past the early jobs' 48 hours (not the late one's): theirs are purged.
    admin.advance(DAY).await;
    for sent in [&early_ok, &early_failed] {
        assert_purged(&seen(&admin, &account, &sent.job.id).await, sent);
    }
    let late_seen = seen(&admin, &account, &late.job.id).await;
    assert_kept(&late_seen, &late);
    if database_url.is_none() {
        for sent in [&early_ok, &early_failed] {
            for marker in [&sent.prompt, &sent.negative, &sent.meta_value] {
                let found = database_files_contain(&server.data_dir, marker);
                assert!(found.is_empty(), "{marker:?} is still in {found:?}");
            }
        }
        assert!(!database_files_contain(&server.data_dir, &late.prompt).is_empty());
    }

    // And the late one at its own time.
    admin.advance(DAY).await;
    assert_purged(&seen(&admin, &account, &late.job.id).await, &late);

    // The money never moved: the ledger is what the jobs wrote, and it verifies.
    let ledger = admin.ledger(&account, None).await;
    assert_eq!(
        ledger.len() - ledger_before,
        // HOLD + DEBIT each; the failed one's REFUND.
        3 * 2 + 1,
        "{:?}",
        kinds(&ledger)
    );
    match database_url {
        None => {
            assert_ledger_verifies(&server.data_dir);
        }
        Some(url) => {
            let (ok, text) = ledger_verify(&["--database-url", url]);
            assert!(ok, "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_videos_go_at_their_time_on_sqlite() {
    retention_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_videos_go_at_their_time_on_postgres() {
    let db = PgDatabase::create().await;
    retention_on(Some(db.url)).await;
}
