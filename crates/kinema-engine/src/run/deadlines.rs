//! A job's time limits (docs/api.md, "Jobs") as instants, from when its model is ready.

use std::time::Instant;

use kinema_store::Stage;

use crate::Timeouts;

/// The job's time limits as instants, once the model is ready.
pub(super) struct Deadlines {
    timeouts: Timeouts,
    job: Option<Instant>,
    stage: Stage,
    stage_started: Instant,
}

impl Deadlines {
    pub(super) fn start(timeouts: &Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timeouts: timeouts.clone(),
            job: timeouts.job.map(|d| now + d),
            stage: Stage::EncodingText,
            stage_started: now,
        }
    }

    pub(super) fn enter(&mut self, stage: Stage) {
        if stage != self.stage {
            self.stage = stage;
            self.stage_started = Instant::now();
        }
    }

    /// The nearest limit and what it limits.
    pub(super) fn next(&self) -> Option<(Instant, String)> {
        let stage = self.timeouts.stage(self.stage).map(|d| {
            (
                self.stage_started + d,
                format!("stage {} exceeded its limit of {d:?}", self.stage),
            )
        });
        let job = self.job.map(|at| {
            (
                at,
                format!(
                    "the job exceeded its limit of {:?}",
                    self.timeouts.job.unwrap_or_default()
                ),
            )
        });
        match (stage, job) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Why the limit has passed, if it has.
    pub(super) fn expired(&self) -> Option<String> {
        self.next()
            .filter(|(at, _)| Instant::now() >= *at)
            .map(|(_, why)| why)
    }
}

/// Sleeps until `at`, or forever when there is no limit.
pub(super) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
