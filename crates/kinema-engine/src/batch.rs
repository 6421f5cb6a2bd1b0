//! A batch of jobs on one blocking thread: each member's text encoding, one
//! `denoise_batch` over the members still going, then each member's decoding. Every
//! member has its own progress channel, stop switches, fault plan and result, so one
//! job's cancel, injected fault or failure ends only that job; a model error in the
//! shared denoise ends each member with that error (each then refunded on its own).
//! A job run alone is a batch of one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinema_diffusion::device_memory;
use kinema_diffusion::{BatchItem, Conditioning, GenerationRequest, PipelineError, StepControl};
use kinema_store::Stage;
use tokio::sync::{mpsc, oneshot};

use crate::faults::{FaultPlan, FaultStage};
use crate::generation::{pipeline_failure, GenerateError, Generated, Progress, Signal, StageUsage};
use crate::residency::ModelCache;
use crate::worker::StopFlags;
use crate::{FailureCode, JobFailure};

/// One job of a batch, as the blocking thread sees it.
pub(crate) struct Member {
    pub request: GenerationRequest,
    pub plan: FaultPlan,
    pub flags: Arc<StopFlags>,
    pub signals: mpsc::UnboundedSender<Signal>,
    pub done: oneshot::Sender<Generated>,
}

/// A member's way back to its job: its signals (dropped once it is done, which ends
/// the job's progress loop) and its result.
struct Outbox {
    signals: Option<mpsc::UnboundedSender<Signal>>,
    done: Option<oneshot::Sender<Generated>>,
}

impl Outbox {
    fn progress(&self, stage: Stage, step: u32) {
        if let Some(s) = &self.signals {
            let _ = s.send(Signal::Progress(Progress { stage, step }));
        }
    }

    fn signal(&self, signal: Signal) {
        if let Some(s) = &self.signals {
            let _ = s.send(signal);
        }
    }

    fn finish(&mut self, result: Generated) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
        self.signals = None;
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Runs the members (all of `model`, with one batch key) to their frames or their
/// end, sending each member's result as soon as it has one.
pub(crate) fn generate_batch(models: &ModelCache, model: &str, members: Vec<Member>) {
    let mut out: Vec<Outbox> = Vec::with_capacity(members.len());
    let mut jobs: Vec<(GenerationRequest, FaultPlan, Arc<StopFlags>)> =
        Vec::with_capacity(members.len());
    for m in members {
        out.push(Outbox {
            signals: Some(m.signals),
            done: Some(m.done),
        });
        jobs.push((m.request, m.plan, m.flags));
    }
    let pipeline = match models.get(model) {
        Ok(p) => p,
        Err(e) => {
            for o in &mut out {
                o.finish(Err(GenerateError::Failed(JobFailure::new(
                    FailureCode::ModelError,
                    e.to_string(),
                ))));
            }
            return;
        }
    };

    // Text, member by member.
    let device = pipeline.device();
    let mut usage = vec![StageUsage::default(); jobs.len()];
    let mut conditionings: Vec<Option<Conditioning>> = Vec::with_capacity(jobs.len());
    for (i, (request, plan, flags)) in jobs.iter().enumerate() {
        out[i].signal(Signal::Ready);
        device_memory::reset_peak(&device);
        let t = Instant::now();
        let encoded = if plan.fails_at(FaultStage::EncodeText) {
            Err(GenerateError::Failed(
                plan.failure("encode_text", FailureCode::ModelError),
            ))
        } else {
            pipeline.encode_prompt(request).map_err(pipeline_failure)
        };
        usage[i].ms[0] = ms(t);
        usage[i].peak_bytes[0] = device_memory::peak_bytes(&device);
        match encoded {
            Ok(_) if flags.stopped() => {
                out[i].finish(Err(GenerateError::Stopped));
                conditionings.push(None);
            }
            Ok(c) => conditionings.push(Some(c)),
            Err(e) => {
                out[i].finish(Err(e));
                conditionings.push(None);
            }
        }
    }

    // One denoise over the members still going.
    let live: Vec<usize> = (0..jobs.len())
        .filter(|&i| conditionings[i].is_some())
        .collect();
    let items: Vec<BatchItem> = live
        .iter()
        .filter_map(|&i| {
            conditionings[i].as_ref().map(|conditioning| BatchItem {
                request: &jobs[i].0,
                conditioning,
            })
        })
        .collect();
    for &i in &live {
        out[i].signal(Signal::Batched(items.len() as u32));
        out[i].progress(Stage::Denoising, 0);
    }
    device_memory::reset_peak(&device);
    let t = Instant::now();
    let results = if items.is_empty() {
        Vec::new()
    } else {
        pipeline.denoise_batch(&items, &mut |item, p| {
            let i = live[item];
            let (_, plan, flags) = &jobs[i];
            if plan.fails_at(FaultStage::Step(p.step)) {
                usage[i].ms[1] = ms(t);
                out[i].finish(Err(GenerateError::Failed(
                    plan.failure(&format!("step:{}", p.step), FailureCode::ModelError),
                )));
                return StepControl::Cancel;
            }
            flags.step.store(p.step, Ordering::SeqCst);
            out[i].progress(Stage::Denoising, p.step);
            if plan.step_delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(plan.step_delay_ms));
            }
            if flags.stopped() {
                // The job ends now; the batch goes on without it.
                flags.stopped_at.store(p.step, Ordering::SeqCst);
                usage[i].ms[1] = ms(t);
                out[i].finish(Err(GenerateError::Stopped));
                StepControl::Cancel
            } else {
                StepControl::Continue
            }
        })
    };
    let denoise_ms = ms(t);
    let denoise_peak = device_memory::peak_bytes(&device);
    drop(items);

    // Decoding, member by member; each result goes out as soon as it is ready.
    for (&i, result) in live.iter().zip(results) {
        if out[i].done.is_none() {
            continue; // stopped or failed at a step, already answered
        }
        usage[i].ms[1] = denoise_ms;
        usage[i].peak_bytes[1] = denoise_peak;
        let (request, plan, flags) = &jobs[i];
        let latents = match result {
            Ok(l) => l,
            Err(PipelineError::Cancelled { step }) => {
                flags.stopped_at.store(step, Ordering::SeqCst);
                out[i].finish(Err(GenerateError::Stopped));
                continue;
            }
            Err(e) => {
                out[i].finish(Err(pipeline_failure(e)));
                continue;
            }
        };
        device_memory::reset_peak(&device);
        let t = Instant::now();
        out[i].progress(Stage::Decoding, request.steps);
        let decoded = if plan.fails_at(FaultStage::Decode) {
            Err(GenerateError::Failed(
                plan.failure("decode", FailureCode::ModelError),
            ))
        } else {
            pipeline.decode(request, latents).map_err(pipeline_failure)
        };
        usage[i].ms[2] = ms(t);
        usage[i].peak_bytes[2] = device_memory::peak_bytes(&device);
        let generated = match decoded {
            Ok(_) if flags.stopped() => Err(GenerateError::Stopped),
            Ok(frames) => Ok((frames, usage[i])),
            Err(e) => Err(e),
        };
        out[i].finish(generated);
    }
    // Anything not answered (a result missing from the model): a model error.
    for o in &mut out {
        o.finish(Err(GenerateError::Failed(JobFailure::new(
            FailureCode::ModelError,
            "the model returned no result for this job",
        ))));
    }
}
