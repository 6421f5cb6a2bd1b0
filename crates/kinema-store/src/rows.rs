//! Rows as the database returns them (`sqlx::FromRow`), and their conversion into the
//! store's types where a column needs more than decoding: JSON, 0/1 flags, money in
//! two columns, unsigned counts. Types whose columns decode as they are (accounts,
//! keys, lots) derive `FromRow` themselves in `types.rs`.

use std::collections::BTreeMap;

use kinema_ledger::{Allocation, Credits, Money, PostpaidAccount, PostpaidPhase, UnixMillis};
use kinema_params::{GenerationParams, ImageSlot, InputImage};
use serde::{Deserialize, Serialize};

use crate::{
    Artifact, ArtifactKind, ArtifactRemoval, BillingEvent, BillingEventKind, EntryKind, Failure,
    Job, JobBilling, JobPriority, JobState, LedgerEntry, Payment, Stage, StoreError,
};

/// A currency code read back from the database.
fn currency(code: &str, what: &str) -> Result<kinema_ledger::Currency, StoreError> {
    code.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} currency: {e}")))
}

fn count(v: i64) -> Result<u32, StoreError> {
    Ok(u32::try_from(v)?)
}

/// One entry of `jobs.inputs`: an input image as shown (no bytes; those are in
/// `job_inputs`).
#[derive(Serialize, Deserialize)]
pub(crate) struct InputMeta {
    pub name: ImageSlot,
    #[serde(flatten)]
    pub image: InputImage,
}

/// `jobs.inputs` for a job's parameters.
pub(crate) fn inputs_json(params: &GenerationParams) -> Result<String, StoreError> {
    let metas: Vec<InputMeta> = params
        .images()
        .map(|(name, image)| InputMeta {
            name,
            image: InputImage {
                png: None,
                ..image.clone()
            },
        })
        .collect();
    Ok(serde_json::to_string(&metas)?)
}

fn inputs_from_json(text: &str) -> Result<Vec<InputMeta>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_str(text)?)
}

/// A row of `job_inputs`, bytes included (the lease's read).
#[derive(sqlx::FromRow)]
pub(crate) struct JobInputRow {
    pub name: String,
    pub png: Vec<u8>,
    pub sha256: String,
    pub width: i64,
    pub height: i64,
}

impl JobInputRow {
    pub(crate) fn into_input(self) -> Result<(ImageSlot, InputImage), StoreError> {
        let name = ImageSlot::parse(&self.name)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job input {:?}", self.name)))?;
        Ok((
            name,
            InputImage {
                width: count(self.width)?,
                height: count(self.height)?,
                sha256: self.sha256,
                png: Some(self.png.into()),
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    seq: i64,
    id: String,
    account_id: String,
    external_id: Option<String>,
    idempotency_key: Option<String>,
    model: String,
    prompt: String,
    negative_prompt: String,
    width: i64,
    height: i64,
    num_frames: i64,
    fps: i64,
    steps: i64,
    guidance_scale: f64,
    seed: i64,
    output_format: String,
    preview: Option<String>,
    guidance_scale_2: Option<f64>,
    inputs: String,
    callback_url: String,
    metadata: String,
    #[sqlx(try_from = "String")]
    state: JobState,
    stage: Option<String>,
    progress_step: i64,
    progress_total: i64,
    quoted: Credits,
    held: Credits,
    debited: Credits,
    refunded: Credits,
    failure_code: Option<String>,
    failure_message: Option<String>,
    failure_retryable: Option<i64>,
    cancel_requested: i64,
    attempts: i64,
    handed_back: i64,
    usage: String,
    created_at: UnixMillis,
    started_at: Option<UnixMillis>,
    finished_at: Option<UnixMillis>,
    #[sqlx(try_from = "String")]
    billing: JobBilling,
    price_minor: Option<i64>,
    price_currency: Option<String>,
    charged_minor: i64,
    lease_owner: Option<String>,
    priority: i64,
    batch_key: Option<String>,
    run_alone: i64,
    prompt_expires_at: Option<UnixMillis>,
    prompt_purged_at: Option<UnixMillis>,
    member_id: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Job, StoreError> {
        let failure = r.failure_code.map(|code| Failure {
            code,
            message: r.failure_message.unwrap_or_default(),
            retryable: r.failure_retryable.is_some_and(|v| v != 0),
        });
        let price = match (r.price_minor, r.price_currency) {
            (Some(minor), Some(code)) => Some(Money::new(minor, currency(&code, "job price")?)),
            _ => None,
        };
        let metadata: BTreeMap<String, String> = serde_json::from_str(&r.metadata)?;
        let mut params = GenerationParams {
            model: r.model,
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            image: None,
            last_image: None,
            width: count(r.width)?,
            height: count(r.height)?,
            num_frames: count(r.num_frames)?,
            fps: count(r.fps)?,
            steps: count(r.steps)?,
            guidance_scale: r.guidance_scale as f32,
            guidance_scale_2: r.guidance_scale_2.map(|g| g as f32),
            // SQLite integers are i64: the seed's bits are stored as they are.
            seed: r.seed as u64,
            output: r.output_format,
            preview: r.preview,
        };
        for input in inputs_from_json(&r.inputs)? {
            *params.image_mut(input.name) = Some(input.image);
        }
        Ok(Job {
            seq: r.seq,
            id: r.id,
            account_id: r.account_id,
            external_id: r.external_id,
            idempotency_key: r.idempotency_key,
            params,
            callback_url: r.callback_url,
            metadata,
            state: r.state,
            stage: r.stage.map(|s| s.parse::<Stage>()).transpose()?,
            progress_step: count(r.progress_step)?,
            progress_total: count(r.progress_total)?,
            quoted: r.quoted,
            held: r.held,
            debited: r.debited,
            refunded: r.refunded,
            failure,
            cancel_requested: r.cancel_requested != 0,
            attempts: count(r.attempts)?,
            handed_back: count(r.handed_back)?,
            usage: serde_json::from_str(&r.usage)?,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            artifacts: Vec::new(),
            queue_position: None,
            billing: r.billing,
            price,
            charged_minor: r.charged_minor,
            lease_owner: r.lease_owner,
            priority: JobPriority::from_rank(r.priority)?,
            batch_key: r.batch_key,
            run_alone: r.run_alone != 0,
            prompt_expires_at: r.prompt_expires_at,
            prompt_purged_at: r.prompt_purged_at,
            member_id: r.member_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ArtifactRow {
    pub job_id: String,
    #[sqlx(try_from = "String")]
    kind: ArtifactKind,
    mime: String,
    bytes: i64,
    sha256: String,
    location: String,
    expires_at: UnixMillis,
    removal: Option<String>,
}

impl TryFrom<ArtifactRow> for Artifact {
    type Error = StoreError;

    fn try_from(r: ArtifactRow) -> Result<Artifact, StoreError> {
        Ok(Artifact {
            kind: r.kind,
            mime: r.mime,
            bytes: u64::try_from(r.bytes)?,
            sha256: r.sha256,
            location: r.location,
            expires_at: r.expires_at,
            removal: r
                .removal
                .map(|s| s.parse::<ArtifactRemoval>())
                .transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    id: i64,
    account_id: String,
    #[sqlx(try_from = "String")]
    kind: EntryKind,
    amount: Credits,
    allocations: String,
    job_id: Option<String>,
    actor: String,
    balance_after: Credits,
    held_after: Credits,
    memo: String,
    created_at: UnixMillis,
    member_id: Option<String>,
}

impl TryFrom<EntryRow> for LedgerEntry {
    type Error = StoreError;

    fn try_from(r: EntryRow) -> Result<LedgerEntry, StoreError> {
        let allocations: Vec<Allocation> = serde_json::from_str(&r.allocations)?;
        Ok(LedgerEntry {
            id: r.id,
            account_id: r.account_id,
            kind: r.kind,
            amount: r.amount,
            allocations,
            job_id: r.job_id,
            member_id: r.member_id,
            actor: r.actor,
            balance_after: r.balance_after,
            held_after: r.held_after,
            memo: r.memo,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    account_id: String,
    #[sqlx(try_from = "String")]
    kind: BillingEventKind,
    amount_minor: i64,
    currency: String,
    subscription_id: Option<String>,
    plan_id: Option<String>,
    job_id: Option<String>,
    payment_ref: Option<String>,
    detail: String,
    effective_at: UnixMillis,
    created_at: UnixMillis,
}

impl TryFrom<EventRow> for BillingEvent {
    type Error = StoreError;

    fn try_from(r: EventRow) -> Result<BillingEvent, StoreError> {
        // An event without an amount stores an empty currency.
        let amount = if r.currency.is_empty() {
            None
        } else {
            Some(Money::new(
                r.amount_minor,
                currency(&r.currency, "billing event")?,
            ))
        };
        Ok(BillingEvent {
            id: r.id,
            account_id: r.account_id,
            kind: r.kind,
            amount,
            subscription_id: r.subscription_id,
            plan_id: r.plan_id,
            job_id: r.job_id,
            payment_ref: r.payment_ref,
            detail: r.detail,
            effective_at: r.effective_at,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PostpaidRow {
    balance_minor: i64,
    currency: String,
    arrears_since: Option<UnixMillis>,
    phase: String,
    terminated_at: Option<UnixMillis>,
}

pub(crate) fn phase_str(p: PostpaidPhase) -> &'static str {
    match p {
        PostpaidPhase::Active => "active",
        PostpaidPhase::InArrears => "in_arrears",
        PostpaidPhase::Suspended => "suspended",
        PostpaidPhase::Terminated => "terminated",
    }
}

impl TryFrom<PostpaidRow> for PostpaidAccount {
    type Error = StoreError;

    fn try_from(r: PostpaidRow) -> Result<PostpaidAccount, StoreError> {
        let phase = match r.phase.as_str() {
            "active" => PostpaidPhase::Active,
            "in_arrears" => PostpaidPhase::InArrears,
            "suspended" => PostpaidPhase::Suspended,
            "terminated" => PostpaidPhase::Terminated,
            other => return Err(StoreError::Corrupt(format!("postpaid phase {other:?}"))),
        };
        Ok(PostpaidAccount {
            balance: Money::new(r.balance_minor, currency(&r.currency, "postpaid")?),
            arrears_since: r.arrears_since,
            phase,
            terminated_at: r.terminated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PaymentRow {
    payment_ref: String,
    account_id: String,
    kind: String,
    item_id: String,
    amount_minor: i64,
    currency: String,
    created_at: UnixMillis,
    /// What it bought (JSON).
    pub result: String,
}

impl PaymentRow {
    pub fn payment(&self) -> Result<Payment, StoreError> {
        Ok(Payment {
            payment_ref: self.payment_ref.clone(),
            account_id: self.account_id.clone(),
            kind: self.kind.clone(),
            item_id: self.item_id.clone(),
            amount: Money::new(self.amount_minor, currency(&self.currency, "payment")?),
            created_at: self.created_at,
        })
    }
}
