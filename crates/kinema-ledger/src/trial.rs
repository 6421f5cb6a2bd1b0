//! Trials (docs/api.md, "Catalogue, purchases and plans", "Trial"): one per account, ever; 14 days by default; its
//! credits are one TRIAL lot that expires when the trial ends.

use serde::{Deserialize, Serialize};

use crate::calendar::DAY_MS;
use crate::{Credits, LedgerError, LotSource, NewLot, UnixMillis};

pub const DEFAULT_TRIAL_MS: i64 = 14 * DAY_MS;

/// What a trial gives (from the operator's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialOffer {
    pub credits: Credits,
    pub duration_ms: i64,
}

/// The account's trial, kept forever once started: its presence is what refuses a
/// second one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub started_at: UnixMillis,
    pub ends_at: UnixMillis,
}

impl TrialRecord {
    /// A trial is on strictly before `ends_at`.
    pub fn is_active(&self, now: UnixMillis) -> bool {
        self.started_at <= now && now < self.ends_at
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialStart {
    pub trial: TrialRecord,
    /// Expires at `trial.ends_at`; written with a TRIAL entry.
    pub lot: NewLot,
}

/// Starts the account's trial. `previous` is the account's trial record, if it ever
/// had one: then the answer is `TrialAlreadyUsed`, whether or not it is still on.
pub fn start_trial(
    previous: Option<&TrialRecord>,
    offer: &TrialOffer,
    now: UnixMillis,
) -> Result<TrialStart, LedgerError> {
    if let Some(p) = previous {
        return Err(LedgerError::TrialAlreadyUsed {
            used_at: p.started_at,
        });
    }
    if offer.credits <= 0 {
        return Err(LedgerError::NonPositiveAmount(offer.credits));
    }
    let ends_at = now.saturating_add(offer.duration_ms.max(1));
    Ok(TrialStart {
        trial: TrialRecord {
            started_at: now,
            ends_at,
        },
        lot: NewLot {
            source: LotSource::Trial,
            credits: offer.credits,
            expires_at: Some(ends_at),
            granted_at: now,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trial_ever_and_its_credits_expire_with_it() {
        let offer = TrialOffer {
            credits: 50,
            duration_ms: DEFAULT_TRIAL_MS,
        };
        let t = start_trial(None, &offer, 1_000).unwrap();
        assert_eq!(t.trial.ends_at, 1_000 + 14 * DAY_MS);
        assert_eq!(t.lot.expires_at, Some(t.trial.ends_at));
        assert_eq!(t.lot.entry_kind(), crate::EntryKind::Trial);
        assert!(t.trial.is_active(1_000));
        assert!(!t.trial.is_active(t.trial.ends_at));
        // Twice: refused, during the trial and long after it.
        for at in [2_000, 1_000 + 400 * DAY_MS] {
            assert_eq!(
                start_trial(Some(&t.trial), &offer, at),
                Err(LedgerError::TrialAlreadyUsed { used_at: 1_000 })
            );
        }
    }
}
