//! `kinema bench load`: a load generator for researchers and operators. Clients
//! submit a job mix against an embedded `kinema serve` (or an existing server), watch
//! every job to its end, and the report gives jobs/hour, latency and stage
//! percentiles, scheduler overhead and device figures, as text, JSON and an SVG plot.

mod accounts;
mod args;
mod devices;
mod driver;
mod mix;
mod plot;
mod record;
mod report;
pub(crate) mod stats;
pub(crate) mod target;

use std::path::PathBuf;

use anyhow::{bail, Context};

pub use args::BenchLoadArgs;
use driver::LoadPlan;
use mix::Mix;
use report::{Comparison, ConfigInfo, Report, RunReport, TargetInfo};
use target::EmbeddedServer;

use crate::cli::Connection;
use crate::client::{self, Clients};

pub async fn run(conn: &Connection, args: BenchLoadArgs) -> anyhow::Result<()> {
    let mix = Mix::parse(&args.mix)?;
    if args.jobs.is_none() && args.duration.is_none() {
        bail!("say how long to run: --jobs N or --duration 60s");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of jobs per second");
        }
    }
    let embedded = conn.server.is_none();
    if !embedded && (!args.server_args.is_empty() || !args.variants.is_empty()) {
        bail!("--server-arg and --variant configure the embedded server; drop --server to use one");
    }
    let variants: Vec<(String, Vec<String>)> = if args.variants.is_empty() {
        vec![(
            if args.server_args.is_empty() {
                "default".to_string()
            } else {
                args.server_args.join(" ")
            },
            args.server_args.clone(),
        )]
    } else {
        args.variants
            .iter()
            .map(|v| {
                let mut server_args = args.server_args.clone();
                server_args.extend(v.split_whitespace().map(str::to_string));
                (v.clone(), server_args)
            })
            .collect()
    };
    let wan_tiny = wan_tiny_dir(&args, &mix)?;

    let mut runs = Vec::new();
    let mut accounts_used = 0;
    for (label, server_args) in variants {
        if embedded {
            let server = EmbeddedServer::start(&server_args, wan_tiny.as_deref()).await?;
            eprintln!("bench: {label}: embedded kinema serve at {}", server.url);
            let clients = Clients::connect(&server.url, &server.admin_key, "").await?;
            let outcome = one_run(clients, &args, &mix, &[], label, server_args).await;
            let stopped = server.stop().await;
            let (run, n) = outcome?;
            stopped?;
            accounts_used = n;
            runs.push(run);
        } else {
            let url = conn.server.clone().unwrap_or_default();
            let key = client::api_key(conn)?;
            let clients = Clients::connect(&url, &key, "").await?;
            let existing: Vec<String> = conn
                .account
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            let (run, n) = one_run(clients, &args, &mix, &existing, label, vec![]).await?;
            accounts_used = n;
            runs.push(run);
        }
    }

    let report = Report {
        schema: report::SCHEMA,
        kinema_version: env!("CARGO_PKG_VERSION"),
        target: TargetInfo {
            kind: if embedded { "embedded" } else { "server" },
            url: conn.server.clone(),
        },
        config: ConfigInfo {
            clients: args.clients,
            accounts: accounts_used,
            mix: mix.entries.clone(),
            jobs: args.jobs,
            duration_s: args.duration.map(|d| d.as_secs_f64()),
            rate_per_s: args.rate,
            job_timeout_s: args.job_timeout.as_secs_f64(),
            warmup_jobs_per_entry: args.warmup,
            seed: args.seed,
        },
        comparison: Comparison::of(&runs),
        runs,
    };
    report::print(&report);
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the report {}", path.display()))?;
        println!("report: {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::write_svg(&report.runs, path)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// Accounts, warm-up, the load itself and its report, against one server.
async fn one_run(
    mut clients: Clients,
    args: &BenchLoadArgs,
    mix: &Mix,
    existing_accounts: &[String],
    label: String,
    server_args: Vec<String>,
) -> anyhow::Result<(RunReport, usize)> {
    let quotes = accounts::quotes(&mut clients, mix).await?;
    let accounts = if existing_accounts.is_empty() {
        let per_job_count = args
            .jobs
            .map(|n| n + u64::from(args.warmup) * mix.entries.len() as u64);
        let credits = accounts::credits_per_account(&quotes, per_job_count, args.accounts);
        let tag = format!("{}-{}", std::process::id(), unix_seconds());
        accounts::create(&mut clients, args.accounts, credits, &tag).await?
    } else {
        existing_accounts.to_vec()
    };
    warm_up(&mut clients, mix, &accounts[0], args.warmup).await?;
    let sampler = devices::Sampler::start(clients.admin.clone(), args.sample_interval);
    let plan = LoadPlan {
        clients: args.clients,
        jobs: args.jobs,
        duration: args.duration,
        rate: args.rate,
        job_timeout: args.job_timeout,
        seed: args.seed,
    };
    let (records, _start) =
        driver::drive(clients.jobs.clone(), accounts.clone(), mix.clone(), plan).await;
    let device_report = sampler.finish().await;
    Ok((
        RunReport::build(label, server_args, records, device_report),
        accounts.len(),
    ))
}

/// `n` jobs of each mix entry, one at a time, before the measured load: models load
/// and caches warm here rather than in the first measured jobs.
async fn warm_up(c: &mut Clients, mix: &Mix, account: &str, n: u32) -> anyhow::Result<()> {
    for e in &mix.entries {
        for i in 0..n {
            let job = c
                .jobs
                .create_job(e.request(account, u64::from(i)))
                .await
                .with_context(|| format!("warm-up job for {:?}", e.name))?
                .into_inner();
            let mut as_account = c.clone();
            as_account.account = account.to_string();
            let done = crate::commands::follow::watch(&mut as_account, &job.id, false).await?;
            if done.state != kinema_proto::v1::JobState::Succeeded as i32 {
                bail!(
                    "warm-up job {} for {:?} did not succeed: {:?}",
                    done.id,
                    e.name,
                    done.failure
                );
            }
        }
    }
    Ok(())
}

/// The tiny Wan folder for the embedded server: only when the mix uses `wan-tiny`
/// and no models come from elsewhere.
fn wan_tiny_dir(args: &BenchLoadArgs, mix: &Mix) -> anyhow::Result<Option<PathBuf>> {
    if !mix.models().any(|m| m == target::WAN_TINY_ID) {
        return Ok(None);
    }
    let dir = args
        .wan_tiny_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(target::WAN_TINY_FIXTURE));
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "the tiny Wan model folder {} (pass --wan-tiny-dir)",
            dir.display()
        )
    })?;
    Ok(Some(dir))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
