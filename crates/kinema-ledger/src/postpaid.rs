//! Pay-as-you-go (postpaid) accounts (docs/api.md, "Postpaid accounts").
//!
//! A postpaid account holds a money balance instead of credit lots. A succeeded job is
//! charged its price in money (failed and cancelled jobs are not). The status follows
//! from the balance and the clock alone ([`postpaid_status`]):
//! - balance `>= 0`: **active**;
//! - balance `< 0` since `arrears_since`: **in arrears**, still working, for `grace`
//!   (default 24 h);
//! - from `arrears_since + grace`: **suspended** (no new jobs: `ACCOUNT_SUSPENDED`;
//!   stored videos kept);
//! - from `arrears_since + grace + suspension_limit` (default 15 days suspended):
//!   **terminated**: stored videos and prompts are deleted, the account is closed.
//!
//! A top-up that brings the balance to zero or above ends arrears or suspension at
//! once; one that leaves it below zero does not restart the clock. Each boundary is
//! inclusive: at exactly `arrears_since + grace` the account is suspended.
//!
//! [`advance_postpaid`] records the phases crossed since the last call as effects
//! (suspend, terminate) for the sweeper; [`charge_job`] and [`top_up`] advance first.

use serde::{Deserialize, Serialize};

use crate::calendar::{DAY_MS, HOUR_MS};
use crate::{LedgerError, Money, UnixMillis};

pub const DEFAULT_POSTPAID_GRACE_MS: i64 = 24 * HOUR_MS;
pub const DEFAULT_SUSPENSION_LIMIT_MS: i64 = 15 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostpaidPolicy {
    pub grace_ms: i64,
    pub suspension_limit_ms: i64,
}

impl Default for PostpaidPolicy {
    fn default() -> Self {
        Self {
            grace_ms: DEFAULT_POSTPAID_GRACE_MS,
            suspension_limit_ms: DEFAULT_SUSPENSION_LIMIT_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostpaidPhase {
    Active,
    InArrears,
    Suspended,
    Terminated,
}

/// A postpaid account as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostpaidAccount {
    pub balance: Money,
    /// When the balance last went below zero, while it still is.
    pub arrears_since: Option<UnixMillis>,
    /// The phase last recorded by [`advance_postpaid`] (what effects were written).
    pub phase: PostpaidPhase,
    pub terminated_at: Option<UnixMillis>,
}

impl PostpaidAccount {
    pub fn new(balance: Money) -> Self {
        Self {
            balance,
            arrears_since: None,
            phase: PostpaidPhase::Active,
            terminated_at: None,
        }
    }
}

/// The status at `now`, with the instant of the next change where one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PostpaidStatus {
    Active,
    InArrears {
        since: UnixMillis,
        suspends_at: UnixMillis,
    },
    Suspended {
        since: UnixMillis,
        terminates_at: UnixMillis,
    },
    Terminated {
        at: UnixMillis,
    },
}

impl PostpaidStatus {
    pub fn phase(&self) -> PostpaidPhase {
        match self {
            PostpaidStatus::Active => PostpaidPhase::Active,
            PostpaidStatus::InArrears { .. } => PostpaidPhase::InArrears,
            PostpaidStatus::Suspended { .. } => PostpaidPhase::Suspended,
            PostpaidStatus::Terminated { .. } => PostpaidPhase::Terminated,
        }
    }
}

pub fn postpaid_status(
    account: &PostpaidAccount,
    policy: &PostpaidPolicy,
    now: UnixMillis,
) -> PostpaidStatus {
    if let Some(at) = account.terminated_at {
        return PostpaidStatus::Terminated { at };
    }
    let Some(since) = account.arrears_since.filter(|_| account.balance.minor < 0) else {
        return PostpaidStatus::Active;
    };
    let suspends_at = since.saturating_add(policy.grace_ms);
    let terminates_at = suspends_at.saturating_add(policy.suspension_limit_ms);
    if now < suspends_at {
        PostpaidStatus::InArrears { since, suspends_at }
    } else if now < terminates_at {
        PostpaidStatus::Suspended {
            since: suspends_at,
            terminates_at,
        }
    } else {
        PostpaidStatus::Terminated { at: terminates_at }
    }
}

/// Whether a new job may be submitted at `now`: refused while suspended
/// (`ACCOUNT_SUSPENDED`) or terminated.
pub fn postpaid_can_submit(
    account: &PostpaidAccount,
    policy: &PostpaidPolicy,
    now: UnixMillis,
) -> Result<(), LedgerError> {
    match postpaid_status(account, policy, now) {
        PostpaidStatus::Active | PostpaidStatus::InArrears { .. } => Ok(()),
        PostpaidStatus::Suspended { .. } => Err(LedgerError::AccountSuspended),
        PostpaidStatus::Terminated { .. } => Err(LedgerError::AccountTerminated),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum PostpaidEffect {
    Charged {
        job_id: String,
        amount: Money,
        balance_after: Money,
        at: UnixMillis,
    },
    ToppedUp {
        amount: Money,
        balance_after: Money,
        at: UnixMillis,
    },
    ArrearsStarted {
        at: UnixMillis,
    },
    /// No new jobs from now on; stored videos are kept.
    Suspended {
        at: UnixMillis,
    },
    /// Delete the account's stored videos and prompts and close it.
    Terminated {
        at: UnixMillis,
    },
    /// Arrears or suspension ended by a top-up.
    Reactivated {
        at: UnixMillis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostpaidTransition {
    pub account: PostpaidAccount,
    pub effects: Vec<PostpaidEffect>,
}

/// Records the phases the clock has moved the account through since the last
/// recorded one, each at its own instant (suspension, then termination).
pub fn advance_postpaid(
    account: &PostpaidAccount,
    policy: &PostpaidPolicy,
    now: UnixMillis,
) -> PostpaidTransition {
    let mut next = *account;
    let mut effects = Vec::new();
    let status = postpaid_status(account, policy, now);
    if let Some(since) = account.arrears_since.filter(|_| account.balance.minor < 0) {
        let suspends_at = since.saturating_add(policy.grace_ms);
        if status.phase() >= PostpaidPhase::Suspended && next.phase < PostpaidPhase::Suspended {
            effects.push(PostpaidEffect::Suspended { at: suspends_at });
            next.phase = PostpaidPhase::Suspended;
        }
        if let PostpaidStatus::Terminated { at } = status {
            if next.phase < PostpaidPhase::Terminated {
                effects.push(PostpaidEffect::Terminated { at });
                next.phase = PostpaidPhase::Terminated;
                next.terminated_at = Some(at);
            }
        }
    }
    PostpaidTransition {
        account: next,
        effects,
    }
}

/// Charges a succeeded job its price (a job that failed or was cancelled is never
/// charged: do not call this for it). A balance going below zero starts arrears.
pub fn charge_job(
    account: &PostpaidAccount,
    policy: &PostpaidPolicy,
    job_id: &str,
    price: Money,
    now: UnixMillis,
) -> Result<PostpaidTransition, LedgerError> {
    if price.minor < 0 {
        return Err(LedgerError::NegativePrice(price.minor));
    }
    let mut t = advance_postpaid(account, policy, now);
    let was_negative = t.account.balance.is_negative();
    t.account.balance = t.account.balance.checked_sub(price)?;
    t.effects.push(PostpaidEffect::Charged {
        job_id: job_id.to_string(),
        amount: price,
        balance_after: t.account.balance,
        at: now,
    });
    if t.account.balance.is_negative() && !was_negative && t.account.terminated_at.is_none() {
        t.account.arrears_since = Some(now);
        t.account.phase = PostpaidPhase::InArrears;
        t.effects.push(PostpaidEffect::ArrearsStarted { at: now });
    }
    Ok(t)
}

/// Adds money to the balance. Reaching zero or above ends arrears or suspension at
/// once; a terminated account cannot be topped up.
pub fn top_up(
    account: &PostpaidAccount,
    policy: &PostpaidPolicy,
    amount: Money,
    now: UnixMillis,
) -> Result<PostpaidTransition, LedgerError> {
    if amount.minor <= 0 {
        return Err(LedgerError::NonPositiveAmount(amount.minor));
    }
    let mut t = advance_postpaid(account, policy, now);
    if t.account.terminated_at.is_some() {
        return Err(LedgerError::AccountTerminated);
    }
    t.account.balance = t.account.balance.checked_add(amount)?;
    t.effects.push(PostpaidEffect::ToppedUp {
        amount,
        balance_after: t.account.balance,
        at: now,
    });
    if !t.account.balance.is_negative() && t.account.arrears_since.is_some() {
        t.account.arrears_since = None;
        t.account.phase = PostpaidPhase::Active;
        t.effects.push(PostpaidEffect::Reactivated { at: now });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    #[test]
    fn arrears_then_suspension_after_grace_then_termination_after_the_limit() {
        let p = PostpaidPolicy::default();
        let a = PostpaidAccount::new(eur(100));
        let t = charge_job(&a, &p, "job-1", eur(150), 1_000).unwrap();
        assert!(t
            .effects
            .contains(&PostpaidEffect::ArrearsStarted { at: 1_000 }));
        let a = t.account;
        assert_eq!(a.balance, eur(-50));
        let suspends = 1_000 + 24 * HOUR_MS;
        let terminates = suspends + 15 * DAY_MS;
        assert_eq!(
            postpaid_status(&a, &p, suspends - 1),
            PostpaidStatus::InArrears {
                since: 1_000,
                suspends_at: suspends
            }
        );
        assert!(postpaid_can_submit(&a, &p, suspends - 1).is_ok());
        assert_eq!(
            postpaid_can_submit(&a, &p, suspends),
            Err(LedgerError::AccountSuspended)
        );
        let s = advance_postpaid(&a, &p, suspends);
        assert_eq!(s.effects, vec![PostpaidEffect::Suspended { at: suspends }]);
        assert!(advance_postpaid(&s.account, &p, terminates - 1)
            .effects
            .is_empty());
        let end = advance_postpaid(&s.account, &p, terminates);
        assert_eq!(
            end.effects,
            vec![PostpaidEffect::Terminated { at: terminates }]
        );
        assert_eq!(
            postpaid_status(&end.account, &p, terminates + 1),
            PostpaidStatus::Terminated { at: terminates }
        );
        assert_eq!(
            top_up(&end.account, &p, eur(1_000), terminates + 1),
            Err(LedgerError::AccountTerminated)
        );
        // A sweeper that slept through both: both recorded, each at its instant.
        let both = advance_postpaid(&a, &p, terminates + DAY_MS);
        assert_eq!(
            both.effects,
            vec![
                PostpaidEffect::Suspended { at: suspends },
                PostpaidEffect::Terminated { at: terminates }
            ]
        );
    }

    #[test]
    fn a_top_up_to_zero_reactivates_at_once_and_a_partial_one_keeps_the_clock() {
        let p = PostpaidPolicy::default();
        let a = charge_job(&PostpaidAccount::new(eur(0)), &p, "j", eur(300), 0)
            .unwrap()
            .account;
        let suspended = advance_postpaid(&a, &p, 2 * DAY_MS).account;
        assert_eq!(suspended.phase, PostpaidPhase::Suspended);
        let partial = top_up(&suspended, &p, eur(100), 2 * DAY_MS).unwrap();
        assert_eq!(partial.account.arrears_since, Some(0));
        assert_eq!(
            postpaid_can_submit(&partial.account, &p, 2 * DAY_MS),
            Err(LedgerError::AccountSuspended)
        );
        let full = top_up(&partial.account, &p, eur(200), 2 * DAY_MS).unwrap();
        assert!(full
            .effects
            .contains(&PostpaidEffect::Reactivated { at: 2 * DAY_MS }));
        assert_eq!(full.account.balance, eur(0));
        assert_eq!(
            postpaid_status(&full.account, &p, 40 * DAY_MS),
            PostpaidStatus::Active
        );
        assert!(postpaid_can_submit(&full.account, &p, 2 * DAY_MS).is_ok());
    }

    #[test]
    fn charges_only_in_the_account_currency_and_never_negative() {
        let p = PostpaidPolicy::default();
        let a = PostpaidAccount::new(eur(0));
        let usd = Money::new(5, Currency::new("USD").unwrap());
        assert!(matches!(
            charge_job(&a, &p, "j", usd, 0),
            Err(LedgerError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            charge_job(&a, &p, "j", eur(-1), 0),
            Err(LedgerError::NegativePrice(-1))
        );
        assert_eq!(
            top_up(&a, &p, eur(0), 0),
            Err(LedgerError::NonPositiveAmount(0))
        );
        // A second charge while in arrears keeps the first arrears instant.
        let t = charge_job(&a, &p, "j1", eur(10), 5).unwrap();
        let t = charge_job(&t.account, &p, "j2", eur(10), 50).unwrap();
        assert_eq!(t.account.arrears_since, Some(5));
    }
}
