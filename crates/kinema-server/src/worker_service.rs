//! `WorkerService`: the control plane's side of the worker protocol. A remote GPU node
//! leases, reports and ends jobs here with a `worker` key; each call checks that the
//! lease owner it names belongs to that key, and that the job is that owner's, before
//! the store sees it. What a worker reports is published to this replica's watchers.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kinema_engine::JobEventKind;
use kinema_proto::v1 as pb;
use kinema_proto::v1::worker_service_server::WorkerService;
use kinema_store::{Artifact, Job, JobState, LeaseFilter, StoreError};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::app::App;
use crate::auth::Caller;
use crate::error::{reasons, ApiError};
use crate::rpc::{handle, Access};
use crate::worker_messages::{
    leased_job, store_artifact_kind, store_failure, store_stage, store_usage,
};

pub struct WorkerNodes {
    pub app: Arc<App>,
}

/// Longest node name, and most devices per node.
const MAX_NODE_CHARS: usize = 128;
const MAX_DEVICES: usize = 64;

/// Whether lease owner `owner` belongs to the caller's key (`<key id>/…`).
fn is_own(caller: &Caller, owner: &str) -> bool {
    owner
        .strip_prefix(&caller.key.id)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// The lease owner of a call about a job: another key's owner sees no job at all
/// (JOB_NOT_FOUND), as for a job it did not lease.
fn own<'a>(caller: &Caller, owner: &'a str) -> Result<&'a str, ApiError> {
    if is_own(caller, owner) {
        Ok(owner)
    } else {
        Err(ApiError::job_not_found())
    }
}

/// The node part of an owner `<key id>/<node>-w<index>`.
fn node_of(owner: &str) -> &str {
    let device = owner.split('/').nth(1).unwrap_or_default();
    device.rsplit_once("-w").map_or(device, |(node, _)| node)
}

/// A store refusal about a worker's job: not (or no longer) its lease.
fn lease_error(e: StoreError) -> ApiError {
    match e {
        StoreError::LeaseLost => ApiError::job_not_found(),
        other => ApiError::from(other),
    }
}

impl WorkerNodes {
    /// The job, if it is running under `owner`'s lease; else JOB_NOT_FOUND, as for a
    /// job that does not exist.
    async fn leased(&self, job_id: &str, owner: &str) -> Result<Job, ApiError> {
        self.app
            .store
            .get_job(None, job_id)
            .await?
            .filter(|j| j.state == JobState::Running && j.lease_owner.as_deref() == Some(owner))
            .ok_or_else(ApiError::job_not_found)
    }

    /// Tells this replica's watchers, and its own workers when a job went back to the
    /// queue.
    fn publish(&self, job: &Job) {
        let app = &self.app;
        if job.state == JobState::Queued {
            app.worker.wake();
        }
        app.events
            .publish(JobEventKind::StateChanged, job.clone(), app.now());
    }

    /// The files of an attempt that did not end in success go: a retry or another
    /// worker writes them again.
    async fn discard_uploads(&self, job: &Job) {
        if job.state != JobState::Succeeded {
            if let Err(e) = self.app.artifacts.delete_job(&job.id).await {
                warn!(job = %job.id, error = %e, "deleting an unfinished attempt's uploads failed");
            }
        }
    }

    async fn finished(&self, job: Job) -> pb::FinishedJob {
        self.discard_uploads(&job).await;
        self.publish(&job);
        pb::FinishedJob {
            job: Some(leased_job(&job)),
        }
    }
}

type UploadStream = Streaming<pb::UploadArtifactRequest>;

#[tonic::async_trait]
impl WorkerService for WorkerNodes {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let node = req.node.trim();
            if node.is_empty() || node.contains('/') || node.chars().count() > MAX_NODE_CHARS {
                return Err(ApiError::field(
                    "node",
                    format!("1..={MAX_NODE_CHARS} characters, no '/'"),
                ));
            }
            if req.devices.is_empty() || req.devices.len() > MAX_DEVICES {
                return Err(ApiError::field(
                    "devices",
                    format!("1..={MAX_DEVICES} devices"),
                ));
            }
            let unknown: Vec<&str> = req
                .models
                .iter()
                .filter(|m| app.registry.manifest(m).is_none())
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                warn!(node, models = ?unknown, "a worker node serves models this control plane does not know; their jobs cannot be submitted here");
            }
            let owners = (0..req.devices.len())
                .map(|i| format!("{}/{node}-w{i}", caller.key.id))
                .collect();
            info!(node, key = %caller.key.id, devices = ?req.devices, "worker node registered");
            let s = app.workers;
            Ok(pb::RegisterWorkerResponse {
                owners,
                max_attempts: s.max_attempts,
                lease_ms: s.lease_ms as u64,
                status_interval_ms: s.status_interval_ms,
                fault_injection: app.fault_injection,
            })
        })
        .await
    }

    async fn report_status(
        &self,
        request: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let mut drain_owners = Vec::new();
            for device in &req.devices {
                let owner = device.owner.as_str();
                if !is_own(&caller, owner) {
                    return Err(kinema_engine::DrainError::UnknownWorker(owner.to_string()).into());
                }
                let status = hex::encode(prost::Message::encode_to_vec(device));
                let drain = app
                    .store
                    .report_worker(owner, &caller.key.id, node_of(owner), &status, app.now())
                    .await?;
                if drain {
                    drain_owners.push(owner.to_string());
                }
            }
            Ok(pb::ReportStatusResponse { drain_owners })
        })
        .await
    }

    async fn lease_job(
        &self,
        request: Request<pb::LeaseJobRequest>,
    ) -> Result<Response<pb::LeaseJobResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let (now, lease_ms) = (app.now(), app.workers.lease_ms);
            let leased = if req.companions_of.is_empty() {
                let filter = LeaseFilter::models(req.models.iter().cloned());
                app.store
                    .lease_matching(owner, &filter, lease_ms, now)
                    .await?
            } else {
                let leader = self.leased(&req.companions_of, owner).await?;
                let max = req.max_companions as usize;
                app.store
                    .lease_companions(owner, &leader, max, lease_ms, now)
                    .await?
            };
            for job in &leased.refused {
                self.publish(job);
            }
            let started: Vec<&Job> = leased.job.iter().chain(&leased.companions).collect();
            for job in &started {
                kinema_engine::meters::leased(node_of(owner));
                kinema_engine::meters::queue_wait(now - job.created_at);
                self.publish(job);
            }
            Ok(pb::LeaseJobResponse {
                job: leased.job.as_ref().map(leased_job),
                companions: leased.companions.iter().map(leased_job).collect(),
            })
        })
        .await
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let stage =
                store_stage(req.stage).ok_or_else(|| ApiError::field("stage", "unknown stage"))?;
            let (now, lease_ms) = (app.now(), app.workers.lease_ms);
            let ack = app
                .store
                .report_progress(&req.job_id, owner, stage, req.step, lease_ms, now)
                .await
                .map_err(lease_error)?;
            if app.events.is_watched() {
                if let Some(job) = app.store.get_job(None, &req.job_id).await? {
                    let kind = if stage == kinema_store::Stage::Denoising && req.step > 0 {
                        JobEventKind::Progress
                    } else {
                        JobEventKind::StageChanged
                    };
                    app.events.publish(kind, job, now);
                }
            }
            Ok(pb::ReportProgressResponse {
                cancel_requested: ack.cancel_requested,
            })
        })
        .await
    }

    async fn upload_artifact(
        &self,
        request: Request<UploadStream>,
    ) -> Result<Response<pb::UploadArtifactResponse>, Status> {
        let app = &self.app;
        handle(
            app,
            request,
            Access::Worker,
            |caller, mut stream| async move {
                let header = match stream.next().await {
                    Some(Ok(pb::UploadArtifactRequest {
                        part: Some(pb::upload_artifact_request::Part::Header(h)),
                    })) => h,
                    Some(Err(status)) => return Err(ApiError::Internal(status.to_string())),
                    _ => {
                        return Err(ApiError::field(
                            "header",
                            "the first message names the job and the file",
                        ))
                    }
                };
                let owner = own(&caller, &header.owner)?;
                if !is_file_name(&header.name) {
                    return Err(ApiError::field(
                        "name",
                        "a plain file name such as video.mp4",
                    ));
                }
                let job = self.leased(&header.job_id, owner).await?;
                let data = Box::pin(stream.map(|message| match message {
                    Ok(pb::UploadArtifactRequest {
                        part: Some(pb::upload_artifact_request::Part::Data(data)),
                    }) => Ok(Bytes::from(data)),
                    Ok(_) => Err(std::io::Error::other("a second header in one upload")),
                    Err(status) => Err(std::io::Error::other(status.to_string())),
                }));
                let mut reader = tokio_util::io::StreamReader::new(
                    data as Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
                );
                let stored = app
                    .artifacts
                    .put_stream(&job.id, &header.name, &mut reader)
                    .await
                    .map_err(|e| {
                        ApiError::status(Code::Unavailable, reasons::STORAGE, e.to_string())
                    })?;
                Ok(pb::UploadArtifactResponse {
                    location: stored.location,
                    bytes: stored.bytes,
                    sha256: stored.sha256,
                })
            },
        )
        .await
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::FinishedJob>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let job = self.leased(&req.job_id, owner).await?;
            let usage =
                store_usage(&req.usage_json).map_err(|e| ApiError::field("usage_json", e))?;
            let now = app.now();
            let expires_at = now.saturating_add(app.workers.artifact_ttl_ms);
            let mut artifacts = Vec::with_capacity(req.artifacts.len());
            for a in &req.artifacts {
                artifacts.push(self.uploaded(&job, a, expires_at).await?);
            }
            let done = app
                .store
                .complete_job(&job.id, owner, &artifacts, &usage, now)
                .await
                .map_err(lease_error)?;
            for cancelled in &done.cancelled {
                self.publish(cancelled);
            }
            Ok(self.finished(done.job).await)
        })
        .await
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::FinishedJob>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let failure = req
                .failure
                .as_ref()
                .map(store_failure)
                .ok_or_else(|| ApiError::field("failure", "required"))?;
            let usage =
                store_usage(&req.usage_json).map_err(|e| ApiError::field("usage_json", e))?;
            let now = app.now();
            let job = match req.retry {
                Some(r) => {
                    app.store
                        .retry_job(
                            &req.job_id,
                            owner,
                            &failure,
                            r.max_attempts,
                            r.run_alone,
                            &usage,
                            now,
                        )
                        .await
                }
                None => {
                    app.store
                        .fail_job(&req.job_id, owner, &failure, &usage, now)
                        .await
                }
            }
            .map_err(lease_error)?;
            if job.state == JobState::Queued {
                kinema_engine::meters::retried(&failure.code);
            }
            Ok(self.finished(job).await)
        })
        .await
    }

    async fn stop_job(
        &self,
        request: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::FinishedJob>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let usage =
                store_usage(&req.usage_json).map_err(|e| ApiError::field("usage_json", e))?;
            let job = app
                .store
                .finish_cancelled(&req.job_id, owner, &usage, app.now())
                .await
                .map_err(lease_error)?;
            Ok(self.finished(job).await)
        })
        .await
    }

    async fn hand_back_job(
        &self,
        request: Request<pb::HandBackJobRequest>,
    ) -> Result<Response<pb::FinishedJob>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let job = app
                .store
                .requeue_job(&req.job_id, owner, app.now())
                .await
                .map_err(lease_error)?;
            Ok(self.finished(job).await)
        })
        .await
    }

    async fn get_leased_job(
        &self,
        request: Request<pb::GetLeasedJobRequest>,
    ) -> Result<Response<pb::LeasedJob>, Status> {
        let app = &self.app;
        handle(app, request, Access::Worker, |caller, req| async move {
            let owner = own(&caller, &req.owner)?;
            let job = app
                .store
                .get_job(None, &req.job_id)
                .await?
                .filter(|j| j.lease_owner.as_deref() == Some(owner))
                .ok_or_else(ApiError::job_not_found)?;
            Ok(leased_job(&job))
        })
        .await
    }
}

impl WorkerNodes {
    /// An artifact a worker says it uploaded for `job`: under the job's own prefix,
    /// and there in the artifact store with the size it says.
    async fn uploaded(
        &self,
        job: &Job,
        a: &pb::CompletedArtifact,
        expires_at: i64,
    ) -> Result<Artifact, ApiError> {
        let kind = store_artifact_kind(a.kind)
            .ok_or_else(|| ApiError::field("artifacts", "unknown artifact kind"))?;
        let in_job = a
            .location
            .strip_prefix(&job.id)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(is_file_name);
        if !in_job {
            return Err(ApiError::field(
                "artifacts",
                "a location UploadArtifact gave for this job",
            ));
        }
        let found = self
            .app
            .artifacts
            .read_from(&a.location, u64::MAX)
            .await
            .map_err(|e| ApiError::field("artifacts", format!("{}: {e}", a.location)))?;
        if found.total != a.bytes {
            return Err(ApiError::field(
                "artifacts",
                format!(
                    "{} holds {} bytes, not {}",
                    a.location, found.total, a.bytes
                ),
            ));
        }
        Ok(Artifact {
            kind,
            mime: a.mime.clone(),
            bytes: a.bytes,
            sha256: a.sha256.clone(),
            location: a.location.clone(),
            expires_at,
            removal: None,
        })
    }
}

/// A plain file name: letters, digits, '.', '-', '_', not starting with '.'.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
