//! `kinema bench load` end to end: it starts its own `kinema serve`, drives testsrc
//! jobs (some failing by fault injection), and writes a JSON report and an SVG plot
//! whose numbers must agree with each other. No timing thresholds: only structure and
//! internal consistency.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const KINEMA: &str = env!("CARGO_BIN_EXE_kinema");

/// Small testsrc jobs: three that succeed for one that fails at decode.
const MIX: &str = r#"
[[job]]
name = "ok"
model = "testsrc"
size = "160x96"
frames = 9
weight = 3

[[job]]
name = "fails"
model = "testsrc"
size = "160x96"
frames = 9
metadata = { "kinema.fail_at" = "decode" }
weight = 1
"#;

struct Run {
    stdout: String,
    report: Value,
    svg: String,
}

fn bench(dir: &Path, extra: &[&str]) -> Run {
    let mix = dir.join("mix.toml");
    std::fs::write(&mix, MIX).unwrap();
    let report = dir.join("report.json");
    let plot = dir.join("plot.svg");
    let out = Command::new(KINEMA)
        .args(["bench", "load", "--mix"])
        .arg(&mix)
        .args(["--server-arg=--fault-injection", "--report"])
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .args(extra)
        .env_remove("KINEMA_SERVER")
        .env_remove("KINEMA_API_KEY")
        .env_remove("KINEMA_ACCOUNT")
        .output()
        .expect("running kinema bench load");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kinema bench load failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("the JSON report exists");
    Run {
        stdout,
        report: serde_json::from_str(&text).expect("the report is JSON"),
        svg: std::fs::read_to_string(&plot).expect("the plot exists"),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A summary is null (nothing measured) or ordered: min <= p50 <= p90 <= p99 <= max,
/// the mean within [min, max]. Returns its count.
fn check_summary(what: &str, s: &Value) -> u64 {
    if s.is_null() {
        return 0;
    }
    let [min, p50, p90, p99, max, mean] =
        ["min", "p50", "p90", "p99", "max", "mean"].map(|k| f(&s[k]));
    assert!(
        min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{what}: percentiles out of order: {s}"
    );
    assert!(
        min <= mean && mean <= max,
        "{what}: mean outside the range: {s}"
    );
    assert!(min >= 0.0, "{what}: negative duration: {s}");
    n(&s["count"])
}

/// Every number in one run's report agrees with its per-job records.
fn check_run(run: &Value, jobs_asked: u64) {
    let jobs = run["jobs"].as_array().expect("jobs");
    let c = &run["counts"];
    let [submitted, accepted, rejected, succeeded, failed, cancelled, unfinished] = [
        "submitted",
        "accepted",
        "rejected",
        "succeeded",
        "failed",
        "cancelled",
        "unfinished",
    ]
    .map(|k| n(&c[k]));
    assert_eq!(submitted, jobs_asked, "--jobs submissions were made");
    assert_eq!(submitted, jobs.len() as u64, "every submission is recorded");
    assert_eq!(submitted, accepted + rejected);
    assert_eq!(accepted, succeeded + failed + cancelled + unfinished);
    let mut indices: Vec<u64> = jobs.iter().map(|j| n(&j["index"])).collect();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..submitted).collect::<Vec<_>>(),
        "indices 0..n, once each"
    );
    let mut ids: Vec<&str> = jobs.iter().filter_map(|j| j["job_id"].as_str()).collect();
    assert_eq!(ids.len() as u64, accepted, "every accepted job has an id");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, accepted, "job ids are distinct");
    let count = |outcome: &str| jobs.iter().filter(|j| j["outcome"] == outcome).count() as u64;
    assert_eq!(
        [succeeded, failed, cancelled, unfinished, rejected],
        ["succeeded", "failed", "cancelled", "unfinished", "rejected"].map(count)
    );
    // This mix: "ok" always succeeds, "fails" always fails at decode.
    assert_eq!((cancelled, unfinished, rejected), (0, 0, 0), "{c}");
    for j in jobs {
        let expected = if j["mix"] == "ok" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(j["outcome"], expected, "{j}");
        if j["outcome"] == "failed" {
            assert_eq!(j["code"], "MODEL_ERROR", "{j}");
        }
        for k in ["queue_wait_ms", "run_ms", "end_to_end_ms", "submit_rpc_ms"] {
            assert!(f(&j[k]) >= 0.0, "{k} of {j}");
        }
        assert!(f(&j["ended_seen_s"]) >= f(&j["submitted_s"]), "{j}");
        assert_eq!(j["device"], "cpu");
        assert_eq!(n(&j["attempts"]), 1);
        assert!(
            j["stages_ms"].is_object(),
            "a started job has stage times: {j}"
        );
    }
    let by_code = run["failures_by_code"].as_object().unwrap();
    assert_eq!(by_code.values().map(n).sum::<u64>(), failed);
    if failed > 0 {
        assert_eq!(n(&by_code["MODEL_ERROR"]), failed);
    }
    assert!(run["rejections_by_reason"].as_object().unwrap().is_empty());
    let ok_jobs = jobs.iter().filter(|j| j["mix"] == "ok").count() as u64;
    assert_eq!(n(&run["by_mix"]["ok"]["submitted"]), ok_jobs);
    assert_eq!(n(&run["by_mix"]["ok"]["succeeded"]), succeeded);

    let elapsed = f(&run["elapsed_s"]);
    let last_end = jobs
        .iter()
        .map(|j| f(&j["ended_seen_s"]))
        .fold(0.0, f64::max);
    assert!(
        (elapsed - last_end).abs() < 1e-6,
        "elapsed runs to the last end"
    );
    let jph = f(&run["throughput"]["jobs_per_hour"]);
    assert!((jph - succeeded as f64 * 3600.0 / elapsed).abs() < 1e-6 * jph.max(1.0));

    let l = &run["latency_ms"];
    assert_eq!(check_summary("end_to_end", &l["end_to_end"]), accepted);
    assert_eq!(check_summary("queue_wait", &l["queue_wait"]), accepted);
    assert_eq!(check_summary("run", &l["run"]), accepted);
    assert_eq!(check_summary("submit_rpc", &l["submit_rpc"]), submitted);
    for stage in [
        "encode_text",
        "denoise",
        "decode",
        "encode_video",
        "store",
        "total",
    ] {
        assert_eq!(
            check_summary(stage, &run["stages_ms"][stage]),
            accepted,
            "{stage}"
        );
    }
    let gaps = jobs
        .iter()
        .filter(|j| !j["scheduler_gap_us"].is_null())
        .count() as u64;
    let overhead = &run["scheduler_overhead"];
    assert_eq!(n(&overhead["jobs_measured"]), gaps);
    assert_eq!(check_summary("scheduler gap", &overhead["gap_us"]), gaps);
    assert_eq!(overhead["median_under_target"].is_null(), gaps == 0);

    let t = &run["timeline"];
    let buckets = t["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty());
    assert!((f(&t["bucket_s"]) * buckets.len() as f64 - elapsed).abs() < 1e-6);
    assert_eq!(
        buckets.iter().map(|b| n(&b["succeeded"])).sum::<u64>(),
        succeeded
    );
    assert_eq!(n(&run["jobs_by_device"]["cpu"]), accepted);
    let devices = &run["devices"];
    assert!(devices["reported"].is_boolean());
    if devices["reported"] == false {
        assert!(devices["note"].is_string(), "says why: {devices}");
    }
}

fn check_svg(svg: &str) {
    let doc = roxmltree::Document::parse(svg).expect("the plot parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for title in ["Throughput", "End-to-end latency per job"] {
        assert!(
            texts.iter().any(|t| t.trim() == title),
            "{title:?} in {texts:?}"
        );
    }
    assert!(
        doc.descendants().any(|n| n.has_tag_name("polyline")),
        "a series is drawn"
    );
    assert!(
        doc.descendants().any(|n| n.has_tag_name("circle")),
        "job points are drawn"
    );
}

#[test]
fn closed_loop_report_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let run = bench(
        dir.path(),
        &["--jobs", "10", "--clients", "3", "--accounts", "2"],
    );
    let r = &run.report;
    assert_eq!(r["schema"], "kinema.bench.load/1");
    assert_eq!(r["target"]["kind"], "embedded");
    assert_eq!(n(&r["config"]["clients"]), 3);
    assert_eq!(n(&r["config"]["accounts"]), 2);
    assert!(r["comparison"].is_null(), "one run, nothing to compare");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    check_run(&runs[0], 10);
    // Jobs were spread over both accounts, each client over several jobs.
    let jobs = runs[0]["jobs"].as_array().unwrap();
    let mut accounts: Vec<&str> = jobs
        .iter()
        .map(|j| j["account"].as_str().unwrap())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    assert_eq!(accounts.len(), 2);
    // One worker, three clients: from the second job on work was queued when the
    // worker finished a job, so the worker measured its gap.
    assert!(
        n(&runs[0]["scheduler_overhead"]["jobs_measured"]) >= 1,
        "{}",
        runs[0]["scheduler_overhead"]
    );
    assert!(run.stdout.contains("jobs/hour"), "{}", run.stdout);
    assert!(
        run.stdout.contains("scheduler overhead median"),
        "{}",
        run.stdout
    );
    check_svg(&run.svg);
}

#[test]
fn open_loop_variants_are_compared() {
    let dir = tempfile::tempdir().unwrap();
    let run = bench(
        dir.path(),
        &[
            "--jobs",
            "6",
            "--rate",
            "20",
            "--accounts",
            "1",
            "--seed",
            "2",
            "--variant=--max-attempts=1",
            "--variant=--max-attempts=2 --sweep-interval-ms=1000",
        ],
    );
    let r = &run.report;
    assert!(r["config"]["rate_per_s"].as_f64() == Some(20.0));
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one run per variant");
    for run in runs {
        check_run(run, 6);
        assert!(run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["client"].is_null()));
    }
    assert_eq!(
        runs[0]["server_args"],
        serde_json::json!(["--fault-injection", "--max-attempts=1"])
    );
    assert_eq!(
        runs[1]["server_args"],
        serde_json::json!([
            "--fault-injection",
            "--max-attempts=2",
            "--sweep-interval-ms=1000"
        ])
    );
    // Open-loop arrivals draw the mix from one seeded sequence: both runs got the
    // same jobs in the same order.
    let mixes = |run: &Value| -> Vec<String> {
        run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["mix"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(mixes(&runs[0]), mixes(&runs[1]));
    assert!(
        mixes(&runs[0]).contains(&"fails".to_string()),
        "seed 2 draws failing jobs"
    );
    let c = &r["comparison"];
    assert_eq!(c["baseline"], "--max-attempts=1");
    let ratios = c["runs"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    assert_eq!(f(&ratios[0]["throughput_ratio"]), 1.0);
    let jph = |i: usize| f(&runs[i]["throughput"]["jobs_per_hour"]);
    assert!((f(&ratios[1]["throughput_ratio"]) - jph(1) / jph(0)).abs() < 1e-9);
    assert!(run.stdout.contains("throughput against"), "{}", run.stdout);
    check_svg(&run.svg);
}

/// `kinema bench calls` measures every method on every server it was given (here this
/// build twice, as a comparison with an older build would), in the rounds asked for.
#[test]
fn bench_calls_reports_every_method_of_every_server() {
    let out = Command::new(KINEMA)
        .args(["bench", "calls", "--calls", "7", "--rounds", "2", "--json"])
        .args(["--server-exe", KINEMA, "--server-exe", KINEMA])
        .env_remove("KINEMA_SERVER")
        .output()
        .expect("running kinema bench calls");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 6, "{report:#}");
    for server in ["0:", "1:"] {
        for method in ["get-job", "list-jobs", "list-models"] {
            let r = results
                .iter()
                .find(|r| {
                    r["server"].as_str().unwrap().starts_with(server) && r["method"] == method
                })
                .unwrap_or_else(|| panic!("{server} {method} in {report:#}"));
            let l = &r["latency_us"];
            assert_eq!(l["count"], 14, "{r:#}");
            let (p50, p99, max) = (
                l["p50"].as_f64().unwrap(),
                l["p99"].as_f64().unwrap(),
                l["max"].as_f64().unwrap(),
            );
            assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r:#}");
            assert!(r["calls_per_second"].as_f64().unwrap() > 0.0, "{r:#}");
        }
    }
}
