use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kinema_engine::{
    FaultPlan, FieldViolation, JobExtras, JobSpec, ModelManifest, RequestImages, ResolvedJob,
};
use kinema_ledger::{LedgerError, Quote};
use kinema_proto::v1 as pb;
use kinema_proto::v1::job_service_server::JobService;
use kinema_store::{ArtifactKind, ArtifactRemoval, JobState, NewJob, Submitted};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::{Code, Request, Response, Status};
use tracing::info;

use crate::app::App;
use crate::convert;
use crate::error::{reasons, ApiError};
use crate::job_watch;
use crate::request_limits::{self, check_text, MAX_TEXT_CHARS};
use crate::rpc::{handle, Access, Page};

const MAX_ID_CHARS: usize = 128;
const CHUNK_BYTES: usize = 256 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct JobsService {
    pub app: Arc<App>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

/// A request checked against its model: defaults filled, every limit held, input
/// images decoded and fitted, priced.
struct Checked<'a> {
    manifest: &'a ModelManifest,
    job: ResolvedJob,
    quote: Quote,
}

impl JobsService {
    fn check<'a>(
        &'a self,
        req: &pb::CreateJobRequest,
        for_submission: bool,
    ) -> Result<Checked<'a>, ApiError> {
        let app = &self.app;
        let Some(manifest) = app.registry.manifest(&req.model) else {
            let known: Vec<&str> = app.registry.manifests().map(|m| m.id.as_str()).collect();
            return Err(ApiError::field(
                "model",
                format!(
                    "unknown model {}; available: {}",
                    request_limits::echo(&req.model),
                    known.join(", ")
                ),
            ));
        };
        let spec = JobSpec {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            width: req.width,
            height: req.height,
            num_frames: req.num_frames,
            fps: req.fps,
            steps: req.steps,
            guidance_scale: req.guidance_scale,
            output: Some(req.output.clone()),
            preview: Some(req.preview.clone()),
        };
        let extras = JobExtras {
            images: RequestImages {
                image: &req.image,
                last_image: &req.last_image,
                limits: self.app.image_limits,
            },
            guidance_scale_2: req.guidance_scale_2,
            // Drawn once here: a resubmission with the same idempotency key finds the
            // job it made (the seed it drew included).
            seed: req.seed.unwrap_or_else(rand::random),
        };
        let (mut violations, resolved) = match manifest.resolve_job(&spec, &extras, for_submission)
        {
            Ok(job) => (Vec::new(), Some(job)),
            Err(v) => (v, None),
        };
        let mut bad =
            |field, description: String| violations.push(FieldViolation { field, description });
        match pb::OutputFormat::try_from(req.output_format) {
            Ok(pb::OutputFormat::Unspecified) => {}
            // The older way to ask for MP4: any output whose container is MP4.
            Ok(pb::OutputFormat::Mp4) => {
                let in_mp4 = manifest
                    .resolve(&spec, false)
                    .map_or(true, |r| r.output.container == kinema_media::Container::Mp4);
                if !in_mp4 {
                    bad(
                        "output_format",
                        "MP4 asked for, but `output` names another container".into(),
                    );
                }
            }
            Err(_) => bad("output_format", "unknown output format".into()),
        }
        if for_submission {
            for (field, value) in [
                ("idempotency_key", &req.idempotency_key),
                ("external_id", &req.external_id),
            ] {
                if value.chars().count() > MAX_ID_CHARS {
                    bad(field, format!("at most {MAX_ID_CHARS} characters"));
                }
            }
            for v in request_limits::metadata_violations(&req.metadata) {
                bad(v.field, v.description);
            }
            if app.fault_injection {
                if let Err(e) = FaultPlan::from_metadata(&req.metadata) {
                    bad("metadata", e);
                }
            }
        }
        let job = match resolved {
            Some(job) if violations.is_empty() => job,
            _ => return Err(ApiError::InvalidSpec(violations)),
        };
        let quote = kinema_ledger::quote(&manifest.price, &job.params).map_err(|e| match e {
            LedgerError::InvalidQuote { field, reason } => ApiError::field(field, reason),
            other => ApiError::from(other),
        })?;
        Ok(Checked {
            manifest,
            job,
            quote,
        })
    }

    async fn load_job(
        &self,
        account_id: &str,
        job_id: &str,
    ) -> Result<kinema_store::Job, ApiError> {
        self.app
            .store
            .get_job(Some(account_id), job_id)
            .await?
            .ok_or_else(ApiError::job_not_found)
    }
}

/// Fingerprint of a request as sent (ordered maps make the encoding deterministic),
/// to tell an idempotent retry from a different request reusing the key.
fn request_hash(req: &pb::CreateJobRequest) -> String {
    let mut canonical = req.clone();
    canonical.account_id.clear();
    hex::encode(Sha256::digest(canonical.encode_to_vec()))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[tonic::async_trait]
impl JobService for JobsService {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let priority = caller.priority(req.priority)?;
            let checked = self.check(&req, true)?;
            if !req.callback_url.is_empty() {
                crate::callbacks::check_submission(app, &account_id, &req.callback_url).await?;
            }
            // Before anything is held: a refusal charges nothing.
            let allowed =
                crate::policy::gate::check(app, &caller, &account_id, &req, &checked.manifest.id)
                    .await?;
            let new = NewJob {
                account_id: account_id.clone(),
                external_id: non_empty(&req.external_id),
                idempotency_key: non_empty(&req.idempotency_key),
                request_hash: request_hash(&req),
                // Jobs with one key (model, size, frames, steps) may share a batch;
                // image jobs never do.
                batch_key: checked.manifest.batch_key(&checked.job.params),
                params: checked.job.params,
                callback_url: req.callback_url.clone(),
                metadata: req.metadata.clone(),
                quote: checked.quote.credits,
                member_id: caller.key.member_id.clone(),
                priority,
            };
            let submitted = app
                .store
                .submit_job_with_decision(new, allowed, &caller.actor(), app.now())
                .await?;
            let job = match submitted {
                Submitted::Created(mut job) => {
                    // Read after the commit: the queue scan stays off the write path.
                    app.store
                        .place_in_queue(std::slice::from_mut(&mut job))
                        .await?;
                    tracing::Span::current().record("job", job.id.as_str());
                    info!(model = %job.params.model, quote = job.quoted, "job queued");
                    app.events.publish(
                        kinema_engine::JobEventKind::StateChanged,
                        job.clone(),
                        app.now(),
                    );
                    app.worker.wake();
                    job
                }
                Submitted::Existing(mut job) => {
                    app.store
                        .place_in_queue(std::slice::from_mut(&mut job))
                        .await?;
                    job
                }
            };
            Ok(convert::job(&job))
        })
        .await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        handle(&self.app, request, Access::Any, |caller, req| async move {
            let job = self
                .load_job(&caller.account(&req.account_id)?, &req.job_id)
                .await?;
            let mut answer = convert::job(&job);
            answer.callbacks = self
                .app
                .store
                .job_callbacks(&job.id)
                .await?
                .iter()
                .map(convert::callback_delivery)
                .collect();
            Ok(answer)
        })
        .await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let page = Page::from_request(
                &req.page_token,
                req.page_size,
                i64::MAX,
                DEFAULT_PAGE,
                MAX_PAGE,
            )?;
            let mut states = Vec::new();
            for s in &req.states {
                let state = pb::JobState::try_from(*s)
                    .ok()
                    .and_then(convert::store_job_state)
                    .ok_or_else(|| ApiError::field("states", format!("{s} is not a job state")))?;
                states.push(state);
            }
            check_text("member_id", &req.member_id, MAX_TEXT_CHARS)?;
            let member = (!req.member_id.is_empty()).then_some(req.member_id.as_str());
            let jobs = app
                .store
                .list_member_jobs(&account_id, member, &states, page.cursor, page.limit)
                .await?;
            Ok(pb::ListJobsResponse {
                next_page_token: page.next_token(&jobs, |j| j.seq),
                jobs: jobs.iter().map(convert::job).collect(),
            })
        })
        .await
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        handle(&self.app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            // Subscribe before reading the snapshot, so no change falls between the two.
            let source = job_watch::Source::subscribe(&self.app);
            let job = self.load_job(&account_id, &req.job_id).await?;
            Ok(Box::pin(job_watch::stream(self.app.clone(), source, job)) as EventStream)
        })
        .await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let outcome = app
                .store
                .cancel_job(&account_id, &req.job_id, &caller.actor(), app.now())
                .await?;
            if outcome.stop_requested {
                app.worker.request_cancel(&req.job_id);
            } else if outcome.job.state == JobState::Cancelled {
                app.events.publish(
                    kinema_engine::JobEventKind::StateChanged,
                    outcome.job.clone(),
                    app.now(),
                );
            }
            Ok(convert::job(&outcome.job))
        })
        .await
    }

    type DownloadArtifactStream = ChunkStream;

    async fn download_artifact(
        &self,
        request: Request<pb::DownloadArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let job = self
                .load_job(&caller.account(&req.account_id)?, &req.job_id)
                .await?;
            let kind = match pb::ArtifactKind::try_from(req.kind) {
                Ok(pb::ArtifactKind::Unspecified | pb::ArtifactKind::Video) => ArtifactKind::Video,
                Ok(pb::ArtifactKind::Poster) => ArtifactKind::Poster,
                Ok(pb::ArtifactKind::Preview) => ArtifactKind::Preview,
                Err(_) => return Err(ApiError::field("kind", "unknown artifact kind")),
            };
            let artifact = job
                .artifacts
                .iter()
                .find(|a| a.kind == kind)
                .ok_or_else(|| {
                    ApiError::status(
                        Code::NotFound,
                        reasons::ARTIFACT_NOT_FOUND,
                        format!(
                            "job {} has no {kind} artifact (state {})",
                            job.id, job.state
                        ),
                    )
                })?;
            match artifact.removal {
                Some(ArtifactRemoval::AccountClosed) => {
                    return Err(ApiError::status(
                        Code::NotFound,
                        reasons::ARTIFACT_DELETED,
                        "the artifact was deleted when its account was closed",
                    ));
                }
                Some(ArtifactRemoval::Retention) => return Err(ApiError::artifact_expired()),
                None if artifact.expires_at <= app.now() => {
                    return Err(ApiError::artifact_expired())
                }
                None => {}
            }
            if req.offset > artifact.bytes {
                return Err(ApiError::field(
                    "offset",
                    format!(
                        "{} is past the artifact's {} bytes",
                        req.offset, artifact.bytes
                    ),
                ));
            }
            let kinema_artifacts::Download {
                reader: mut file,
                total,
            } = app
                .artifacts
                .read_from(&artifact.location, req.offset)
                .await
                .map_err(|e| match e {
                    kinema_artifacts::ArtifactError::NotFound(_) => ApiError::status(
                        Code::NotFound,
                        reasons::ARTIFACT_NOT_FOUND,
                        "artifact is missing from storage",
                    ),
                    other => ApiError::Internal(other.to_string()),
                })?;
            let mut offset = req.offset;
            let stream = async_stream::try_stream! {
                let mut buf = vec![0u8; CHUNK_BYTES];
                loop {
                    let n = file.read(&mut buf).await.map_err(|e| Status::from(ApiError::Internal(format!("reading artifact: {e}"))))?;
                    if n == 0 { break; }
                    yield pb::ArtifactChunk { offset, data: buf[..n].to_vec(), total_bytes: total };
                    offset += n as u64;
                }
            };
            Ok(Box::pin(stream) as ChunkStream)
        })
        .await
    }

    async fn estimate_cost(
        &self,
        request: Request<pb::EstimateCostRequest>,
    ) -> Result<Response<pb::CostEstimate>, Status> {
        handle(&self.app, request, Access::Any, |_, req| async move {
            let req = req.job.unwrap_or_default();
            let checked = self.check(&req, false)?;
            let s = &checked.job.params;
            Ok(pb::CostEstimate {
                credits: checked.quote.credits,
                model: checked.manifest.id.clone(),
                width: s.width,
                height: s.height,
                num_frames: s.num_frames,
                fps: s.fps,
                steps: s.steps,
                resolution_tier: checked.quote.tier.clone(),
                video_millis: checked.quote.video_millis,
            })
        })
        .await
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        handle(&self.app, request, Access::Any, |_, _| async move {
            Ok(pb::ListModelsResponse {
                models: self
                    .app
                    .registry
                    .manifests()
                    .map(|m| convert::model(m, &self.app.image_limits))
                    .collect(),
                outputs: convert::supported_outputs(),
            })
        })
        .await
    }
}
