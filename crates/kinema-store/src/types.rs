use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kinema_ledger::{Allocation, Credits, UnixMillis};
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
    };
}

text_enum!(AccountStatus { Active => "active", Suspended => "suspended", Terminated => "terminated" });
text_enum!(Role { Admin => "admin", Platform => "platform", Account => "account" });
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
text_enum!(ArtifactKind { Video => "video", Poster => "poster" });

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub status: AccountStatus,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub role: Role,
    pub account_id: Option<String>,
    pub name: String,
    pub prefix: String,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Per-stage timings and where the job ran (CONTRACT.md §6 usage records).
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
}

/// What a submission asks for, after validation and quoting.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub account_id: String,
    pub external_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request as sent, to tell a retry from a conflicting reuse.
    pub request_hash: String,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub seed: u64,
    pub output_format: String,
    pub callback_url: String,
    pub metadata: BTreeMap<String, String>,
    pub quote: Credits,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub seq: i64,
    pub id: String,
    pub account_id: String,
    pub external_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub seed: u64,
    pub output_format: String,
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
    pub attempts: u32,
    pub usage: Usage,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub artifacts: Vec<Artifact>,
    /// Jobs ahead of this one, while queued.
    pub queue_position: Option<u32>,
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
