//! [`JobControl`] over `WorkerService`: the engine's worker loop leases, reports and
//! ends jobs through the control plane. A call the control plane cannot take right
//! now (it restarts, the network blinks) is retried a few times before the worker
//! gives up on it; a job that is not (or no longer) this device's comes back as
//! `LeaseLost`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinema_engine::JobControl;
use kinema_ledger::UnixMillis;
use kinema_proto::v1 as pb;
use kinema_store::{
    Artifact, Completed, Failure, Job, LeaseFilter, Leased, ProgressAck, Stage, StoreError, Usage,
};
use tonic::{Code, Status};

use super::channel::WorkerClient;
use crate::convert::artifact_kind;
use crate::worker_messages::{failure, job_stage, store_job, usage_json};

/// Which device leased which running job: uploads name the lease owner.
pub type Leases = Arc<Mutex<HashMap<String, String>>>;

#[derive(Clone)]
pub struct RemoteControl {
    client: WorkerClient,
    /// Every model the node serves: what a device whose budget holds them all leases.
    models: Vec<String>,
    leases: Leases,
}

/// How often, and how long apart, a call is tried when the control plane is
/// unreachable.
const TRIES: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_millis(200);

fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
    )
}

/// The store's view of a control plane's answer.
fn store_error(status: Status) -> StoreError {
    match status.code() {
        Code::NotFound => StoreError::LeaseLost,
        _ => StoreError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Runs `call` until it succeeds, fails for good, or the tries run out.
pub async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut wait = FIRST_WAIT;
    let mut tries = 1;
    loop {
        match call().await {
            Err(status) if transient(&status) && tries < TRIES => {
                tracing::warn!(code = ?status.code(), message = status.message(), "the control plane did not answer; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            other => return other,
        }
    }
}

impl RemoteControl {
    /// One call to the control plane, retried while it cannot answer.
    async fn call<Req, Resp, F, Fut>(&self, request: Req, rpc: F) -> Result<Resp, StoreError>
    where
        Req: Clone,
        F: Fn(WorkerClient, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        with_retries(|| rpc(self.client.clone(), request.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(store_error)
    }

    pub fn new(client: WorkerClient, models: Vec<String>, leases: Leases) -> Self {
        Self {
            client,
            models,
            leases,
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leased jobs of an answer, as the engine runs them, remembered as this
    /// device's.
    fn take(&self, jobs: Vec<pb::LeasedJob>, owner: &str) -> Result<Vec<Job>, StoreError> {
        let mut taken = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let job = store_job(j, owner).map_err(StoreError::Unavailable)?;
            self.leases().insert(job.id.clone(), owner.to_string());
            taken.push(job);
        }
        Ok(taken)
    }

    /// The job as the control plane wrote its end (the engine reads its state).
    fn ended(&self, finished: pb::FinishedJob, owner: &str) -> Result<Job, StoreError> {
        let job = finished
            .job
            .ok_or_else(|| StoreError::Unavailable("an answer without its job".into()))?;
        self.leases().remove(&job.id);
        store_job(&job, owner).map_err(StoreError::Unavailable)
    }
}

#[async_trait::async_trait]
impl JobControl for RemoteControl {
    async fn lease(
        &self,
        owner: &str,
        filter: &LeaseFilter,
        _lease_ms: i64,
        _now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        let request = pb::LeaseJobRequest {
            owner: owner.to_string(),
            models: filter.models.clone().unwrap_or_else(|| self.models.clone()),
            ..Default::default()
        };
        let answer = self
            .call(request, |mut c, r| async move { c.lease_job(r).await })
            .await?;
        let mut jobs = self.take(answer.job.into_iter().collect(), owner)?;
        Ok(Leased {
            job: jobs.pop(),
            ..Leased::default()
        })
    }

    async fn lease_companions(
        &self,
        owner: &str,
        leader: &Job,
        max: usize,
        _lease_ms: i64,
        _now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        let request = pb::LeaseJobRequest {
            owner: owner.to_string(),
            companions_of: leader.id.clone(),
            max_companions: u32::try_from(max).unwrap_or(u32::MAX),
            ..Default::default()
        };
        let answer = self
            .call(request, |mut c, r| async move { c.lease_job(r).await })
            .await?;
        Ok(Leased {
            companions: self.take(answer.companions, owner)?,
            ..Leased::default()
        })
    }

    async fn report_progress(
        &self,
        id: &str,
        owner: &str,
        stage: Stage,
        step: u32,
        _lease_ms: i64,
        _now: UnixMillis,
    ) -> Result<ProgressAck, StoreError> {
        let request = pb::ReportProgressRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
            stage: job_stage(stage) as i32,
            step,
        };
        let answer = self
            .call(
                request,
                |mut c, r| async move { c.report_progress(r).await },
            )
            .await?;
        Ok(ProgressAck {
            cancel_requested: answer.cancel_requested,
        })
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        artifacts: &[Artifact],
        usage: &Usage,
        _now: UnixMillis,
    ) -> Result<Completed, StoreError> {
        let request = pb::CompleteJobRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
            artifacts: artifacts
                .iter()
                .map(|a| pb::CompletedArtifact {
                    kind: artifact_kind(a.kind) as i32,
                    mime: a.mime.clone(),
                    location: a.location.clone(),
                    bytes: a.bytes,
                    sha256: a.sha256.clone(),
                })
                .collect(),
            usage_json: usage_json(usage),
        };
        let answer = self
            .call(request, |mut c, r| async move { c.complete_job(r).await })
            .await?;
        Ok(Completed {
            job: self.ended(answer, owner)?,
            cancelled: Vec::new(),
        })
    }

    async fn fail(
        &self,
        id: &str,
        owner: &str,
        why: &Failure,
        usage: &Usage,
        _now: UnixMillis,
    ) -> Result<Job, StoreError> {
        self.fail_or_retry(id, owner, why, None, usage).await
    }

    async fn retry(
        &self,
        id: &str,
        owner: &str,
        why: &Failure,
        max_attempts: u32,
        run_alone: bool,
        usage: &Usage,
        _now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let retry = pb::RetryPolicy {
            max_attempts,
            run_alone,
        };
        self.fail_or_retry(id, owner, why, Some(retry), usage).await
    }

    async fn finish_cancelled(
        &self,
        id: &str,
        owner: &str,
        usage: &Usage,
        _now: UnixMillis,
    ) -> Result<Job, StoreError> {
        let request = pb::StopJobRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
            usage_json: usage_json(usage),
        };
        let answer = self
            .call(request, |mut c, r| async move { c.stop_job(r).await })
            .await?;
        self.ended(answer, owner)
    }

    async fn hand_back(&self, id: &str, owner: &str, _now: UnixMillis) -> Result<Job, StoreError> {
        let request = pb::HandBackJobRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
        };
        let answer = self
            .call(request, |mut c, r| async move { c.hand_back_job(r).await })
            .await?;
        self.ended(answer, owner)
    }

    async fn leased_job(&self, id: &str, owner: &str) -> Result<Option<Job>, StoreError> {
        let request = pb::GetLeasedJobRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
        };
        match self
            .call(request, |mut c, r| async move { c.get_leased_job(r).await })
            .await
        {
            Ok(job) => Ok(Some(
                store_job(&job, owner).map_err(StoreError::Unavailable)?,
            )),
            // Not this device's any more (store_error reads NOT_FOUND as a lost lease).
            Err(StoreError::LeaseLost) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A node hands an out-of-memory retry to its own idle devices only through the
    /// queue: the control plane's order decides who takes it, so nothing waits here.
    async fn still_queued(&self, _id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

impl RemoteControl {
    async fn fail_or_retry(
        &self,
        id: &str,
        owner: &str,
        why: &Failure,
        retry: Option<pb::RetryPolicy>,
        usage: &Usage,
    ) -> Result<Job, StoreError> {
        let request = pb::FailJobRequest {
            owner: owner.to_string(),
            job_id: id.to_string(),
            failure: Some(failure(why)),
            usage_json: usage_json(usage),
            retry,
        };
        let answer = self
            .call(request, |mut c, r| async move { c.fail_job(r).await })
            .await?;
        self.ended(answer, owner)
    }
}
