//! The report: counts, throughput, latency and stage percentiles, scheduler overhead,
//! device figures and a timeline, built from the job records; JSON and text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::devices::DeviceReport;
use super::mix::MixEntry;
use super::record::{JobRecord, Outcome};
use super::stats::{bucket_of, Summary};

/// Identifies the JSON layout (benches/README.md documents it).
pub const SCHEMA: &str = "kinema.bench.load/1";

/// The scheduler overhead the engine issue aims under (median), in microseconds.
pub const GAP_TARGET_US: f64 = 5_000.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub kinema_version: &'static str,
    pub target: TargetInfo,
    pub config: ConfigInfo,
    pub runs: Vec<RunReport>,
    /// With more than one run (variants): each run's throughput against the first.
    pub comparison: Option<Comparison>,
}

#[derive(Debug, Serialize)]
pub struct TargetInfo {
    /// `embedded` (a `kinema serve` started for the run) or `server`.
    pub kind: &'static str,
    /// The server's URL (`server` only; an embedded one listens on a fresh port).
    pub url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ConfigInfo {
    pub clients: u32,
    pub accounts: usize,
    pub mix: Vec<MixEntry>,
    pub jobs: Option<u64>,
    pub duration_s: Option<f64>,
    /// Open loop: mean submissions per second (Poisson); `null` for closed loop.
    pub rate_per_s: Option<f64>,
    pub job_timeout_s: f64,
    pub warmup_jobs_per_entry: u32,
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub label: String,
    /// Extra flags the embedded server ran with.
    pub server_args: Vec<String>,
    /// From the run's start to the last job seen ending (or the last refusal).
    pub elapsed_s: f64,
    pub counts: Counts,
    /// Failed jobs by failure code.
    pub failures_by_code: BTreeMap<String, u64>,
    /// Refused submissions by ErrorInfo reason (or gRPC code).
    pub rejections_by_reason: BTreeMap<String, u64>,
    pub throughput: Throughput,
    pub latency_ms: Latency,
    pub stages_ms: Stages,
    pub scheduler_overhead: SchedulerOverhead,
    pub by_mix: BTreeMap<String, MixStats>,
    /// Jobs that ran, by the device their usage names.
    pub jobs_by_device: BTreeMap<String, u64>,
    pub devices: DeviceReport,
    pub timeline: Timeline,
    /// Every submission, in order.
    pub jobs: Vec<JobRecord>,
}

/// `submitted = accepted + rejected`;
/// `accepted = succeeded + failed + cancelled + unfinished`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub unfinished: u64,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Succeeded jobs per hour over `elapsed_s`.
    pub jobs_per_hour: f64,
    /// Jobs reaching any end per hour.
    pub ended_per_hour: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Server: created -> started (jobs that started).
    pub queue_wait: Option<Summary>,
    /// Client: CreateJob sent -> terminal state seen (jobs that ended).
    pub end_to_end: Option<Summary>,
    /// Server: started -> finished.
    pub run: Option<Summary>,
    /// Client: the CreateJob call.
    pub submit_rpc: Option<Summary>,
}

/// Per-stage times from Job.usage (jobs that started).
#[derive(Debug, Serialize)]
pub struct Stages {
    pub encode_text: Option<Summary>,
    pub denoise: Option<Summary>,
    pub decode: Option<Summary>,
    pub encode_video: Option<Summary>,
    pub store: Option<Summary>,
    pub total: Option<Summary>,
}

/// Time a worker sat idle between jobs while the next one was already queued
/// (Usage.scheduler_gap_us, measured by the worker).
#[derive(Debug, Serialize)]
pub struct SchedulerOverhead {
    /// Jobs that carry a gap (those queued when their worker's previous job ended).
    pub jobs_measured: usize,
    pub gap_us: Option<Summary>,
    pub target_median_us: f64,
    /// `null` when nothing was measured.
    pub median_under_target: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct MixStats {
    pub submitted: u64,
    pub succeeded: u64,
    pub end_to_end_ms: Option<Summary>,
    pub run_ms: Option<Summary>,
}

/// Jobs ending per time bucket, and the latency of those that ended in it.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub bucket_s: f64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub start_s: f64,
    pub succeeded: usize,
    /// Succeeded jobs in the bucket, per hour.
    pub jobs_per_hour: f64,
    pub end_to_end_p50_ms: Option<f64>,
    pub end_to_end_max_ms: Option<f64>,
    pub queue_wait_p50_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub runs: Vec<RatioEntry>,
}

#[derive(Debug, Serialize)]
pub struct RatioEntry {
    pub label: String,
    pub jobs_per_hour: f64,
    /// This run's jobs/hour over the baseline's.
    pub throughput_ratio: Option<f64>,
}

impl RunReport {
    pub fn build(
        label: String,
        server_args: Vec<String>,
        jobs: Vec<JobRecord>,
        devices: DeviceReport,
    ) -> RunReport {
        let elapsed_s = jobs
            .iter()
            .map(|r| {
                r.ended_seen_s
                    .unwrap_or(r.submitted_s + r.submit_rpc_ms.unwrap_or(0.0) / 1e3)
            })
            .fold(0.0, f64::max)
            .max(1e-3);
        let mut counts = Counts::default();
        let mut failures_by_code = BTreeMap::new();
        let mut rejections_by_reason = BTreeMap::new();
        let mut jobs_by_device = BTreeMap::new();
        for r in &jobs {
            counts.submitted += 1;
            match r.outcome {
                Outcome::Rejected => counts.rejected += 1,
                Outcome::Succeeded => counts.succeeded += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Cancelled => counts.cancelled += 1,
                Outcome::Unfinished => counts.unfinished += 1,
            }
            let code = r.code.clone().unwrap_or_else(|| "UNKNOWN".into());
            match r.outcome {
                Outcome::Rejected => *rejections_by_reason.entry(code).or_insert(0) += 1,
                Outcome::Failed => *failures_by_code.entry(code).or_insert(0) += 1,
                _ => {}
            }
            if let (Some(d), Some(_)) = (&r.device, r.stages_ms) {
                *jobs_by_device.entry(d.clone()).or_insert(0) += 1;
            }
        }
        counts.accepted = counts.submitted - counts.rejected;
        let ended = counts.succeeded + counts.failed + counts.cancelled;
        let per_hour = |n: u64| n as f64 * 3600.0 / elapsed_s;
        let stage = |f: fn(&super::record::StageTimes) -> f64| {
            Summary::of(jobs.iter().filter_map(|r| r.stages_ms.as_ref().map(f)))
        };
        let gaps = Summary::of(
            jobs.iter()
                .filter_map(|r| r.scheduler_gap_us.map(|g| g as f64)),
        );
        let mut by_mix: BTreeMap<String, MixStats> = BTreeMap::new();
        for name in jobs.iter().map(|r| r.mix.clone()) {
            by_mix.entry(name).or_insert_with_key(|name| {
                let of = || jobs.iter().filter(|r| &r.mix == name);
                MixStats {
                    submitted: of().count() as u64,
                    succeeded: of().filter(|r| r.outcome == Outcome::Succeeded).count() as u64,
                    end_to_end_ms: Summary::of(of().filter_map(|r| r.end_to_end_ms)),
                    run_ms: Summary::of(of().filter_map(|r| r.run_ms)),
                }
            });
        }
        RunReport {
            label,
            server_args,
            elapsed_s,
            counts,
            failures_by_code,
            rejections_by_reason,
            throughput: Throughput {
                jobs_per_hour: per_hour(counts.succeeded),
                ended_per_hour: per_hour(ended),
            },
            latency_ms: Latency {
                queue_wait: Summary::of(jobs.iter().filter_map(|r| r.queue_wait_ms)),
                end_to_end: Summary::of(jobs.iter().filter_map(|r| r.end_to_end_ms)),
                run: Summary::of(jobs.iter().filter_map(|r| r.run_ms)),
                submit_rpc: Summary::of(jobs.iter().filter_map(|r| r.submit_rpc_ms)),
            },
            stages_ms: Stages {
                encode_text: stage(|s| s.encode_text),
                denoise: stage(|s| s.denoise),
                decode: stage(|s| s.decode),
                encode_video: stage(|s| s.encode_video),
                store: stage(|s| s.store),
                total: stage(|s| s.total),
            },
            scheduler_overhead: SchedulerOverhead {
                jobs_measured: gaps.map_or(0, |g| g.count),
                gap_us: gaps,
                target_median_us: GAP_TARGET_US,
                median_under_target: gaps.map(|g| g.p50 < GAP_TARGET_US),
            },
            by_mix,
            jobs_by_device,
            devices,
            timeline: timeline(&jobs, elapsed_s),
            jobs,
        }
    }
}

/// Buckets for the timeline: equal widths covering the run exactly, about four
/// succeeded jobs a bucket on average, at most 30 buckets.
fn bucket_count(succeeded: usize) -> usize {
    (succeeded / 4).clamp(1, 30)
}

fn timeline(jobs: &[JobRecord], elapsed_s: f64) -> Timeline {
    let succeeded: Vec<&JobRecord> = jobs
        .iter()
        .filter(|r| r.outcome == Outcome::Succeeded)
        .collect();
    let n = bucket_count(succeeded.len());
    let width = elapsed_s / n as f64;
    let mut groups: Vec<Vec<&JobRecord>> = vec![Vec::new(); n];
    for r in succeeded {
        if let Some(i) = r.ended_seen_s.and_then(|t| bucket_of(t, width, n)) {
            groups[i].push(r);
        }
    }
    let buckets = groups
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let e2e = Summary::of(group.iter().filter_map(|r| r.end_to_end_ms));
            let wait = Summary::of(group.iter().filter_map(|r| r.queue_wait_ms));
            Bucket {
                start_s: i as f64 * width,
                succeeded: group.len(),
                jobs_per_hour: group.len() as f64 * 3600.0 / width,
                end_to_end_p50_ms: e2e.map(|s| s.p50),
                end_to_end_max_ms: e2e.map(|s| s.max),
                queue_wait_p50_ms: wait.map(|s| s.p50),
            }
        })
        .collect();
    Timeline {
        bucket_s: width,
        buckets,
    }
}

impl Comparison {
    pub fn of(runs: &[RunReport]) -> Option<Comparison> {
        let base = runs.first().filter(|_| runs.len() > 1)?;
        let b = base.throughput.jobs_per_hour;
        Some(Comparison {
            baseline: base.label.clone(),
            runs: runs
                .iter()
                .map(|r| RatioEntry {
                    label: r.label.clone(),
                    jobs_per_hour: r.throughput.jobs_per_hour,
                    throughput_ratio: (b > 0.0).then(|| r.throughput.jobs_per_hour / b),
                })
                .collect(),
        })
    }
}

/// The human summary.
pub fn print(report: &Report) {
    for run in &report.runs {
        print_run(run);
        println!();
    }
    if let Some(c) = &report.comparison {
        println!("throughput against {:?}:", c.baseline);
        for r in &c.runs {
            let ratio = r
                .throughput_ratio
                .map_or("n/a".to_string(), |x| format!("{x:.2}x"));
            println!(
                "  {:<32} {:>10.0} jobs/h  {ratio}",
                r.label, r.jobs_per_hour
            );
        }
    }
}

fn print_run(run: &RunReport) {
    let c = &run.counts;
    println!("== {} ==", run.label);
    println!(
        "jobs        {} submitted: {} succeeded, {} failed, {} cancelled, {} unfinished, {} rejected",
        c.submitted, c.succeeded, c.failed, c.cancelled, c.unfinished, c.rejected
    );
    for (what, map) in [
        ("failures", &run.failures_by_code),
        ("rejections", &run.rejections_by_reason),
    ] {
        if !map.is_empty() {
            let list: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("{what:<11} {}", list.join(", "));
        }
    }
    println!(
        "throughput  {:.0} jobs/hour succeeded over {:.1} s ({:.2} jobs/s)",
        run.throughput.jobs_per_hour,
        run.elapsed_s,
        run.throughput.jobs_per_hour / 3600.0
    );
    println!(
        "{:<24}{:>10}{:>10}{:>10}{:>10}{:>8}",
        "ms", "p50", "p90", "p99", "max", "n"
    );
    let l = &run.latency_ms;
    let s = &run.stages_ms;
    for (name, sum) in [
        ("queue wait", &l.queue_wait),
        ("end to end", &l.end_to_end),
        ("run (start -> end)", &l.run),
        ("submit call", &l.submit_rpc),
        ("stage encode_text", &s.encode_text),
        ("stage denoise", &s.denoise),
        ("stage decode", &s.decode),
        ("stage encode_video", &s.encode_video),
        ("stage store", &s.store),
        ("stage total", &s.total),
    ] {
        print_summary(name, sum.as_ref(), 1.0);
    }
    let g = &run.scheduler_overhead;
    match &g.gap_us {
        Some(gap) => {
            print_summary("scheduler gap", Some(gap), 1e-3);
            println!(
                "            scheduler overhead median {:.3} ms, p90 {:.3} ms over {} jobs (aim: median < {:.0} ms: {})",
                gap.p50 / 1e3,
                gap.p90 / 1e3,
                gap.count,
                g.target_median_us / 1e3,
                if gap.p50 < g.target_median_us { "met" } else { "missed" }
            );
        }
        None => println!(
            "scheduler gap: not measured (no job was queued when its worker finished the previous one, or the server does not report it)"
        ),
    }
    if run.by_mix.len() > 1 {
        for (name, m) in &run.by_mix {
            println!(
                "mix {:<20} {} submitted, {} succeeded, end to end p50 {}",
                name,
                m.submitted,
                m.succeeded,
                m.end_to_end_ms
                    .map_or("-".to_string(), |s| format!("{:.1} ms", s.p50))
            );
        }
    }
    run.devices.print();
}

fn print_summary(name: &str, s: Option<&Summary>, scale: f64) {
    match s {
        Some(s) => println!(
            "{:<24}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>8}",
            name,
            s.p50 * scale,
            s.p90 * scale,
            s.p99 * scale,
            s.max * scale,
            s.count
        ),
        None => println!("{name:<24}{:>10}", "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, outcome: Outcome, submitted: f64, ended: Option<f64>) -> JobRecord {
        let mut r = JobRecord::new(index, Some(0), "testsrc", "testsrc", "acct");
        r.outcome = outcome;
        r.submitted_s = submitted;
        r.submit_rpc_ms = Some(2.0);
        r.ended_seen_s = ended;
        r.end_to_end_ms = ended.map(|e| (e - submitted) * 1e3);
        if outcome != Outcome::Rejected {
            r.queue_wait_ms = Some(10.0 * index as f64);
        }
        r
    }

    #[test]
    fn counts_add_up_and_codes_are_grouped() {
        let mut failed = rec(2, Outcome::Failed, 0.2, Some(1.0));
        failed.code = Some("MODEL_ERROR".into());
        let mut rejected = rec(3, Outcome::Rejected, 0.3, None);
        rejected.code = Some("INSUFFICIENT_CREDITS".into());
        let mut gap = rec(1, Outcome::Succeeded, 0.1, Some(2.0));
        gap.scheduler_gap_us = Some(1500);
        let jobs = vec![
            rec(0, Outcome::Succeeded, 0.0, Some(1.0)),
            gap,
            failed,
            rejected,
            rec(4, Outcome::Unfinished, 0.4, None),
        ];
        let r = RunReport::build("t".into(), vec![], jobs, DeviceReport::not_reported("x"));
        let c = r.counts;
        assert_eq!((c.submitted, c.accepted, c.rejected), (5, 4, 1));
        assert_eq!(
            (c.succeeded, c.failed, c.cancelled, c.unfinished),
            (2, 1, 0, 1)
        );
        assert_eq!(r.failures_by_code["MODEL_ERROR"], 1);
        assert_eq!(r.rejections_by_reason["INSUFFICIENT_CREDITS"], 1);
        assert_eq!(r.elapsed_s, 2.0);
        assert_eq!(r.throughput.jobs_per_hour, 3600.0);
        assert_eq!(r.throughput.ended_per_hour, 3.0 * 1800.0);
        assert_eq!(r.scheduler_overhead.jobs_measured, 1);
        assert_eq!(r.scheduler_overhead.median_under_target, Some(true));
        let e2e = r.latency_ms.end_to_end.unwrap();
        assert_eq!((e2e.count, e2e.max), (3, 1900.0));
        let total: usize = r.timeline.buckets.iter().map(|b| b.succeeded).sum();
        assert_eq!(total, 2, "every succeeded job is in one bucket");
        assert_eq!(r.by_mix["testsrc"].submitted, 5);
    }

    #[test]
    fn timeline_buckets_cover_the_run() {
        let jobs: Vec<JobRecord> = (0..40)
            .map(|i| rec(i, Outcome::Succeeded, 0.0, Some(0.5 + i as f64 * 0.25)))
            .collect();
        let r = RunReport::build("t".into(), vec![], jobs, DeviceReport::not_reported("x"));
        let t = &r.timeline;
        assert_eq!(t.buckets.len(), 10);
        assert!((t.bucket_s * 10.0 - r.elapsed_s).abs() < 1e-9);
        assert_eq!(t.buckets.iter().map(|b| b.succeeded).sum::<usize>(), 40);
        // Rates average back to the run's throughput.
        let mean = t.buckets.iter().map(|b| b.jobs_per_hour).sum::<f64>() / 10.0;
        assert!((mean - r.throughput.jobs_per_hour).abs() < 1e-6);
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(10_000), 30);
    }

    #[test]
    fn ratios_against_the_first_run() {
        let run = |label: &str, ok: usize| {
            let jobs = (0..ok)
                .map(|i| rec(i as u64, Outcome::Succeeded, 0.0, Some(10.0)))
                .collect();
            RunReport::build(label.into(), vec![], jobs, DeviceReport::not_reported("x"))
        };
        let runs = vec![run("b1", 10), run("b4", 25)];
        let c = Comparison::of(&runs).unwrap();
        assert_eq!(c.baseline, "b1");
        assert_eq!(c.runs[1].throughput_ratio, Some(2.5));
        assert!(Comparison::of(&runs[..1]).is_none());
    }
}
