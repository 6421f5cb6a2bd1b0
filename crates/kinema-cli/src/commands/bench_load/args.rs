use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `kinema bench load` flags. Without the global `--server` it starts its own
/// `kinema serve` on a temporary data dir; with it, `--api-key` (admin: accounts are
/// created and funded) and optionally `--account A,B` (existing funded accounts).
#[derive(Args, Debug, Clone)]
pub struct BenchLoadArgs {
    /// Concurrent clients (closed loop: each submits a job, watches it to its end,
    /// then submits the next).
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Accounts the jobs are spread over, round robin (created with an admin key).
    #[arg(long, default_value_t = 2)]
    pub accounts: u32,
    /// Job mix: MODEL[:WEIGHT],... with each model's default shape, or a TOML file
    /// (`[[job]]` tables: model, size "WxH", frames, steps, fps, prompt, weight, name).
    #[arg(long, default_value = "testsrc")]
    pub mix: String,
    /// Stop submitting after this long (e.g. 60s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many submissions (with --duration: whichever comes first).
    #[arg(long)]
    pub jobs: Option<u64>,
    /// Open loop: submit at this mean rate (jobs per second, Poisson arrivals)
    /// whatever the server's pace; --clients is then unused.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A job not ended this long after its submission is cancelled and reported
    /// unfinished.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,
    /// Jobs of each mix entry run one at a time before the measured load (model
    /// loading and warm caches stay out of the figures).
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    /// Extra flag for the embedded server, repeatable: --server-arg=--max-batch=4.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Run the whole benchmark once per variant, each on a fresh embedded server with
    /// these extra flags (whitespace-separated), and report each run's throughput
    /// against the first: --variant=--max-batch=1 --variant=--max-batch=4.
    #[arg(long = "variant", value_name = "FLAGS", allow_hyphen_values = true)]
    pub variants: Vec<String>,
    /// The model folder the embedded server serves as `wan-tiny` when the mix names
    /// it; default: the committed fixture tests/wan/fixtures/tiny/model.
    #[arg(long)]
    pub wan_tiny_dir: Option<PathBuf>,
    /// How often device utilisation and memory are sampled (ListWorkers).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Seeds the mix choices, arrivals and job seeds.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the JSON report here (layout: benches/README.md).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write an SVG plot of throughput and latency over time here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}
