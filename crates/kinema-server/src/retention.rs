//! Retention (docs/api.md, "Retention"): one pass of the sweeper, on the injected
//! clock. Videos, posters and previews past their `expires_at` (the job's end plus
//! `artifact_ttl`) are deleted from the artifact store, the row kept so a download
//! says ARTIFACT_EXPIRED; finished jobs past their `prompt_expires_at` (the end plus
//! `prompt_log_ttl`) have their prompt, negative prompt and metadata blanked, the job
//! and its money kept so the ledger still verifies.

use kinema_artifacts::Artifacts;
use kinema_store::Store;
use tracing::{info, warn};

/// Rows one query of a pass takes.
const BATCH: u32 = 500;
/// Batches one pass takes at most; the next sweep goes on from there.
const MAX_BATCHES: usize = 100;

pub struct Retention {
    pub store: Store,
    pub artifacts: Artifacts,
}

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub artifacts_deleted: usize,
    pub prompts_purged: usize,
}

impl Retention {
    pub async fn sweep(&self, now: i64) -> RetentionReport {
        let report = RetentionReport {
            artifacts_deleted: self.delete_expired_artifacts(now).await,
            prompts_purged: self.purge_expired_prompts(now).await,
        };
        if report != RetentionReport::default() {
            info!(
                artifacts_deleted = report.artifacts_deleted,
                prompts_purged = report.prompts_purged,
                "retention: removed what was past its time"
            );
        }
        report
    }

    async fn delete_expired_artifacts(&self, now: i64) -> usize {
        let mut deleted = 0;
        for _ in 0..MAX_BATCHES {
            let expired = match self.store.expired_artifacts(now, BATCH).await {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "listing expired artifacts failed");
                    break;
                }
            };
            let listed = expired.len();
            let mut progressed = false;
            for a in expired {
                if let Err(e) = self.artifacts.delete(&a.location).await {
                    warn!(error = %e, job = %a.job_id, "deleting an expired artifact failed");
                    continue;
                }
                match self
                    .store
                    .mark_artifact_deleted(&a.job_id, &a.kind, now)
                    .await
                {
                    Ok(()) => {
                        deleted += 1;
                        progressed = true;
                    }
                    Err(e) => {
                        warn!(error = %e, job = %a.job_id, "recording an artifact deletion failed")
                    }
                }
            }
            // A short batch was the last; one where nothing could be deleted would
            // only come back the same.
            if listed < BATCH as usize || !progressed {
                break;
            }
        }
        deleted
    }

    async fn purge_expired_prompts(&self, now: i64) -> usize {
        let mut purged = 0;
        for _ in 0..MAX_BATCHES {
            match self.store.purge_expired_prompts(now, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "purging expired prompts failed");
                    break;
                }
            }
        }
        purged
    }
}
