//! One job from lease to its terminal state: text encoding, denoising, decoding (on a
//! blocking thread), video encoding, storing, then SUCCEEDED / FAILED / CANCELLED
//! with the money effect the store writes alongside.
//!
//! This file starts a batch's jobs and follows each to its end; `progress` follows a
//! job while the model thread runs, `outputs` encodes and stores what it generated,
//! `ending` writes its end down, `deadlines` keeps its time limits.

mod deadlines;
mod ending;
mod outputs;
mod progress;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use kinema_diffusion::{GenerationRequest, RgbImage};
use kinema_params::GenerationParams;
use kinema_store::{Job, Usage};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info_span, Instrument};

use crate::batch::{generate_batch, Member};
use crate::faults::FaultPlan;
use crate::generation::{GenerateError, Generated, Signal};
use crate::idle_gap;
use crate::worker::{StopFlags, NO_STEP};
use crate::{meters, FailureCode, JobFailure, Worker};

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
        let Some(model) = jobs.first().map(|j| j.params.model.clone()) else {
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
            let planned = self
                .fault_plan(&job)
                .and_then(|plan| pipeline_request(&job.params).map(|request| (plan, request)));
            let plan = match planned {
                Ok((plan, request)) => {
                    members.push(Member {
                        request,
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
            let span =
                info_span!("job", id = %job.id, model = %job.params.model, attempt = job.attempts);
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
            meters::stage(&job.params.model, stage, ms);
        }
        self.finish(&job, ending, &usage).await
    }
}

/// The pipeline's request for a job's parameters, with the input images' stored PNGs
/// decoded to the RGB the models take (already the video's size). The one place
/// parameters become a model's request: the worker's and `kinema generate
/// --model-dir`'s.
pub fn pipeline_request(p: &GenerationParams) -> Result<GenerationRequest, String> {
    let rgb = |image: Option<&kinema_params::InputImage>, field: &str| {
        let Some(image) = image else {
            return Ok(None);
        };
        let decoded = image
            .pixels()
            .ok_or_else(|| format!("the job's {field} was not loaded"))?
            .map_err(|e| format!("the job's stored {field} {e}"))?;
        if (decoded.width, decoded.height) != (p.width, p.height) {
            return Err(format!(
                "the job's {field} is {}x{}, not the video's {}x{}",
                decoded.width, decoded.height, p.width, p.height
            ));
        }
        RgbImage::new(decoded.width, decoded.height, decoded.rgb)
            .map(Some)
            .ok_or_else(|| format!("the job's {field} has the wrong number of bytes"))
    };
    Ok(GenerationRequest {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        width: p.width,
        height: p.height,
        num_frames: p.num_frames,
        steps: p.steps,
        guidance_scale: p.guidance_scale,
        guidance_scale_2: p.guidance_scale_2,
        seed: p.seed,
        image: rgb(p.image.as_ref(), "image")?,
        last_image: rgb(p.last_image.as_ref(), "last_image")?,
    })
}
