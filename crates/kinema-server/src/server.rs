use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::worker_service::WorkerNodes;
use kinema_artifacts::Artifacts;
use kinema_engine::{
    Clock, DeviceSlot, JobEvents, ModelRegistry, SystemClock, TestClock, WorkerConfig, WorkerPool,
    LOCAL_OWNERS,
};
use kinema_proto::v1::admin_service_server::AdminServiceServer;
use kinema_proto::v1::billing_service_server::BillingServiceServer;
use kinema_proto::v1::job_service_server::JobServiceServer;
use kinema_proto::v1::organisation_service_server::OrganisationServiceServer;
use kinema_proto::v1::worker_service_server::WorkerServiceServer;
use kinema_store::{Role, Store, StorePolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::admin_service::Admin;
use crate::app::App;
use crate::billing_service::Billing;
use crate::data_dir::{self, DataDirLock};
use crate::job_feed::JobFeed;
use crate::jobs_service::JobsService;
use crate::organisation_service::Organisations;
use crate::sweeper::Sweeper;
use crate::{ServerConfig, ServerError};

/// A started server. Dropping it does not stop it: call [`RunningServer::shutdown`]
/// and then [`RunningServer::wait`].
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The web console's address, when `console_listen` is set.
    pub console_addr: Option<SocketAddr>,
    /// The file holding the admin key (written on first start, mode 0600).
    pub admin_key_file: PathBuf,
    /// True when this start created the admin key.
    pub admin_key_created: bool,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Stops accepting calls, ends open streams, lets the running job finish (or
    /// requeues it after the drain grace), then closes the database.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The server's result once it has stopped; a panic in its task is
    /// [`ServerError::Panicked`].
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await?
    }
}

/// The artifact store `--artifacts` names (the data dir's `artifacts/` by default).
async fn open_artifacts(config: &ServerConfig) -> Result<Artifacts, ServerError> {
    let spec = config.artifacts.as_deref().unwrap_or_default();
    let artifacts =
        kinema_artifacts::open(spec, &config.data_dir.join(data_dir::ARTIFACTS)).await?;
    info!(store = %artifacts.describe(), "artifacts");
    let shared_database = config
        .database_url
        .as_deref()
        .is_some_and(|url| url.starts_with("postgres"));
    if shared_database && !kinema_artifacts::is_object_storage(spec) {
        warn!(
            store = %artifacts.describe(),
            "artifacts are on this replica's disk while the database is shared: other replicas cannot serve this replica's videos (nor delete them) unless every replica mounts the same directory; --artifacts s3://bucket[/prefix] shares them"
        );
    }
    Ok(artifacts)
}

pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| ServerError::DataDir {
        path: dir.clone(),
        source: e,
    })?;
    let lock = data_dir::lock(&dir)?;
    // Model folders are read now, so a wrong path fails the start; weights load on
    // the first job.
    let registry = Arc::new(ModelRegistry::with_models(&config.model_specs()?)?);
    let devices = device_slots(&config)?;
    for p in &config.preload {
        if registry.manifest(p).is_none() {
            return Err(ServerError::Preload(format!("unknown model {p:?}")));
        }
    }
    for m in registry.manifests() {
        if !devices.iter().any(|d| m.memory_bytes <= d.memory_budget) {
            tracing::warn!(model = %m.id, memory_bytes = m.memory_bytes, "no device's memory budget holds this model: its jobs stay queued");
        }
    }

    let system_clock = SystemClock;
    let test_clock = config
        .test_clock
        .then(|| Arc::new(TestClock::starting_at(system_clock.now_ms())));
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(c) => c.clone(),
        None => Arc::new(system_clock),
    };

    let commerce = Arc::new(config.commerce()?);
    let usage_policy = Arc::new(config.usage_policy()?);
    info!(policy = %usage_policy.origin, version = %usage_policy.version, categories = ?usage_policy.categories, external = usage_policy.external.as_ref().map(|e| e.url.as_str()), "usage policy loaded");
    info!(catalog = %commerce.origin, packs = commerce.catalogue.packs.len(), plans = commerce.catalogue.plans.len(), "catalogue loaded");
    let policy = StorePolicy {
        refund_on_cancel: config.refund_on_cancel,
        refund_grace_ms: commerce.refund_grace_ms,
        postpaid: commerce.postpaid,
        usage_price: commerce.usage_price,
        queue: config.queue,
        prompt_log_ttl_ms: config.prompt_log_ttl.as_millis() as i64,
    };
    let store = match &config.database_url {
        Some(url) => Store::open(url, policy).await?,
        None => Store::open_sqlite(&dir.join(data_dir::DATABASE), policy).await?,
    };
    let artifacts = open_artifacts(&config).await?;

    let (admin_key_file, admin_key_created) =
        ensure_admin_key(&store, &dir, clock.now_ms()).await?;

    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::TlsIdentity::load)
        .transpose()?;
    if let Some(addr) = config.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    crate::rpc_trace::DURATION_SECONDS.to_string(),
                ),
                crate::rpc_trace::DURATION_BUCKETS,
            )
            .map_err(|e| ServerError::Metrics {
                addr,
                message: e.to_string(),
            })?
            .install()
            .map_err(|e| ServerError::Metrics {
                addr,
                message: e.to_string(),
            })?;
        crate::rpc_trace::describe();
        info!(%addr, "serving Prometheus metrics at /metrics");
    }

    let events = JobEvents::default();
    let worker = WorkerPool::new(
        store.clone(),
        registry.clone(),
        artifacts.clone(),
        clock.clone(),
        events.clone(),
        WorkerConfig {
            owner: format!(
                "{LOCAL_OWNERS}{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease_ms: config.lease.as_millis() as i64,
            max_attempts: config.max_attempts,
            fault_injection: config.fault_injection,
            artifact_ttl_ms: config.artifact_ttl.as_millis() as i64,
            scratch_dir: dir.join(data_dir::SCRATCH),
            poll_interval: std::time::Duration::from_millis(500),
            drain_grace: config.drain_grace,
            timeouts: config.timeouts.clone(),
            preload: config.preload.clone(),
            sample_interval: std::time::Duration::from_secs(5),
            max_batch: config.max_batch,
        },
        devices,
    );
    let recovered = worker.recover_after_restart().await?;
    if !(recovered.requeued.is_empty()
        && recovered.failed.is_empty()
        && recovered.cancelled.is_empty())
    {
        info!(
            requeued = recovered.requeued.len(),
            failed = recovered.failed.len(),
            cancelled = recovered.cancelled.len(),
            "recovered jobs left running by the previous process"
        );
    }

    let server_secret = match &config.callbacks.secret_file {
        Some(path) => {
            Some(crate::callbacks::read_secret_file(path).map_err(ServerError::Callbacks)?)
        }
        None => None,
    };
    let callbacks = Arc::new(
        crate::callbacks::Deliveries::new(
            store.clone(),
            clock.clone(),
            Arc::new(config.callbacks.targets.clone()),
            server_secret,
            config.callbacks.delivery.clone(),
        )
        .map_err(|e| ServerError::Callbacks(e.to_string()))?,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sweeper = Arc::new(Sweeper::new(
        store.clone(),
        artifacts.clone(),
        clock.clone(),
        commerce.clone(),
        events.clone(),
        config.sweep_interval,
    ));
    // Watches on PostgreSQL follow the database's notifications of every replica's
    // job changes (migration 0005); listening starts before the first call is served.
    let job_feed = match &config.database_url {
        Some(url) if store.backend() == kinema_store::Backend::Postgres => {
            Some(JobFeed::start(url, shutdown_rx.clone()).await?)
        }
        _ => None,
    };
    let app = Arc::new(App {
        store: store.clone(),
        registry,
        artifacts,
        clock,
        test_clock,
        events,
        job_feed,
        worker: worker.clone(),
        fault_injection: config.fault_injection,
        image_limits: config.image_limits,
        shutdown: shutdown_rx.clone(),
        commerce: commerce.clone(),
        sweeper: sweeper.clone(),
        rate_limit: crate::rate_limit::KeyRateLimit::new(
            config.rate_limit_rps,
            config.rate_limit_burst,
        ),
        workers: crate::app::WorkerSettings {
            lease_ms: config.lease.as_millis() as i64,
            max_attempts: config.max_attempts,
            artifact_ttl_ms: config.artifact_ttl.as_millis() as i64,
            status_interval_ms: 2_000,
        },
        policy: usage_policy,
        callbacks: callbacks.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Listen {
            addr: config.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Listen {
        addr: config.listen,
        source: e,
    })?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<JobServiceServer<JobsService>>()
        .await;
    health_reporter
        .set_serving::<BillingServiceServer<Billing>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<Admin>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerNodes>>()
        .await;
    health_reporter
        .set_serving::<OrganisationServiceServer<Organisations>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kinema_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let limits = crate::rpc_limits::RpcLimits::new(
        config.max_concurrent_rpcs,
        config.rpc_timeout,
        &config.rpc_method_timeouts,
    )?;
    let console = match config.console_listen {
        Some(console_addr) => {
            let (listener, bound) = crate::console::bind(console_addr, tls.is_some()).await?;
            let console_tls = tls.as_ref().map(|t| t.http1()).transpose()?;
            let routes = tonic::service::Routes::new(JobServiceServer::new(JobsService {
                app: app.clone(),
            }))
            .add_service(BillingServiceServer::new(Billing { app: app.clone() }))
            .add_service(AdminServiceServer::new(Admin { app: app.clone() }));
            // The same layers as the gRPC port: traced, counted and limited alike.
            let layers = tower::ServiceBuilder::new()
                .layer(crate::rpc_trace::RpcTrace)
                .layer(limits.clone());
            let grpc = crate::console::InProcess::new(tower::Layer::layer(&layers, routes));
            info!(addr = %bound, tls = console_tls.is_some(), "web console listening");
            Some((
                bound,
                crate::console::spawn(listener, console_tls, grpc, shutdown_rx.clone())?,
            ))
        }
        None => None,
    };
    let console_addr = console.as_ref().map(|(a, _)| *a);
    let worker_handle = worker.spawn(shutdown_rx.clone());
    let sweeper = app.sweeper.clone().spawn(shutdown_rx.clone());
    let deliveries = callbacks.spawn(shutdown_rx.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.grpc())
            .map_err(|e| ServerError::Tls(tls.invalid(e)))?;
    }
    // The trace layer outside the limits: shed and timed-out calls are counted too.
    let router = builder
        .layer(
            tower::ServiceBuilder::new()
                .layer(crate::rpc_trace::RpcTrace)
                .layer(limits)
                .into_inner(),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            JobServiceServer::new(JobsService { app: app.clone() })
                .max_decoding_message_size(max_job_request_bytes(&config.image_limits)),
        )
        .add_service(BillingServiceServer::new(Billing { app: app.clone() }))
        .add_service(AdminServiceServer::new(Admin { app: app.clone() }))
        .add_service(WorkerServiceServer::new(WorkerNodes { app: app.clone() }))
        .add_service(OrganisationServiceServer::new(Organisations {
            app: app.clone(),
        }));

    info!(%addr, tls = tls.is_some(), data_dir = %dir.display(), test_clock = config.test_clock, fault_injection = config.fault_injection, "kinema server listening");
    let mut stop = shutdown_rx.clone();
    let task = tokio::spawn(async move {
        let _lock: DataDirLock = lock;
        let served = router
            // Without TCP_NODELAY a small answer waits for the client's delayed ACK
            // (~40 ms) before it leaves: back-to-back unary calls crawl.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                    health_reporter
                        .set_not_serving::<JobServiceServer<JobsService>>()
                        .await;
                },
            )
            .await;
        if let Some((_, mut console)) = console {
            // Its event streams end with the services' streams on shutdown; a client
            // that holds a download open does not hold the server.
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut console)
                .await
                .is_err()
            {
                console.abort();
            }
        }
        worker_handle.join().await;
        let _ = sweeper.await;
        let _ = deliveries.await;
        store.close().await;
        info!("kinema server stopped");
        served.map_err(ServerError::from)
    });
    Ok(RunningServer {
        addr,
        console_addr,
        admin_key_file,
        admin_key_created,
        shutdown: shutdown_tx,
        task,
    })
}

/// The devices to run on, each with the memory its models may use.
fn device_slots(config: &ServerConfig) -> Result<Vec<DeviceSlot>, ServerError> {
    if !config.local_workers {
        info!("no workers in this process: jobs run on remote worker nodes");
        return Ok(Vec::new());
    }
    let requests = if config.devices.is_empty() {
        kinema_engine::default_devices()
    } else {
        config.devices.clone()
    };
    let devices = kinema_engine::discover(&requests)?;
    Ok(devices
        .into_iter()
        .map(|info| {
            let memory_budget = config.device_memory_bytes.unwrap_or(if info.total_bytes > 0 {
                info.total_bytes
            } else {
                u64::MAX
            });
            info!(device = %info.name, model = %info.model, total_bytes = info.total_bytes, free_bytes = info.free_bytes, compute_capability = ?info.compute_capability, memory_budget, "device");
            DeviceSlot {
                info,
                memory_budget,
            }
        })
        .collect())
}

/// On first start (no live admin key), creates one and writes it to the data dir.
async fn ensure_admin_key(
    store: &Store,
    dir: &std::path::Path,
    now: i64,
) -> Result<(PathBuf, bool), ServerError> {
    let path = dir.join(data_dir::ADMIN_KEY_FILE);
    if store.count_live_keys(Role::Admin).await? > 0 {
        return Ok((path, false));
    }
    let (key, secret) = store
        .create_api_key(Role::Admin, None, "bootstrap admin", now)
        .await?;
    let path = data_dir::write_admin_key(dir, &secret)?;
    info!(key = %key.id, file = %path.display(), "created the admin api key");
    Ok((path, true))
}

/// The largest CreateJob (or EstimateCost) the job service decodes: two input images
/// at the byte cap, plus room for the prompts, metadata and the rest. A larger image
/// is then refused by the image check (INVALID_SPEC on `image`) rather than by the
/// transport, as long as the whole message fits.
fn max_job_request_bytes(limits: &kinema_engine::ImageLimits) -> usize {
    limits
        .max_bytes
        .saturating_mul(2)
        .saturating_add(4 << 20)
        .max(4 << 20)
}
