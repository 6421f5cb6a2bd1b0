//! The engine's metrics, through the `metrics` facade: whatever recorder the process
//! installs (the server's Prometheus exporter) receives them; with none they cost
//! next to nothing.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Registers descriptions once, so an exporter shows help text and units.
pub fn describe() {
    describe_counter!(
        "kinema_jobs_finished_total",
        "Jobs that reached a terminal state (or were requeued for a retry), by state and failure code"
    );
    describe_histogram!(
        "kinema_stage_seconds",
        metrics::Unit::Seconds,
        "Time each stage of a job took"
    );
    describe_histogram!(
        "kinema_queue_wait_seconds",
        metrics::Unit::Seconds,
        "From submission to the lease that started the job (a requeued job counts from its submission)"
    );
    describe_histogram!(
        "kinema_scheduler_gap_seconds",
        metrics::Unit::Seconds,
        "Worker idle time between the end of a job and the start of the next one's pipeline, for jobs already queued at that end"
    );
    describe_counter!("kinema_leases_total", "Jobs leased by a worker");
    describe_counter!(
        "kinema_retries_total",
        "Failed attempts put back in the queue, by failure code"
    );
    describe_counter!("kinema_model_loads_total", "Model loads per device");
    describe_histogram!(
        "kinema_model_load_seconds",
        metrics::Unit::Seconds,
        "How long loading a model onto a device took"
    );
    describe_counter!(
        "kinema_model_evictions_total",
        "Models evicted from a device to make room"
    );
    describe_gauge!(
        "kinema_model_resident_bytes",
        metrics::Unit::Bytes,
        "Memory the resident models of a device need"
    );
    describe_gauge!("kinema_model_resident_count", "Models resident on a device");
    describe_gauge!(
        "kinema_device_memory_used_bytes",
        metrics::Unit::Bytes,
        "Device memory in use (NVML)"
    );
    describe_gauge!(
        "kinema_device_memory_total_bytes",
        metrics::Unit::Bytes,
        "Device memory (NVML)"
    );
    describe_gauge!(
        "kinema_device_utilization_percent",
        "GPU utilisation over the last sample period (NVML)"
    );
    describe_gauge!(
        "kinema_worker_busy",
        "1 while a worker runs a job, 0 when idle"
    );
}

pub fn job_finished(device: &str, state: &str, code: &str) {
    counter!("kinema_jobs_finished_total", "device" => device.to_string(), "state" => state.to_string(), "code" => code.to_string())
        .increment(1);
}

pub fn stage(model: &str, stage: &str, ms: u64) {
    histogram!("kinema_stage_seconds", "model" => model.to_string(), "stage" => stage.to_string())
        .record(ms as f64 / 1000.0);
}

pub fn queue_wait(ms: i64) {
    histogram!("kinema_queue_wait_seconds").record(ms.max(0) as f64 / 1000.0);
}

pub fn scheduler_gap(device: &str, us: u64) {
    histogram!("kinema_scheduler_gap_seconds", "device" => device.to_string())
        .record(us as f64 / 1e6);
}

pub fn leased(device: &str) {
    counter!("kinema_leases_total", "device" => device.to_string()).increment(1);
}

pub fn retried(code: &str) {
    counter!("kinema_retries_total", "code" => code.to_string()).increment(1);
}

pub fn model_loaded(device: &str, model: &str, ms: u64) {
    counter!("kinema_model_loads_total", "device" => device.to_string(), "model" => model.to_string())
        .increment(1);
    histogram!("kinema_model_load_seconds", "model" => model.to_string())
        .record(ms as f64 / 1000.0);
}

pub fn model_evicted(device: &str, model: &str) {
    counter!("kinema_model_evictions_total", "device" => device.to_string(), "model" => model.to_string())
        .increment(1);
}

pub fn resident(device: &str, bytes: u64, count: usize) {
    gauge!("kinema_model_resident_bytes", "device" => device.to_string()).set(bytes as f64);
    gauge!("kinema_model_resident_count", "device" => device.to_string()).set(count as f64);
}

pub fn device_sample(device: &str, s: &crate::DeviceSample) {
    gauge!("kinema_device_memory_used_bytes", "device" => device.to_string())
        .set(s.used_bytes as f64);
    gauge!("kinema_device_memory_total_bytes", "device" => device.to_string())
        .set(s.total_bytes as f64);
    gauge!("kinema_device_utilization_percent", "device" => device.to_string())
        .set(f64::from(s.utilization_percent));
}

pub fn busy(owner: &str, busy: bool) {
    gauge!("kinema_worker_busy", "worker" => owner.to_string()).set(if busy { 1.0 } else { 0.0 });
}
