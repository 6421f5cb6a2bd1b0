//! Following a job to its end and downloading what it made: shared by `generate` and
//! `jobs watch|download`.

use std::path::Path;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kinema_proto::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::client::Clients;
use crate::print;

/// Watches a job until it ends, drawing a progress bar (or printing events when
/// `quiet` is false and stderr is not a terminal). Returns the final job.
pub async fn watch(c: &mut Clients, job_id: &str, show_bar: bool) -> anyhow::Result<pb::Job> {
    let mut stream = c
        .jobs
        .watch_job(pb::WatchJobRequest {
            account_id: c.account.clone(),
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    let bar = if show_bar {
        ProgressBar::new(1000)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:32} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = None;
    while let Some(event) = stream.next().await {
        let event = event?;
        let Some(job) = event.job else { continue };
        let fraction = job.progress.as_ref().map(|p| p.fraction).unwrap_or(0.0);
        bar.set_position((fraction * 1000.0) as u64);
        let step = job
            .progress
            .as_ref()
            .map(|p| format!(" {}/{}", p.step, p.total_steps))
            .unwrap_or_default();
        bar.set_message(match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Queued) => {
                format!("queued ({} ahead)", job.queue_position.unwrap_or(0))
            }
            Ok(pb::JobState::Running) => format!("{}{}", print::stage(job.stage), step),
            _ => print::state(job.state),
        });
        let done = matches!(
            pb::JobState::try_from(job.state),
            Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
        );
        last = Some(job);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    last.context("the watch ended before the job did")
}

/// Downloads an artifact to `out`, verifying its size and SHA-256 against the job.
pub async fn download(
    c: &mut Clients,
    job: &pb::Job,
    kind: pb::ArtifactKind,
    out: &Path,
) -> anyhow::Result<u64> {
    let expected = job
        .artifacts
        .iter()
        .find(|a| a.kind == kind as i32)
        .with_context(|| format!("job {} has no {} artifact", job.id, kind.as_str_name()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut stream = c
        .jobs
        .download_artifact(pb::DownloadArtifactRequest {
            account_id: c.account.clone(),
            job_id: job.id.clone(),
            kind: kind as i32,
            offset: 0,
        })
        .await?
        .into_inner();
    let partial = out.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if chunk.offset != written {
            bail!(
                "the server sent bytes at {} while {} were written",
                chunk.offset,
                written
            );
        }
        sha2::Digest::update(&mut hasher, &chunk.data);
        file.write_all(&chunk.data).await?;
        written += chunk.data.len() as u64;
    }
    file.sync_all().await?;
    drop(file);
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    if written != expected.bytes || digest != expected.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!("download does not match the artifact: {written} bytes sha256 {digest}, expected {} bytes sha256 {}", expected.bytes, expected.sha256);
    }
    tokio::fs::rename(&partial, out)
        .await
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(written)
}
