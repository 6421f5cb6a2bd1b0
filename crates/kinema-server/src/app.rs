use std::sync::Arc;

use kinema_artifacts::Artifacts;
use kinema_engine::{Clock, JobEvents, ModelRegistry, TestClock, WorkerPool};
use kinema_store::Store;
use tokio::sync::watch;

/// What every service shares.
pub struct App {
    pub store: Store,
    pub registry: Arc<ModelRegistry>,
    pub artifacts: Artifacts,
    pub clock: Arc<dyn Clock>,
    /// Set when the server runs with `--test-clock`.
    pub test_clock: Option<Arc<TestClock>>,
    pub events: JobEvents,
    /// PostgreSQL: every replica's job changes, which watches follow; `None` on
    /// SQLite, whose watches follow `events`.
    pub job_feed: Option<crate::job_feed::JobFeed>,
    /// One worker per device.
    pub worker: WorkerPool,
    pub fault_injection: bool,
    /// Caps on CreateJob's and EstimateCost's input images.
    pub image_limits: kinema_engine::ImageLimits,
    /// Flips to true on shutdown; open streams end.
    pub shutdown: watch::Receiver<bool>,
    /// The operator's catalogue and commerce policy.
    pub commerce: Arc<crate::commerce::CommerceConfig>,
    /// Time-driven housekeeping; AdvanceClock runs it at once.
    pub sweeper: Arc<crate::sweeper::Sweeper>,
    /// Requests per second per API key; `None`: unlimited.
    pub rate_limit: Option<crate::rate_limit::KeyRateLimit>,
    /// What remote worker nodes follow, as the in-process workers do.
    pub workers: WorkerSettings,
    /// The usage policy CreateJob checks prompts against.
    pub policy: Arc<crate::policy::UsagePolicy>,
    /// Sends the outbox's callbacks; CreateJob checks URLs against its rules.
    pub callbacks: Arc<crate::callbacks::Deliveries>,
}

/// The control plane's rules for the workers that lease from it.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub lease_ms: i64,
    pub max_attempts: u32,
    /// How long a stored video is kept (sets each artifact's `expires_at`).
    pub artifact_ttl_ms: i64,
    /// How often a remote node reports its devices' status.
    pub status_interval_ms: u64,
}

impl App {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}
