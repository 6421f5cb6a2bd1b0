//! Submission: the job QUEUED and its HOLD of the quote, in one transaction.

use kinema_ledger::UnixMillis;

use crate::db::new_id;
use crate::entries::{append_entry_known, EntryDraft};
use crate::jobs::load_job;
use crate::locks::{lock_account_for_submit, CreditPosition};
use crate::lots::expire_due_lots;
use crate::policy::insert_decision;
use crate::rows::{inputs_json, JobRow};
use crate::tx::Tx;
use crate::{
    BillingMode, EntryKind, Job, JobBilling, NewJob, NotFound, PolicyDecisionDraft, Store,
    StoreError, Submitted,
};

impl Store {
    /// Writes the job QUEUED and its HOLD of the quote in one transaction. Refused
    /// (and nothing written) when the account is closed (`AccountClosed`), suspended
    /// (`AccountNotActive`), over a queue bound, or cannot cover the quote. The same
    /// idempotency key and request returns the first job. The job comes back without
    /// its queue position: a caller that shows it asks [`Store::place_in_queue`]
    /// (outside the transaction: it reads the whole queue).
    pub async fn submit_job(
        &self,
        new: NewJob,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Submitted, StoreError> {
        self.submit_job_with_decision(new, None, actor, now).await
    }

    /// [`Store::submit_job`], recording the usage policy's allowed decision in the
    /// same transaction, with the job it let through (the job a replay returns). A
    /// submission refused for another reason writes nothing, the decision included.
    pub async fn submit_job_with_decision(
        &self,
        new: NewJob,
        decision: Option<PolicyDecisionDraft>,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Submitted, StoreError> {
        if new.quote <= 0 {
            return Err(StoreError::Invalid("quote must be positive".into()));
        }
        let actor = actor.to_owned();
        self.write(move |mut tx| {
            Box::pin(async move {
                let submitted = submit(&mut tx, &new, &actor, now).await?;
                if let Some(decision) = &decision {
                    let job_id = Some(submitted.job().id.as_str());
                    insert_decision(&mut tx, decision, job_id, false, false, now).await?;
                }
                Ok(submitted)
            })
        })
        .await
    }
}

async fn submit(
    tx: &mut Tx<'_>,
    new: &NewJob,
    actor: &str,
    now: UnixMillis,
) -> Result<Submitted, StoreError> {
    let (account, position, queued) = lock_account_for_submit(tx, &new.account_id, now).await?;
    account.require_active()?;
    // A postpaid account is charged in money on success, at a price fixed now; while
    // suspended by arrears it takes no new jobs.
    let price = match account.billing {
        BillingMode::Prepaid => None,
        BillingMode::Postpaid => Some(postpaid_price(tx, new, now).await?),
    };
    if let Some(existing) = idempotent_replay(tx, new).await? {
        return Ok(Submitted::Existing(existing));
    }
    if let Some(external_id) = &new.external_id {
        let taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE account_id = $1 AND external_id = $2")
                .bind(&new.account_id)
                .bind(external_id)
                .fetch_optional(tx.conn())
                .await?;
        if let Some(job_id) = taken {
            return Err(StoreError::ExternalIdConflict { job_id });
        }
    }
    crate::queue::check_limits(&queued, &tx.policy.queue)?;
    let position = match (price, position) {
        (None, Some(position)) => Some(check_cover(tx, new, position, now).await?),
        (None, None) => {
            return Err(StoreError::Corrupt(
                "prepaid account without its credit position".into(),
            ))
        }
        (Some(_), _) => None,
    };
    let (billing, held) = match price {
        None => (JobBilling::Credits, new.quote),
        Some(_) => (JobBilling::Postpaid, 0),
    };
    let id = new_id("job");
    let p = &new.params;
    // The row as stored comes back: no second read.
    let row: JobRow = sqlx::query_as(
        "INSERT INTO jobs (id, account_id, external_id, idempotency_key, request_hash, model, \
         prompt, negative_prompt, width, height, num_frames, fps, steps, guidance_scale, seed, \
         output_format, callback_url, metadata, state, quoted, held, progress_total, created_at, \
         billing, price_minor, price_currency, priority, batch_key, preview, member_id, \
         guidance_scale_2, inputs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, 'QUEUED', $19, $20, $13, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30) \
         RETURNING *",
    )
    .bind(&id)
    .bind(&new.account_id)
    .bind(&new.external_id)
    .bind(&new.idempotency_key)
    .bind(&new.request_hash)
    .bind(&p.model)
    .bind(&p.prompt)
    .bind(&p.negative_prompt)
    .bind(i64::from(p.width))
    .bind(i64::from(p.height))
    .bind(i64::from(p.num_frames))
    .bind(i64::from(p.fps))
    .bind(i64::from(p.steps))
    .bind(f64::from(p.guidance_scale))
    // SQLite integers are i64: the seed's bits are stored as they are.
    .bind(p.seed as i64)
    .bind(&p.output)
    .bind(&new.callback_url)
    .bind(serde_json::to_string(&new.metadata)?)
    .bind(new.quote)
    .bind(held)
    .bind(now)
    .bind(billing.as_str())
    .bind(price.map(|p| p.minor))
    .bind(price.map(|p| p.currency.as_str().to_string()))
    .bind(new.priority.rank())
    .bind(&new.batch_key)
    .bind(&p.preview)
    .bind(&new.member_id)
    .bind(p.guidance_scale_2.map(f64::from))
    .bind(inputs_json(p)?)
    .fetch_one(tx.conn())
    .await?;
    // The input images, in the same transaction as the job (and its hold).
    for (name, image) in p.images() {
        let png = image.png.as_deref().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the job's {} was submitted without its bytes",
                name.as_str()
            ))
        })?;
        sqlx::query(
            "INSERT INTO job_inputs (job_id, name, png, sha256, width, height) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name.as_str())
        .bind(png.to_vec())
        .bind(&image.sha256)
        .bind(i64::from(image.width))
        .bind(i64::from(image.height))
        .execute(tx.conn())
        .await?;
    }
    let mut job = Job::try_from(row)?;
    // The job as submitted keeps its images' bytes (the caller had them anyway).
    job.params.image.clone_from(&p.image);
    job.params.last_image.clone_from(&p.last_image);
    if let Some(position) = position {
        // Under the account lock the hold moves nothing else: the balance stands and
        // the holds grow by the quote.
        append_entry_known(
            tx,
            EntryDraft {
                account_id: &new.account_id,
                kind: EntryKind::Hold,
                amount: new.quote,
                allocations: &[],
                job_id: Some(&id),
                actor,
                memo: "",
            },
            position.live,
            position.held + new.quote,
            now,
        )
        .await?;
    }
    Ok(Submitted::Created(job))
}

/// What success will cost a postpaid account, in money; refused while its arrears
/// have suspended it, or once they have terminated it (by the clock, before the
/// sweeper wrote it).
async fn postpaid_price(
    tx: &mut Tx<'_>,
    new: &NewJob,
    now: UnixMillis,
) -> Result<kinema_ledger::Money, StoreError> {
    let postpaid = crate::postpaid::load_postpaid(tx.conn(), &new.account_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("postpaid account without a balance".into()))?;
    kinema_ledger::postpaid_can_submit(&postpaid, &tx.policy.postpaid, now).map_err(
        |e| match e {
            kinema_ledger::LedgerError::AccountTerminated => StoreError::AccountClosed {
                status: "terminated (arrears)".into(),
            },
            kinema_ledger::LedgerError::AccountSuspended => StoreError::AccountNotActive {
                status: "suspended (in arrears)".into(),
            },
            other => other.into(),
        },
    )?;
    Ok(tx.policy.usage_price.checked_mul(new.quote)?)
}

/// The job an earlier submission with the same idempotency key made, if it was the
/// same request; `IdempotencyConflict` if the key was used for another.
async fn idempotent_replay(tx: &mut Tx<'_>, new: &NewJob) -> Result<Option<Job>, StoreError> {
    let Some(key) = &new.idempotency_key else {
        return Ok(None);
    };
    let existing: Option<(String, String)> = sqlx::query_as(
        "SELECT id, request_hash FROM jobs WHERE account_id = $1 AND idempotency_key = $2",
    )
    .bind(&new.account_id)
    .bind(key)
    .fetch_optional(tx.conn())
    .await?;
    let Some((id, hash)) = existing else {
        return Ok(None);
    };
    if hash != new.request_hash {
        return Err(StoreError::IdempotencyConflict);
    }
    load_job(tx.conn(), &id)
        .await?
        .ok_or(StoreError::NotFound(NotFound::Job))
        .map(Some)
}

/// Checks that the account's available credits cover the quote (after expiring the
/// lots that are due): the position the HOLD entry is written against.
async fn check_cover(
    tx: &mut Tx<'_>,
    new: &NewJob,
    position: CreditPosition,
    now: UnixMillis,
) -> Result<CreditPosition, StoreError> {
    if position.due_lots {
        expire_due_lots(tx, &new.account_id, now).await?;
    }
    if position.available() < new.quote {
        // The caller's error rolls the transaction back: a refused request changes
        // nothing.
        return Err(StoreError::InsufficientCredits {
            needed: new.quote,
            available: position.available(),
        });
    }
    Ok(position)
}
