use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use kinema_server::ServerConfig;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(args.data_dir.clone(), args.listen);
    config.database_url = args.database_url.clone();
    config.artifacts = args.artifacts.clone();
    config.test_clock = args.test_clock;
    config.fault_injection = args.fault_injection;
    config.image_limits.max_bytes = args.max_image_bytes.max(1);
    config.refund_on_cancel = !args.no_refund_on_cancel;
    config.max_attempts = args.max_attempts.max(1);
    config.max_batch = args.max_batch.map(|n| n.max(1) as usize);
    config.queue = kinema_store::QueueLimits {
        per_account: args.max_queued_per_account,
        total: args.max_queued,
    };
    config.rate_limit_rps = args.rate_limit_rps;
    config.rate_limit_burst = args.rate_limit_burst;
    config.max_concurrent_rpcs = args.max_concurrent_rpcs;
    config.rpc_timeout = args.rpc_timeout;
    config.rpc_method_timeouts = args.rpc_timeout_methods.clone();
    config.lease = Duration::from_millis(args.lease_ms.max(300));
    config.artifact_ttl = Duration::from_secs(args.artifact_ttl_hours.saturating_mul(3600));
    config.prompt_log_ttl = Duration::from_secs(args.prompt_log_ttl_hours.saturating_mul(3600));
    config.sweep_interval = Duration::from_millis(args.sweep_interval_ms.max(10));
    config.models = args
        .models
        .iter()
        .map(|m| kinema_engine::parse_model_flag(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()
        .context("--model")?;
    config.models_file = args.models_file.clone();
    config.catalog_file = args.catalog.clone();
    config.policy_file = args.policy_file.clone();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(kinema_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.local_workers = args.cpu_workers != Some(0);
    config.devices = match (&args.devices, args.cpu_workers) {
        (Some(d), _) => kinema_engine::parse_devices(d)?,
        (None, Some(n)) => vec![kinema_engine::DeviceRequest::Cpu; n as usize],
        (None, None) => Vec::new(),
    };
    config.device_memory_bytes = match args.device_memory_gb {
        Some(g) if g.is_finite() && g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
        Some(g) => anyhow::bail!("--device-memory-gb {g}: must be positive"),
        None => None,
    };
    config.preload = args.preload.clone();
    if let Some(t) = &args.job_timeout {
        config.timeouts.job = Some(
            kinema_engine::parse_secs(t)
                .map_err(anyhow::Error::msg)
                .context("--job-timeout")?,
        );
    }
    for t in &args.stage_timeouts {
        config
            .timeouts
            .set_stage(t)
            .map_err(anyhow::Error::msg)
            .context("--stage-timeout")?;
    }
    config.drain_grace = Duration::from_millis(args.drain_grace_ms);
    config.metrics_listen = args.metrics_listen;
    config.callbacks = kinema_server::CallbackConfig {
        targets: kinema_server::callbacks::TargetPolicy {
            allow_private: args.callback_allow_private,
            allow: args.callback_allow_cidrs.clone(),
        },
        secret_file: args.callback_secret_file.clone(),
        delivery: kinema_server::callbacks::DeliverySettings {
            timeout: args.callback_timeout.max(Duration::from_millis(100)),
            connect_timeout: args
                .callback_timeout
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            retry_base: args.callback_retry_base.max(Duration::from_millis(10)),
            retry_max: args.callback_retry_max.max(args.callback_retry_base),
            give_up_after: args.callback_give_up_after,
            poll_interval: args.callback_poll_interval.max(Duration::from_millis(10)),
            ..Default::default()
        },
    };
    config.console_listen = args.console_listen;
    let console_scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = kinema_server::start(config).await?;
    {
        // Machine-readable lines for scripts and tests: flushed before anything waits.
        let mut out = std::io::stdout().lock();
        if server.admin_key_created {
            writeln!(
                out,
                "created the admin API key (shown nowhere else; keep it safe)"
            )?;
        }
        writeln!(out, "admin key file: {}", server.admin_key_file.display())?;
        if let Some(console) = server.console_addr {
            writeln!(out, "console listening on {console_scheme}://{console}/")?;
        }
        writeln!(out, "listening on {}", server.addr)?;
        out.flush()?;
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    server.shutdown();
    server.wait().await?;
    Ok(())
}
