//! What a worker asks of the control plane: lease jobs, report progress, and write
//! how each attempt ended. In `kinema serve` the control plane is the store itself
//! (the workers run in the server's process); a remote `kinema worker` reaches it over
//! gRPC (`WorkerService`), with a worker key and no database credentials. The worker
//! loop is the same either way.

use kinema_ledger::UnixMillis;
use kinema_store::{
    Artifact, Completed, Failure, Job, LeaseFilter, Leased, ProgressAck, Stage, Store, StoreError,
    Usage,
};

#[async_trait::async_trait]
pub trait JobControl: Send + Sync {
    /// The next queued job the filter admits, started under `owner`'s lease.
    async fn lease(
        &self,
        owner: &str,
        filter: &LeaseFilter,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError>;

    /// Up to `max` more queued jobs with `leader`'s batch key, started likewise.
    async fn lease_companions(
        &self,
        owner: &str,
        leader: &Job,
        max: usize,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError>;

    /// Records progress and renews the lease; says whether a cancel arrived.
    /// `LeaseLost` when the job is no longer `owner`'s.
    async fn report_progress(
        &self,
        id: &str,
        owner: &str,
        stage: Stage,
        step: u32,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<ProgressAck, StoreError>;

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        artifacts: &[Artifact],
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Completed, StoreError>;

    async fn fail(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError>;

    /// A retryable failure: back to the queue while the job has starts left.
    #[allow(clippy::too_many_arguments)]
    async fn retry(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        max_attempts: u32,
        run_alone: bool,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError>;

    /// The worker stopped the job because its cancel was requested.
    async fn finish_cancelled(
        &self,
        id: &str,
        owner: &str,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError>;

    /// A draining worker gives the job back to the queue unfinished.
    async fn hand_back(&self, id: &str, owner: &str, now: UnixMillis) -> Result<Job, StoreError>;

    /// A job this worker leased, as it stands now (`None` once it is not ours).
    async fn leased_job(&self, id: &str, owner: &str) -> Result<Option<Job>, StoreError>;

    /// Whether a job this worker handed back is still waiting in the queue (a worker
    /// that gave an out-of-memory retry to an idle peer waits until it has left).
    async fn still_queued(&self, id: &str) -> Result<bool, StoreError>;
}

#[async_trait::async_trait]
impl JobControl for Store {
    async fn lease(
        &self,
        owner: &str,
        filter: &LeaseFilter,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        self.lease_matching(owner, filter, lease_ms, now).await
    }

    async fn lease_companions(
        &self,
        owner: &str,
        leader: &Job,
        max: usize,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Leased, StoreError> {
        Store::lease_companions(self, owner, leader, max, lease_ms, now).await
    }

    async fn report_progress(
        &self,
        id: &str,
        owner: &str,
        stage: Stage,
        step: u32,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<ProgressAck, StoreError> {
        Store::report_progress(self, id, owner, stage, step, lease_ms, now).await
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        artifacts: &[Artifact],
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Completed, StoreError> {
        self.complete_job(id, owner, artifacts, usage, now).await
    }

    async fn fail(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        self.fail_job(id, owner, failure, usage, now).await
    }

    async fn retry(
        &self,
        id: &str,
        owner: &str,
        failure: &Failure,
        max_attempts: u32,
        run_alone: bool,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        self.retry_job(id, owner, failure, max_attempts, run_alone, usage, now)
            .await
    }

    async fn finish_cancelled(
        &self,
        id: &str,
        owner: &str,
        usage: &Usage,
        now: UnixMillis,
    ) -> Result<Job, StoreError> {
        Store::finish_cancelled(self, id, owner, usage, now).await
    }

    async fn hand_back(&self, id: &str, owner: &str, now: UnixMillis) -> Result<Job, StoreError> {
        self.requeue_job(id, owner, now).await
    }

    async fn leased_job(&self, id: &str, owner: &str) -> Result<Option<Job>, StoreError> {
        Ok(self
            .get_job(None, id)
            .await?
            .filter(|j| j.lease_owner.as_deref() == Some(owner)))
    }

    async fn still_queued(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .get_job(None, id)
            .await?
            .is_some_and(|j| j.state == kinema_store::JobState::Queued))
    }
}
