//! `kinema bench ledger` end to end on SQLite and PostgreSQL: every concurrency level
//! asked for is measured and reported, and the ledger verifies after the cycles (the
//! SQLite levels run through the writer's group commit). No timing thresholds: only
//! structure and the ledger's verdict.

use std::process::Command;

use serde_json::Value;

const KINEMA: &str = env!("CARGO_BIN_EXE_kinema");

fn bench_ledger(extra: &[&str]) -> Value {
    let out = Command::new(KINEMA)
        .args([
            "bench",
            "ledger",
            "--cycles",
            "40",
            "--raw",
            "40",
            "--rounds",
            "2",
            "--concurrency",
            "1,4",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("running kinema bench ledger");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kinema bench ledger failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn check(report: &Value, backend: &str) {
    assert!(
        report["backend"].as_str().unwrap().starts_with(backend),
        "{report}"
    );
    assert_eq!(report["ledger_verified"], Value::Bool(true), "{report}");
    let levels = report["levels"].as_array().expect("levels");
    let clients: Vec<u64> = levels
        .iter()
        .map(|l| l["concurrency"].as_u64().unwrap())
        .collect();
    assert_eq!(clients, vec![1, 4]);
    for l in levels {
        let raw = l["raw_per_second"].as_f64().unwrap();
        let cycles = l["cycles_per_second"].as_f64().unwrap();
        let ratio = l["ratio_to_raw"].as_f64().unwrap();
        assert!(raw > 0.0 && cycles > 0.0, "{l}");
        assert!((ratio - cycles / raw).abs() < 1e-9, "{l}");
    }
}

#[test]
fn sqlite_levels_are_reported_and_the_ledger_verifies() {
    check(&bench_ledger(&[]), "sqlite");
}

#[test]
fn postgres_levels_are_reported_and_the_ledger_verifies() {
    let url = std::env::var("KINEMA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    check(&bench_ledger(&["--postgres", &url]), "postgresql");
}

#[test]
fn a_zero_level_is_refused() {
    let out = Command::new(KINEMA)
        .args(["bench", "ledger", "--concurrency", "1,0"])
        .output()
        .expect("running kinema bench ledger");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 1"), "{stderr}");
}
