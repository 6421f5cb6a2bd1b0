//! Time-driven housekeeping, on the injected clock (docs/api.md, "Money"): lots past
//! their expiry get their EXPIRE entries, plans renew and end, postpaid accounts move
//! through arrears, closed accounts' videos and prompts are purged, and retention
//! deletes artifacts and purges prompts past their time (`retention`). With `--test-clock`, `AdvanceClock` runs a sweep
//! before it answers, so every time rule shows at once.

use std::sync::Arc;
use std::time::Duration;

use kinema_artifacts::Artifacts;
use kinema_engine::{Clock, JobEventKind, JobEvents};
use kinema_store::{Store, StoreError};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::commerce::CommerceConfig;
use crate::retention::Retention;

/// Accounts (or lots' accounts) one query of a pass takes.
const BATCH: u32 = 500;

pub struct Sweeper {
    pub store: Store,
    pub artifacts: Artifacts,
    pub clock: Arc<dyn Clock>,
    pub commerce: Arc<CommerceConfig>,
    pub retention: Retention,
    /// Watchers of the jobs a sweep cancels see them end.
    pub events: JobEvents,
    pub interval: Duration,
    /// One sweep at a time (the loop's and AdvanceClock's).
    running: Mutex<()>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub accounts_expired: usize,
    pub subscriptions_ticked: usize,
    pub postpaid_changed: usize,
    pub accounts_purged: usize,
    pub artifacts_deleted: usize,
    pub prompts_purged: usize,
}

impl Sweeper {
    pub fn new(
        store: Store,
        artifacts: Artifacts,
        clock: Arc<dyn Clock>,
        commerce: Arc<CommerceConfig>,
        events: JobEvents,
        interval: Duration,
    ) -> Self {
        let retention = Retention {
            store: store.clone(),
            artifacts: artifacts.clone(),
        };
        Self {
            store,
            artifacts,
            clock,
            commerce,
            retention,
            events,
            interval,
            running: Mutex::new(()),
        }
    }

    /// One full sweep at the clock's current time. Errors are logged and the other
    /// passes still run; the next sweep retries.
    pub async fn sweep(&self) -> SweepReport {
        let _one = self.running.lock().await;
        let now = self.clock.now_ms();
        let mut report = SweepReport::default();
        let cat = &self.commerce.catalogue;
        report.accounts_expired = drain("expiring lots", || {
            self.store.expire_due_lots_everywhere(now, BATCH)
        })
        .await;
        report.subscriptions_ticked = drain("renewing plans", || {
            self.store.tick_due_subscriptions(cat, now, BATCH)
        })
        .await;
        match self.store.advance_postpaid_accounts(now, BATCH).await {
            Ok(changed) => {
                for advanced in &changed {
                    info!(
                        account = %advanced.account_id,
                        cancelled = advanced.cancelled.len(),
                        "postpaid account moved on through arrears"
                    );
                    for job in &advanced.cancelled {
                        self.events
                            .publish(JobEventKind::StateChanged, job.clone(), now);
                    }
                }
                report.postpaid_changed = changed.len();
            }
            Err(e) => warn!(error = %e, "advancing postpaid accounts failed"),
        }
        match self.purge(now).await {
            Ok(n) => report.accounts_purged = n,
            Err(e) => warn!(error = %e, "purging closed accounts failed"),
        }
        let retained = self.retention.sweep(now).await;
        report.artifacts_deleted = retained.artifacts_deleted;
        report.prompts_purged = retained.prompts_purged;
        report
    }

    /// Deletes closed accounts' files, then blanks their prompts.
    async fn purge(&self, now: i64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for account in self.store.accounts_to_purge(100).await? {
            for a in self.store.account_artifacts(&account).await? {
                if let Err(e) = self.artifacts.delete(&a.location).await {
                    warn!(error = %e, job = %a.job_id, "deleting a closed account's artifact failed");
                    continue;
                }
                self.store
                    .mark_artifact_deleted(&a.job_id, &a.kind, now)
                    .await?;
            }
            if self.store.finish_purge(&account, now).await? {
                info!(account = %account, "purged a closed account's videos and prompts");
                purged += 1;
            }
        }
        Ok(purged)
    }

    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.sweep().await;
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

/// Runs a batched pass until a batch comes back short; returns the total.
async fn drain<F, Fut>(what: &str, mut pass: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, StoreError>>,
{
    let mut total = 0;
    // Bounded: a pass that keeps finding work (clock decades ahead) yields to the
    // next sweep.
    for _ in 0..100 {
        match pass().await {
            Ok(n) => {
                total += n;
                if n < BATCH as usize {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "{what} failed");
                break;
            }
        }
    }
    total
}
