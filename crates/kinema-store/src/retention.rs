//! Artifact retention (CONTRACT.md §6): which stored files are past their
//! `expires_at`, and recording that they were deleted.

use kinema_ledger::UnixMillis;

use crate::{Store, StoreError};

/// An artifact whose retention has ended but whose file is still stored.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let rows: Vec<(String, String, String)> = sqlx::query_as(&self.backend.sql(
            "SELECT job_id, kind, location FROM artifacts WHERE deleted_at IS NULL \
             AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, kind, location)| ExpiredArtifact {
                job_id,
                kind,
                location,
            })
            .collect())
    }

    pub async fn mark_artifact_deleted(
        &self,
        job_id: &str,
        kind: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (b, job_id, kind) = (self.backend, job_id.to_owned(), kind.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                sqlx::query(&b.sql(
                    "UPDATE artifacts SET deleted_at = ? WHERE job_id = ? AND kind = ? \
                     AND deleted_at IS NULL",
                ))
                .bind(now)
                .bind(job_id)
                .bind(kind)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await
    }
}
