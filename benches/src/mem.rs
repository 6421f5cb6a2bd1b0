//! Process memory and CPU time as the kernel reports them: `VmHWM` / `VmRSS` from
//! `/proc/self/status` (the peak is reset by writing `5` to `/proc/self/clear_refs`, so
//! one phase's peak can be measured apart from the setup before it) and `getrusage`.

use std::time::Instant;

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`), if the kernel has it.
pub fn status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

pub fn peak_rss() -> u64 {
    status_bytes("VmHWM").unwrap_or(0)
}

pub fn rss() -> u64 {
    status_bytes("VmRSS").unwrap_or(0)
}

/// Resets the peak (`VmHWM`) to the current RSS. False where the kernel refuses.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Wall time, CPU time and peak RSS of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Peak RSS during the phase (since the reset at its start), bytes.
    pub peak_bytes: u64,
    /// RSS when the phase started, bytes.
    pub start_bytes: u64,
    /// RSS when the phase ended, bytes.
    pub end_bytes: u64,
    /// Whether the peak could be reset (else it is the whole process's).
    pub reset: bool,
}

impl Phase {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "peak_rss_mib": mib(self.peak_bytes),
            "start_rss_mib": mib(self.start_bytes),
            "end_rss_mib": mib(self.end_bytes),
            "peak_is_phase_only": self.reset,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.2} s wall, {:.2} s CPU; peak RSS {:.0} MiB ({}; {:.0} MiB at start, {:.0} at end)",
            self.wall_s,
            self.cpu_s,
            mib(self.peak_bytes),
            if self.reset {
                "reset at the start of the phase"
            } else {
                "whole process"
            },
            mib(self.start_bytes),
            mib(self.end_bytes)
        )
    }
}

/// Runs `f` as one measured phase.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Phase) {
    let reset = reset_peak();
    let start_bytes = rss();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let out = f();
    let wall_s = t0.elapsed().as_secs_f64();
    let phase = Phase {
        wall_s,
        cpu_s: cpu_seconds() - cpu0,
        peak_bytes: peak_rss(),
        start_bytes,
        end_bytes: rss(),
        reset,
    };
    (out, phase)
}
