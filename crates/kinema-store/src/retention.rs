//! Artifact retention: which stored files are past their
//! `expires_at`, and recording that they were deleted.

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
}
