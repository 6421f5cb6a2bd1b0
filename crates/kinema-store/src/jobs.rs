//! Reading jobs: one (`GetJob`), a page of an account's (`ListJobs`), with their
//! artifacts and, for queued jobs, their queue position, computed once per read and
//! never inside a write transaction.

use sqlx::AnyConnection;

use crate::db::placeholders;
use crate::locks::account_status;
use crate::queue::set_queue_positions;
use crate::rows::{ArtifactRow, JobInputRow, JobRow};
use crate::{AccountStatus, Artifact, Job, JobState, Store, StoreError};
use kinema_params::{ImageSlot, InputImage};

impl Store {
    /// The job, if it exists and (when `account_id` is given) belongs to that account.
    /// A queued job's `queue_position` counts the queued jobs the queue's order leases
    /// before it as things stand (see `queue::set_queue_positions`: exact while no job
    /// finishes and nothing is submitted; an estimate otherwise).
    /// A deleted account's jobs are gone for every reader (its owner asked for it);
    /// their money columns stay only for the ledger's checks.
    pub async fn get_job(
        &self,
        account_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(job) = load_job(&mut conn, id).await? else {
            return Ok(None);
        };
        if account_id.is_some_and(|a| a != job.account_id)
            || account_status(&mut conn, &job.account_id).await? == AccountStatus::Deleted
        {
            return Ok(None);
        }
        let mut jobs = [job];
        set_queue_positions(&mut conn, &mut jobs).await?;
        let [job] = jobs;
        Ok(Some(job))
    }

    /// Sets `queue_position` on the queued ones of `jobs` (see
    /// `queue::set_queue_positions`), reading the queue once for all of them.
    pub async fn place_in_queue(&self, jobs: &mut [Job]) -> Result<(), StoreError> {
        let mut conn = self.read.acquire().await?;
        set_queue_positions(&mut conn, jobs).await
    }

    /// An account's jobs, newest first, with `seq` below `before_seq`: one read of the
    /// rows, one of their artifacts, one of the queue for their positions.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        states: &[JobState],
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.list_member_jobs(account_id, None, states, before_seq, limit)
            .await
    }

    /// [`Store::list_jobs`], only those `member_id` submitted when it is given.
    pub async fn list_member_jobs(
        &self,
        account_id: &str,
        member_id: Option<&str>,
        states: &[JobState],
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.read.acquire().await?;
        if account_status(&mut conn, account_id).await? == AccountStatus::Deleted {
            return Ok(Vec::new());
        }
        let state_filter = if states.is_empty() {
            String::new()
        } else {
            format!(" AND state IN ({})", placeholders(5, states.len()))
        };
        let sql = format!(
            "SELECT * FROM jobs WHERE account_id = $1 AND seq < $2 \
             AND ($4 = '' OR member_id = $4){state_filter} ORDER BY seq DESC LIMIT $3"
        );
        let mut query = sqlx::query_as::<_, JobRow>(&sql)
            .bind(account_id)
            .bind(before_seq)
            .bind(i64::from(limit))
            .bind(member_id.unwrap_or(""));
        for state in states {
            query = query.bind(state.as_str());
        }
        let mut jobs = query
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        attach_artifacts(&mut conn, &mut jobs).await?;
        set_queue_positions(&mut conn, &mut jobs).await?;
        Ok(jobs)
    }
}

impl Store {
    /// Every account's queued and running jobs, oldest first, with `seq` above
    /// `after_seq`: the operator's view of the queue, with queue positions.
    pub async fn list_live_jobs(&self, after_seq: i64, limit: u32) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let mut jobs = sqlx::query_as::<_, JobRow>(
            "SELECT * FROM jobs WHERE state IN ('QUEUED', 'RUNNING') AND seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(Job::try_from)
        .collect::<Result<Vec<_>, _>>()?;
        attach_artifacts(&mut conn, &mut jobs).await?;
        set_queue_positions(&mut conn, &mut jobs).await?;
        Ok(jobs)
    }
}

/// The job with its artifacts (no queue position: see `set_queue_positions`).
pub(crate) async fn load_job(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut jobs = [Job::try_from(row)?];
    attach_artifacts(conn, &mut jobs).await?;
    let [job] = jobs;
    Ok(Some(job))
}

/// Fills in the artifacts of the SUCCEEDED jobs (the only ones that have any), in one
/// read. Expired ones stay listed (with their past `expires_at`), so a download can
/// say why the file is gone rather than "never existed".
async fn attach_artifacts(conn: &mut AnyConnection, jobs: &mut [Job]) -> Result<(), StoreError> {
    let ids: Vec<&str> = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .map(|j| j.id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT * FROM artifacts WHERE job_id IN ({}) ORDER BY job_id, kind",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, ArtifactRow>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let job_id = row.job_id.clone();
        let artifact = Artifact::try_from(row)?;
        if let Some(job) = jobs.iter_mut().find(|j| j.id == job_id) {
            job.artifacts.push(artifact);
        }
    }
    Ok(())
}

impl Store {
    /// The job's input images with their PNG bytes, as the lease loads them; empty for
    /// a job without any (or once retention purged them).
    pub async fn job_inputs(
        &self,
        job_id: &str,
    ) -> Result<Vec<(ImageSlot, InputImage)>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_inputs(&mut conn, job_id).await
    }
}

async fn load_inputs(
    conn: &mut AnyConnection,
    job_id: &str,
) -> Result<Vec<(ImageSlot, InputImage)>, StoreError> {
    let rows: Vec<JobInputRow> = sqlx::query_as(
        "SELECT name, png, sha256, width, height FROM job_inputs WHERE job_id = $1 \
         ORDER BY name",
    )
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(JobInputRow::into_input).collect()
}

/// Gives a job about to run its input images' bytes (reads that only show a job
/// leave them out). Every image the job describes must be there.
pub(crate) async fn attach_input_bytes(
    conn: &mut AnyConnection,
    job: &mut Job,
) -> Result<(), StoreError> {
    if !job.params.has_images() {
        return Ok(());
    }
    for (slot, image) in load_inputs(conn, &job.id).await? {
        *job.params.image_mut(slot) = Some(image);
    }
    if let Some((slot, _)) = job.params.images().find(|(_, i)| i.png.is_none()) {
        return Err(StoreError::Corrupt(format!(
            "job {} has no stored {}",
            job.id,
            slot.as_str()
        )));
    }
    Ok(())
}
