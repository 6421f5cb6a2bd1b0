//! `CancelJob`: a queued job ends at once, a running one is asked to stop at its
//! next step (its worker finishes the cancel), a finished one is left as it is.

use kinema_ledger::UnixMillis;

use crate::ending::{end_job, Ending};
use crate::locks::lock_job;
use crate::{CancelOutcome, JobState, NotFound, Store, StoreError};

impl Store {
    /// A queued job is CANCELLED with its hold released (and a requeued retry, already
    /// debited, refunded under `refund_on_cancel`); a running one is asked to stop; a
    /// terminal one is left as it is. Another account's job is `NotFound`.
    pub async fn cancel_job(
        &self,
        account_id: &str,
        id: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError> {
        let (account_id, id, actor) = (account_id.to_owned(), id.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let job = lock_job(&mut tx, &id)
                    .await?
                    .filter(|job| job.account_id == account_id)
                    .ok_or(StoreError::NotFound(NotFound::Job))?;
                match job.state {
                    JobState::Queued => {
                        let ended =
                            end_job(&mut tx, &job, Ending::Cancelled, None, &actor, now).await?;
                        Ok(CancelOutcome {
                            job: ended.job,
                            stop_requested: false,
                        })
                    }
                    JobState::Running => {
                        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1")
                            .bind(&id)
                            .execute(tx.conn())
                            .await?;
                        let job = crate::Job {
                            cancel_requested: true,
                            ..job
                        };
                        Ok(CancelOutcome {
                            job,
                            stop_requested: true,
                        })
                    }
                    _ => {
                        // Finished: as it stands, with its artifacts.
                        let job = crate::jobs::load_job(tx.conn(), &id)
                            .await?
                            .ok_or(StoreError::NotFound(NotFound::Job))?;
                        Ok(CancelOutcome {
                            job,
                            stop_requested: false,
                        })
                    }
                }
            })
        })
        .await
    }
}
