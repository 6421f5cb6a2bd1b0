//! The clients: closed loop (each submits, watches to the end, repeats) or open loop
//! (Poisson arrivals at a fixed mean rate), until the job count or duration is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kinema_proto::v1 as pb;
use kinema_proto::v1::job_service_client::JobServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic_types::StatusExt;

use super::mix::{Mix, MixEntry};
use super::record::{is_terminal, JobRecord, Outcome};
use crate::client::Authed;

pub type JobsClient = JobServiceClient<Authed>;

/// When to stop and how to pace.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub clients: u32,
    /// Stop after this many submissions.
    pub jobs: Option<u64>,
    /// Stop submitting after this long.
    pub duration: Option<Duration>,
    /// Open loop: mean submissions per second.
    pub rate: Option<f64>,
    /// A job not ended this long after its submission is cancelled and counted
    /// unfinished.
    pub job_timeout: Duration,
    pub seed: u64,
}

/// Everything the clients share.
struct Shared {
    jobs: JobsClient,
    accounts: Vec<String>,
    mix: Mix,
    plan: LoadPlan,
    start: Instant,
    next: AtomicU64,
    done: AtomicU64,
    records: Mutex<Vec<JobRecord>>,
    bar: ProgressBar,
}

impl Shared {
    /// The next submission's index, or `None` once the run is over.
    fn claim(&self) -> Option<u64> {
        if let Some(d) = self.plan.duration {
            if self.start.elapsed() >= d {
                return None;
            }
        }
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        match self.plan.jobs {
            Some(limit) if i >= limit => None,
            _ => Some(i),
        }
    }

    fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn push(&self, r: JobRecord) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.bar.set_message(format!(
            "{done} ended, {} submitted",
            self.next
                .load(Ordering::SeqCst)
                .min(self.plan.jobs.unwrap_or(u64::MAX))
        ));
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }
}

/// Runs the load; returns every submission's record (in submission order) and the
/// instant the run started.
pub async fn drive(
    jobs: JobsClient,
    accounts: Vec<String>,
    mix: Mix,
    plan: LoadPlan,
) -> (Vec<JobRecord>, Instant) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let shared = Arc::new(Shared {
        jobs,
        accounts,
        mix,
        plan: plan.clone(),
        start: Instant::now(),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        bar,
    });
    let mut tasks = JoinSet::new();
    match plan.rate {
        Some(rate) => {
            let shared = shared.clone();
            tasks.spawn(async move { open_loop(shared, rate).await });
        }
        None => {
            for client in 0..plan.clients.max(1) {
                let shared = shared.clone();
                tasks.spawn(async move { closed_loop(shared, client).await });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    shared.bar.finish_and_clear();
    let start = shared.start;
    let mut records =
        std::mem::take(&mut *shared.records.lock().unwrap_or_else(|p| p.into_inner()));
    records.sort_by_key(|r| r.index);
    (records, start)
}

async fn closed_loop(shared: Arc<Shared>, client: u32) {
    let mut rng = StdRng::seed_from_u64(shared.plan.seed.wrapping_add(u64::from(client)));
    while let Some(index) = shared.claim() {
        let entry = shared.mix.pick(&mut rng).clone();
        let record = one_job(&shared, index, Some(client), &entry).await;
        shared.push(record);
    }
}

async fn open_loop(shared: Arc<Shared>, rate: f64) {
    let mut rng = StdRng::seed_from_u64(shared.plan.seed);
    let mut jobs = JoinSet::new();
    let mut next_at = Instant::now();
    loop {
        // Exponential inter-arrival times: a Poisson process of the given rate.
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        next_at += Duration::from_secs_f64(-u.ln() / rate.max(1e-9));
        tokio::time::sleep_until(next_at).await;
        let Some(index) = shared.claim() else { break };
        let entry = shared.mix.pick(&mut rng).clone();
        let shared = shared.clone();
        jobs.spawn(async move {
            let record = one_job(&shared, index, None, &entry).await;
            shared.push(record);
        });
    }
    while jobs.join_next().await.is_some() {}
}

/// Submits one job and follows it to its end (or the job timeout).
async fn one_job(shared: &Shared, index: u64, client: Option<u32>, entry: &MixEntry) -> JobRecord {
    let account = &shared.accounts[(index % shared.accounts.len() as u64) as usize];
    let mut rec = JobRecord::new(index, client, &entry.name, &entry.model, account);
    let seed = shared
        .plan
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index);
    let mut jobs = shared.jobs.clone();
    rec.submitted_s = shared.seconds();
    let sent = Instant::now();
    let created = jobs.create_job(entry.request(account, seed)).await;
    rec.submit_rpc_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
    let job = match created {
        Ok(r) => r.into_inner(),
        Err(status) => {
            rec.outcome = Outcome::Rejected;
            rec.code = Some(reason(&status));
            return rec;
        }
    };
    rec.job_id = Some(job.id.clone());
    let deadline = sent + shared.plan.job_timeout;
    match follow(shared, &mut jobs, account, &job.id, deadline, &mut rec).await {
        Some(last) => rec.apply_final(&last),
        None => {
            rec.outcome = Outcome::Unfinished;
            let _ = jobs
                .cancel_job(pb::CancelJobRequest {
                    account_id: account.clone(),
                    job_id: job.id.clone(),
                })
                .await;
        }
    }
    if let Some(end) = rec.ended_seen_s {
        rec.end_to_end_ms = Some((end - rec.submitted_s) * 1e3);
    }
    rec
}

/// Watches a job until its terminal state (re-opening the watch if the stream ends
/// early); `None` at the deadline.
async fn follow(
    shared: &Shared,
    jobs: &mut JobsClient,
    account: &str,
    job_id: &str,
    deadline: Instant,
    rec: &mut JobRecord,
) -> Option<pb::Job> {
    loop {
        let opened = tokio::time::timeout_at(
            deadline,
            jobs.watch_job(pb::WatchJobRequest {
                account_id: account.to_string(),
                job_id: job_id.to_string(),
            }),
        )
        .await
        .ok()?;
        let stream = match opened {
            Ok(stream) => Some(stream),
            // The job is not ours to watch: waiting would not change that.
            Err(status) if !transient(&status) => {
                rec.code = Some(reason(&status));
                return None;
            }
            Err(_) => None,
        };
        if let Some(stream) = stream {
            let mut stream = stream.into_inner();
            while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, stream.next()).await {
                let Some(job) = event.job else { continue };
                if job.state == pb::JobState::Running as i32 && rec.running_seen_s.is_none() {
                    rec.running_seen_s = Some(shared.seconds());
                }
                if is_terminal(job.state) {
                    rec.ended_seen_s = Some(shared.seconds());
                    return Some(job);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Worth opening the watch again (the server restarting, a dropped connection).
fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Cancelled
    )
}

/// The ErrorInfo reason of a refusal, else its gRPC code.
fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase())
}
