//! `kinema bench calls`: what one unary call costs when a client makes them back to
//! back on one connection, as a platform backend polling jobs does. Each server (this
//! executable, or builds named by --server-exe) runs embedded on a fresh data dir with
//! one finished job; rounds alternate between the servers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kinema_proto::v1 as pb;
use serde::Serialize;

use super::bench_load::stats::Summary;
use super::bench_load::target::EmbeddedServer;
use crate::cli::{BenchCallsArgs, CallMethod};
use crate::client::Clients;

/// One server's latencies of one method, in microseconds.
#[derive(Debug, Serialize)]
struct MethodResult {
    server: String,
    method: CallMethod,
    latency_us: Summary,
    calls_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    calls_per_round: u32,
    rounds: u32,
    results: Vec<MethodResult>,
}

struct Target {
    label: String,
    server: EmbeddedServer,
    clients: Clients,
    account: String,
    job_id: String,
    /// Per method, every call's latency and the time the calls took together.
    samples: Vec<(CallMethod, Vec<f64>, Duration)>,
}

pub async fn run(args: BenchCallsArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.rounds == 0 {
        bail!("--calls and --rounds must be positive");
    }
    let exes: Vec<Option<PathBuf>> = if args.server_exes.is_empty() {
        vec![None]
    } else {
        args.server_exes.iter().cloned().map(Some).collect()
    };
    let mut targets = Vec::new();
    for (i, exe) in exes.iter().enumerate() {
        let label = match exe {
            Some(path) => format!("{i}:{}", path.display()),
            None => format!("{i}:this build"),
        };
        let server = EmbeddedServer::start_exe(exe.as_deref(), &args.server_args, None).await?;
        eprintln!("bench: {label} at {}", server.url);
        let clients = Clients::connect(&server.url, &server.admin_key, "").await?;
        let (account, job_id) = one_finished_job(&clients)
            .await
            .with_context(|| format!("preparing {label}"))?;
        targets.push(Target {
            label,
            server,
            clients,
            account,
            job_id,
            samples: args
                .methods
                .iter()
                .map(|m| (*m, Vec::new(), Duration::ZERO))
                .collect(),
        });
    }
    // A warm-up round per server, not counted: connections, caches, the first page.
    for t in &mut targets {
        for m in args.methods.clone() {
            call_many(t, m, 20.min(args.calls)).await?;
        }
    }
    for _ in 0..args.rounds {
        for t in &mut targets {
            for i in 0..t.samples.len() {
                let method = t.samples[i].0;
                let (latencies, took) = call_many(t, method, args.calls).await?;
                t.samples[i].1.extend(latencies);
                t.samples[i].2 += took;
            }
        }
    }
    let mut results = Vec::new();
    for t in &targets {
        for (method, latencies, took) in &t.samples {
            let Some(latency_us) = Summary::of(latencies.iter().copied()) else {
                continue;
            };
            results.push(MethodResult {
                server: t.label.clone(),
                method: *method,
                latency_us,
                calls_per_second: latencies.len() as f64 / took.as_secs_f64().max(1e-9),
            });
        }
    }
    for t in targets {
        t.server.stop().await?;
    }
    let report = Report {
        calls_per_round: args.calls,
        rounds: args.rounds,
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// An account with credits and one job run to its end, for GetJob and ListJobs.
async fn one_finished_job(c: &Clients) -> anyhow::Result<(String, String)> {
    let mut admin = c.admin.clone();
    let account = admin
        .create_account(pb::CreateAccountRequest {
            name: "bench calls".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    c.billing
        .clone()
        .grant_credits(pb::GrantCreditsRequest {
            account_id: account.clone(),
            credits: 1_000,
            ..Default::default()
        })
        .await?;
    let mut jobs = c.jobs.clone();
    let job = jobs
        .create_job(pb::CreateJobRequest {
            account_id: account.clone(),
            model: "testsrc".into(),
            prompt: "a benchmark of calls".into(),
            width: Some(32),
            height: Some(32),
            num_frames: Some(2),
            fps: Some(8),
            steps: Some(1),
            ..Default::default()
        })
        .await?
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = jobs
            .get_job(pb::GetJobRequest {
                account_id: account.clone(),
                job_id: job.id.clone(),
            })
            .await?
            .into_inner();
        if j.finished_at.is_some() {
            return Ok((account, job.id));
        }
        if Instant::now() > deadline {
            bail!("the job did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` calls of `method`, each sent when the previous answer arrived.
async fn call_many(
    t: &mut Target,
    method: CallMethod,
    n: u32,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let mut latencies = Vec::with_capacity(n as usize);
    let all = Instant::now();
    for _ in 0..n {
        let start = Instant::now();
        match method {
            CallMethod::GetJob => {
                t.clients
                    .jobs
                    .get_job(pb::GetJobRequest {
                        account_id: t.account.clone(),
                        job_id: t.job_id.clone(),
                    })
                    .await?;
            }
            CallMethod::ListJobs => {
                t.clients
                    .jobs
                    .list_jobs(pb::ListJobsRequest {
                        account_id: t.account.clone(),
                        ..Default::default()
                    })
                    .await?;
            }
            CallMethod::ListModels => {
                t.clients.jobs.list_models(pb::ListModelsRequest {}).await?;
            }
        }
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok((latencies, all.elapsed()))
}

fn print_text(report: &Report) {
    println!(
        "back-to-back unary calls on one connection: {} rounds x {} calls per method and server",
        report.rounds, report.calls_per_round
    );
    println!(
        "{:<40} {:<12} {:>10} {:>10} {:>10} {:>10}",
        "server", "method", "p50 us", "p90 us", "p99 us", "calls/s"
    );
    for r in &report.results {
        println!(
            "{:<40} {:<12} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            r.server,
            format!("{:?}", r.method),
            r.latency_us.p50,
            r.latency_us.p90,
            r.latency_us.p99,
            r.calls_per_second
        );
    }
}
