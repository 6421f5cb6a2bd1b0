use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kinema_ledger::{Allocation, Credits, UnixMillis};
use kinema_params::GenerationParams;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Maps a Rust enum to the lowercase/uppercase words stored in TEXT columns.
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        concat!("unknown ", stringify!($name), " {:?}"), other
                    ))),
                }
            }
        }
        // Lets a row type decode the column straight into the enum.
        impl TryFrom<String> for $name {
            type Error = StoreError;
            fn try_from(s: String) -> Result<Self, StoreError> {
                s.parse()
            }
        }
    };
}

text_enum!(AccountStatus {
    Active => "active", Suspended => "suspended", Terminated => "terminated", Deleted => "deleted",
});
text_enum!(BillingMode { Prepaid => "prepaid", Postpaid => "postpaid" });
text_enum!(PolicyVerdict { Allowed => "allowed", Refused => "refused", Unavailable => "unavailable" });
text_enum!(PolicySource { Local => "local", External => "external" });
text_enum!(JobBilling { Credits => "credits", Postpaid => "postpaid" });
text_enum!(Role {
    Admin => "admin", Platform => "platform", Account => "account", Worker => "worker",
});
text_enum!(CallbackEvent {
    Running => "job.running", Succeeded => "job.succeeded", Failed => "job.failed",
    Cancelled => "job.cancelled",
});
text_enum!(CallbackState { Pending => "PENDING", Delivered => "DELIVERED", Failed => "FAILED" });
text_enum!(MemberRole { Owner => "owner", Admin => "admin", Member => "member" });
text_enum!(JobState {
    Queued => "QUEUED", Running => "RUNNING", Succeeded => "SUCCEEDED",
    Failed => "FAILED", Cancelled => "CANCELLED",
});
text_enum!(Stage {
    EncodingText => "ENCODING_TEXT", Denoising => "DENOISING", Decoding => "DECODING",
    EncodingVideo => "ENCODING_VIDEO", Storing => "STORING",
});
text_enum!(EntryKind {
    Grant => "GRANT", Purchase => "PURCHASE", Trial => "TRIAL",
    SubscriptionGrant => "SUBSCRIPTION_GRANT", Hold => "HOLD", Release => "RELEASE",
    Debit => "DEBIT", Refund => "REFUND", Expire => "EXPIRE", Forfeit => "FORFEIT",
    Adjust => "ADJUST",
});
text_enum!(ArtifactKind { Video => "video", Poster => "poster", Preview => "preview" });
text_enum!(ArtifactRemoval { Retention => "retention", AccountClosed => "account_closed" });

/// A job's class in the queue: every queued job of a higher class is leased before
/// any of a lower one (fair share applies within a class).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum JobPriority {
    Low,
    #[default]
    Normal,
    High,
}

impl JobPriority {
    /// The stored value: higher is served first.
    pub fn rank(self) -> i64 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::High => 2,
        }
    }

    pub fn from_rank(rank: i64) -> Result<Self, StoreError> {
        match rank {
            0 => Ok(Self::Low),
            1 => Ok(Self::Normal),
            2 => Ok(Self::High),
            other => Err(StoreError::Corrupt(format!("unknown job priority {other}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Normal => "NORMAL",
            Self::High => "HIGH",
        }
    }
}

impl fmt::Display for JobPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    /// As the operator (or the sweeper) last set it. A postpaid account in arrears
    /// past its grace is suspended by the clock before the sweeper records it: see
    /// [`crate::AccountView`].
    #[sqlx(try_from = "String")]
    pub status: AccountStatus,
    #[sqlx(try_from = "String")]
    pub billing: BillingMode,
    /// Why it is suspended or terminated ("operator", "violation", "arrears", ...).
    pub status_reason: String,
    pub status_changed_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub account_id: Option<String>,
    pub name: String,
    pub prefix: String,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    /// The member of the account the key belongs to (docs/api.md, "Organisations and
    /// seats"); `None` for the account's own keys and every other role.
    pub member_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lot {
    pub id: i64,
    pub account_id: String,
    pub source: String,
    pub original: Credits,
    pub remaining: Credits,
    pub expires_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Credits in unexpired lots.
    pub total: Credits,
    /// Reserved by jobs not yet started.
    pub held: Credits,
    pub available: Credits,
    /// Unexpired lots with credits left, in debit order.
    pub lots: Vec<Lot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub account_id: String,
    pub kind: EntryKind,
    pub amount: Credits,
    pub allocations: Vec<Allocation>,
    pub job_id: Option<String>,
    /// The member whose job the entry belongs to (HOLD, DEBIT, RELEASE, REFUND of a
    /// job a member submitted).
    pub member_id: Option<String>,
    pub actor: String,
    pub balance_after: Credits,
    pub held_after: Credits,
    pub memo: String,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub mime: String,
    pub bytes: u64,
    pub sha256: String,
    /// Where the artifact store keeps it (a key, not a path the client sees).
    pub location: String,
    pub expires_at: UnixMillis,
    /// Why the file is gone or going: its retention ended (deleted by the sweeper), or
    /// its account was closed (terminated or deleted). `None` while it is kept.
    pub removal: Option<ArtifactRemoval>,
}

/// Per-stage timings and where the job ran (docs/api.md, "Downloading" usage records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub device: String,
    pub encode_text_ms: u64,
    pub denoise_ms: u64,
    pub decode_ms: u64,
    pub encode_video_ms: u64,
    pub store_ms: u64,
    pub total_ms: u64,
    /// Microseconds the worker sat idle between its previous job's end and this job's
    /// pipeline start, when this job was already queued at that end (else `None`).
    pub scheduler_gap_us: Option<u64>,
    /// How many jobs were denoised together in this job's batch (1: alone; 0: the job
    /// did not reach denoising).
    pub batch_size: u32,
    /// The denoising step last completed when a cancel reached the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_seen_at_step: Option<u32>,
    /// The step after which denoising stopped early (cancel, shutdown, time limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at_step: Option<u32>,
    /// Peak device memory (bytes) during each model stage, on CUDA devices: the
    /// memory pool's high-water mark while the stage ran. A batch's members share the
    /// denoising figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_text_peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denoise_peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_peak_bytes: Option<u64>,
}

/// What a submission asks for, after validation and quoting.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub account_id: String,
    pub external_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request as sent, to tell a retry from a conflicting reuse.
    pub request_hash: String,
    /// What to generate, resolved. Its input images carry their PNG bytes: they are
    /// stored (`job_inputs`) in the submission's transaction.
    pub params: GenerationParams,
    pub callback_url: String,
    pub metadata: BTreeMap<String, String>,
    pub quote: Credits,
    /// The member of the account that submitted it (its key's member).
    pub member_id: Option<String>,
    pub priority: JobPriority,
    /// Jobs with the same key may be leased together as one batch (the engine derives
    /// it from model, resolved shape and scheduler); `None` never batches.
    pub batch_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub seq: i64,
    pub id: String,
    pub account_id: String,
    pub external_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// What to generate. Input images are described (size, SHA-256) on every read;
    /// their PNG bytes are loaded only where the job is run (its lease).
    pub params: GenerationParams,
    pub callback_url: String,
    pub metadata: BTreeMap<String, String>,
    pub state: JobState,
    pub stage: Option<Stage>,
    pub progress_step: u32,
    pub progress_total: u32,
    pub quoted: Credits,
    pub held: Credits,
    pub debited: Credits,
    pub refunded: Credits,
    pub failure: Option<Failure>,
    pub cancel_requested: bool,
    /// Every start of the job, including one a draining worker handed back.
    pub attempts: u32,
    /// Starts a draining worker handed back to the queue: they do not count against
    /// the retry budget (`--max-attempts`).
    pub handed_back: u32,
    pub usage: Usage,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub artifacts: Vec<Artifact>,
    /// Jobs that will be leased before this one, while queued (see
    /// [`crate::Store::get_job`] for how fair share makes it an estimate).
    pub queue_position: Option<u32>,
    pub priority: JobPriority,
    pub batch_key: Option<String>,
    /// Never leased as a batch companion (an out-of-memory retry runs alone).
    pub run_alone: bool,
    /// Credits (hold, debit, refund) or postpaid (charged `price` in money on success).
    pub billing: JobBilling,
    /// Postpaid: what success costs, fixed at submission.
    pub price: Option<kinema_ledger::Money>,
    /// Postpaid: what was charged (minor units of `price`'s currency).
    pub charged_minor: i64,
    /// The worker holding the job's lease while it runs.
    pub lease_owner: Option<String>,
    /// Once finished: when its prompt, negative prompt and metadata are purged
    /// (docs/api.md, "Retention").
    pub prompt_expires_at: Option<UnixMillis>,
    /// When they were purged; blank since.
    pub prompt_purged_at: Option<UnixMillis>,
    /// The member of the account that submitted it.
    pub member_id: Option<String>,
}

/// How a submission ended when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created(Job),
    /// The same idempotency key and request: the original job, nothing held again.
    Existing(Job),
}

impl Submitted {
    pub fn job(&self) -> &Job {
        match self {
            Submitted::Created(j) | Submitted::Existing(j) => j,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CancelOutcome {
    pub job: Job,
    /// The job is running: it stops at its next step (the worker finishes the cancel).
    pub stop_requested: bool,
}

text_enum!(BillingEventKind {
    PackPurchase => "PACK_PURCHASE",
    Charge => "CHARGE",
    RefundOwed => "REFUND_OWED",
    UsageCharge => "USAGE_CHARGE",
    TopUp => "TOP_UP",
    TrialStarted => "TRIAL_STARTED",
    SubscriptionStarted => "SUBSCRIPTION_STARTED",
    SubscriptionQueued => "SUBSCRIPTION_QUEUED",
    SubscriptionRenewed => "SUBSCRIPTION_RENEWED",
    RenewalSkipped => "RENEWAL_SKIPPED",
    CancellationScheduled => "CANCELLATION_SCHEDULED",
    CancellationWithdrawn => "CANCELLATION_WITHDRAWN",
    SubscriptionEnded => "SUBSCRIPTION_ENDED",
    ArrearsStarted => "ARREARS_STARTED",
    ArrearsSuspended => "ARREARS_SUSPENDED",
    ArrearsTerminated => "ARREARS_TERMINATED",
    Reactivated => "REACTIVATED",
    AccountSuspended => "ACCOUNT_SUSPENDED",
    AccountReinstated => "ACCOUNT_REINSTATED",
    AccountTerminated => "ACCOUNT_TERMINATED",
    AccountDeleted => "ACCOUNT_DELETED",
});

impl BillingEventKind {
    /// Money the platform collects from its customer (and keeps).
    pub fn is_collected(self) -> bool {
        matches!(self, Self::PackPurchase | Self::Charge)
    }
}

/// A billing event as stored (append-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEvent {
    pub id: i64,
    pub account_id: String,
    pub kind: BillingEventKind,
    /// Never negative; the kind says which way it goes.
    pub amount: Option<kinema_ledger::Money>,
    pub subscription_id: Option<String>,
    pub plan_id: Option<String>,
    pub job_id: Option<String>,
    pub payment_ref: Option<String>,
    /// The effect as the rules wrote it (JSON).
    pub detail: String,
    /// The instant it belongs to (a renewal caught up late lies in the past).
    pub effective_at: UnixMillis,
    pub created_at: UnixMillis,
}

/// A payment the platform recorded (its `payment_ref` is the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_ref: String,
    pub account_id: String,
    /// `pack`, `subscription` or `top_up`.
    pub kind: String,
    pub item_id: String,
    pub amount: kinema_ledger::Money,
    pub created_at: UnixMillis,
}

/// A pack bought (or the same `payment_ref` presented again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPurchased {
    pub payment: Payment,
    pub lot: Lot,
    /// False when the `payment_ref` had been recorded before: nothing new was granted.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialStarted {
    pub trial: kinema_ledger::TrialRecord,
    pub lot: Lot,
}

/// The account's plans after a change, with what the change wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub state: kinema_ledger::SubscriptionState,
    pub effects: Vec<kinema_ledger::SubscriptionEffect>,
    /// Lots the change granted.
    pub lots: Vec<Lot>,
    /// Billing events the change wrote (charges, refunds owed, state changes).
    pub events: Vec<BillingEvent>,
    /// False when the `payment_ref` had been recorded before: nothing was changed.
    pub created: bool,
}

/// Which plan a cancellation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    /// The subscription in force.
    Current,
    /// The plan queued to start after it (full refund).
    Queued,
    /// Whichever of the two has this id.
    Id(String),
}

/// A postpaid account after a top-up.
#[derive(Debug, Clone, PartialEq)]
pub struct ToppedUp {
    pub account: kinema_ledger::PostpaidAccount,
    pub effects: Vec<kinema_ledger::PostpaidEffect>,
    /// Queued jobs a suspension caught up on by this top-up cancelled.
    pub cancelled: Vec<Job>,
    pub created: bool,
}

/// A running job's successful end as stored ([`Store::complete_job`](crate::Store::complete_job)).
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// SUCCEEDED, or CANCELLED when a cancel arrived after the last step.
    pub job: Job,
    /// Queued jobs of its postpaid account that its charge cancelled: the account's
    /// grace ran out while the job ran, and the charge applied the suspension.
    pub cancelled: Vec<Job>,
}

/// A postpaid account the sweeper moved on through arrears, and the queued jobs its
/// suspension or termination cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct PostpaidAdvanced {
    pub account_id: String,
    pub cancelled: Vec<Job>,
}

/// One reason an owner's deletion request is refused (docs/api.md, "Accounts").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionRefusal {
    /// Credits in unexpired lots.
    Credits { credits: Credits },
    /// A postpaid balance other than zero (owed either way).
    Money { balance: kinema_ledger::Money },
    /// Jobs queued or running.
    UnfinishedJobs { count: i64 },
    /// A subscription current or queued.
    RunningSubscription { plan_ids: Vec<String> },
    /// Accounts younger than the minimum age cannot be deleted.
    TooYoung {
        created_at: UnixMillis,
        deletable_from: UnixMillis,
    },
}

impl DeletionRefusal {
    /// The stable code of the reason (ErrorInfo metadata key).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Credits { .. } => "HAS_CREDITS",
            Self::Money { .. } => "HAS_MONEY_BALANCE",
            Self::UnfinishedJobs { .. } => "UNFINISHED_JOBS",
            Self::RunningSubscription { .. } => "RUNNING_SUBSCRIPTION",
            Self::TooYoung { .. } => "ACCOUNT_TOO_YOUNG",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Credits { credits } => format!("the account holds {credits} credits"),
            Self::Money { balance } => format!(
                "the account's money balance is {} {}, not zero",
                balance.minor, balance.currency
            ),
            Self::UnfinishedJobs { count } => format!("{count} job(s) are queued or running"),
            Self::RunningSubscription { plan_ids } => {
                format!("a subscription is running ({})", plan_ids.join(", "))
            }
            Self::TooYoung { deletable_from, .. } => format!(
                "the account is younger than the minimum age; it can be deleted from {deletable_from} (Unix ms)"
            ),
        }
    }

    pub fn describe_all(all: &[DeletionRefusal]) -> String {
        all.iter()
            .map(|r| format!("{}: {}", r.code(), r.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What an account change (suspend, reinstate, terminate, delete) did.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountChange {
    pub account: Account,
    /// Queued jobs cancelled (their holds released).
    pub cancelled: Vec<Job>,
    /// Running jobs asked to stop.
    pub stopping: Vec<String>,
    /// Credits forfeited (termination for violation).
    pub forfeited: Credits,
}

/// An account with what its status depends on besides the row: the postpaid phase
/// (arrears suspend and terminate by the clock), the trial and the plans.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountView {
    pub account: Account,
    /// Effective at `now`: a postpaid account past its grace is suspended even
    /// before the sweeper records it.
    pub status: AccountStatus,
    pub postpaid: Option<(
        kinema_ledger::PostpaidAccount,
        kinema_ledger::PostpaidStatus,
    )>,
    pub trial: Option<kinema_ledger::TrialRecord>,
}
