//! Running jobs whose worker is gone: found by their lapsed lease (or, on a single
//! node starting up, all of them) and finished as `Outcome::Lost`.

use kinema_ledger::UnixMillis;

use crate::attempts::WORKER;
use crate::ending::{finish_attempt, Outcome};
use crate::locks::lock_job;
use crate::{Job, JobState, Store, StoreError};

#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub requeued: Vec<Job>,
    pub failed: Vec<Job>,
    pub cancelled: Vec<Job>,
}

impl Store {
    /// Running jobs whose worker is gone: those whose lease has lapsed, and, with
    /// `orphaned`, every RUNNING job whose lease owner starts with it (a single node
    /// starting up knows the jobs its previous process ran are orphaned, while remote
    /// workers' jobs may still be running). Each is
    /// cancelled if its cancel was requested, requeued while it has starts left (its
    /// debit stands; it is not debited again), or failed with `WORKER_LOST` and
    /// refunded.
    ///
    /// `alive_owner` is the caller's own lease owner, or the prefix its workers' owners
    /// share: their jobs are running right there, whatever their lease says (a test
    /// clock moved past it, say), and are left alone.
    pub async fn recover_lost_jobs(
        &self,
        orphaned: Option<&str>,
        alive_owner: &str,
        max_attempts: u32,
        now: UnixMillis,
    ) -> Result<RecoveryReport, StoreError> {
        let rows: Vec<(String, Option<String>, Option<UnixMillis>)> = sqlx::query_as(
            "SELECT id, lease_owner, lease_expires_at FROM jobs WHERE state = 'RUNNING' \
             ORDER BY seq",
        )
        .fetch_all(&self.read)
        .await?;
        let lost = rows.into_iter().filter_map(|(id, owner, expires)| {
            let owner = owner.unwrap_or_default();
            let alive = !alive_owner.is_empty() && owner.starts_with(alive_owner);
            let lapsed = expires.is_none_or(|at| at <= now);
            let orphan = orphaned.is_some_and(|p| owner.starts_with(p));
            (!alive && (lapsed || orphan)).then_some(id)
        });
        let mut report = RecoveryReport::default();
        for id in lost {
            let recovered = self
                .write(move |mut tx| {
                    Box::pin(async move {
                        // Read under the lock: it may have finished since the scan.
                        let Some(job) = lock_job(&mut tx, &id).await? else {
                            return Ok(None);
                        };
                        if job.state != JobState::Running {
                            return Ok(None);
                        }
                        let outcome = Outcome::Lost { max_attempts };
                        let ended =
                            finish_attempt(&mut tx, &job, outcome, None, WORKER, now).await?;
                        Ok(Some(ended.job))
                    })
                })
                .await?;
            let Some(job) = recovered else {
                continue;
            };
            match job.state {
                JobState::Queued => report.requeued.push(job),
                JobState::Cancelled => report.cancelled.push(job),
                _ => report.failed.push(job),
            }
        }
        Ok(report)
    }
}
