//! A real S3-compatible server for tests: `s3s-fs` (installed by
//! `scripts/ensure-s3-server`) serving a temporary directory on a free loopback port,
//! with static credentials. Tests only (the `test-server` feature).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{ArtifactError, S3Artifacts};

pub const ACCESS_KEY: &str = "kinema-test-access";
pub const SECRET_KEY: &str = "kinema-test-secret-key";

/// A running s3s-fs with one bucket; killed on drop.
pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
    pub bucket: String,
    root: tempfile::TempDir,
}

/// The s3s-fs binary: `KINEMA_S3_SERVER`, else where `scripts/ensure-s3-server`
/// caches it. Panics, saying how to install it, when it is not there.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KINEMA_S3_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KINEMA_S3_SERVER={} is not a file; run scripts/ensure-s3-server",
            path.display()
        );
        return path;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-s3-server");
    let text = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("reading {}: {e}", script.display()));
    // The script pins the version; its cache path follows it.
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .unwrap_or_else(|| panic!("no version= line in {}", script.display()));
    let tools = std::env::var_os("KINEMA_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kinema/tools")))
        .expect("KINEMA_TOOLS or HOME");
    let path = tools.join(format!("s3s-fs-{version}/bin/s3s-fs"));
    assert!(
        path.is_file(),
        "the S3 test server is not installed at {}: run scripts/ensure-s3-server \
         (or set KINEMA_S3_SERVER to an s3s-fs binary)",
        path.display()
    );
    path
}

impl S3Server {
    /// Starts s3s-fs with an empty bucket `bucket`, ready for requests.
    pub fn start(bucket: &str) -> S3Server {
        let binary = binary();
        let root = tempfile::Builder::new()
            .prefix("kinema-s3-")
            .tempdir()
            .expect("temp dir");
        // s3s-fs keeps a bucket as a directory of its root.
        std::fs::create_dir(root.path().join(bucket)).expect("bucket directory");
        // Another process may take the port between our probe and s3s-fs's bind: a
        // server that exits at once is started again on another port.
        for _ in 0..5 {
            let addr = free_port();
            let log = std::fs::File::create(root.path().join("s3s-fs.log")).expect("log");
            let mut child = Command::new(&binary)
                .arg("--host")
                .arg(addr.ip().to_string())
                .arg("--port")
                .arg(addr.port().to_string())
                .arg("--access-key")
                .arg(ACCESS_KEY)
                .arg("--secret-key")
                .arg(SECRET_KEY)
                .arg(root.path())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            if wait_ready(&mut child, addr) {
                return S3Server {
                    child,
                    addr,
                    bucket: bucket.to_string(),
                    root,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "s3s-fs did not start; its log:\n{}",
            std::fs::read_to_string(root.path().join("s3s-fs.log")).unwrap_or_default()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `s3://<bucket>[/prefix]`.
    pub fn url(&self, prefix: &str) -> String {
        match prefix {
            "" => format!("s3://{}", self.bucket),
            p => format!("s3://{}/{p}", self.bucket),
        }
    }

    /// The environment a client of this server needs (`AWS_*`).
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A store on this server under `prefix`, configured as `kinema serve` would be.
    pub fn artifacts(&self, prefix: &str) -> Result<S3Artifacts, ArtifactError> {
        S3Artifacts::from_vars(&self.url(prefix), self.vars())
    }

    /// A plain S3 client of the bucket, for looking behind an artifact store's back.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        let client = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(&self.bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("S3 client");
        Arc::new(client)
    }

    /// The keys under `prefix` (whole segments) and their sizes, sorted.
    pub async fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let prefix = object_store::path::Path::from(prefix);
        let mut objects: Vec<(String, u64)> = self
            .client()
            .list(Some(&prefix))
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("listing {prefix}: {e}"));
        objects.sort();
        objects
    }

    /// An object's bytes, or None when there is none.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let key = object_store::path::Path::from(key);
        match self.client().get(&key).await {
            Ok(got) => Some(got.bytes().await.expect("object body").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {key}: {e}"),
        }
    }

    /// Where s3s-fs keeps the bucket's objects on disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Whether the server accepts connections within 30 s (false once it has exited).
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
