//! `kinema worker`: a GPU worker node; and `kinema migrate`.

use std::time::Duration;

use anyhow::{bail, Context};
use kinema_server::WorkerNodeConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::cli::{Connection, MigrateArgs, WorkerArgs};

pub async fn run(conn: &Connection, args: WorkerArgs) -> anyhow::Result<()> {
    let Some(server) = conn.server.clone() else {
        bail!("--server (or KINEMA_SERVER) names the control plane to lease jobs from");
    };
    let key = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the worker key from {}", args.token_file.display()))?
        .trim()
        .to_string();
    if key.is_empty() {
        bail!("{} holds no key", args.token_file.display());
    }
    let mut models = match &args.models_file {
        Some(f) => kinema_engine::parse_models_file(f)?,
        None => Vec::new(),
    };
    for m in &args.models {
        models.push(kinema_engine::parse_model_flag(m).map_err(anyhow::Error::msg)?);
    }
    let mut timeouts = kinema_engine::Timeouts::default();
    if let Some(t) = &args.job_timeout {
        timeouts.job = Some(kinema_engine::parse_secs(t).map_err(anyhow::Error::msg)?);
    }
    for t in &args.stage_timeouts {
        timeouts.set_stage(t).map_err(anyhow::Error::msg)?;
    }
    let tls_ca = match &conn.tls_ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let config = WorkerNodeConfig {
        server,
        key,
        tls_ca,
        node: args.node.clone().unwrap_or_else(hostname),
        devices: match (&args.devices, args.cpu_workers) {
            (Some(d), _) => kinema_engine::parse_devices(d)?,
            (None, Some(n)) => vec![kinema_engine::DeviceRequest::Cpu; n.max(1) as usize],
            (None, None) => Vec::new(),
        },
        device_memory_bytes: match args.device_memory_gb {
            Some(g) if g.is_finite() && g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
            Some(g) => bail!("--device-memory-gb {g}: must be positive"),
            None => None,
        },
        models,
        scratch_dir: args
            .scratch_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("kinema-worker")),
        drain_grace: Duration::from_millis(args.drain_grace_ms),
        preload: args.preload.clone(),
        max_batch: args.max_batch.map(|n| n.max(1) as usize),
        timeouts,
    };
    let (stop, stopped) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            "draining: running jobs finish within the drain grace or go back to the queue"
        );
        let _ = stop.send(true);
    });
    kinema_server::run_worker_node(config, stopped).await?;
    Ok(())
}

/// This machine's name, for a node that names none.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "worker".into())
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let store = kinema_store::Store::open(&args.database_url, kinema_store::StorePolicy::default())
        .await
        .context("opening the database")?;
    store.close().await;
    println!("the database schema is up to date");
    Ok(())
}
