use kinema_proto::v1 as pb;

use crate::cli::WorkersCommand;
use crate::client::Clients;

pub async fn run(mut c: Clients, cmd: WorkersCommand) -> anyhow::Result<()> {
    match cmd {
        WorkersCommand::List { json } => {
            let workers = c
                .admin
                .list_workers(pb::ListWorkersRequest {})
                .await?
                .into_inner()
                .workers;
            if json {
                let list: Vec<serde_json::Value> = workers.iter().map(to_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for w in &workers {
                    print_worker(w);
                }
            }
        }
        WorkersCommand::Drain { owner } => {
            let w = c
                .admin
                .drain_worker(pb::DrainWorkerRequest { owner })
                .await?
                .into_inner();
            print_worker(&w);
        }
    }
    Ok(())
}

fn state(w: &pb::Worker) -> &'static str {
    match pb::WorkerState::try_from(w.state) {
        Ok(pb::WorkerState::Idle) => "idle",
        Ok(pb::WorkerState::Busy) => "busy",
        Ok(pb::WorkerState::Draining) => "draining",
        _ => "unknown",
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn print_worker(w: &pb::Worker) {
    let cc = if w.compute_capability.is_empty() {
        String::new()
    } else {
        format!(", compute {}", w.compute_capability)
    };
    println!(
        "{}  {}  {} ({}{cc})  memory {} total, budget {}",
        w.owner,
        state(w),
        w.device,
        w.device_model,
        gib(w.memory_total_bytes),
        if w.memory_budget_bytes == u64::MAX {
            "unlimited".to_string()
        } else {
            gib(w.memory_budget_bytes)
        }
    );
    let resident: Vec<String> = w
        .resident_models
        .iter()
        .map(|r| format!("{} ({})", r.model, gib(r.bytes)))
        .collect();
    println!(
        "  jobs done {}, running [{}], resident [{}], evictions {}",
        w.jobs_done,
        w.current_job_ids.join(", "),
        resident.join(", "),
        w.evictions
    );
    if let Some(s) = &w.sample {
        println!(
            "  gpu {}% busy, {} of {} used",
            s.utilization_percent,
            gib(s.memory_used_bytes),
            gib(s.memory_total_bytes)
        );
    }
}

fn to_json(w: &pb::Worker) -> serde_json::Value {
    serde_json::json!({
        "owner": w.owner,
        "state": state(w),
        "device": w.device,
        "device_model": w.device_model,
        "memory_total_bytes": w.memory_total_bytes,
        "memory_free_bytes": w.memory_free_bytes,
        "memory_budget_bytes": w.memory_budget_bytes,
        "compute_capability": w.compute_capability,
        "resident_models": w.resident_models.iter().map(|r| serde_json::json!({"model": r.model, "bytes": r.bytes})).collect::<Vec<_>>(),
        "current_job_ids": w.current_job_ids,
        "jobs_done": w.jobs_done,
        "last_heartbeat_ms": w.last_heartbeat.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
        "evictions": w.evictions,
        "sample": w.sample.as_ref().map(|s| serde_json::json!({
            "memory_used_bytes": s.memory_used_bytes,
            "memory_total_bytes": s.memory_total_bytes,
            "utilization_percent": s.utilization_percent,
        })),
    })
}
