use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds the SQLite database, artifacts, scratch space and the admin key file.
    pub data_dir: PathBuf,
    /// `postgres://…` to share state between replicas; unset: SQLite in the data dir.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    /// The clock starts at real time and moves only by `AdminService.AdvanceClock`.
    pub test_clock: bool,
    /// Honour `kinema.fail_at` and `kinema.step_delay_ms` in job metadata.
    pub fault_injection: bool,
    pub refund_on_cancel: bool,
    pub max_attempts: u32,
    pub artifact_ttl: Duration,
    pub lease: Duration,
    /// How long a running job may finish on shutdown before it is requeued.
    pub drain_grace: Duration,
    /// How often time-driven housekeeping (artifact retention) runs.
    pub sweep_interval: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            database_url: None,
            listen,
            test_clock: false,
            fault_injection: false,
            refund_on_cancel: true,
            max_attempts: 3,
            artifact_ttl: Duration::from_secs(7 * 24 * 3600),
            lease: Duration::from_secs(60),
            drain_grace: Duration::from_secs(20),
            sweep_interval: Duration::from_secs(30),
        }
    }
}
