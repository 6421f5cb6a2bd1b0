//! One job from lease to its terminal state: text encoding, denoising, decoding (on a
//! blocking thread), video encoding, storing, then SUCCEEDED / FAILED / CANCELLED
//! with the money effect the store writes alongside.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinema_diffusion::{GenerationRequest, PipelineError, VideoFrames};
use kinema_media::VideoSpec;
use kinema_store::{Artifact, ArtifactKind, Job, JobState, Stage, StoreError, Usage};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, info_span, warn, Instrument};

use crate::batch::{generate_batch, Generated, Member};
use crate::faults::{FaultPlan, FaultStage};
use crate::idle_gap;
use crate::worker::{StopFlags, NO_STEP};
use crate::{meters, FailureCode, JobEventKind, JobFailure, Timeouts, Worker};

/// How a job's run ended, before it is written down.
enum Ending {
    Succeeded {
        artifacts: Vec<Artifact>,
    },
    Failed(JobFailure),
    Cancelled,
    /// Stopped by shutdown: back to the queue.
    Interrupted,
    /// The lease went to someone else (recovery): write nothing.
    LeaseLost,
}

/// Stage changes and steps, sent from the blocking thread to the async side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    pub stage: Stage,
    pub step: u32,
}

/// What the blocking thread tells the async side.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    /// The model is resident: time limits start now.
    Ready,
    /// Denoising starts in a batch of this many jobs.
    Batched(u32),
    Progress(Progress),
}

/// The job's time limits as instants, once the model is ready.
struct Deadlines {
    timeouts: Timeouts,
    job: Option<Instant>,
    stage: Stage,
    stage_started: Instant,
}

impl Deadlines {
    fn start(timeouts: &Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timeouts: timeouts.clone(),
            job: timeouts.job.map(|d| now + d),
            stage: Stage::EncodingText,
            stage_started: now,
        }
    }

    fn enter(&mut self, stage: Stage) {
        if stage != self.stage {
            self.stage = stage;
            self.stage_started = Instant::now();
        }
    }

    /// The nearest limit and what it limits.
    fn next(&self) -> Option<(Instant, String)> {
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
    fn expired(&self) -> Option<String> {
        self.next()
            .filter(|(at, _)| Instant::now() >= *at)
            .map(|(_, why)| why)
    }
}

/// A batch member's side of its run: its stop switches, fault plan, and the
/// channels from the model thread.
struct Seat {
    flags: Arc<StopFlags>,
    plan: FaultPlan,
    signals: mpsc::UnboundedReceiver<Signal>,
    generated: oneshot::Receiver<Generated>,
}

impl Worker {
    /// Runs jobs leased together (one model and batch key; a job alone is a batch of
    /// one): one blocking thread generates for all of them (`batch.rs`), and each job
    /// follows its own progress, time limits, encoding, storing and ending. Returns
    /// the jobs that went back to the queue for an out-of-memory retry (which should
    /// run on another device if one is free). `idle_since`: when this worker's previous
    /// job ended, if the first job was already queued then (its scheduler gap).
    pub(crate) async fn run_batch(&self, jobs: Vec<Job>, idle_since: Option<Instant>) -> Vec<Job> {
        let Some(model) = jobs.first().map(|j| j.model.clone()) else {
            return Vec::new();
        };
        let mut idle_since = idle_since;
        let mut members = Vec::with_capacity(jobs.len());
        let mut runs = tokio::task::JoinSet::new();
        for job in jobs {
            let flags = Arc::new(StopFlags::default());
            if job.cancel_requested {
                flags.request_cancel();
            }
            self.inner
                .lock_running()
                .insert(job.id.clone(), flags.clone());
            let (signals, rx) = mpsc::unbounded_channel::<Signal>();
            let (done, generated) = oneshot::channel::<Generated>();
            let plan = match self.fault_plan(&job) {
                Ok(plan) => {
                    members.push(Member {
                        request: generation_request(&job),
                        plan: plan.clone(),
                        flags: flags.clone(),
                        signals,
                        done,
                    });
                    plan
                }
                Err(e) => {
                    let failure = JobFailure::new(FailureCode::Internal, e);
                    let _ = done.send(Err(GenerateError::Failed(failure)));
                    FaultPlan::default()
                }
            };
            let span = info_span!("job", id = %job.id, model = %job.model, attempt = job.attempts);
            let worker = self.clone();
            // the gap before the batch counts once, on its first job
            let gap_since = idle_since.take();
            runs.spawn(
                async move {
                    let seat = Seat {
                        flags,
                        plan,
                        signals: rx,
                        generated,
                    };
                    worker.run_job(job, seat, gap_since).await
                }
                .instrument(span),
            );
        }
        let generation = {
            let models = self.inner.models.clone();
            tokio::task::spawn_blocking(move || generate_batch(&models, &model, members))
        };
        let mut retries = Vec::new();
        while let Some(joined) = runs.join_next().await {
            match joined {
                Ok(retry) => retries.extend(retry),
                Err(e) => error!(error = %e, "a job's task ended abnormally"),
            }
        }
        if let Err(e) = generation.await {
            error!(error = %e, "the model thread ended abnormally");
        }
        retries
    }

    fn fault_plan(&self, job: &Job) -> Result<FaultPlan, String> {
        if self.inner.config.fault_injection {
            Ok(FaultPlan::from_metadata(&job.metadata)?.for_attempt(job.attempts))
        } else {
            Ok(FaultPlan::default())
        }
    }

    async fn run_job(&self, job: Job, seat: Seat, idle_since: Option<Instant>) -> Option<Job> {
        let Seat {
            flags,
            plan,
            signals,
            generated,
        } = seat;
        let inner = &self.inner;
        let started = Instant::now();
        let mut usage = Usage {
            device: inner.device.name.clone(),
            ..Usage::default()
        };

        // Drain or shutdown: after the grace period a job still running is stopped
        // and requeued.
        let drain = {
            let flags = flags.clone();
            let grace = inner.config.drain_grace;
            let mut stop = self.stop_signal();
            tokio::spawn(async move {
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(grace).await;
                flags.interrupt.store(true, Ordering::SeqCst);
            })
        };

        usage.scheduler_gap_us = idle_gap::gap_us(idle_since);
        if let Some(us) = usage.scheduler_gap_us {
            meters::scheduler_gap(&inner.device.name, us);
        }
        let ending = self
            .execute(&job, &flags, &plan, signals, generated, &mut usage)
            .await;
        drain.abort();
        inner.lock_running().remove(&job.id);
        usage.total_ms = started.elapsed().as_millis() as u64;
        let seen = flags.cancel_seen_at.load(Ordering::SeqCst);
        usage.cancel_seen_at_step = (seen != NO_STEP).then_some(seen);
        let stopped = flags.stopped_at.load(Ordering::SeqCst);
        usage.stopped_at_step = (stopped != NO_STEP).then_some(stopped);
        for (stage, ms) in [
            ("encode_text", usage.encode_text_ms),
            ("denoise", usage.denoise_ms),
            ("decode", usage.decode_ms),
            ("encode_video", usage.encode_video_ms),
            ("store", usage.store_ms),
        ] {
            meters::stage(&job.model, stage, ms);
        }
        self.finish(&job, ending, &usage).await
    }

    async fn execute(
        &self,
        job: &Job,
        flags: &Arc<StopFlags>,
        plan: &FaultPlan,
        mut rx: mpsc::UnboundedReceiver<Signal>,
        generated: oneshot::Receiver<Generated>,
        usage: &mut Usage,
    ) -> Ending {
        let inner = &self.inner;
        let timeouts = self.timeouts_for(&job.model);
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
        let (frames, timings) = match generated {
            Ok(done) => done,
            Err(GenerateError::Stopped) => return self.stop_ending(job, flags).await,
            Err(GenerateError::Failed(f)) => return Ending::Failed(f),
        };
        usage.encode_text_ms = timings[0];
        usage.denoise_ms = timings[1];
        usage.decode_ms = timings[2];

        let ending = self
            .encode_and_store(job, frames, plan, flags, usage, deadlines)
            .await;
        if let Ending::Failed(_) | Ending::Cancelled | Ending::Interrupted = ending {
            let _ = inner.artifacts.delete_job(&job.id).await;
        }
        ending
    }

    async fn encode_and_store(
        &self,
        job: &Job,
        frames: VideoFrames,
        plan: &FaultPlan,
        flags: &Arc<StopFlags>,
        usage: &mut Usage,
        deadlines: Option<Deadlines>,
    ) -> Ending {
        let inner = &self.inner;
        let mut deadlines =
            deadlines.unwrap_or_else(|| Deadlines::start(&self.timeouts_for(&job.model)));
        deadlines.enter(Stage::EncodingVideo);
        if !self
            .report(
                job,
                Progress {
                    stage: Stage::EncodingVideo,
                    step: job.steps,
                },
                flags,
                Some(JobEventKind::StageChanged),
            )
            .await
        {
            return self.stop_ending(job, flags).await;
        }
        let scratch = inner.config.scratch_dir.join(&job.id);
        let t = Instant::now();
        let encoded = {
            let scratch = scratch.clone();
            let fps = job.fps;
            let fail = plan
                .fails_at(FaultStage::EncodeVideo)
                .then(|| plan.failure("encode_video", FailureCode::EncoderError));
            tokio::task::spawn_blocking(move || encode_outputs(&frames, fps, &scratch, fail)).await
        };
        usage.encode_video_ms = t.elapsed().as_millis() as u64;
        // The encoder cannot be interrupted: a limit it passed fails the job now.
        if let Some(why) = deadlines.expired() {
            remove_scratch(&scratch).await;
            return Ending::Failed(JobFailure::new(FailureCode::Timeout, why));
        }
        let files = match encoded {
            Ok(Ok(files)) => files,
            Ok(Err(f)) => {
                remove_scratch(&scratch).await;
                return Ending::Failed(f);
            }
            Err(e) => {
                remove_scratch(&scratch).await;
                return Ending::Failed(JobFailure::new(
                    FailureCode::EncoderError,
                    format!("encoder thread ended abnormally: {e}"),
                ));
            }
        };
        if !self
            .report(
                job,
                Progress {
                    stage: Stage::Storing,
                    step: job.steps,
                },
                flags,
                Some(JobEventKind::StageChanged),
            )
            .await
        {
            remove_scratch(&scratch).await;
            return self.stop_ending(job, flags).await;
        }
        let t = Instant::now();
        deadlines.enter(Stage::Storing);
        let stored = match deadlines.next() {
            Some((at, why)) => tokio::time::timeout_at(
                tokio::time::Instant::from_std(at),
                self.store_outputs(job, &files, plan),
            )
            .await
            .unwrap_or_else(|_| Err(JobFailure::new(FailureCode::Timeout, why))),
            None => self.store_outputs(job, &files, plan).await,
        };
        usage.store_ms = t.elapsed().as_millis() as u64;
        remove_scratch(&scratch).await;
        match stored {
            Ok(artifacts) => Ending::Succeeded { artifacts },
            Err(f) => Ending::Failed(f),
        }
    }

    async fn store_outputs(
        &self,
        job: &Job,
        files: &EncodedFiles,
        plan: &FaultPlan,
    ) -> Result<Vec<Artifact>, JobFailure> {
        let inner = &self.inner;
        if plan.fails_at(FaultStage::Store) {
            return Err(plan.failure("store", FailureCode::StorageError));
        }
        let expires_at = inner
            .clock
            .now_ms()
            .saturating_add(inner.config.artifact_ttl_ms);
        let mut artifacts = Vec::new();
        for (kind, name, mime, path) in [
            (ArtifactKind::Video, "video.mp4", "video/mp4", &files.video),
            (
                ArtifactKind::Poster,
                "poster.png",
                "image/png",
                &files.poster,
            ),
        ] {
            let stored = inner
                .artifacts
                .put_file(&job.id, name, path)
                .await
                .map_err(|e| JobFailure::new(FailureCode::StorageError, e.to_string()))?;
            artifacts.push(Artifact {
                kind,
                mime: mime.into(),
                bytes: stored.bytes,
                sha256: stored.sha256,
                location: stored.location,
                expires_at,
            });
        }
        Ok(artifacts)
    }

    /// Records progress (renewing the lease) and publishes it. False when the job must
    /// stop: its cancel was requested, or the lease is no longer ours.
    async fn report(
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
            .store
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

    /// Why a job stopped early: a time limit, shutdown, a lost lease, or a cancel.
    async fn stop_ending(&self, job: &Job, flags: &StopFlags) -> Ending {
        if !flags.cancel.load(Ordering::SeqCst) {
            if let Some(why) = flags.timed_out.get() {
                return Ending::Failed(JobFailure::new(FailureCode::Timeout, why.clone()));
            }
            if flags.interrupt.load(Ordering::SeqCst) {
                return Ending::Interrupted;
            }
        }
        match self.inner.store.get_job(None, &job.id).await {
            Ok(Some(j)) if j.state == JobState::Running && j.cancel_requested => Ending::Cancelled,
            Ok(Some(j)) if j.state == JobState::Running => {
                if flags.cancel.load(Ordering::SeqCst) {
                    Ending::Cancelled
                } else {
                    Ending::LeaseLost
                }
            }
            _ => Ending::LeaseLost,
        }
    }

    async fn finish(&self, job: &Job, ending: Ending, usage: &Usage) -> Option<Job> {
        let inner = &self.inner;
        let owner = &inner.owner;
        let now = inner.clock.now_ms();
        let code = match &ending {
            Ending::Failed(f) => f.code.as_str(),
            _ => "",
        };
        let written = match ending {
            Ending::Succeeded { artifacts } => {
                let result = inner
                    .store
                    .complete_job(&job.id, owner, &artifacts, usage, now)
                    .await
                    .map(|done| {
                        for cancelled in done.cancelled {
                            inner
                                .events
                                .publish(JobEventKind::StateChanged, cancelled, now);
                        }
                        done.job
                    });
                if let Ok(j) = &result {
                    if j.state != JobState::Succeeded {
                        // Cancelled after the last step: the stored files go.
                        let _ = inner.artifacts.delete_job(&job.id).await;
                    }
                }
                result
            }
            Ending::Failed(failure) if failure.code.retryable() => {
                let oom = failure.code == FailureCode::OutOfMemory;
                let allowed = failure
                    .code
                    .attempts_allowed(inner.config.max_attempts, job.run_alone);
                warn!(code = failure.code.as_str(), message = %failure.message, attempt = job.attempts, allowed, "job failed; retryable");
                let written = inner
                    .store
                    .retry_job(
                        &job.id,
                        owner,
                        &failure.to_record(),
                        allowed,
                        oom,
                        usage,
                        now,
                    )
                    .await;
                if let Ok(j) = &written {
                    if j.state == JobState::Queued {
                        meters::retried(failure.code.as_str());
                    }
                }
                written
            }
            Ending::Failed(failure) => {
                warn!(code = failure.code.as_str(), message = %failure.message, "job failed");
                inner
                    .store
                    .fail_job(&job.id, owner, &failure.to_record(), usage, now)
                    .await
            }
            Ending::Cancelled => {
                inner
                    .store
                    .finish_cancelled(&job.id, owner, usage, now)
                    .await
            }
            Ending::Interrupted => inner.store.requeue_job(&job.id, owner).await,
            Ending::LeaseLost => {
                warn!("lease lost; another worker or recovery owns the job now");
                return None;
            }
        };
        match written {
            Ok(j) => {
                info!(state = %j.state, debited = j.debited, refunded = j.refunded, ms = usage.total_ms, "job finished");
                let failed_code = if j.state == JobState::Failed {
                    code
                } else {
                    ""
                };
                meters::job_finished(&inner.device.name, j.state.as_str(), failed_code);
                let requeued = j.state == JobState::Queued;
                if requeued {
                    // Back in the queue: any worker (this one too) may take it now.
                    inner.wake_all();
                }
                inner
                    .events
                    .publish(JobEventKind::StateChanged, j.clone(), now);
                (requeued && code == FailureCode::OutOfMemory.as_str()).then_some(j)
            }
            Err(StoreError::LeaseLost) => {
                warn!("lease lost before the job's end was written");
                None
            }
            Err(e) => {
                warn!(error = %e, "writing the job's end failed; recovery will retry it");
                None
            }
        }
    }

    /// The server's time limits, with the model's own job limit if its manifest has one.
    fn timeouts_for(&self, model: &str) -> Timeouts {
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

    pub(crate) async fn publish(&self, kind: JobEventKind, job_id: &str) {
        match self.inner.store.get_job(None, job_id).await {
            Ok(Some(job)) => self
                .inner
                .events
                .publish(kind, job, self.inner.clock.now_ms()),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "reading a job to publish its event failed"),
        }
    }
}

fn generation_request(job: &Job) -> GenerationRequest {
    GenerationRequest {
        prompt: job.prompt.clone(),
        negative_prompt: job.negative_prompt.clone(),
        width: job.width,
        height: job.height,
        num_frames: job.num_frames,
        steps: job.steps,
        guidance_scale: job.guidance_scale,
        seed: job.seed,
    }
}

pub(crate) enum GenerateError {
    /// Cancelled, interrupted, or the lease was lost: the caller finds out which.
    Stopped,
    Failed(JobFailure),
}

pub(crate) fn pipeline_failure(e: PipelineError) -> GenerateError {
    match e {
        PipelineError::Cancelled { .. } => GenerateError::Stopped,
        other => GenerateError::Failed(other.into()),
    }
}

struct EncodedFiles {
    video: PathBuf,
    poster: PathBuf,
}

fn encode_outputs(
    frames: &VideoFrames,
    fps: u32,
    dir: &Path,
    injected: Option<JobFailure>,
) -> Result<EncodedFiles, JobFailure> {
    let encoder_error =
        |e: &dyn std::fmt::Display| JobFailure::new(FailureCode::EncoderError, e.to_string());
    if let Some(failure) = injected {
        return Err(failure);
    }
    if frames.num_frames == 0 {
        return Err(JobFailure::new(
            FailureCode::ModelError,
            "the model returned no frames",
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| JobFailure::new(FailureCode::StorageError, format!("scratch dir: {e}")))?;
    let spec = VideoSpec {
        width: frames.width as u32,
        height: frames.height as u32,
        fps,
    };
    let rgb: Vec<Vec<u8>> = (0..frames.num_frames)
        .map(|i| frames.frame_rgb8(i))
        .collect();
    let video = dir.join("video.mp4");
    kinema_media::encode_mp4(&spec, rgb.iter().map(Vec::as_slice), &video)
        .map_err(|e| encoder_error(&e))?;
    let poster = dir.join("poster.png");
    kinema_media::write_poster_png(spec.width, spec.height, &rgb[0], &poster)
        .map_err(|e| encoder_error(&e))?;
    Ok(EncodedFiles { video, poster })
}

async fn remove_scratch(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(error = %e, dir = %dir.display(), "removing scratch files failed");
        }
    }
}

/// Sleeps until `at`, or forever when there is no limit.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
