//! Following a job while the model thread works on it: its progress recorded and
//! published (renewing the lease), a heartbeat while a stage reports nothing, its time
//! limits, and then the encoding and storing of what it generated.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kinema_store::{Job, Stage, StoreError, Usage};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::deadlines::{sleep_until_opt, Deadlines};
use super::ending::Ending;
use crate::faults::FaultPlan;
use crate::generation::{GenerateError, Generated, Progress, Signal};
use crate::worker::StopFlags;
use crate::{FailureCode, JobEventKind, JobFailure, Timeouts, Worker};

impl Worker {
    pub(super) async fn execute(
        &self,
        job: &Job,
        flags: &Arc<StopFlags>,
        plan: &FaultPlan,
        mut rx: mpsc::UnboundedReceiver<Signal>,
        generated: oneshot::Receiver<Generated>,
        usage: &mut Usage,
    ) -> Ending {
        let inner = &self.inner;
        let timeouts = self.timeouts_for(&job.params.model);
        // Persist and publish progress as it comes; the lease is renewed by each report
        // and by a heartbeat while a long stage reports nothing.
        let heartbeat_every = Duration::from_millis((inner.config.lease_ms / 3).max(100) as u64);
        let mut current = Progress {
            stage: Stage::EncodingText,
            step: 0,
        };
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.tick().await;
        let mut deadlines: Option<Deadlines> = None;
        loop {
            // The nearest time limit, once the model is ready and until one fires.
            let limit = deadlines
                .as_ref()
                .filter(|_| flags.timed_out.get().is_none())
                .and_then(Deadlines::next);
            let limit_at = limit
                .as_ref()
                .map(|(at, _)| tokio::time::Instant::from_std(*at));
            tokio::select! {
                next = rx.recv() => match next {
                    Some(Signal::Ready) => deadlines = Some(Deadlines::start(&timeouts)),
                    Some(Signal::Batched(n)) => usage.batch_size = n,
                    Some(Signal::Progress(p)) => {
                        let kind = if p.stage != current.stage { JobEventKind::StageChanged } else { JobEventKind::Progress };
                        current = p;
                        if let Some(d) = deadlines.as_mut() {
                            d.enter(p.stage);
                        }
                        if !self.report(job, current, flags, Some(kind)).await {
                            flags.request_cancel();
                        }
                    }
                    None => break,
                },
                _ = heartbeat.tick() => {
                    if !self.report(job, current, flags, None).await {
                        flags.request_cancel();
                    }
                }
                _ = sleep_until_opt(limit_at) => {
                    if let Some((_, why)) = limit {
                        warn!(%why, "time limit reached; stopping the job");
                        flags.time_out(why);
                    }
                }
            }
        }
        let generated = generated.await.unwrap_or_else(|_| {
            Err(GenerateError::Failed(JobFailure::new(
                FailureCode::ModelError,
                "the model thread ended abnormally",
            )))
        });
        let (frames, stages) = match generated {
            Ok(done) => done,
            Err(GenerateError::Stopped) => return self.stop_ending(job, flags).await,
            Err(GenerateError::Failed(f)) => return Ending::Failed(f),
        };
        [usage.encode_text_ms, usage.denoise_ms, usage.decode_ms] = stages.ms;
        [
            usage.encode_text_peak_bytes,
            usage.denoise_peak_bytes,
            usage.decode_peak_bytes,
        ] = stages.peak_bytes;

        let ending = self
            .encode_and_store(job, frames, plan, flags, usage, deadlines)
            .await;
        if let Ending::Failed(_) | Ending::Cancelled | Ending::Interrupted = ending {
            let _ = inner.artifacts.delete_job(&job.id).await;
        }
        ending
    }

    /// Records progress (renewing the lease) and publishes it. False when the job must
    /// stop: its cancel was requested, or the lease is no longer ours.
    pub(super) async fn report(
        &self,
        job: &Job,
        p: Progress,
        flags: &StopFlags,
        publish: Option<JobEventKind>,
    ) -> bool {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        self.heartbeat();
        match inner
            .control
            .report_progress(
                &job.id,
                &inner.owner,
                p.stage,
                p.step,
                inner.config.lease_ms,
                now,
            )
            .await
        {
            Ok(ack) => {
                if let Some(kind) = publish {
                    self.publish(kind, &job.id).await;
                }
                !ack.cancel_requested && !flags.cancel.load(Ordering::SeqCst)
            }
            Err(StoreError::LeaseLost) => false,
            Err(e) => {
                // A transient database error must not kill a job; the lease may lapse
                // and recovery takes over if it persists.
                warn!(error = %e, "recording progress failed");
                !flags.cancel.load(Ordering::SeqCst)
            }
        }
    }

    /// Records that the job entered `stage` after its last step (encoding, storing).
    /// False when the job must stop.
    pub(super) async fn enter_stage(&self, job: &Job, stage: Stage, flags: &StopFlags) -> bool {
        let progress = Progress {
            stage,
            step: job.params.steps,
        };
        self.report(job, progress, flags, Some(JobEventKind::StageChanged))
            .await
    }

    /// The server's time limits, with the model's own job limit if its manifest has one.
    pub(super) fn timeouts_for(&self, model: &str) -> Timeouts {
        let mut t = self.inner.config.timeouts.clone();
        if let Some(limit) = self
            .inner
            .models
            .manifest(model)
            .and_then(|m| m.job_timeout)
        {
            t.job = Some(limit);
        }
        t
    }
}
