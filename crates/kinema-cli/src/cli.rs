use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kinema",
    version,
    about = "Self-hosted video generation server"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and who we are to it.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Server URL, e.g. http://127.0.0.1:50051. `generate` without it runs an
    /// embedded server.
    #[arg(long, global = true, env = "KINEMA_SERVER")]
    pub server: Option<String>,
    /// Bearer API key.
    #[arg(long, global = true, env = "KINEMA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key (e.g. the data dir's admin-api-key).
    #[arg(long, global = true, env = "KINEMA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Account to act for (platform and admin keys).
    #[arg(long, global = true, env = "KINEMA_ACCOUNT", default_value = "")]
    pub account: String,
    /// PEM certificate(s) to trust for an `https://` server besides the public roots
    /// (e.g. the operator's own CA or a self-signed certificate).
    #[arg(long, global = true, env = "KINEMA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Logs as JSON lines (one object per event, with the span's fields) instead of
    /// text.
    #[arg(long, global = true, env = "KINEMA_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: gRPC API, embedded SQLite, local artifacts, in-process worker.
    Serve(Box<ServeArgs>),
    /// Generate one video: submit, follow progress, download; or, with --model-dir,
    /// run the model offline in this process.
    Generate(Box<GenerateArgs>),
    /// Jobs of an account.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Credit balance, grants and the ledger.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Members of --account (organisations and seats): add, list, change role,
    /// remove, mint keys, buy seats.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Subscriptions of --account: show, subscribe, cancel.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// The catalogue: packs and plans with current and scheduled prices.
    Catalog(CatalogArgs),
    /// Models this server offers, with limits and prices.
    Models,
    /// The ledger, read straight from the database.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The server's workers, one per device (admin).
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// The usage policy: its decisions (operator), or a policy file tried on a text.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a GPU worker node: lease jobs from a control plane (`--server`) over gRPC
    /// with a worker key, run them on this machine's devices, upload their videos.
    Worker(Box<WorkerArgs>),
    /// Bring a database's schema up to date and exit (what `serve` does at start):
    /// for a deployment's migration step.
    Migrate(MigrateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The worker key's secret is read from this file (a `worker` key: `kinema keys
    /// create --role worker`).
    #[arg(long, env = "KINEMA_WORKER_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// This node's name, as ListWorkers shows it (default: the hostname).
    #[arg(long, env = "KINEMA_NODE")]
    pub node: Option<String>,
    /// Devices to run jobs on, one worker each: GPU indices (`0,1`, `cuda:0`) or `cpu`
    /// slots. Default: every CUDA device, else one CPU worker.
    #[arg(long, env = "KINEMA_DEVICES", conflicts_with = "cpu_workers")]
    pub devices: Option<String>,
    /// Run N CPU workers.
    #[arg(long)]
    pub cpu_workers: Option<u32>,
    /// Memory each device's resident models may use, in GiB.
    #[arg(long)]
    pub device_memory_gb: Option<f64>,
    /// The models this node serves (TOML `[[model]]` tables), as the control plane's
    /// models file names them.
    #[arg(long, env = "KINEMA_MODELS_FILE")]
    pub models_file: Option<PathBuf>,
    /// Serve a model: ID=SOURCE (repeatable).
    #[arg(long = "model", value_name = "ID=SOURCE", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Scratch space for encoding (default: a `kinema-worker` directory in the
    /// system's temporary directory).
    #[arg(long, env = "KINEMA_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// On SIGTERM or a drain, how long a running job may finish before it is handed
    /// back to the queue, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub drain_grace_ms: u64,
    /// Models each device loads at start (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Most same-shape jobs denoised as one batch (default: 4 on CUDA, 1 on CPU).
    #[arg(long)]
    pub max_batch: Option<u32>,
    /// Fail a job (TIMEOUT) that runs longer than this many seconds.
    #[arg(long, value_name = "SECS")]
    pub job_timeout: Option<String>,
    /// Per-stage limit, STAGE=SECS; repeatable.
    #[arg(long = "stage-timeout", value_name = "STAGE=SECS")]
    pub stage_timeouts: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// `postgres://…` or `sqlite://PATH`.
    #[arg(long, env = "KINEMA_DATABASE_URL")]
    pub database_url: String,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// The usage policy's decisions, oldest first (of --account when given).
    Decisions {
        /// Only `allowed`, `refused` or `unavailable` decisions.
        #[arg(long)]
        decision: Option<String>,
        /// Decisions after this one (a page token, as printed).
        #[arg(long, default_value = "")]
        after: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try a policy file on a text, offline: its normal form and the rule it breaks.
    Check {
        /// The policy file.
        #[arg(long)]
        file: PathBuf,
        /// The text (a prompt).
        text: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkersCommand {
    /// Each worker: device, memory, resident models, current jobs, state.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a worker leasing; its running job finishes within the drain grace or is
    /// requeued.
    Drain {
        /// The worker's owner id, as `kinema workers list` shows it.
        owner: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Hold -> debit -> refund cycles per second on a scratch database, next to the
    /// raw rate of one-row durable transactions on the same database.
    Ledger(BenchLedgerArgs),
    /// Load generator: clients submit a job mix to an embedded or existing server and
    /// watch every job; reports jobs/hour, latency, stage times, scheduler overhead
    /// and devices (text, --report JSON, --plot SVG).
    Load(Box<crate::commands::BenchLoadArgs>),
    /// Latency of back-to-back unary calls on one connection (GetJob, ListJobs,
    /// ListModels) against embedded servers, one per --server-exe, in alternating
    /// rounds.
    Calls(BenchCallsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchCallsArgs {
    /// Calls of each method per round and server.
    #[arg(long, default_value_t = 500)]
    pub calls: u32,
    /// Rounds the servers alternate in (each round, every server in turn), so drift
    /// on the machine weighs on all alike.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Methods to call: get-job, list-jobs, list-models.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "get-job,list-jobs,list-models"
    )]
    pub methods: Vec<CallMethod>,
    /// A kinema executable to start as a server and measure (repeatable, e.g. an older
    /// build to compare with); default: this one.
    #[arg(long = "server-exe", value_name = "PATH")]
    pub server_exes: Vec<PathBuf>,
    /// Extra flag for every embedded server, repeatable.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallMethod {
    GetJob,
    ListJobs,
    ListModels,
}

#[derive(Args, Debug, Clone)]
pub struct BenchLedgerArgs {
    /// PostgreSQL to measure (a URL of an existing database to connect to): a scratch
    /// database is created there and dropped afterwards. Default: SQLite in a
    /// temporary directory (WAL, synchronous=FULL).
    #[arg(long)]
    pub postgres: Option<String>,
    /// One-row transactions for the raw rate.
    #[arg(long, default_value_t = 2000)]
    pub raw: u32,
    /// Hold -> debit -> refund cycles.
    #[arg(long, default_value_t = 1000)]
    pub cycles: u32,
    /// Clients running cycles at once (each on its own account): one level or a
    /// comma-separated list, each measured in turn against its own raw rounds. With
    /// several clients, SQLite's writer commits their transactions in groups.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 8])]
    pub concurrency: Vec<u32>,
    /// Rounds the raw commits and the cycles alternate in (each round a share of both),
    /// so a disk whose fsync latency drifts weighs on both alike.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Jobs waiting in the queue throughout (for a model the cycles' workers do not
    /// take, spread over accounts of 500), as a busy server's queue would be.
    #[arg(long, default_value_t = 0)]
    pub backlog: u32,
    /// Each cycle's first start fails with a retryable error and goes back to the
    /// queue before it starts again and fails for good (5 transactions a cycle).
    #[arg(long)]
    pub retry: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Recompute every lot, job and balance from the append-only entries and check
    /// the invariants; exits non-zero naming every difference.
    Verify(VerifyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// `postgres://…` or `sqlite://PATH`; default: the SQLite database in --data-dir.
    #[arg(long, env = "KINEMA_DATABASE_URL", conflicts_with = "data_dir")]
    pub database_url: Option<String>,
    #[arg(long, env = "KINEMA_DATA_DIR", default_value = "kinema-data")]
    pub data_dir: PathBuf,
    /// Only this account's entries, lots and jobs.
    #[arg(long = "only-account")]
    pub only_account: Option<String>,
    /// The server runs with --no-refund-on-cancel (a job cancelled while running
    /// keeps its debit).
    #[arg(long)]
    pub no_refund_on_cancel: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[arg(long, env = "KINEMA_DATA_DIR", default_value = "kinema-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "KINEMA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// `postgres://…` to keep state in PostgreSQL (replicas share it); default: SQLite
    /// in the data dir.
    #[arg(long, env = "KINEMA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where videos live: `s3://bucket[/prefix]` for S3-compatible object storage
    /// (configured from AWS_* variables; replicas share it) or a directory. Default:
    /// DATA_DIR/artifacts.
    #[arg(long, env = "KINEMA_ARTIFACTS", value_name = "SPEC")]
    pub artifacts: Option<String>,
    /// Start the clock at real time and move it only by AdminService.AdvanceClock.
    #[arg(long)]
    pub test_clock: bool,
    /// Honour kinema.fail_at / kinema.step_delay_ms job metadata (tests only).
    #[arg(long)]
    pub fault_injection: bool,
    /// Largest input image CreateJob accepts, in bytes (encoded, as sent); images
    /// over it are refused with INVALID_SPEC on `image`.
    #[arg(long, default_value_t = kinema_engine::ImageLimits::default().max_bytes)]
    pub max_image_bytes: usize,
    /// Keep the debit of a job cancelled while running.
    #[arg(long)]
    pub no_refund_on_cancel: bool,
    /// Starts a job may have before a lost worker fails it with refund.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Most same-shape jobs of a model denoised as one batch (within the model's own
    /// limit and the device's memory); 1 disables batching. Default: 4 on CUDA
    /// devices, 1 on CPU (where a batch does not pay: benches/README.md).
    #[arg(long)]
    pub max_batch: Option<u32>,
    /// Most jobs one account may have queued; more are refused with
    /// RESOURCE_EXHAUSTED (QUEUE_FULL). 0: unlimited.
    #[arg(long, default_value_t = 1_000)]
    pub max_queued_per_account: u32,
    /// Most jobs queued on the server (all accounts). 0: unlimited.
    #[arg(long, default_value_t = 100_000)]
    pub max_queued: u32,
    /// Requests per second one API key may make; more are refused with
    /// RESOURCE_EXHAUSTED (RATE_LIMITED) and a retry delay. 0: unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_rps: u32,
    /// Requests a key may make at once after a quiet spell (at least --rate-limit-rps).
    #[arg(long, default_value_t = 0)]
    pub rate_limit_burst: u32,
    /// Most calls the server works on at once; past it a call is refused at once with
    /// RESOURCE_EXHAUSTED (OVERLOADED) and a retry delay. Open streams do not count;
    /// health checks are never refused. 0: unlimited.
    #[arg(long, default_value_t = 512)]
    pub max_concurrent_rpcs: usize,
    /// Deadline of every unary call (e.g. 30s); one past it is answered
    /// DEADLINE_EXCEEDED (RPC_TIMEOUT). Streams have none. 0s: no deadline.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub rpc_timeout: Duration,
    /// One method's deadline instead of --rpc-timeout: METHOD=DURATION, METHOD a
    /// bare name (`CreateJob`) or Service/Method; repeatable.
    #[arg(long = "rpc-timeout-method", value_name = "METHOD=DURATION")]
    pub rpc_timeout_methods: Vec<kinema_server::MethodTimeout>,
    /// A running job's lease, in milliseconds: on PostgreSQL, a job whose worker stops
    /// renewing it this long (its replica died) goes back to the queue.
    #[arg(long, default_value_t = 60_000)]
    pub lease_ms: u64,
    /// How long finished videos are kept, in hours.
    #[arg(long, default_value_t = 7 * 24)]
    pub artifact_ttl_hours: u64,
    /// How long a finished job's prompt, negative prompt and metadata are kept, in
    /// hours; then they are purged (the job and its money stay).
    #[arg(long, default_value_t = 30 * 24)]
    pub prompt_log_ttl_hours: u64,
    /// How often time-driven housekeeping (artifact retention) runs, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub sweep_interval_ms: u64,
    /// Serve a model: ID=SOURCE, SOURCE a Diffusers folder or a repo id in the local
    /// hf-hub cache (family defaults; repeatable).
    #[arg(
        long = "model",
        value_name = "ID=SOURCE",
        env = "KINEMA_MODELS",
        value_delimiter = ','
    )]
    pub models: Vec<String>,
    /// Models file (TOML `[[model]]` tables with defaults, limits, price); default:
    /// DATA_DIR/models.toml when it exists.
    #[arg(long, env = "KINEMA_MODELS_FILE")]
    pub models_file: Option<PathBuf>,
    /// Catalogue file (TOML: packs, plans, trial, postpaid pricing, commerce policy);
    /// default: DATA_DIR/catalog.toml when it exists, else the built-in catalogue
    /// (`kinema catalog --print-default` shows it).
    #[arg(long, env = "KINEMA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Usage policy file (TOML: categories of prohibited terms and patterns, the
    /// suspension rule, an external moderation endpoint); default:
    /// DATA_DIR/policy.toml when it exists, else no policy.
    #[arg(long, env = "KINEMA_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "KINEMA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KINEMA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Devices to run jobs on, one worker each: GPU indices (`0,1`, `cuda:0`) or
    /// `cpu` slots (`cpu,cpu`). Default: every CUDA device, else one CPU worker.
    #[arg(long, env = "KINEMA_DEVICES", conflicts_with = "cpu_workers")]
    pub devices: Option<String>,
    /// Run N CPU workers (the same as --devices cpu,cpu,... N times); 0 runs no
    /// workers here: a control plane whose jobs run on remote `kinema worker` nodes.
    #[arg(long)]
    pub cpu_workers: Option<u32>,
    /// Memory each device's resident models may use, in GiB (default: the device's
    /// memory). A model needing more is never placed on the device.
    #[arg(long)]
    pub device_memory_gb: Option<f64>,
    /// Models each device loads at start (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Fail a job (TIMEOUT, refunded) that runs longer than this many seconds, not
    /// counting model loading.
    #[arg(long, value_name = "SECS")]
    pub job_timeout: Option<String>,
    /// Per-stage limit, STAGE=SECS (encode_text, denoise, decode, encode_video,
    /// store); repeatable.
    #[arg(long = "stage-timeout", value_name = "STAGE=SECS")]
    pub stage_timeouts: Vec<String>,
    /// How long a running job may finish on shutdown or drain before it is stopped
    /// and requeued, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub drain_grace_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "KINEMA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Let callbacks reach loopback, private (RFC 1918, fc00::/7), link-local and
    /// carrier-grade NAT addresses (never unspecified, multicast or reserved ones).
    #[arg(long)]
    pub callback_allow_private: bool,
    /// Let callbacks reach the addresses of CIDR (e.g. 10.1.2.0/24, fd00:1::/64),
    /// whatever their kind; repeatable.
    #[arg(long = "callback-allow-cidr", value_name = "CIDR")]
    pub callback_allow_cidrs: Vec<ipnet::IpNet>,
    /// The server's callback signing secret (a file holding at least 16 bytes),
    /// for accounts without a secret of their own (AdminService.RotateCallbackSecret).
    /// Without it, callbacks need the account's own secret.
    #[arg(long, env = "KINEMA_CALLBACK_SECRET_FILE")]
    pub callback_secret_file: Option<PathBuf>,
    /// One delivery attempt's limit, connection to the end of the answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub callback_timeout: Duration,
    /// The wait before the first retry of a failed delivery; each further one doubles
    /// (with jitter), up to --callback-retry-max.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub callback_retry_base: Duration,
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub callback_retry_max: Duration,
    /// How long after its event a delivery is retried before it is marked failed.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub callback_give_up_after: Duration,
    /// How often the outbox is looked at for due deliveries.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub callback_poll_interval: Duration,
    /// Serve the web console at ADDR (off by default): log in with an API key, follow
    /// and submit jobs; operators see workers, accounts and ledgers. HTTPS with
    /// --tls-cert; otherwise keys travel in clear: keep it on loopback (127.0.0.1:8080).
    #[arg(long, env = "KINEMA_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Low,
    Normal,
    High,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[arg(long, short)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long, default_value = "testsrc")]
    pub model: String,
    #[arg(long)]
    pub width: Option<u32>,
    #[arg(long)]
    pub height: Option<u32>,
    #[arg(long)]
    pub frames: Option<u32>,
    #[arg(long)]
    pub fps: Option<u32>,
    #[arg(long)]
    pub steps: Option<u32>,
    #[arg(long)]
    pub guidance: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// The first frame, for image-to-video models: a PNG, JPEG or WebP file, sent as
    /// it is (the server decodes, checks and fits it to the video's size; with no
    /// --width/--height the size follows the image's aspect ratio).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The last frame, for first-last-frame models; needs --image.
    #[arg(long, value_name = "FILE", requires = "image")]
    pub last_image: Option<PathBuf>,
    #[arg(long, short, default_value = "kinema-output.mp4")]
    pub output: PathBuf,
    /// How to encode the video: a codec and options, e.g. `h265:crf=24`,
    /// `av1:pix=yuv420p10le`, `vp9` (WebM); default: the model's (H.264 MP4). The
    /// file name given with -o should carry the container's extension.
    #[arg(long, value_name = "CODEC[:KEY=VALUE...]")]
    pub format: Option<String>,
    /// Also make an animated preview (`webp`, `gif`, `gif:max=240:fps=10`), saved
    /// beside the video as <output>.preview.<webp|gif> unless --preview-out names a
    /// file.
    #[arg(long, value_name = "webp|gif[:KEY=VALUE...]")]
    pub preview: Option<String>,
    #[arg(long, requires = "preview")]
    pub preview_out: Option<PathBuf>,
    /// Also save the poster image here.
    #[arg(long)]
    pub poster: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
    /// Queue class; high needs a platform or admin key.
    #[arg(long, value_enum, default_value_t = Priority::Normal)]
    pub priority: Priority,
    /// Data directory of the embedded server (when no --server is given).
    #[arg(long, env = "KINEMA_DATA_DIR", default_value = "kinema-data")]
    pub data_dir: PathBuf,
    /// Models file (TOML) the embedded server serves besides the built-in models
    /// (default: the data dir's `models.toml`, if any).
    #[arg(long, value_name = "FILE", conflicts_with = "model_dir")]
    pub models_file: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Run offline, without a server: a Diffusers model folder, or a repo id in the
    /// local hf-hub cache (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`).
    #[arg(long, value_name = "DIR|REPO")]
    pub model_dir: Option<String>,
    /// With --model-dir: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", requires = "model_dir")]
    pub device: String,
    /// With --model-dir: f32, bf16 or f16 (default f32 on CPU, bf16 on CUDA).
    #[arg(long, requires = "model_dir")]
    pub dtype: Option<String>,
    /// With --model-dir: initial latents instead of seeded noise (safetensors tensor
    /// `latents`, [1, z, (F-1)/4+1, H/s, W/s]: z 16 and s 8 for Wan 2.1 and A14B, 48
    /// and 16 for Wan 2.2 TI2V).
    #[arg(long, requires = "model_dir")]
    pub init_latents: Option<PathBuf>,
    /// With --model-dir: also save the frames before encoding (safetensors tensor
    /// `frames`, f32 [F, H, W, 3] in [0, 1]).
    #[arg(long, requires = "model_dir")]
    pub save_frames: Option<PathBuf>,
    /// A two-expert model (Wan 2.2 A14B): the low-noise expert's guidance scale
    /// (default: --guidance).
    #[arg(long)]
    pub guidance_2: Option<f32>,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only the jobs this member of the account submitted.
        #[arg(long, default_value = "")]
        member: String,
    },
    Get {
        job_id: String,
    },
    Cancel {
        job_id: String,
    },
    /// Follow a job's events until it ends.
    Watch {
        job_id: String,
    },
    /// Download a finished job's video (or poster, or preview).
    Download {
        job_id: String,
        #[arg(long, short)]
        output: PathBuf,
        #[arg(long, conflicts_with = "preview")]
        poster: bool,
        #[arg(long)]
        preview: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CreditsCommand {
    Balance,
    /// Grant credits to --account (admin).
    Grant {
        credits: i64,
        /// Lot lifetime in days; none: never expires.
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[arg(long, default_value = "")]
        memo: String,
    },
    Ledger {
        #[arg(long)]
        job: Option<String>,
        /// Only the entries of this member's jobs.
        #[arg(long, default_value = "")]
        member: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Buy a pack for --account with the platform's payment reference (platform/admin).
    Buy {
        pack_id: String,
        #[arg(long)]
        payment_ref: String,
    },
    /// Start --account's one trial.
    Trial,
    /// Add money to a postpaid account's balance (platform/admin).
    TopUp {
        /// Minor units (cents).
        amount: i64,
        #[arg(long, default_value = "EUR")]
        currency: String,
        #[arg(long)]
        payment_ref: String,
    },
    /// Money events: charges to collect, refunds owed, postpaid usage.
    Events {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    Create {
        /// admin, platform, account (belongs to --account) or worker (a GPU node).
        #[arg(long, default_value = "account")]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    List,
    Revoke {
        key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Add a member with its first key (the secret is printed once).
    Add {
        /// A name or an email address.
        name: String,
        /// owner, admin or member.
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long, default_value = "")]
        key_name: String,
    },
    /// The members and the seats they take.
    List {
        /// Removed members too.
        #[arg(long)]
        all: bool,
    },
    /// Give a member another role: owner, admin or member.
    Role { member_id: String, role: String },
    /// Remove a member: its keys stop working at once.
    Remove { member_id: String },
    /// Another key for a member.
    Key {
        member_id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Buy extra seats on the plan in force with the platform's payment reference
    /// (platform/admin).
    BuySeats {
        seats: u32,
        #[arg(long)]
        payment_ref: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        external_id: String,
        /// Pay-as-you-go: a money balance charged per succeeded job, not credit lots.
        #[arg(long)]
        postpaid: bool,
    },
    Get,
    /// No new jobs; queued jobs are cancelled, their holds released (admin).
    Suspend {
        #[arg(long, default_value = "operator")]
        reason: String,
    },
    /// Lift a suspension (admin).
    Reinstate,
    /// Terminate for violating the usage policy: credits forfeited, plans ended
    /// without refund, videos and prompts purged (admin).
    Terminate {
        #[arg(long, default_value = "violation")]
        reason: String,
    },
    /// The owner's deletion request; refused with every reason while anything is left.
    Delete,
}

#[derive(Subcommand, Debug)]
pub enum PlansCommand {
    /// The current plan and any queued one.
    Show,
    /// Buy a plan: starts now, or queued after the current one (platform/admin).
    Subscribe {
        plan_id: String,
        /// The platform's reference of the payment (the same ref twice is one).
        #[arg(long, default_value = "")]
        payment_ref: String,
    },
    /// Cancel the current plan (access to the period's end), or the queued one.
    Cancel {
        /// Cancel the plan queued after the current one (full refund).
        #[arg(long)]
        queued: bool,
    },
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: Option<CatalogCommand>,
    /// Print the built-in catalogue file (a starting point for --catalog) and exit.
    #[arg(long)]
    pub print_default: bool,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Schedule a new price for a pack or plan (admin); at least the price notice
    /// (default 30 days) ahead.
    SchedulePrice {
        /// `pack` or `plan`.
        kind: String,
        item_id: String,
        /// Minor units (cents).
        #[arg(long)]
        price: i64,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Days from now (the server's clock decides; this sends an absolute time).
        #[arg(long)]
        in_days: u32,
    },
}
