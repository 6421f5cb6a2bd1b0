//! A job's outputs: the frames encoded to MP4 and a poster PNG in scratch space (on a
//! blocking thread), then stored as its artifacts, within its time limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kinema_diffusion::VideoFrames;
use kinema_media::VideoSpec;
use kinema_store::{Artifact, ArtifactKind, Job, Stage, Usage};
use tracing::warn;

use super::deadlines::Deadlines;
use super::ending::Ending;
use crate::faults::{FaultPlan, FaultStage};
use crate::worker::StopFlags;
use crate::{FailureCode, JobFailure, Worker};

impl Worker {
    pub(super) async fn encode_and_store(
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
        if !self.enter_stage(job, Stage::EncodingVideo, flags).await {
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
        if !self.enter_stage(job, Stage::Storing, flags).await {
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
                removal: None,
            });
        }
        Ok(artifacts)
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
