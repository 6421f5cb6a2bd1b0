//! The ledger vocabulary the rules speak in: entry kinds (docs/api.md, "The ledger") and the
//! lots a rule asks the store to create.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Credits, LedgerError, UnixMillis};

/// Kinds of ledger entries (docs/api.md, "The ledger"). The text form is the one stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryKind {
    Grant,
    Purchase,
    Trial,
    SubscriptionGrant,
    Hold,
    Release,
    Debit,
    Refund,
    Expire,
    Forfeit,
    Adjust,
}

impl EntryKind {
    pub const ALL: [EntryKind; 11] = [
        EntryKind::Grant,
        EntryKind::Purchase,
        EntryKind::Trial,
        EntryKind::SubscriptionGrant,
        EntryKind::Hold,
        EntryKind::Release,
        EntryKind::Debit,
        EntryKind::Refund,
        EntryKind::Expire,
        EntryKind::Forfeit,
        EntryKind::Adjust,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "GRANT",
            EntryKind::Purchase => "PURCHASE",
            EntryKind::Trial => "TRIAL",
            EntryKind::SubscriptionGrant => "SUBSCRIPTION_GRANT",
            EntryKind::Hold => "HOLD",
            EntryKind::Release => "RELEASE",
            EntryKind::Debit => "DEBIT",
            EntryKind::Refund => "REFUND",
            EntryKind::Expire => "EXPIRE",
            EntryKind::Forfeit => "FORFEIT",
            EntryKind::Adjust => "ADJUST",
        }
    }

    /// Kinds whose entry creates the lot(s) it names: credits coming into the account.
    pub fn creates_lots(self) -> bool {
        matches!(
            self,
            EntryKind::Grant
                | EntryKind::Purchase
                | EntryKind::Trial
                | EntryKind::SubscriptionGrant
        )
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        EntryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| LedgerError::UnknownEntryKind(s.to_string()))
    }
}

/// Where a lot's credits come from (docs/api.md, "Money": "purchase of a pack, subscription
/// period, trial, admin grant, refund").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LotSource {
    Grant,
    Pack {
        pack_id: String,
    },
    Subscription {
        subscription_id: String,
        plan_id: String,
        /// Month of the subscription, 0-based from its start.
        month: u32,
    },
    Trial,
    Refund {
        job_id: String,
    },
}

impl LotSource {
    /// The kind of the entry that creates a lot from this source.
    pub fn entry_kind(&self) -> EntryKind {
        match self {
            LotSource::Grant => EntryKind::Grant,
            LotSource::Pack { .. } => EntryKind::Purchase,
            LotSource::Subscription { .. } => EntryKind::SubscriptionGrant,
            LotSource::Trial => EntryKind::Trial,
            LotSource::Refund { .. } => EntryKind::Refund,
        }
    }

    /// A short label for the lot's `source` column: `grant`, `pack:<id>`,
    /// `subscription:<plan>:<month>`, `trial`, `refund`.
    pub fn label(&self) -> String {
        match self {
            LotSource::Grant => "grant".into(),
            LotSource::Pack { pack_id } => format!("pack:{pack_id}"),
            LotSource::Subscription { plan_id, month, .. } => {
                format!("subscription:{plan_id}:{month}")
            }
            LotSource::Trial => "trial".into(),
            LotSource::Refund { .. } => "refund".into(),
        }
    }
}

/// A lot a rule asks the store to create, with the entry of `source.entry_kind()`
/// that records it (allocation: the whole amount to the new lot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLot {
    pub source: LotSource,
    pub credits: Credits,
    pub expires_at: Option<UnixMillis>,
    /// The instant the rule grants it (its `created_at`).
    pub granted_at: UnixMillis,
}

impl NewLot {
    pub fn entry_kind(&self) -> EntryKind {
        self.source.entry_kind()
    }
}
