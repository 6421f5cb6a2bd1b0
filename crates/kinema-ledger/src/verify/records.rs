//! What the checker reads: the ledger entries, lots and jobs as stored, and the policy
//! that says which jobs may be refunded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Allocation, Credits, EntryKind, LedgerError, UnixMillis};

/// A ledger entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub id: i64,
    pub account_id: String,
    pub kind: EntryKind,
    pub amount: Credits,
    pub allocations: Vec<Allocation>,
    pub job_id: Option<String>,
    /// Checked when present.
    pub balance_after: Option<Credits>,
    /// Checked when present.
    pub held_after: Option<Credits>,
    pub created_at: UnixMillis,
}

/// A lot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotRecord {
    pub id: i64,
    pub account_id: String,
    pub original: Credits,
    pub remaining: Credits,
    pub expires_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
        .ok_or_else(|| LedgerError::UnknownJobState(s.to_string()))
    }
}

/// A job's money columns as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub account_id: String,
    pub state: JobState,
    pub quoted: Credits,
    /// The hold still outstanding.
    pub held: Credits,
    pub debited: Credits,
    pub refunded: Credits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// Whether a job cancelled while running is refunded (docs/api.md, "Jobs", default on).
    pub refund_on_cancel: bool,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            refund_on_cancel: true,
        }
    }
}
