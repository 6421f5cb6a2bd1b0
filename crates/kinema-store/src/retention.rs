//! Retention (docs/api.md, "Retention"): which stored files are past their
//! `expires_at` and recording that they were deleted, and purging the prompts,
//! negative prompts, metadata and input images of jobs past their `prompt_expires_at`.

use kinema_ledger::UnixMillis;

use crate::{Store, StoreError};

/// An artifact whose retention has ended but whose file is still stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExpiredArtifact {
    pub job_id: String,
    pub kind: String,
    pub location: String,
}

impl Store {
    pub async fn expired_artifacts(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<ExpiredArtifact>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT job_id, kind, location FROM artifacts WHERE deleted_at IS NULL \
             AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    /// Records that the artifact's file is deleted: by the retention sweep, unless its
    /// account's closure marked it for deletion first (`ArtifactRemoval`).
    pub async fn mark_artifact_deleted(
        &self,
        job_id: &str,
        kind: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (job_id, kind) = (job_id.to_owned(), kind.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE artifacts SET deleted_at = $1, removal = COALESCE(removal, 'retention') \
                     WHERE job_id = $2 AND kind = $3 AND deleted_at IS NULL",
                )
                .bind(now)
                .bind(job_id)
                .bind(kind)
                .execute(tx.conn())
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Blanks the prompt, negative prompt and metadata, and deletes the input images, of at most `limit` finished jobs
    /// whose `prompt_expires_at` has passed, oldest first; the job, its money and its
    /// ledger entries stay. Returns how many jobs were purged.
    pub async fn purge_expired_prompts(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let purged = self
            .write(move |mut tx| {
                Box::pin(async move {
                    let purged = sqlx::query(
                        "UPDATE jobs SET prompt = '', negative_prompt = '', metadata = '{}', \
                     inputs = '[]', prompt_purged_at = $1 WHERE id IN (SELECT id FROM jobs \
                     WHERE prompt_purged_at IS NULL AND prompt_expires_at IS NOT NULL \
                     AND prompt_expires_at <= $1 ORDER BY prompt_expires_at LIMIT $2)",
                    )
                    .bind(now)
                    .bind(i64::from(limit))
                    .execute(tx.conn())
                    .await?
                    .rows_affected();
                    if purged > 0 {
                        forget_purged_inputs(&mut tx).await?;
                    }
                    Ok(purged as usize)
                })
            })
            .await?;
        if purged > 0 {
            self.erase_old_copies().await;
        }
        Ok(purged)
    }

    /// On SQLite, the write-ahead log still holds earlier copies of the pages a purge
    /// rewrote: checkpointing it into the database (where secure_delete overwrote the
    /// purged values) and truncating it erases them from the files. Best effort: a
    /// checkpoint that cannot finish now is finished by a later one. (PostgreSQL keeps
    /// dead row versions until VACUUM reuses their space: docs/operations.md.)
    pub(crate) async fn erase_old_copies(&self) {
        let crate::db::Writer::Sqlite(writer) = &self.writer else {
            return;
        };
        match writer.checkpoint().await {
            Ok(c) if !c.busy => {}
            Ok(c) => tracing::warn!(
                frames = c.log_frames,
                checkpointed = c.checkpointed_frames,
                "a reader kept the write-ahead log from being truncated after a purge; the next checkpoint finishes it"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "checkpointing the write-ahead log after a purge failed")
            }
        }
    }
}

/// Deletes the stored input images of the jobs whose prompts are purged (by retention
/// or by their account's closure), in the purge's transaction. `job_inputs` holds
/// only unpurged jobs' rows, so the scan stays as small as the images kept.
pub(crate) async fn forget_purged_inputs(tx: &mut crate::tx::Tx<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM job_inputs WHERE job_id IN (SELECT i.job_id FROM job_inputs i \
         JOIN jobs j ON j.id = i.job_id WHERE j.prompt_purged_at IS NOT NULL)",
    )
    .execute(tx.conn())
    .await?;
    Ok(())
}
