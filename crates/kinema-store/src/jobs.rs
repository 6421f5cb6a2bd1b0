use kinema_ledger::UnixMillis;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::credits::{
    append_entry_known, expire_due_lots, lock_account_for_submit, lock_job_account, refund_job,
    release_hold, EntryDraft,
};
use crate::db::new_id;
use crate::db::Backend;
use crate::{
    AccountStatus, Artifact, BillingMode, CancelOutcome, EntryKind, Failure, Job, JobBilling,
    JobState, NewJob, Store, StoreError, Submitted,
};

impl Store {
    /// Writes the job QUEUED and its HOLD of the quote in one transaction. Refused
    /// (and nothing written) when the account is not active or cannot cover the quote.
    pub async fn submit_job(
        &self,
        new: NewJob,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Submitted, StoreError> {
        let b = self.backend;
        if new.quote <= 0 {
            return Err(StoreError::Invalid("quote must be positive".into()));
        }
        let policy = self.policy.clone();
        let actor = actor.to_owned();
        let submitted = self
            .write(move |tx| {
                Box::pin(async move {
                    let (account, position, queued) =
                        lock_account_for_submit(tx, b, &new.account_id, now).await?;
                    if account.status != AccountStatus::Active {
                        return Err(StoreError::AccountNotActive {
                            status: account.status.to_string(),
                        });
                    }
                    // A postpaid account is charged in money on success, at a price fixed now;
                    // while suspended by arrears it takes no new jobs.
                    let price = match account.billing {
                        BillingMode::Prepaid => None,
                        BillingMode::Postpaid => {
                            let postpaid = crate::postpaid::load_postpaid(&mut *tx, b, &new.account_id)
                                .await?
                                .ok_or_else(|| {
                                    StoreError::Corrupt("postpaid account without a balance".into())
                                })?;
                            kinema_ledger::postpaid_can_submit(&postpaid, &policy.postpaid, now).map_err(
                                |e| match e {
                                    kinema_ledger::LedgerError::AccountSuspended => {
                                        StoreError::AccountNotActive {
                                            status: "suspended (in arrears)".into(),
                                        }
                                    }
                                    other => StoreError::AccountNotActive {
                                        status: other.to_string(),
                                    },
                                },
                            )?;
                            Some(policy.usage_price.checked_mul(new.quote)?)
                        }
                    };
                    if let Some(key) = &new.idempotency_key {
                        let existing = sqlx::query(&b.sql(
                            "SELECT id, request_hash FROM jobs WHERE account_id = ? AND idempotency_key = ?",
                        ))
                        .bind(&new.account_id)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = existing {
                            let hash: String = row.try_get("request_hash")?;
                            if hash != new.request_hash {
                                return Err(StoreError::IdempotencyConflict);
                            }
                            let id: String = row.try_get("id")?;
                            let job = load_job(&mut *tx, b, &id)
                                .await?
                                .ok_or(StoreError::NotFound("job"))?;
                            return Ok(Submitted::Existing(job));
                        }
                    }
                    if let Some(external_id) = &new.external_id {
                        let taken: Option<String> = sqlx::query_scalar(
                            &b.sql("SELECT id FROM jobs WHERE account_id = ? AND external_id = ?"),
                        )
                        .bind(&new.account_id)
                        .bind(external_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(job_id) = taken {
                            return Err(StoreError::ExternalIdConflict { job_id });
                        }
                    }
                    crate::queue::check_limits(&queued, &policy.queue)?;
                    let position = match (price, position) {
                        (None, Some(position)) => {
                            if position.due_lots {
                                expire_due_lots(&mut *tx, b, &new.account_id, now).await?;
                            }
                            if position.available() < new.quote {
                                // Dropping the transaction rolls back: a refused request changes nothing.
                                return Err(StoreError::InsufficientCredits {
                                    needed: new.quote,
                                    available: position.available(),
                                });
                            }
                            Some(position)
                        }
                        (None, None) => {
                            return Err(StoreError::Corrupt(
                                "prepaid account without its credit position".into(),
                            ))
                        }
                        (Some(_), _) => None,
                    };
                    let id = new_id("job");
                    let (billing, held) = match price {
                        None => (JobBilling::Credits, new.quote),
                        Some(_) => (JobBilling::Postpaid, 0),
                    };
                    // The row as stored comes back: no second read.
                    let row = sqlx::query(
                        &b.sql("INSERT INTO jobs (id, account_id, external_id, idempotency_key, request_hash, model, \
                         prompt, negative_prompt, width, height, num_frames, fps, steps, guidance_scale, seed, \
                         output_format, callback_url, metadata, state, quoted, held, progress_total, created_at, \
                         billing, price_minor, price_currency, priority, batch_key) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                         RETURNING *"),
                    )
                    .bind(&id)
                    .bind(&new.account_id)
                    .bind(&new.external_id)
                    .bind(&new.idempotency_key)
                    .bind(&new.request_hash)
                    .bind(&new.model)
                    .bind(&new.prompt)
                    .bind(&new.negative_prompt)
                    .bind(i64::from(new.width))
                    .bind(i64::from(new.height))
                    .bind(i64::from(new.num_frames))
                    .bind(i64::from(new.fps))
                    .bind(i64::from(new.steps))
                    .bind(f64::from(new.guidance_scale))
                    // SQLite integers are i64: the seed's bits are stored as-is.
                    .bind(new.seed as i64)
                    .bind(&new.output_format)
                    .bind(&new.callback_url)
                    .bind(serde_json::to_string(&new.metadata)?)
                    .bind(new.quote)
                    .bind(held)
                    .bind(i64::from(new.steps))
                    .bind(now)
                    .bind(billing.as_str())
                    .bind(price.map(|p| p.minor))
                    .bind(price.map(|p| p.currency.as_str().to_string()))
                    .bind(new.priority.rank())
                    .bind(&new.batch_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    let job = job_from_row(&row)?;
                    if let Some(position) = position {
                        // Under the account lock the hold moves nothing else: the balance stands
                        // and the holds grow by the quote.
                        append_entry_known(
                            &mut *tx,
                            b,
                            EntryDraft {
                                account_id: &new.account_id,
                                kind: EntryKind::Hold,
                                amount: new.quote,
                                allocations: &[],
                                job_id: Some(&id),
                                actor: &actor,
                                memo: "",
                            },
                            position.live,
                            position.held + new.quote,
                            now,
                        )
                        .await?;
                    }
                    Ok(Submitted::Created(job))
                })
            })
            .await?;
        let Submitted::Created(mut job) = submitted else {
            return Ok(submitted);
        };
        // Read after the commit: the queue scan stays out of the write transaction.
        let mut conn = self.read.acquire().await?;
        job.queue_position = Some(crate::queue::queue_position(&mut conn, b, &job).await?);
        Ok(Submitted::Created(job))
    }

    /// The job, if it exists and (when `account_id` is given) belongs to that account.
    /// A queued job's `queue_position` counts the queued jobs the queue's order leases
    /// before it as things stand (see `queue::queue_position`: exact while no job
    /// finishes and nothing is submitted; an estimate otherwise).
    /// A deleted account's jobs are gone for every reader (CONTRACT.md §5); their
    /// money columns stay only for the ledger's checks.
    pub async fn get_job(
        &self,
        account_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Job>, StoreError> {
        let b = self.backend;
        let mut conn = self.read.acquire().await?;
        let Some(job) = load_job(&mut conn, b, id).await? else {
            return Ok(None);
        };
        if account_id.is_some_and(|a| a != job.account_id)
            || account_deleted(&mut conn, b, &job.account_id).await?
        {
            return Ok(None);
        }
        Ok(Some(job))
    }

    /// An account's jobs, newest first, with `seq` below `before_seq`.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        states: &[JobState],
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let b = self.backend;
        let mut conn = self.read.acquire().await?;
        let state_filter = if states.is_empty() {
            String::new()
        } else {
            format!(" AND state IN ({})", vec!["?"; states.len()].join(", "))
        };
        let sql = format!(
            "SELECT id FROM jobs WHERE account_id = ? AND seq < ?{state_filter} ORDER BY seq DESC LIMIT ?"
        );
        let sql = b.sql(&sql);
        let mut query = sqlx::query_scalar(&sql).bind(account_id).bind(before_seq);
        for state in states {
            query = query.bind(state.as_str());
        }
        let ids: Vec<String> = query.bind(i64::from(limit)).fetch_all(&mut *conn).await?;
        if account_deleted(&mut conn, b, account_id).await? {
            return Ok(Vec::new());
        }
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.extend(load_job(&mut conn, b, &id).await?);
        }
        Ok(jobs)
    }

    /// CONTRACT.md §1: a queued job is cancelled at once with its hold released; a
    /// running one is asked to stop (its worker finishes the cancel and the refund); a
    /// terminal one is left as it is.
    pub async fn cancel_job(
        &self,
        account_id: &str,
        id: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError> {
        let b = self.backend;
        let policy = self.policy.clone();
        let (account_id, id, actor) = (account_id.to_owned(), id.to_owned(), actor.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let (account_id, id, actor) = (account_id.as_str(), id.as_str(), actor.as_str());
                if lock_job_account(&mut *tx, b, id).await?.as_deref() != Some(account_id) {
                    return Err(StoreError::NotFound("job"));
                }
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                let stop_requested = match job.state {
                    JobState::Queued => {
                        set_terminal(&mut *tx, b, id, JobState::Cancelled, None, now).await?;
                        release_hold(&mut *tx, b, account_id, id, actor, now).await?;
                        // A queued retry was already debited: cancelling gives it back.
                        if policy.refund_on_cancel {
                            refund_job(
                                &mut *tx,
                                b,
                                account_id,
                                id,
                                policy.refund_grace_ms,
                                actor,
                                now,
                            )
                            .await?;
                        }
                        false
                    }
                    JobState::Running => {
                        sqlx::query(&b.sql("UPDATE jobs SET cancel_requested = 1 WHERE id = ?"))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        true
                    }
                    _ => false,
                };
                let job = load_job(&mut *tx, b, id)
                    .await?
                    .ok_or(StoreError::NotFound("job"))?;
                Ok(CancelOutcome {
                    job,
                    stop_requested,
                })
            })
        })
        .await
    }
}

/// Whether the account was deleted by its owner (its jobs are then gone).
async fn account_deleted(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<bool, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar(&b.sql("SELECT status FROM accounts WHERE id = ?"))
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(status.as_deref() == Some(AccountStatus::Deleted.as_str()))
}

pub(crate) async fn set_terminal(
    conn: &mut AnyConnection,
    b: Backend,
    id: &str,
    state: JobState,
    failure: Option<&Failure>,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "UPDATE jobs SET state = ?, failure_code = ?, failure_message = ?, failure_retryable = ?, \
         finished_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
    ))
    .bind(state.as_str())
    .bind(failure.map(|f| f.code.as_str()))
    .bind(failure.map(|f| f.message.as_str()))
    .bind(failure.map(|f| i64::from(f.retryable)))
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn load_job(
    conn: &mut AnyConnection,
    b: Backend,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let Some(row) = sqlx::query(&b.sql("SELECT * FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut job = job_from_row(&row)?;
    // Only a SUCCEEDED job has artifacts. Expired ones stay listed (with their past
    // `expires_at`), so a download can say ARTIFACT_EXPIRED rather than "never existed".
    if job.state == JobState::Succeeded {
        let artifacts =
            sqlx::query(&b.sql("SELECT * FROM artifacts WHERE job_id = ? ORDER BY kind"))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        job.artifacts = artifacts
            .iter()
            .map(artifact_from_row)
            .collect::<Result<_, _>>()?;
    }
    if job.state == JobState::Queued {
        job.queue_position = Some(crate::queue::queue_position(conn, b, &job).await?);
    }
    Ok(Some(job))
}

pub(crate) fn job_from_row(r: &AnyRow) -> Result<Job, StoreError> {
    let failure = match r.try_get::<Option<String>, _>("failure_code")? {
        Some(code) => Some(Failure {
            code,
            message: r
                .try_get::<Option<String>, _>("failure_message")?
                .unwrap_or_default(),
            retryable: r
                .try_get::<Option<i64>, _>("failure_retryable")?
                .is_some_and(|v| v != 0),
        }),
        None => None,
    };
    Ok(Job {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        external_id: r.try_get("external_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        model: r.try_get("model")?,
        prompt: r.try_get("prompt")?,
        negative_prompt: r.try_get("negative_prompt")?,
        width: get_u32(r, "width")?,
        height: get_u32(r, "height")?,
        num_frames: get_u32(r, "num_frames")?,
        fps: get_u32(r, "fps")?,
        steps: get_u32(r, "steps")?,
        guidance_scale: r.try_get::<f64, _>("guidance_scale")? as f32,
        seed: r.try_get::<i64, _>("seed")? as u64,
        output_format: r.try_get("output_format")?,
        callback_url: r.try_get("callback_url")?,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata")?)?,
        state: r.try_get::<String, _>("state")?.parse()?,
        stage: r
            .try_get::<Option<String>, _>("stage")?
            .map(|s| s.parse())
            .transpose()?,
        progress_step: get_u32(r, "progress_step")?,
        progress_total: get_u32(r, "progress_total")?,
        quoted: r.try_get("quoted")?,
        held: r.try_get("held")?,
        debited: r.try_get("debited")?,
        refunded: r.try_get("refunded")?,
        failure,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        attempts: get_u32(r, "attempts")?,
        usage: serde_json::from_str(&r.try_get::<String, _>("usage")?)?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        artifacts: Vec::new(),
        queue_position: None,
        billing: r.try_get::<String, _>("billing")?.parse()?,
        price: match (
            r.try_get::<Option<i64>, _>("price_minor")?,
            r.try_get::<Option<String>, _>("price_currency")?,
        ) {
            (Some(minor), Some(currency)) => Some(kinema_ledger::Money::new(
                minor,
                currency
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("job price: {e}")))?,
            )),
            _ => None,
        },
        charged_minor: r.try_get("charged_minor")?,
        lease_owner: r.try_get("lease_owner")?,
        priority: crate::JobPriority::from_rank(r.try_get("priority")?)?,
        batch_key: r.try_get("batch_key")?,
        run_alone: r.try_get::<i64, _>("run_alone")? != 0,
    })
}

fn artifact_from_row(r: &AnyRow) -> Result<Artifact, StoreError> {
    Ok(Artifact {
        kind: r.try_get::<String, _>("kind")?.parse()?,
        mime: r.try_get("mime")?,
        bytes: r.try_get::<i64, _>("bytes")? as u64,
        sha256: r.try_get("sha256")?,
        location: r.try_get("location")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn get_u32(r: &AnyRow, column: &str) -> Result<u32, StoreError> {
    let v: i64 = r.try_get(column)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} = {v} is out of range")))
}
