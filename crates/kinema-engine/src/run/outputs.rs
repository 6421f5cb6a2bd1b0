//! A job's outputs: the frames encoded as the job asked (its `output_format`, H.264 MP4
//! by default), a poster PNG and the preview it asked for, in scratch space (on a
//! blocking thread), then stored as its artifacts, within its time limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kinema_diffusion::VideoFrames;
use kinema_media::{PreviewOptions, VideoOutput, VideoSpec};
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
            deadlines.unwrap_or_else(|| Deadlines::start(&self.timeouts_for(&job.params.model)));
        deadlines.enter(Stage::EncodingVideo);
        if !self.enter_stage(job, Stage::EncodingVideo, flags).await {
            return self.stop_ending(job, flags).await;
        }
        let scratch = inner.config.scratch_dir.join(&job.id);
        let t = Instant::now();
        let encoded = {
            let scratch = scratch.clone();
            let fail = plan
                .fails_at(FaultStage::EncodeVideo)
                .then(|| plan.failure("encode_video", FailureCode::EncoderError));
            let asked = requested_outputs(job);
            tokio::task::spawn_blocking(move || {
                let asked = asked?;
                encode_outputs(&frames, &asked, &scratch, fail)
            })
            .await
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
        for file in &files.files {
            let name = file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file");
            let stored = inner
                .artifacts
                .put_file(&job.id, name, &file.path)
                .await
                .map_err(|e| JobFailure::new(FailureCode::StorageError, e.to_string()))?;
            artifacts.push(Artifact {
                kind: file.kind,
                mime: file.mime.into(),
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

/// What a job asked its outputs to be, read back from the job as submitted (checked
/// then against this server's FFmpeg).
struct Asked {
    fps: u32,
    output: VideoOutput,
    preview: Option<PreviewOptions>,
}

fn requested_outputs(job: &Job) -> Result<Asked, JobFailure> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        JobFailure::new(
            FailureCode::EncoderError,
            format!("the job's {what} cannot be encoded here: {e}"),
        )
    };
    let output = job
        .params
        .output
        .parse::<VideoOutput>()
        .map_err(|e| invalid("output", &e))?;
    let preview = match &job.params.preview {
        Some(p) => Some(
            p.parse::<PreviewOptions>()
                .map_err(|e| invalid("preview", &e))?,
        ),
        None => None,
    };
    Ok(Asked {
        fps: job.params.fps,
        output,
        preview,
    })
}

/// One encoded file waiting in scratch space to be stored.
struct EncodedFile {
    kind: ArtifactKind,
    mime: &'static str,
    path: PathBuf,
}

struct EncodedFiles {
    files: Vec<EncodedFile>,
}

fn encode_outputs(
    frames: &VideoFrames,
    asked: &Asked,
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
        fps: asked.fps,
    };
    let rgb: Vec<Vec<u8>> = (0..frames.num_frames)
        .map(|i| frames.frame_rgb8(i))
        .collect();
    let frames = || rgb.iter().map(Vec::as_slice);
    let output = &asked.output;
    let video = dir.join(format!("video.{}", output.extension()));
    kinema_media::encode_video(&spec, output, frames(), &video).map_err(|e| encoder_error(&e))?;
    let poster = dir.join("poster.png");
    kinema_media::write_poster_png(spec.width, spec.height, &rgb[0], &poster)
        .map_err(|e| encoder_error(&e))?;
    let mut files = vec![
        EncodedFile {
            kind: ArtifactKind::Video,
            mime: output.mime(),
            path: video,
        },
        EncodedFile {
            kind: ArtifactKind::Poster,
            mime: "image/png",
            path: poster,
        },
    ];
    if let Some(options) = &asked.preview {
        let path = dir.join(format!("preview.{}", options.format.extension()));
        kinema_media::preview(&spec, options, frames(), &path).map_err(|e| encoder_error(&e))?;
        files.push(EncodedFile {
            kind: ArtifactKind::Preview,
            mime: options.format.mime(),
            path,
        });
    }
    Ok(EncodedFiles { files })
}

async fn remove_scratch(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(error = %e, dir = %dir.display(), "removing scratch files failed");
        }
    }
}
