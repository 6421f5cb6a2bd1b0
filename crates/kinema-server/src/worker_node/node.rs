//! Running a worker node: register with the control plane, then run one worker per
//! device until shutdown (SIGTERM drains: running jobs finish within the drain grace
//! or go back to the queue).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kinema_artifacts::Artifacts;
use kinema_engine::{
    Clock, DeviceRequest, DeviceSlot, JobControl, ModelRegistry, ModelSpec, SystemClock, Timeouts,
    WorkerConfig, WorkerPool,
};
use kinema_proto::v1 as pb;
use tokio::sync::watch;
use tracing::info;

use super::channel::connect;
use super::control::{with_retries, Leases, RemoteControl};
use super::status::report_status;
use super::uploads::RemoteArtifacts;

/// What `kinema worker` was started with.
#[derive(Debug, Clone)]
pub struct WorkerNodeConfig {
    /// The control plane, `http://host:port` (any replica).
    pub server: String,
    /// The worker key's secret.
    pub key: String,
    /// PEM certificates an `https://` control plane may present besides the public
    /// roots (`--tls-ca`).
    pub tls_ca: Option<Vec<u8>>,
    /// This node's name (default: the hostname).
    pub node: String,
    /// Devices to run jobs on; empty: every CUDA device, else one CPU worker.
    pub devices: Vec<DeviceRequest>,
    pub device_memory_bytes: Option<u64>,
    /// The models this node serves (its models file and `--model` flags).
    pub models: Vec<ModelSpec>,
    pub scratch_dir: PathBuf,
    pub drain_grace: Duration,
    pub preload: Vec<String>,
    pub max_batch: Option<usize>,
    pub timeouts: Timeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Models(#[from] kinema_engine::CatalogError),
    #[error(transparent)]
    Registry(#[from] kinema_engine::RegistryError),
    #[error(transparent)]
    Devices(#[from] kinema_engine::DeviceError),
    #[error("registering with the control plane at {server}: {status}")]
    Register {
        server: String,
        status: tonic::Status,
    },
}

/// Registers and runs the node's workers until `shutdown` turns true, then drains.
pub async fn run_worker_node(
    config: WorkerNodeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let registry = Arc::new(ModelRegistry::with_models(&config.models)?);
    let model_ids: Vec<String> = registry.manifests().map(|m| m.id.clone()).collect();
    let requests = if config.devices.is_empty() {
        kinema_engine::default_devices()
    } else {
        config.devices.clone()
    };
    let devices: Vec<DeviceSlot> = kinema_engine::discover(&requests)?
        .into_iter()
        .map(|info| DeviceSlot {
            memory_budget: config
                .device_memory_bytes
                .unwrap_or(if info.total_bytes > 0 {
                    info.total_bytes
                } else {
                    u64::MAX
                }),
            info,
        })
        .collect();
    let client = connect(&config.server, &config.key, config.tls_ca.as_deref())
        .map_err(NodeError::Config)?;
    let register = pb::RegisterWorkerRequest {
        node: config.node.clone(),
        devices: devices.iter().map(|d| d.info.name.clone()).collect(),
        models: model_ids.clone(),
    };
    let settings = with_retries(|| {
        let mut c = client.clone();
        let r = register.clone();
        async move { c.register_worker(r).await }
    })
    .await
    .map_err(|status| NodeError::Register {
        server: config.server.clone(),
        status,
    })?
    .into_inner();
    // The control plane names each device `<prefix>-w<index>`, as a pool names its own.
    let prefix = settings
        .owners
        .first()
        .and_then(|o| o.strip_suffix("-w0"))
        .ok_or_else(|| NodeError::Config("the control plane named no lease owners".into()))?
        .to_string();
    info!(node = %config.node, server = %config.server, devices = devices.len(), models = ?model_ids, owner = %prefix, "registered with the control plane");

    let leases: Leases = Arc::default();
    let control: Arc<dyn JobControl> = Arc::new(RemoteControl::new(
        client.clone(),
        model_ids,
        leases.clone(),
    ));
    let artifacts: Artifacts = Arc::new(RemoteArtifacts::new(client.clone(), leases));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let pool = WorkerPool::remote(
        control,
        registry,
        artifacts,
        clock,
        WorkerConfig {
            owner: prefix,
            lease_ms: i64::try_from(settings.lease_ms).unwrap_or(i64::MAX),
            max_attempts: settings.max_attempts.max(1),
            fault_injection: settings.fault_injection,
            // The control plane sets each artifact's retention when it records it.
            artifact_ttl_ms: 0,
            scratch_dir: config.scratch_dir.clone(),
            poll_interval: Duration::from_millis(500),
            drain_grace: config.drain_grace,
            timeouts: config.timeouts.clone(),
            preload: config.preload.clone(),
            sample_interval: Duration::from_secs(5),
            max_batch: config.max_batch,
        },
        devices,
    );
    let every = Duration::from_millis(settings.status_interval_ms.max(200));
    let status = tokio::spawn(report_status(client, pool.clone(), every, shutdown.clone()));
    let workers = pool.spawn(shutdown);
    workers.join().await;
    let _ = status.await;
    info!("worker node stopped");
    Ok(())
}
