//! What the load generator saw of one job, from its submission to its end.

use kinema_proto::v1 as pb;
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};

/// How a submission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Accepted but not ended within the job timeout (then cancelled), or no longer
    /// watchable (`code` says why).
    Unfinished,
    /// `CreateJob` refused it (`code` says why).
    Rejected,
}

/// Stage times the worker recorded (Job.usage), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    pub encode_text: f64,
    pub denoise: f64,
    pub decode: f64,
    pub encode_video: f64,
    pub store: f64,
    pub total: f64,
}

/// One submission. Client times are seconds since the run started (this process's
/// monotonic clock); server durations come from the job's own timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Submission order, from 0.
    pub index: u64,
    /// Closed loop: the client that submitted it; open loop: none.
    pub client: Option<u32>,
    /// Mix entry name.
    pub mix: String,
    pub model: String,
    pub account: String,
    pub job_id: Option<String>,
    pub outcome: Outcome,
    /// Failure code of a failed job (`MODEL_ERROR`, …) or the reason a submission was
    /// refused (`INSUFFICIENT_CREDITS`, or the gRPC code when there is no reason).
    pub code: Option<String>,
    pub submitted_s: f64,
    /// How long `CreateJob` took.
    pub submit_rpc_ms: Option<f64>,
    /// When the watch first showed the job RUNNING (absent when it was already past).
    pub running_seen_s: Option<f64>,
    /// When the watch showed its terminal state.
    pub ended_seen_s: Option<f64>,
    /// Server: started_at - created_at.
    pub queue_wait_ms: Option<f64>,
    /// Server: finished_at - started_at.
    pub run_ms: Option<f64>,
    /// Client: ended_seen - submitted.
    pub end_to_end_ms: Option<f64>,
    pub attempts: u32,
    pub device: Option<String>,
    pub stages_ms: Option<StageTimes>,
    /// Worker idle time before this job while it was queued (Usage.scheduler_gap_us).
    pub scheduler_gap_us: Option<u64>,
}

impl JobRecord {
    pub fn new(index: u64, client: Option<u32>, mix: &str, model: &str, account: &str) -> Self {
        JobRecord {
            index,
            client,
            mix: mix.to_string(),
            model: model.to_string(),
            account: account.to_string(),
            job_id: None,
            outcome: Outcome::Unfinished,
            code: None,
            submitted_s: 0.0,
            submit_rpc_ms: None,
            running_seen_s: None,
            ended_seen_s: None,
            queue_wait_ms: None,
            run_ms: None,
            end_to_end_ms: None,
            attempts: 0,
            device: None,
            stages_ms: None,
            scheduler_gap_us: None,
        }
    }

    /// Fills in what the job's final state says.
    pub fn apply_final(&mut self, job: &pb::Job) {
        self.outcome = match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Succeeded) => Outcome::Succeeded,
            Ok(pb::JobState::Failed) => Outcome::Failed,
            Ok(pb::JobState::Cancelled) => Outcome::Cancelled,
            _ => Outcome::Unfinished,
        };
        if self.outcome == Outcome::Failed {
            self.code = Some(
                job.failure
                    .as_ref()
                    .map(|f| f.code.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "UNKNOWN".into()),
            );
        }
        let created = job.created_at.as_ref().map(unix_ms);
        let started = job.started_at.as_ref().map(unix_ms);
        let finished = job.finished_at.as_ref().map(unix_ms);
        self.queue_wait_ms = created.zip(started).map(|(c, s)| s - c);
        self.run_ms = started.zip(finished).map(|(s, f)| f - s);
        if let Some(u) = &job.usage {
            self.attempts = u.attempts;
            if !u.device.is_empty() {
                self.device = Some(u.device.clone());
            }
            if started.is_some() {
                self.stages_ms = Some(StageTimes {
                    encode_text: u.encode_text_ms as f64,
                    denoise: u.denoise_ms as f64,
                    decode: u.decode_ms as f64,
                    encode_video: u.encode_video_ms as f64,
                    store: u.store_ms as f64,
                    total: u.total_ms as f64,
                });
            }
            self.scheduler_gap_us = u.scheduler_gap_us;
        }
    }
}

pub fn unix_ms(t: &Timestamp) -> f64 {
    t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6
}

pub fn is_terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}
