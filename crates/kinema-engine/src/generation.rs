//! What a job's task and the model thread (`batch.rs`) say to each other: stage
//! changes and steps on the way, then the frames or why there are none.

use kinema_diffusion::{PipelineError, VideoFrames};
use kinema_store::Stage;

use crate::JobFailure;

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

/// The frames and what each model stage took.
pub(crate) type Generated = Result<(VideoFrames, StageUsage), GenerateError>;

/// Text encoding, denoising and decoding, in that order: milliseconds, and the device
/// memory's high-water mark in bytes (CUDA only; a batch's members share the
/// denoising figure).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StageUsage {
    pub ms: [u64; 3],
    pub peak_bytes: [Option<u64>; 3],
}

/// Why the model thread has no frames for a job.
pub(crate) enum GenerateError {
    /// Cancelled, interrupted, or the lease was lost: the caller finds out which.
    Stopped,
    Failed(JobFailure),
}

/// A pipeline error as the job sees it: a cancelled pipeline means the job was stopped
/// (its task finds out why); anything else fails it, classified by `JobFailure::from`.
pub(crate) fn pipeline_failure(e: PipelineError) -> GenerateError {
    match e {
        PipelineError::Cancelled { .. } => GenerateError::Stopped,
        other => GenerateError::Failed(other.into()),
    }
}
