//! `WatchJob`'s stream: a SNAPSHOT of the job, then an event for each change of its
//! state, stage or denoising step, each carrying the whole job, until a terminal
//! state. A watcher that falls behind gets a fresh SNAPSHOT.
//!
//! Where the changes come from depends on the database. On PostgreSQL the job may be
//! changed by any replica, so the watch follows the database's own notifications
//! ([`crate::job_feed`]): one source, in commit order, for changes made here and
//! elsewhere alike. Each event's job is the job held plus the notification's delta; a
//! terminal state is re-read whole (artifacts, failure, money). On SQLite one server
//! makes every change, and its in-process events (`JobEvents`) suffice.

use std::sync::Arc;

use futures::Stream;
use kinema_engine::{JobEvent, JobEventKind};
use kinema_proto::v1 as pb;
use kinema_store::{Job, JobChange, Stage};
use tokio::sync::broadcast::{self, error::RecvError};
use tonic::Status;

use crate::app::App;
use crate::convert;
use crate::error::ApiError;
use crate::job_feed::FeedItem;

/// Where a watch hears of its job's changes.
pub enum Source {
    /// PostgreSQL: every replica's committed changes, from the database.
    Feed(broadcast::Receiver<FeedItem>),
    /// SQLite: this process's events.
    Local(broadcast::Receiver<JobEvent>),
}

impl Source {
    /// Subscribe before reading the snapshot, so no change falls between the two.
    pub fn subscribe(app: &App) -> Source {
        match &app.job_feed {
            Some(feed) => Source::Feed(feed.subscribe()),
            None => Source::Local(app.events.subscribe()),
        }
    }
}

/// The events of a watch of `job` (as read after subscribing to `source`).
pub fn stream(
    app: Arc<App>,
    source: Source,
    job: Job,
) -> impl Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static {
    let mut shutdown = app.shutdown.clone();
    let mut watch = Watch {
        app,
        source,
        held: job,
    };
    async_stream::try_stream! {
        yield convert::snapshot_event(&watch.held, watch.app.now());
        while !watch.held.state.is_terminal() {
            let next = tokio::select! {
                next = watch.next() => next,
                _ = shutdown.changed() => Ok(None),
            };
            match next? {
                Some(event) => yield event,
                None => break,
            }
        }
    }
}

/// One watch: its source and the job as its last event showed it.
struct Watch {
    app: Arc<App>,
    source: Source,
    held: Job,
}

/// What one item from the source comes to. (Both enums here live only for the moment
/// between receiving and returning, so their size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Step {
    Emit(pb::JobEvent),
    Skip,
    /// The job is gone (its account was deleted) or the source closed: the stream ends.
    End,
}

#[allow(clippy::large_enum_variant)]
enum Received {
    Feed(Result<FeedItem, RecvError>),
    Local(Result<JobEvent, RecvError>),
}

/// What of a job decides whether a watcher has seen it change.
fn tracked(j: &Job) -> (kinema_store::JobState, Option<Stage>, u32, bool, u32) {
    (
        j.state,
        j.stage,
        j.progress_step,
        j.cancel_requested,
        j.attempts,
    )
}

impl Watch {
    /// The next event; `None` ends the stream.
    async fn next(&mut self) -> Result<Option<pb::JobEvent>, Status> {
        loop {
            let received = match &mut self.source {
                Source::Feed(rx) => Received::Feed(rx.recv().await),
                Source::Local(rx) => Received::Local(rx.recv().await),
            };
            let step = match received {
                Received::Feed(Ok(FeedItem::Changed(c))) if c.job_id == self.held.id => {
                    self.on_change(&c).await?
                }
                Received::Feed(Ok(FeedItem::Changed(_))) => Step::Skip,
                Received::Feed(Ok(FeedItem::Resync)) => self.reread(false).await?,
                Received::Local(Ok(e)) if e.job.id == self.held.id => {
                    self.held = e.job.clone();
                    Step::Emit(convert::job_event(&e))
                }
                Received::Local(Ok(_)) => Step::Skip,
                // Fell behind: the store has the truth.
                Received::Feed(Err(RecvError::Lagged(_)))
                | Received::Local(Err(RecvError::Lagged(_))) => self.reread(true).await?,
                Received::Feed(Err(RecvError::Closed))
                | Received::Local(Err(RecvError::Closed)) => Step::End,
            };
            match step {
                Step::Emit(event) => return Ok(Some(event)),
                Step::Skip => {}
                Step::End => return Ok(None),
            }
        }
    }

    /// A committed change of the watched job, from the database.
    async fn on_change(&mut self, c: &JobChange) -> Result<Step, Status> {
        if c.state.is_terminal() {
            // The ending wrote artifacts, the failure and money beside the row.
            let Some(job) = self.read().await? else {
                return Ok(Step::End);
            };
            self.held = job;
            return Ok(Step::Emit(self.event(JobEventKind::StateChanged)));
        }
        if self.already_holds(c) {
            return Ok(Step::Skip);
        }
        let kind = if c.state != self.held.state {
            Some(JobEventKind::StateChanged)
        } else if c.stage != self.held.stage {
            Some(JobEventKind::StageChanged)
        } else if c.progress_step != self.held.progress_step {
            Some(JobEventKind::Progress)
        } else {
            // A cancel request alone is no event; the next one carries it.
            None
        };
        c.apply_to(&mut self.held);
        Ok(kind.map_or(Step::Skip, |k| Step::Emit(self.event(k))))
    }

    /// Whether the job held already includes `c`: a snapshot (or re-read) taken after
    /// `c` committed but before it was heard. Within one start of a job, in one state
    /// and stage, the step and the cancel request only grow.
    fn already_holds(&self, c: &JobChange) -> bool {
        let h = &self.held;
        c.attempts < h.attempts
            || (c.attempts == h.attempts
                && c.state == h.state
                && c.stage == h.stage
                && c.progress_step <= h.progress_step
                && (!c.cancel_requested || h.cancel_requested))
    }

    /// Reads the job again: a SNAPSHOT if it changed (or always, after falling behind).
    async fn reread(&mut self, always: bool) -> Result<Step, Status> {
        let Some(job) = self.read().await? else {
            return Ok(Step::End);
        };
        let changed = always || tracked(&job) != tracked(&self.held);
        self.held = job;
        Ok(if changed {
            Step::Emit(convert::snapshot_event(&self.held, self.app.now()))
        } else {
            Step::Skip
        })
    }

    async fn read(&self) -> Result<Option<Job>, Status> {
        self.app
            .store
            .get_job(None, &self.held.id)
            .await
            .map_err(|e| Status::from(ApiError::from(e)))
    }

    fn event(&self, kind: JobEventKind) -> pb::JobEvent {
        convert::job_event(&JobEvent {
            kind,
            job: self.held.clone(),
            at_ms: self.app.now(),
        })
    }
}
