//! End to end with `--artifacts s3://…` on a real S3-compatible server (s3s-fs, from
//! `scripts/ensure-s3-server`): videos go to the bucket, download from there (from
//! any offset, through any replica), and the retention sweep deletes them there.

mod common;

use common::commerce::HOUR;
use common::postgres::PgDatabase;
use common::s3::s3_env;
use common::*;
use kinema_artifacts::test_server::S3Server;
use kinema_proto::v1 as pb;
use tonic::Code;

const BUCKET: &str = "kinema-videos";

fn video(job: &pb::Job) -> &pb::Artifact {
    job.artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Video as i32)
        .unwrap_or_else(|| panic!("no video: {}", describe_job(job)))
}

async fn run_job(admin: &Client, name: &str) -> (String, pb::Job) {
    let account = admin.create_account(name).await;
    admin.grant(&account, 100).await;
    let job = admin
        .create_job(job_request(&account, 160, 96, 17, 8, 4))
        .await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    (account, done)
}

/// The bucket's objects under `<prefix>/<job id>/`, one of which holds `expected`.
async fn assert_in_bucket(s3: &S3Server, prefix: &str, job_id: &str, expected: &[u8]) {
    let objects = s3.list(&format!("{prefix}/{job_id}")).await;
    let mut found = false;
    for (key, size) in &objects {
        if *size == expected.len() as u64 {
            found |= s3.object(key).await.as_deref() == Some(expected);
        }
    }
    assert!(
        found,
        "the video is not in the bucket under {prefix}/{job_id}: {objects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_live_in_the_bucket_download_from_any_offset_and_expire_there() {
    let s3 = S3Server::start(BUCKET);
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            test_clock: true,
            extra_args: &[
                "--artifacts",
                "s3://kinema-videos/e2e",
                "--artifact-ttl-hours",
                "1",
            ],
            env: s3_env(&s3),
            ..Opts::default()
        },
    )
    .await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("S3 bucket kinema-videos prefix e2e/ at http://127.0.0.1:"),
        "the store is logged at start:\n{log}"
    );
    let admin = server.admin().await;
    let (account, done) = run_job(&admin, "s3").await;
    let artifact = video(&done);

    let (data, total) = admin
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download");
    assert_eq!(total, artifact.bytes);
    assert_eq!(data.len() as u64, artifact.bytes);
    assert_eq!(sha256_hex(&data), artifact.sha256);
    for offset in [1, artifact.bytes / 2, artifact.bytes - 1] {
        let (tail, total) = admin
            .download(&account, &done.id, pb::ArtifactKind::Video, offset)
            .await
            .unwrap_or_else(|s| panic!("download from {offset}: {s:?}"));
        assert_eq!(total, artifact.bytes);
        assert!(
            tail == data[offset as usize..],
            "bytes from {offset} differ"
        );
    }

    let (rest, _) = admin
        .download(&account, &done.id, pb::ArtifactKind::Video, artifact.bytes)
        .await
        .expect("download from the end");
    assert!(rest.is_empty(), "{} bytes past the end", rest.len());

    // In the bucket, not on the server's disk.
    assert_in_bucket(&s3, "e2e", &done.id, &data).await;
    assert!(
        !server.data_dir.join("artifacts").join(&done.id).exists(),
        "nothing of the job in the data dir's artifacts/"
    );

    // Past the retention, the sweep deletes the objects from the bucket.
    admin.advance(HOUR + 1_000).await;
    let left = s3.list(&format!("e2e/{}", done.id)).await;
    assert!(left.is_empty(), "left in the bucket: {left:?}");
    let gone = admin
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await;
    assert_status(
        &expect_err("a video past its retention", gone),
        Code::NotFound,
        "ARTIFACT_EXPIRED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_the_videos_another_replica_made() {
    let s3 = S3Server::start(BUCKET);
    let db = PgDatabase::create().await;
    let opts = Opts {
        database_url: Some(db.url),
        extra_args: &["--artifacts", "s3://kinema-videos/replicas"],
        env: s3_env(&s3),
        ..Opts::default()
    };
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let a = Server::start(&dir_a, opts).await;
    let admin_a = a.admin().await;
    let (account, done) = run_job(&admin_a, "replicas").await;
    let artifact = video(&done);

    // Started after the job ended: B never ran it, and reads it from the bucket. (The
    // first replica wrote the admin key file; the others' is copied, as an operator
    // would.)
    std::fs::copy(&a.admin_key_file, dir_b.data_dir().join("admin-api-key")).unwrap();
    let b = Server::start(&dir_b, opts).await;
    let admin_b = b.admin().await;
    let (data, total) = admin_b
        .download(&account, &done.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download through the other replica");
    assert_eq!(total, artifact.bytes);
    assert_eq!(sha256_hex(&data), artifact.sha256);
    let (tail, _) = admin_b
        .download(&account, &done.id, pb::ArtifactKind::Video, 100)
        .await
        .expect("resumed through the other replica");
    assert!(tail == data[100..], "bytes from 100 differ");
    let b_log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        !b_log.contains("other replicas cannot serve"),
        "no local-artifacts warning with object storage:\n{b_log}"
    );

    // A replica on the same database with local artifacts is warned about.
    let dir_c = TestDir::new();
    std::fs::copy(&a.admin_key_file, dir_c.data_dir().join("admin-api-key")).unwrap();
    let c = Server::start(
        &dir_c,
        Opts {
            database_url: Some(db.url),
            ..Opts::default()
        },
    )
    .await;
    let c_log = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        c_log.contains("other replicas cannot serve"),
        "a replica with local artifacts on a shared database says so:\n{c_log}"
    );
}
