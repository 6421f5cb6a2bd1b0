//! Shared helpers for the end-to-end tests: start the real `kinema serve` binary on a
//! temporary data dir and drive it over gRPC like a platform backend would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kinema_proto::v1 as pb;
use kinema_proto::v1::admin_service_client::AdminServiceClient;
use kinema_proto::v1::billing_service_client::BillingServiceClient;
use kinema_proto::v1::job_service_client::JobServiceClient;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_stream::StreamExt;
use tonic::codegen::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub use pb::{JobEventKind, JobStage, JobState, KeyRole, LedgerEntryKind};

pub mod commerce;
pub mod nodes;
pub mod postgres;
pub mod s3;
pub mod wan;

/// Every wait in these tests is bounded by this, so a broken server fails a test
/// instead of hanging it.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub const KINEMA: &str = env!("CARGO_BIN_EXE_kinema");
pub const DOMAIN: &str = "kinema.v1";
pub const FFPROBE: &str = "/usr/bin/ffprobe";

/// Runs `fut`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------

/// A temporary directory holding the server's data dir and one log file per start.
/// When a test panics its server logs are printed (the server is killed first: declare
/// the `TestDir` before the `Server`).
pub struct TestDir {
    root: tempfile::TempDir,
    starts: AtomicUsize,
}

impl TestDir {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("kinema-e2e-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        Self {
            root,
            starts: AtomicUsize::new(0),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    fn next_log(&self) -> PathBuf {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        self.root.path().join(format!("server-{n}.log"))
    }

    fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.root.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in self.logs() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(150)..];
                eprintln!("----- {} (last {} lines) -----", log.display(), tail.len());
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    pub fault_injection: bool,
    pub test_clock: bool,
    /// A catalogue file's text, written next to the data dir and passed as --catalog.
    pub catalog: Option<&'static str>,
    /// --database-url (PostgreSQL shared by several servers).
    pub database_url: Option<&'static str>,
    /// More `kinema serve` arguments (`--max-queued`, ...).
    pub extra_args: &'static [&'static str],
    /// --lease-ms (how soon a dead replica's running jobs go back to the queue).
    pub lease_ms: Option<u64>,
    /// Environment variables for the server (an object store's `AWS_*`).
    pub env: &'static [(&'static str, &'static str)],
}

impl Opts {
    pub fn faults() -> Self {
        Self {
            fault_injection: true,
            ..Self::default()
        }
    }
}

/// A running `kinema serve`. Dropping it kills the process (the guard).
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The web console's URL (`http://ADDR/`) when started with `--console-listen`.
    pub console_url: Option<String>,
    pub admin_key: String,
    pub admin_key_file: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// The command line of `kinema serve` on `dir`, stderr to `log`.
pub fn serve_command(data_dir: &Path, opts: Opts, log: &Path) -> Command {
    let mut cmd = Command::new(KINEMA);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0");
    if opts.test_clock {
        cmd.arg("--test-clock");
    }
    if opts.fault_injection {
        cmd.arg("--fault-injection");
    }
    if let Some(text) = opts.catalog {
        let file = log.with_extension("catalog.toml");
        std::fs::write(&file, text).expect("writing the catalogue");
        cmd.arg("--catalog").arg(file);
    }
    if let Some(url) = opts.database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.args(opts.extra_args);
    cmd.envs(opts.env.iter().copied());
    if let Some(ms) = opts.lease_ms {
        cmd.arg("--lease-ms").arg(ms.to_string());
    }
    let log = std::fs::File::create(log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KINEMA_API_KEY")
        .env_remove("KINEMA_SERVER")
        .env_remove("KINEMA_ARTIFACTS")
        .kill_on_drop(true);
    cmd
}

impl Server {
    pub async fn start(dir: &TestDir, opts: Opts) -> Server {
        let data_dir = dir.data_dir();
        let log = dir.next_log();
        let mut child = serve_command(&data_dir, opts, &log)
            .spawn()
            .expect("spawning kinema serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut key_file: Option<PathBuf> = None;
        let mut addr: Option<SocketAddr> = None;
        let mut console_url: Option<String> = None;
        let read = async {
            while let Some(line) = lines.next_line().await.expect("reading server stdout") {
                if let Some(path) = line.strip_prefix("admin key file: ") {
                    key_file = Some(PathBuf::from(path.trim()));
                } else if let Some(url) = line.strip_prefix("console listening on ") {
                    console_url = Some(url.trim().to_string());
                } else if let Some(a) = line.strip_prefix("listening on ") {
                    addr = Some(
                        a.trim()
                            .parse()
                            .unwrap_or_else(|e| panic!("bad listen address {a:?}: {e}")),
                    );
                    return true;
                }
            }
            false
        };
        let ready = tokio::time::timeout(TIMEOUT, read).await;
        if !matches!(ready, Ok(true)) {
            let _ = child.start_kill();
            let status = child.wait().await;
            panic!(
                "kinema serve did not report `listening on` ({}); exit {status:?}; stderr:\n{}",
                if ready.is_err() {
                    "timed out"
                } else {
                    "stdout closed"
                },
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let admin_key_file = key_file.expect("`admin key file:` line before `listening on`");
        let admin_key = std::fs::read_to_string(&admin_key_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", admin_key_file.display()))
            .trim()
            .to_string();
        assert!(
            admin_key.starts_with("kin_"),
            "admin key looks wrong: {admin_key:?}"
        );
        Server {
            child: Some(child),
            addr: addr.unwrap(),
            console_url,
            admin_key,
            admin_key_file,
            data_dir,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs the `kinema` CLI against this server with the admin key; returns (success,
    /// stdout and stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = bounded(
            "kinema CLI",
            tokio::process::Command::new(KINEMA)
                .arg("--server")
                .arg(self.url())
                .arg("--api-key-file")
                .arg(&self.admin_key_file)
                .args(args)
                .env_remove("KINEMA_API_KEY")
                .env_remove("KINEMA_ACCOUNT")
                .output(),
        )
        .await
        .expect("running kinema");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("server is running")
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = Channel::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(10));
        bounded("connecting", endpoint.connect())
            .await
            .expect("connecting to the server")
    }

    /// A client that authenticates with `key` (None: no authorization header).
    pub async fn client(&self, key: Option<&str>) -> Client {
        Client {
            channel: self.channel().await,
            key: key.map(str::to_string),
        }
    }

    pub async fn admin(&self) -> Client {
        self.client(Some(&self.admin_key)).await
    }

    /// SIGKILL: a crash. Waits for the process to be gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.start_kill().expect("SIGKILL");
        bounded("server exit after SIGKILL", child.wait())
            .await
            .expect("waiting for the server");
    }

    /// SIGTERM: a graceful shutdown. Returns the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id().expect("server pid");
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        bounded("server exit after SIGTERM", child.wait())
            .await
            .expect("waiting for the server")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

// ---------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Auth(Option<String>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(key) = &self.0 {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("ascii key"),
            );
        }
        Ok(req)
    }
}

pub type Jobs = JobServiceClient<InterceptedService<Channel, Auth>>;
pub type Billing = BillingServiceClient<InterceptedService<Channel, Auth>>;
pub type Admin = AdminServiceClient<InterceptedService<Channel, Auth>>;
pub type Orgs = kinema_proto::v1::organisation_service_client::OrganisationServiceClient<
    InterceptedService<Channel, Auth>,
>;
pub type Workers =
    kinema_proto::v1::worker_service_client::WorkerServiceClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub key: Option<String>,
}

impl Client {
    pub fn with_key(&self, key: Option<&str>) -> Client {
        Client {
            channel: self.channel.clone(),
            key: key.map(str::to_string),
        }
    }

    fn auth(&self) -> Auth {
        Auth(self.key.clone())
    }

    pub fn jobs(&self) -> Jobs {
        JobServiceClient::with_interceptor(self.channel.clone(), self.auth())
    }

    pub fn billing(&self) -> Billing {
        BillingServiceClient::with_interceptor(self.channel.clone(), self.auth())
    }

    pub fn admin(&self) -> Admin {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.auth())
    }

    /// `OrganisationService` (docs/api.md, "Organisations and seats").
    pub fn orgs(&self) -> Orgs {
        kinema_proto::v1::organisation_service_client::OrganisationServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth(),
        )
    }

    /// `WorkerService`, as a GPU node calls it (with a worker key).
    pub fn workers(&self) -> Workers {
        kinema_proto::v1::worker_service_client::WorkerServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth(),
        )
    }

    pub async fn create_account(&self, name: &str) -> String {
        let account = self
            .admin()
            .create_account(pb::CreateAccountRequest {
                name: name.into(),
                external_id: format!("ext-{name}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("CreateAccount {name}: {s:?}"))
            .into_inner();
        assert!(!account.id.is_empty());
        assert_eq!(account.name, name);
        assert_eq!(account.status, pb::AccountStatus::Active as i32);
        account.id
    }

    /// A new key's secret. `account` only for account keys.
    pub async fn create_key(&self, role: KeyRole, account: &str) -> String {
        let resp = self
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                role: role as i32,
                account_id: account.into(),
                name: format!("{role:?} key"),
            })
            .await
            .unwrap_or_else(|s| panic!("CreateApiKey {role:?}: {s:?}"))
            .into_inner();
        let key = resp.key.expect("key");
        assert_eq!(key.role, role as i32);
        assert!(resp.secret.starts_with("kin_"), "secret {:?}", resp.secret);
        assert!(
            resp.secret.starts_with(&key.prefix),
            "prefix {:?} of secret",
            key.prefix
        );
        resp.secret
    }

    /// Grants `credits` (admin key), returns the granted lot's id.
    pub async fn grant(&self, account: &str, credits: i64) -> i64 {
        let resp = self
            .billing()
            .grant_credits(pb::GrantCreditsRequest {
                account_id: account.into(),
                credits,
                expires_at: None,
                memo: "e2e grant".into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GrantCredits: {s:?}"))
            .into_inner();
        let lot = resp.lot.expect("lot");
        assert_eq!(lot.original, credits);
        assert_eq!(lot.remaining, credits);
        lot.id
    }

    pub async fn balance(&self, account: &str) -> pb::Balance {
        self.billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: account.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetBalance: {s:?}"))
            .into_inner()
    }

    /// Every ledger entry of the account (or of one job), oldest first, all pages.
    pub async fn ledger(&self, account: &str, job_id: Option<&str>) -> Vec<pb::LedgerEntry> {
        let mut entries = Vec::new();
        let mut page_token = String::new();
        for _ in 0..1000 {
            let resp = self
                .billing()
                .list_ledger_entries(pb::ListLedgerEntriesRequest {
                    account_id: account.into(),
                    job_id: job_id.unwrap_or_default().into(),
                    page_size: 50,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|s| panic!("ListLedgerEntries: {s:?}"))
                .into_inner();
            entries.extend(resp.entries);
            if resp.next_page_token.is_empty() {
                return entries;
            }
            page_token = resp.next_page_token;
        }
        panic!("ledger pagination does not end");
    }

    pub async fn create_job(&self, req: pb::CreateJobRequest) -> pb::Job {
        self.jobs()
            .create_job(req)
            .await
            .unwrap_or_else(|s| panic!("CreateJob: {s:?}"))
            .into_inner()
    }

    /// CreateJob, returning the status of a refused request.
    pub async fn create_job_raw(&self, req: pb::CreateJobRequest) -> Result<pb::Job, Status> {
        self.jobs().create_job(req).await.map(|r| r.into_inner())
    }

    pub async fn get_job(&self, account: &str, job_id: &str) -> pb::Job {
        self.jobs()
            .get_job(pb::GetJobRequest {
                account_id: account.into(),
                job_id: job_id.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetJob {job_id}: {s:?}"))
            .into_inner()
    }

    pub async fn cancel(&self, account: &str, job_id: &str) -> pb::Job {
        self.jobs()
            .cancel_job(pb::CancelJobRequest {
                account_id: account.into(),
                job_id: job_id.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("CancelJob {job_id}: {s:?}"))
            .into_inner()
    }

    /// Opens a watch of the job.
    pub async fn watch(&self, account: &str, job_id: &str) -> Watch {
        let stream = bounded(
            "WatchJob",
            self.jobs().watch_job(pb::WatchJobRequest {
                account_id: account.into(),
                job_id: job_id.into(),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("WatchJob {job_id}: {s:?}"))
        .into_inner();
        Watch {
            job_id: job_id.to_string(),
            stream,
            events: Vec::new(),
        }
    }

    /// Watches the job until `done` holds for a job in an event; returns every event
    /// seen (the first is the snapshot) and the job that satisfied `done`. Fails the
    /// test if the stream ends first or nothing happens for [`TIMEOUT`].
    pub async fn watch_until(
        &self,
        account: &str,
        job_id: &str,
        done: impl Fn(&pb::Job) -> bool,
    ) -> (Vec<pb::JobEvent>, pb::Job) {
        let mut watch = self.watch(account, job_id).await;
        let job = watch.until(done).await;
        (watch.events, job)
    }

    /// Watches the job to its terminal state.
    pub async fn wait_terminal(&self, account: &str, job_id: &str) -> (Vec<pb::JobEvent>, pb::Job) {
        self.watch_until(account, job_id, is_terminal).await
    }

    /// Waits (watching) until the job is RUNNING at denoising step >= `step`.
    pub async fn wait_step(&self, account: &str, job_id: &str, step: u32) -> pb::Job {
        self.watch_until(account, job_id, |j| {
            assert!(
                !is_terminal(j),
                "job {} ended while waiting for step {step}: {}",
                j.id,
                describe_job(j)
            );
            j.state == JobState::Running as i32
                && j.stage == JobStage::Denoising as i32
                && j.progress.as_ref().is_some_and(|p| p.step >= step)
        })
        .await
        .1
    }

    /// Downloads an artifact from `offset`, checking each chunk's offset and total;
    /// returns the bytes and the total size the chunks announced.
    pub async fn download(
        &self,
        account: &str,
        job_id: &str,
        kind: pb::ArtifactKind,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), Status> {
        let mut stream = self
            .jobs()
            .download_artifact(pb::DownloadArtifactRequest {
                account_id: account.into(),
                job_id: job_id.into(),
                kind: kind as i32,
                offset,
            })
            .await?
            .into_inner();
        let mut data = Vec::new();
        let mut total = None;
        loop {
            let chunk = match tokio::time::timeout(TIMEOUT, stream.next()).await {
                Ok(Some(chunk)) => chunk?,
                Ok(None) => break,
                Err(_) => panic!("download of {job_id} stalled"),
            };
            assert_eq!(
                chunk.offset,
                offset + data.len() as u64,
                "chunk offsets are contiguous"
            );
            assert!(
                total.is_none_or(|t| t == chunk.total_bytes),
                "total_bytes changes between chunks"
            );
            total = Some(chunk.total_bytes);
            data.extend_from_slice(&chunk.data);
        }
        Ok((data, total.unwrap_or(0)))
    }
}

/// An open WatchJob stream and the events read from it so far.
pub struct Watch {
    pub job_id: String,
    stream: tonic::Streaming<pb::JobEvent>,
    pub events: Vec<pb::JobEvent>,
}

impl Watch {
    /// Reads events until `done` holds for the job of one; returns that job. Fails the
    /// test if the stream ends first or nothing happens for [`TIMEOUT`].
    pub async fn until(&mut self, done: impl Fn(&pb::Job) -> bool) -> pb::Job {
        let job_id = self.job_id.clone();
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no event for {TIMEOUT:?} watching {job_id}; last: {:?}",
                        self.events.last().map(describe)
                    )
                });
            let event = match next {
                Some(Ok(e)) => e,
                Some(Err(s)) => panic!("watch of {job_id} failed: {s:?}"),
                None => panic!(
                    "watch of {job_id} ended before the awaited condition; events: {:#?}",
                    self.events.iter().map(describe).collect::<Vec<_>>()
                ),
            };
            let job = event.job.clone().expect("event without job");
            assert_eq!(job.id, job_id, "event for another job");
            self.events.push(event);
            if done(&job) {
                return job;
            }
        }
    }

    /// Whether the stream ends (within [`TIMEOUT`]) with no further event.
    pub async fn ends(&mut self) -> bool {
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.next()).await,
            Ok(None)
        )
    }
}

// ---------------------------------------------------------------------------------
// Requests, jobs and statuses
// ---------------------------------------------------------------------------------

pub fn job_request(
    account: &str,
    width: u32,
    height: u32,
    frames: u32,
    fps: u32,
    steps: u32,
) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        account_id: account.into(),
        model: "testsrc".into(),
        prompt: "a red fox running through snow".into(),
        width: Some(width),
        height: Some(height),
        num_frames: Some(frames),
        fps: Some(fps),
        steps: Some(steps),
        seed: Some(42),
        ..Default::default()
    }
}

/// Adds job metadata (fault injection).
pub fn with_meta(mut req: pb::CreateJobRequest, pairs: &[(&str, &str)]) -> pb::CreateJobRequest {
    for (k, v) in pairs {
        req.metadata.insert(k.to_string(), v.to_string());
    }
    req
}

/// The testsrc price book (docs/api.md, "Quotes"): credits per second by tier, scaled by
/// steps above the default 8, rounded up, at least 1.
pub fn expected_quote(width: u32, height: u32, frames: u32, fps: u32, steps: u32) -> i64 {
    let side = width.max(height);
    let per_second: i64 = if side <= 854 {
        2
    } else if side <= 1280 {
        4
    } else {
        8
    };
    let num = per_second * frames as i64 * steps.max(8) as i64;
    let den = fps as i64 * 8;
    ((num + den - 1) / den).max(1)
}

pub fn is_terminal(j: &pb::Job) -> bool {
    [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
        .iter()
        .any(|s| *s as i32 == j.state)
}

pub fn state(j: &pb::Job) -> JobState {
    JobState::try_from(j.state).unwrap_or(JobState::Unspecified)
}

pub fn describe_job(j: &pb::Job) -> String {
    format!(
        "{} state={:?} stage={:?} step={:?} attempts={:?} failure={:?} quoted={} debited={} refunded={}",
        j.id,
        JobState::try_from(j.state),
        JobStage::try_from(j.stage),
        j.progress.as_ref().map(|p| (p.step, p.total_steps)),
        j.usage.as_ref().map(|u| u.attempts),
        j.failure.as_ref().map(|f| (&f.code, &f.message)),
        j.quoted_credits,
        j.debited_credits,
        j.refunded_credits
    )
}

pub fn describe(e: &pb::JobEvent) -> String {
    format!(
        "{:?}: {}",
        JobEventKind::try_from(e.kind),
        e.job.as_ref().map(describe_job).unwrap_or_default()
    )
}

/// Asserts the status code and its `ErrorInfo` reason (domain `kinema.v1`).
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "status code of {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "ErrorInfo reason of {status:?}");
    assert_eq!(info.domain, DOMAIN, "ErrorInfo domain of {status:?}");
}

/// Asserts INVALID_ARGUMENT / INVALID_SPEC with a BadRequest violation naming `field`.
pub fn assert_invalid_field(status: &Status, field: &str) {
    assert_status(status, Code::InvalidArgument, "INVALID_SPEC");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == field && !v.description.is_empty()),
        "expected a violation of {field:?}, got {:?}",
        bad.field_violations
    );
}

/// Unwraps the error of a call that must fail.
pub fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T, Status>) -> Status {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(s) => s,
    }
}

pub fn entries_of(entries: &[pb::LedgerEntry], kind: LedgerEntryKind) -> Vec<&pb::LedgerEntry> {
    entries.iter().filter(|e| e.kind == kind as i32).collect()
}

pub fn kinds(entries: &[pb::LedgerEntry]) -> Vec<LedgerEntryKind> {
    entries
        .iter()
        .map(|e| LedgerEntryKind::try_from(e.kind).unwrap_or(LedgerEntryKind::Unspecified))
        .collect()
}

pub fn allocated(e: &pb::LedgerEntry) -> i64 {
    e.allocations.iter().map(|a| a.amount).sum()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `ffprobe` of the first video stream, as JSON.
pub fn ffprobe(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new(FFPROBE)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
        ])
        .arg("stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["streams"][0].clone()
}

// ---------------------------------------------------------------------------------
// The ledger checker
// ---------------------------------------------------------------------------------

/// Runs `kinema ledger verify` with `args`; returns whether it exited 0, and its
/// stdout and stderr together.
pub fn ledger_verify(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(KINEMA)
        .args(["ledger", "verify"])
        .args(args)
        .env_remove("KINEMA_DATABASE_URL")
        .env_remove("KINEMA_DATA_DIR")
        .output()
        .expect("running kinema ledger verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts `kinema ledger verify --data-dir DIR` passes (the server may be running).
pub fn assert_ledger_verifies(data_dir: &Path) -> String {
    let dir = data_dir.to_str().expect("utf-8 data dir");
    assert_verify_passes(&["--data-dir", dir])
}

/// Asserts `kinema ledger verify ARGS` passes.
pub fn assert_verify_passes(args: &[&str]) -> String {
    let (ok, text) = ledger_verify(args);
    assert!(ok, "kinema ledger verify {args:?} failed:\n{text}");
    assert!(text.contains("ledger is consistent"), "{text}");
    text
}

/// A free loopback address for a listener the server opens (`--metrics-listen`),
/// leaked so it can go in `Opts::extra_args`.
pub fn free_loopback_addr() -> &'static str {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    Box::leak(format!("127.0.0.1:{port}").into_boxed_str())
}

/// The Prometheus exposition the server serves at `http://addr/metrics`.
pub async fn scrape_metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics listener");
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    bounded("metrics response", conn.read_to_string(&mut body))
        .await
        .unwrap();
    body
}
