//! Artifact retention (docs/api.md, "Downloading"): one pass deletes the artifacts past their
//! `artifact_ttl`. The server's sweeper runs it on its interval with its other passes.

use std::sync::Arc;

use kinema_artifacts::Artifacts;
use kinema_store::Store;
use tracing::{info, warn};

use crate::Clock;

const BATCH: u32 = 500;

/// Deletes artifacts whose retention (`artifact_ttl`) has ended (docs/api.md, "Downloading"). The
/// store keeps the row, so a later download says ARTIFACT_EXPIRED.
pub struct RetentionSweeper {
    pub store: Store,
    pub artifacts: Artifacts,
    pub clock: Arc<dyn Clock>,
}

impl RetentionSweeper {
    /// One pass: returns how many artifacts were deleted.
    pub async fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let expired = match self.store.expired_artifacts(now, BATCH).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "listing expired artifacts failed");
                return 0;
            }
        };
        let mut deleted = 0;
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
                Ok(()) => deleted += 1,
                Err(e) => {
                    warn!(error = %e, job = %a.job_id, "recording an artifact deletion failed")
                }
            }
        }
        if deleted > 0 {
            info!(deleted, "deleted artifacts past their retention");
        }
        deleted
    }
}
