use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds the SQLite database, artifacts, scratch space and the admin key file.
    pub data_dir: PathBuf,
    /// `postgres://…` to share state between replicas; unset: SQLite in the data dir.
    pub database_url: Option<String>,
    /// Where videos live: `s3://bucket[/prefix]` (S3-compatible object storage,
    /// configured from the `AWS_*` environment) or a directory; unset: the data dir's
    /// `artifacts/`.
    pub artifacts: Option<String>,
    pub listen: SocketAddr,
    /// The clock starts at real time and moves only by `AdminService.AdvanceClock`.
    pub test_clock: bool,
    /// Honour `kinema.fail_at` and `kinema.step_delay_ms` in job metadata.
    pub fault_injection: bool,
    /// Caps on CreateJob's input images (`--max-image-bytes`; pixels 4096x4096).
    pub image_limits: kinema_engine::ImageLimits,
    pub refund_on_cancel: bool,
    pub max_attempts: u32,
    /// Most jobs denoised as one batch (1: no batching); `None`: the device's default
    /// ([`kinema_engine::default_max_batch`]).
    pub max_batch: Option<usize>,
    /// Queue bounds (per account and overall; 0 unlimited).
    pub queue: kinema_store::QueueLimits,
    /// Requests per second per API key (0: unlimited), and the burst allowed.
    pub rate_limit_rps: u32,
    pub rate_limit_burst: u32,
    /// Most calls worked on at once (0: unlimited), each unary call's deadline (zero:
    /// none) and methods with deadlines of their own (`rpc_limits`).
    pub max_concurrent_rpcs: usize,
    pub rpc_timeout: Duration,
    pub rpc_method_timeouts: Vec<crate::MethodTimeout>,
    pub artifact_ttl: Duration,
    /// How long a finished job's prompt, negative prompt and metadata are kept.
    pub prompt_log_ttl: Duration,
    pub lease: Duration,
    /// How long a running job may finish on shutdown before it is requeued.
    pub drain_grace: Duration,
    /// How often time-driven housekeeping (artifact retention) runs.
    pub sweep_interval: Duration,
    /// Models to serve besides the built-in ones (`--model ID=SOURCE`).
    pub models: Vec<kinema_engine::ModelSpec>,
    /// A models file (TOML); when none is given, `models.toml` in the data dir is read
    /// if it exists.
    pub models_file: Option<PathBuf>,
    /// The catalogue file (TOML: packs, plans, trial, postpaid pricing, policy); when
    /// none is given, `catalog.toml` in the data dir if it exists, else the built-in one.
    pub catalog_file: Option<PathBuf>,
    /// Devices to run jobs on, one worker each (`--devices`); empty: every CUDA
    /// device this build sees, else one CPU worker.
    pub devices: Vec<kinema_engine::DeviceRequest>,
    /// Run workers in this process (false: a control plane whose jobs run on remote
    /// `kinema worker` nodes, `--cpu-workers 0`).
    pub local_workers: bool,
    /// Memory each device's models may use (`--device-memory-gb`); default: the
    /// device's memory.
    pub device_memory_bytes: Option<u64>,
    /// Models each device loads at start.
    pub preload: Vec<String>,
    pub timeouts: kinema_engine::Timeouts,
    /// Serve Prometheus metrics on this address (`/metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The usage policy file (TOML); when none is given, `policy.toml` in the data
    /// dir if it exists, else no policy (no categories: nothing is refused).
    pub policy_file: Option<PathBuf>,
    /// TLS on the server's ports (`--tls-cert`, `--tls-key`); plain text when unset.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Callbacks: which addresses they may reach, the server's signing secret, and
    /// how deliveries are sent and retried (docs/api.md, "Callbacks").
    pub callbacks: CallbackConfig,
    /// Serve the web console on this address; off when unset. HTTPS with the
    /// server's certificate under --tls-cert, else plain HTTP (keys travel in clear:
    /// keep it on loopback).
    pub console_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct CallbackConfig {
    /// Addresses callbacks may reach besides public ones.
    pub targets: crate::callbacks::TargetPolicy,
    /// The server's signing secret, for accounts without one of their own.
    pub secret_file: Option<PathBuf>,
    pub delivery: crate::callbacks::DeliverySettings,
}

/// The file name of the models file a data dir may hold.
pub const MODELS_FILE: &str = "models.toml";

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            database_url: None,
            artifacts: None,
            listen,
            test_clock: false,
            fault_injection: false,
            image_limits: kinema_engine::ImageLimits::default(),
            refund_on_cancel: true,
            max_attempts: 3,
            max_batch: None,
            queue: kinema_store::QueueLimits::default(),
            rate_limit_rps: 0,
            rate_limit_burst: 0,
            max_concurrent_rpcs: 512,
            rpc_timeout: Duration::from_secs(30),
            rpc_method_timeouts: Vec::new(),
            artifact_ttl: Duration::from_secs(7 * 24 * 3600),
            prompt_log_ttl: Duration::from_secs(30 * 24 * 3600),
            lease: Duration::from_secs(60),
            drain_grace: Duration::from_secs(20),
            sweep_interval: Duration::from_secs(30),
            local_workers: true,
            models: Vec::new(),
            models_file: None,
            catalog_file: None,
            devices: Vec::new(),
            device_memory_bytes: None,
            preload: Vec::new(),
            timeouts: kinema_engine::Timeouts::default(),
            metrics_listen: None,
            policy_file: None,
            tls: None,
            callbacks: CallbackConfig::default(),
            console_listen: None,
        }
    }

    /// Every model spec to serve: the models file's (the given one, else the data
    /// dir's `models.toml` if present), then `models`.
    pub fn model_specs(
        &self,
    ) -> Result<Vec<kinema_engine::ModelSpec>, kinema_engine::CatalogError> {
        let default = self.data_dir.join(MODELS_FILE);
        let file = match &self.models_file {
            Some(f) => Some(f.clone()),
            None => default.is_file().then_some(default),
        };
        let mut specs = match file {
            Some(f) => kinema_engine::parse_models_file(&f)?,
            None => Vec::new(),
        };
        specs.extend(self.models.iter().cloned());
        Ok(specs)
    }

    /// The commerce configuration: the catalogue file given, else the data dir's
    /// `catalog.toml` if present, else the built-in catalogue.
    pub fn commerce(
        &self,
    ) -> Result<crate::commerce::CommerceConfig, crate::commerce::CatalogError> {
        let default = self.data_dir.join(crate::commerce::CATALOG_FILE);
        match &self.catalog_file {
            Some(f) => crate::commerce::CommerceConfig::load(f),
            None if default.is_file() => crate::commerce::CommerceConfig::load(&default),
            None => Ok(crate::commerce::CommerceConfig::default()),
        }
    }

    /// The usage policy: the file given, else the data dir's `policy.toml` if
    /// present, else none.
    pub fn usage_policy(&self) -> Result<crate::policy::UsagePolicy, crate::policy::PolicyError> {
        let default = self.data_dir.join(crate::policy::POLICY_FILE);
        match &self.policy_file {
            Some(f) => crate::policy::UsagePolicy::load(f),
            None if default.is_file() => crate::policy::UsagePolicy::load(&default),
            None => Ok(crate::policy::UsagePolicy::none()),
        }
    }
}
