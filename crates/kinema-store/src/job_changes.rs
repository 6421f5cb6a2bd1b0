//! What PostgreSQL tells every replica when a job changes: migration
//! `0005_job_notify.sql` adds a trigger that NOTIFYs [`JOB_CHANGES_CHANNEL`] with a
//! JSON payload when a job is inserted or its state, stage, progress step or cancel
//! request changes. Notifications are delivered at commit, in commit order, never for
//! a rolled-back transaction. This module reads the payload ([`JobChange`]) and
//! follows the channel on a connection of its own ([`JobChangeListener`]). SQLite has
//! no such thing: its one server's in-process events suffice.

use std::time::Duration;

use kinema_ledger::{Credits, UnixMillis};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::{Job, JobState, Stage, StoreError, Usage};

/// The channel the trigger notifies.
pub const JOB_CHANGES_CHANNEL: &str = "kinema_jobs";

/// How the listener's connection shows in `pg_stat_activity.application_name`.
pub const JOB_LISTENER_APPLICATION_NAME: &str = "kinema-job-listener";

/// How long a (re)connection of the listener may take before it is an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One committed change of a job, as the trigger saw the row after it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    pub job_id: String,
    pub state: JobState,
    pub stage: Option<Stage>,
    pub progress_step: u32,
    pub progress_total: u32,
    pub cancel_requested: bool,
    pub attempts: u32,
    pub handed_back: u32,
    pub held: Credits,
    pub debited: Credits,
    pub refunded: Credits,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub lease_owner: Option<String>,
    pub run_alone: bool,
    /// `None` when the trigger left it out (over 2 KiB) or it did not parse.
    pub usage: Option<Usage>,
    /// The database's clock when the row was written (just before the commit).
    pub written_at: UnixMillis,
}

/// The payload as the trigger writes it (`json_build_object`; keys kept short).
#[derive(Deserialize)]
struct Payload {
    id: String,
    state: String,
    stage: Option<String>,
    step: i64,
    total: i64,
    cancel: i64,
    attempts: i64,
    handed_back: i64,
    held: i64,
    debited: i64,
    refunded: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    lease_owner: Option<String>,
    run_alone: i64,
    usage: Option<String>,
    at: i64,
}

fn count(field: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("job change: {field} {value} is out of range")))
}

impl JobChange {
    /// Reads a notification's payload.
    pub fn parse(payload: &str) -> Result<JobChange, StoreError> {
        let p: Payload = serde_json::from_str(payload)?;
        Ok(JobChange {
            state: p.state.parse()?,
            stage: p.stage.map(|s| s.parse()).transpose()?,
            progress_step: count("step", p.step)?,
            progress_total: count("total", p.total)?,
            cancel_requested: p.cancel != 0,
            attempts: count("attempts", p.attempts)?,
            handed_back: count("handed_back", p.handed_back)?,
            held: p.held,
            debited: p.debited,
            refunded: p.refunded,
            started_at: p.started_at,
            finished_at: p.finished_at,
            lease_owner: p.lease_owner,
            run_alone: p.run_alone != 0,
            usage: p.usage.and_then(|u| serde_json::from_str(&u).ok()),
            written_at: p.at,
            job_id: p.id,
        })
    }

    /// Brings `job` (this job as it was before) up to this change. A change short of
    /// a terminal state touches only columns the payload carries; the rest (artifacts,
    /// failure, charges) is written only by a job's ending, so a terminal state should
    /// be re-read whole rather than applied. `queue_position` is cleared: it is worked
    /// out only where it is shown.
    pub fn apply_to(&self, job: &mut Job) {
        job.state = self.state;
        job.stage = self.stage;
        job.progress_step = self.progress_step;
        job.progress_total = self.progress_total;
        job.cancel_requested = self.cancel_requested;
        job.attempts = self.attempts;
        job.handed_back = self.handed_back;
        job.held = self.held;
        job.debited = self.debited;
        job.refunded = self.refunded;
        job.started_at = self.started_at;
        job.finished_at = self.finished_at;
        job.lease_owner = self.lease_owner.clone();
        job.run_alone = self.run_alone;
        if let Some(usage) = &self.usage {
            job.usage = usage.clone();
        }
        job.queue_position = None;
    }
}

/// What the listener heard next.
#[derive(Debug)]
pub enum Heard {
    Change(Box<JobChange>),
    /// Changes may have gone unheard: the connection was lost and made again (nothing
    /// is delivered for the time between), or a payload did not parse. Whoever follows
    /// a job should re-read it.
    Gap(String),
}

/// A connection that LISTENs on [`JOB_CHANGES_CHANNEL`] (PostgreSQL only).
pub struct JobChangeListener {
    listener: PgListener,
}

impl JobChangeListener {
    /// Connects to `database_url` (`postgres://…`) and starts listening: every change
    /// committed from now on is heard.
    pub async fn connect(database_url: &str) -> Result<JobChangeListener, StoreError> {
        let options: PgConnectOptions = database_url.parse()?;
        // A pool of one, which the listener uses to connect again after a loss.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.application_name(JOB_LISTENER_APPLICATION_NAME))
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(JOB_CHANGES_CHANNEL).await?;
        Ok(JobChangeListener { listener })
    }

    /// The next change. After a lost connection it connects again (listening again)
    /// and answers [`Heard::Gap`]; an error means it could not, and this listener
    /// should be replaced by a new one. Cancel-safe.
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        match self.listener.try_recv().await? {
            Some(n) => Ok(match JobChange::parse(n.payload()) {
                Ok(change) => Heard::Change(Box::new(change)),
                Err(e) => Heard::Gap(format!("unreadable job change {:?}: {e}", n.payload())),
            }),
            None => Ok(Heard::Gap("the listener's connection was lost".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"id" : "job_1", "state" : "RUNNING", "stage" : "DENOISING",
        "step" : 3, "total" : 8, "cancel" : 1, "attempts" : 2, "handed_back" : 1,
        "held" : 0, "debited" : 5, "refunded" : 0, "started_at" : 100,
        "finished_at" : null, "lease_owner" : "w-1", "run_alone" : 0, "usage" : "{\"device\":\"cpu\",\"batch_size\":1}",
        "at" : 1700000000123}"#;

    #[test]
    fn a_payload_reads_as_the_change_it_describes() {
        let c = JobChange::parse(PAYLOAD).unwrap();
        assert_eq!(c.job_id, "job_1");
        assert_eq!(c.state, JobState::Running);
        assert_eq!(c.stage, Some(Stage::Denoising));
        assert_eq!((c.progress_step, c.progress_total), (3, 8));
        assert!(c.cancel_requested);
        assert_eq!((c.attempts, c.handed_back), (2, 1));
        assert_eq!((c.held, c.debited, c.refunded), (0, 5, 0));
        assert_eq!((c.started_at, c.finished_at), (Some(100), None));
        assert_eq!(
            (c.lease_owner.as_deref(), c.run_alone),
            (Some("w-1"), false)
        );
        assert_eq!(c.usage.as_ref().map(|u| u.device.as_str()), Some("cpu"));
        assert_eq!(c.written_at, 1_700_000_000_123);
    }

    #[test]
    fn a_payload_without_usage_or_stage_still_reads() {
        let p = PAYLOAD
            .replace(r#""DENOISING""#, "null")
            .replace(r#""{\"device\":\"cpu\",\"batch_size\":1}""#, "null");
        let c = JobChange::parse(&p).unwrap();
        assert_eq!((c.stage, c.usage), (None, None));
    }

    #[test]
    fn a_payload_that_names_no_known_state_is_refused() {
        assert!(JobChange::parse(&PAYLOAD.replace("RUNNING", "NAPPING")).is_err());
        assert!(JobChange::parse(&PAYLOAD.replace(r#""step" : 3"#, r#""step" : -1"#)).is_err());
        assert!(JobChange::parse("not json").is_err());
    }
}
