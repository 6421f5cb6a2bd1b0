//! The S3 artifact store against a real S3-compatible server (s3s-fs on loopback,
//! installed by `scripts/ensure-s3-server`).

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kinema_artifacts::test_server::{S3Server, SECRET_KEY};
use kinema_artifacts::{ArtifactError, ArtifactStore, S3Artifacts, MIN_PART_SIZE};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const MIB: usize = 1 << 20;

/// Bytes that differ at every offset (xorshift), so a misplaced range shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn read_all(store: &dyn ArtifactStore, location: &str, offset: u64) -> (Vec<u8>, u64) {
    let mut download = store
        .read_from(location, offset)
        .await
        .unwrap_or_else(|e| panic!("read {location} from {offset}: {e}"));
    let mut data = Vec::new();
    download.reader.read_to_end(&mut data).await.unwrap();
    (data, download.total)
}

async fn exists(client: &Arc<dyn ObjectStore>, key: &str) -> bool {
    match client.head(&Path::from(key)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("head {key}: {e}"),
    }
}

/// A store over the raw client wrapped to record what it is asked, in 5 MiB parts.
fn recorded(server: &S3Server, prefix: &str) -> (S3Artifacts, Arc<support::Record>) {
    let recording = support::Recording::new(server.client());
    let record = recording.record.clone();
    let store = S3Artifacts::over(Arc::new(recording), prefix, "recorded")
        .unwrap()
        .with_part_size(MIN_PART_SIZE);
    (store, record)
}

fn assert_not_found<T>(result: Result<T, ArtifactError>, what: &str) {
    match result {
        Err(ArtifactError::NotFound(_)) => {}
        Err(e) => panic!("{what}: expected NotFound, got {e}"),
        Ok(_) => panic!("{what}: expected NotFound, got a result"),
    }
}

#[tokio::test]
async fn put_file_and_put_stream_round_trip_with_their_sha256() {
    let server = S3Server::start("videos");
    let store = server.artifacts("kinema/test").unwrap();
    let description = store.describe();
    assert!(
        description.contains("videos")
            && description.contains("kinema/test")
            && description.contains(&server.endpoint()),
        "{description}"
    );
    assert!(!description.contains(SECRET_KEY), "{description}");

    let dir = tempfile::tempdir().unwrap();
    let poster = pattern(70_000, 1);
    let source = dir.path().join("poster.png");
    std::fs::write(&source, &poster).unwrap();
    let stored = store
        .put_file("job-a", "poster.png", &source)
        .await
        .unwrap();
    assert_eq!(stored.location, "job-a/poster.png");
    assert_eq!(stored.bytes, poster.len() as u64);
    assert_eq!(stored.sha256, sha256(&poster));

    let video = pattern(300 * 1024, 2);
    let stored = store
        .put_stream("job-a", "video.mp4", &mut video.as_slice())
        .await
        .unwrap();
    assert_eq!(stored.location, "job-a/video.mp4");
    assert_eq!(
        (stored.bytes, stored.sha256.as_str()),
        (video.len() as u64, sha256(&video).as_str())
    );

    assert_eq!(
        read_all(&store, "job-a/poster.png", 0).await,
        (poster.clone(), poster.len() as u64)
    );
    assert_eq!(
        read_all(&store, "job-a/video.mp4", 0).await,
        (video.clone(), video.len() as u64)
    );
    // The location is relative to the prefix; the key carries it.
    let client = server.client();
    assert!(exists(&client, "kinema/test/job-a/video.mp4").await);
    assert!(!exists(&client, "job-a/video.mp4").await);
    // An empty upload is an empty object.
    let empty = store
        .put_stream("job-a", "empty.bin", &mut &b""[..])
        .await
        .unwrap();
    assert_eq!((empty.bytes, empty.sha256), (0, sha256(b"")));
    assert_eq!(
        read_all(&store, "job-a/empty.bin", 0).await,
        (Vec::new(), 0)
    );
}

#[tokio::test]
async fn a_file_larger_than_a_part_goes_up_in_parts_and_reads_back_identical() {
    let server = S3Server::start("videos");
    let (store, record) = recorded(&server, "p");
    let data = pattern(12 * MIB, 3);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("video.mp4");
    std::fs::write(&source, &data).unwrap();

    let stored = store
        .put_file("job-big", "video.mp4", &source)
        .await
        .unwrap();
    assert_eq!(stored.bytes, data.len() as u64);
    assert_eq!(stored.sha256, sha256(&data));
    assert_eq!(record.multipart_uploads.load(Ordering::SeqCst), 1);
    assert_eq!(
        *record.parts.lock().unwrap(),
        [5 * MIB, 5 * MIB, 2 * MIB],
        "12 MiB in 5 MiB parts"
    );
    assert_eq!(record.completed.load(Ordering::SeqCst), 1);
    assert_eq!(record.aborted.load(Ordering::SeqCst), 0);
    assert_eq!(record.puts.load(Ordering::SeqCst), 0);

    // Read back through a store configured from the environment, as a server's is.
    let reader = server.artifacts("p").unwrap();
    let (back, total) = read_all(&reader, &stored.location, 0).await;
    assert_eq!(total, data.len() as u64);
    assert!(back == data, "the object differs from what was uploaded");

    // Exactly one part's worth is one part; less is a single PUT.
    let one_part = pattern(MIN_PART_SIZE, 4);
    store
        .put_stream("job-big", "one-part.bin", &mut one_part.as_slice())
        .await
        .unwrap();
    assert_eq!(record.multipart_uploads.load(Ordering::SeqCst), 2);
    assert_eq!(record.parts.lock().unwrap().len(), 4);
    let small = pattern(MIN_PART_SIZE - 1, 5);
    store
        .put_stream("job-big", "small.bin", &mut small.as_slice())
        .await
        .unwrap();
    assert_eq!(record.multipart_uploads.load(Ordering::SeqCst), 2);
    assert_eq!(record.puts.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_all(&reader, "job-big/one-part.bin", 0).await.0,
        one_part
    );
    assert_eq!(read_all(&reader, "job-big/small.bin", 0).await.0, small);
}

#[tokio::test]
async fn reads_resume_from_any_offset() {
    let server = S3Server::start("videos");
    let store = server.artifacts("").unwrap();
    let data = pattern(6 * MIB + 123, 6);
    let stored = store
        .put_stream("job-r", "video.mp4", &mut data.as_slice())
        .await
        .unwrap();
    let len = data.len() as u64;
    for offset in [0, 1, 4096, 5 * MIB as u64, len - 1] {
        let (tail, total) = read_all(&store, &stored.location, offset).await;
        assert_eq!(total, len, "total from offset {offset}");
        assert!(
            tail == data[offset as usize..],
            "bytes from offset {offset} differ"
        );
    }
    // At or past the end: nothing to read, and the size, as from a local file.
    for offset in [len, len + 10] {
        assert_eq!(
            read_all(&store, &stored.location, offset).await,
            (Vec::new(), len)
        );
    }
}

#[tokio::test]
async fn missing_artifacts_are_not_found_and_deletes_are_idempotent() {
    let server = S3Server::start("videos");
    let store = server.artifacts("k").unwrap();
    assert_not_found(store.read_from("job-x/video.mp4", 0).await, "never stored");
    assert_not_found(
        store.read_from("job-x/video.mp4", 5).await,
        "never stored, offset",
    );

    for (job, name) in [
        ("job-1", "video.mp4"),
        ("job-1", "poster.png"),
        ("job-10", "video.mp4"),
    ] {
        store
            .put_stream(job, name, &mut pattern(1000, 7).as_slice())
            .await
            .unwrap();
    }
    store.delete("job-1/poster.png").await.unwrap();
    assert_not_found(store.read_from("job-1/poster.png", 0).await, "deleted");
    store.delete("job-1/poster.png").await.unwrap();
    store.delete("job-2/video.mp4").await.unwrap();

    store.delete_job("job-1").await.unwrap();
    assert_not_found(store.read_from("job-1/video.mp4", 0).await, "job deleted");
    // A job whose id starts with the deleted one's is another job.
    assert_eq!(read_all(&store, "job-10/video.mp4", 0).await.1, 1000);
    store.delete_job("job-1").await.unwrap();
    store.delete_job("never-stored").await.unwrap();

    for bad in ["", "../x", "job/../../x", "/abs", "a//b"] {
        assert!(
            matches!(
                store.read_from(bad, 0).await,
                Err(ArtifactError::BadLocation(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store.delete_job("a/b").await,
        Err(ArtifactError::BadLocation(_))
    ));
}

#[tokio::test]
async fn two_replicas_read_each_others_objects() {
    let server = S3Server::start("videos");
    let (a, b) = (
        server.artifacts("shared").unwrap(),
        server.artifacts("shared").unwrap(),
    );
    let from_a = pattern(40_000, 8);
    let stored = a
        .put_stream("job-a", "video.mp4", &mut from_a.as_slice())
        .await
        .unwrap();
    assert_eq!(read_all(&b, &stored.location, 0).await.0, from_a);
    let from_b = pattern(50_000, 9);
    let stored_b = b
        .put_stream("job-b", "video.mp4", &mut from_b.as_slice())
        .await
        .unwrap();
    assert_eq!(read_all(&a, &stored_b.location, 100).await.0, from_b[100..]);
    // One replica's retention sweep removes it for all.
    b.delete_job("job-a").await.unwrap();
    assert_not_found(a.read_from(&stored.location, 0).await, "deleted by b");
    // Another prefix is another store.
    let other = server.artifacts("elsewhere").unwrap();
    assert_not_found(other.read_from(&stored_b.location, 0).await, "other prefix");
}

/// Yields `good` bytes of a pattern, then an error.
struct FailingReader {
    data: Vec<u8>,
    at: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at == self.data.len() {
            return std::task::Poll::Ready(Err(std::io::Error::other("encoder died")));
        }
        let n = buf
            .remaining()
            .min(self.data.len() - self.at)
            .min(64 * 1024);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_upload_is_aborted_and_leaves_no_object() {
    let server = S3Server::start("videos");
    let client = server.client();

    // The input fails after a part and a half: the multipart upload is aborted.
    let (store, record) = recorded(&server, "f");
    let mut input = FailingReader {
        data: pattern(7 * MIB, 10),
        at: 0,
    };
    let err = store
        .put_stream("job-f", "video.mp4", &mut input)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert_eq!(record.multipart_uploads.load(Ordering::SeqCst), 1);
    assert_eq!(record.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(record.completed.load(Ordering::SeqCst), 0);
    assert!(!exists(&client, "f/job-f/video.mp4").await);

    // A part the server does not take: aborted too, the error says which operation.
    let (store, record) = recorded(&server, "f");
    record.fail_part.store(2, Ordering::SeqCst);
    let err = store
        .put_stream("job-g", "video.mp4", &mut pattern(12 * MIB, 11).as_slice())
        .await
        .unwrap_err();
    match &err {
        ArtifactError::ObjectStore {
            operation,
            location,
            ..
        } => {
            assert_eq!(*operation, "upload a part of");
            assert_eq!(location, "f/job-g/video.mp4");
        }
        other => panic!("expected ObjectStore, got {other}"),
    }
    assert_eq!(record.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(record.completed.load(Ordering::SeqCst), 0);
    assert!(!exists(&client, "f/job-g/video.mp4").await);

    // An input that fails before a part is full never reaches the bucket.
    let (store, record) = recorded(&server, "f");
    let mut input = FailingReader {
        data: pattern(1000, 12),
        at: 0,
    };
    assert!(matches!(
        store.put_stream("job-h", "video.mp4", &mut input).await,
        Err(ArtifactError::Io { .. })
    ));
    assert_eq!(record.puts.load(Ordering::SeqCst), 0);
    assert_eq!(record.multipart_uploads.load(Ordering::SeqCst), 0);
    assert!(!exists(&client, "f/job-h/video.mp4").await);

    // Nothing of the three is in the bucket's directory on the server's disk.
    let mut files = Vec::new();
    let mut dirs = vec![server.bucket_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert!(files.is_empty(), "left in the bucket: {files:?}");
}

#[tokio::test]
async fn wrong_credentials_or_bucket_fail_the_start_check_without_the_secret() {
    let server = S3Server::start("videos");
    assert!(server.artifacts("p").unwrap().check().await.is_ok());

    let mut vars = server.vars();
    for (k, v) in vars.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret-1234".to_string();
        }
    }
    let store = S3Artifacts::from_vars(&server.url("p"), vars).unwrap();
    let err = store.check().await.unwrap_err();
    assert!(matches!(err, ArtifactError::ObjectStore { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("not-the-secret-1234"), "{text}");

    let missing = S3Artifacts::from_vars("s3://no-such-bucket/p", server.vars()).unwrap();
    assert!(
        missing.check().await.is_err(),
        "a missing bucket passed the check; server log:\n{}",
        server.log()
    );
}
