//! `scripts/gpu-check --dry-run`: the prepared GPU check's every stage on CPU at tiny
//! sizes, with this build's `kinema-bench` and the reference Python venv
//! (`scripts/ensure-python-reference`, made once), so a GPU run never fails on a
//! script bug. The report must pass as a whole and carry every figure the GPU run
//! records.

use std::path::Path;
use std::process::Command;

#[test]
fn gpu_check_dry_run_passes_and_reports_every_figure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("kinema-gpu-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(root.join("scripts/gpu-check"))
        .arg("--dry-run")
        .arg(&out)
        .current_dir(&root)
        .env("KINEMA_BENCH_BIN", env!("CARGO_BIN_EXE_kinema-bench"))
        .status()
        .expect("scripts/gpu-check runs");
    let text = std::fs::read_to_string(out.join("gpu-check.json"))
        .expect("the dry run writes gpu-check.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    assert!(status.success(), "gpu-check --dry-run failed:\n{text}");
    assert_eq!(report["pass"], true, "{text}");
    assert_eq!(report["parity_pass"], true, "{text}");
    assert_eq!(report["cross_checks_pass"], true, "{text}");
    assert_eq!(
        report["missing_figures"].as_array().map(|m| m.len()),
        Some(0),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
