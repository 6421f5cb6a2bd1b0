//! The usage policy's audit log (docs/api.md, "Usage policy"): every decision
//! CreateJob's policy check takes, and the automatic suspension of an account that
//! keeps submitting prohibited prompts. An allowed decision is written in the job's
//! own transaction ([`Store::submit_job_with_decision`]); a refusal in a transaction
//! of its own, with the count that may suspend the account through the operator's
//! suspension path.

use kinema_ledger::UnixMillis;

use crate::lifecycle::{change, suspend_locked};
use crate::locks::lock_account;
use crate::tx::Tx;
use crate::{AccountChange, AccountStatus, PolicySource, PolicyVerdict, Store, StoreError};

/// The actor the ledger, the billing events and the cancelled jobs name when the
/// usage policy suspends an account.
pub const POLICY_ACTOR: &str = "policy";

/// One decision as the policy check took it, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecisionDraft {
    pub account_id: String,
    /// The API key that made the request.
    pub key_id: String,
    pub decision: PolicyVerdict,
    /// The refused category ('' when allowed).
    pub category: String,
    /// `prompt` or `negative_prompt` ('' when allowed).
    pub field: String,
    /// Which rule decided: `term:CATEGORY:N`, `pattern:CATEGORY:N`,
    /// `external:CATEGORY` ('' when allowed). Never the prompt.
    pub rule: String,
    pub source: PolicySource,
    /// The policy file's fingerprint: what a rule's index refers to.
    pub policy_version: String,
    pub note: String,
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub id: i64,
    pub account_id: String,
    pub key_id: String,
    pub decision: PolicyVerdict,
    pub category: String,
    pub field: String,
    pub rule: String,
    pub source: PolicySource,
    pub policy_version: String,
    /// A refusal of an active account: it counts towards the suspension.
    pub counted: bool,
    /// This refusal suspended the account.
    pub suspended: bool,
    pub note: String,
    /// The job an allowed request created.
    pub job_id: Option<String>,
    pub created_at: UnixMillis,
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: i64,
    account_id: String,
    key_id: String,
    #[sqlx(try_from = "String")]
    decision: PolicyVerdict,
    category: String,
    field: String,
    rule: String,
    #[sqlx(try_from = "String")]
    source: PolicySource,
    policy_version: String,
    counted: i64,
    suspended: i64,
    note: String,
    job_id: Option<String>,
    created_at: UnixMillis,
}

impl From<DecisionRow> for PolicyDecision {
    fn from(r: DecisionRow) -> Self {
        PolicyDecision {
            id: r.id,
            account_id: r.account_id,
            key_id: r.key_id,
            decision: r.decision,
            category: r.category,
            field: r.field,
            rule: r.rule,
            source: r.source,
            policy_version: r.policy_version,
            counted: r.counted != 0,
            suspended: r.suspended != 0,
            note: r.note,
            job_id: r.job_id,
            created_at: r.created_at,
        }
    }
}

/// When refusals suspend an account: `violations` counted refusals within
/// `window_ms` (0 violations: never). Refusals before the account last returned to
/// service, and up to the refusal that last suspended it, do not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionRule {
    pub violations: u32,
    pub window_ms: i64,
    /// The suspension's reason, as `GetAccount` shows it.
    pub reason: String,
}

/// A recorded refusal, and the suspension it brought, if it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRefusal {
    pub decision: PolicyDecision,
    /// Refusals that count within the window, this one included (0 when it did not
    /// count: the account was not active).
    pub violations: u32,
    pub suspension: Option<AccountChange>,
}

/// Which decisions a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    pub account_id: Option<String>,
    pub decision: Option<PolicyVerdict>,
}

pub(crate) async fn insert_decision(
    tx: &mut Tx<'_>,
    draft: &PolicyDecisionDraft,
    job_id: Option<&str>,
    counted: bool,
    suspended: bool,
    now: UnixMillis,
) -> Result<PolicyDecision, StoreError> {
    let row: DecisionRow = sqlx::query_as(
        "INSERT INTO policy_decisions (account_id, key_id, decision, category, field, rule, \
         source, policy_version, counted, suspended, note, job_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *",
    )
    .bind(&draft.account_id)
    .bind(&draft.key_id)
    .bind(draft.decision.as_str())
    .bind(&draft.category)
    .bind(&draft.field)
    .bind(&draft.rule)
    .bind(draft.source.as_str())
    .bind(&draft.policy_version)
    .bind(i64::from(counted))
    .bind(i64::from(suspended))
    .bind(&draft.note)
    .bind(job_id)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    Ok(row.into())
}

/// Counted refusals of the account since the later of the window's start and its
/// return to service, after the refusal that last suspended it.
async fn counted_refusals(
    tx: &mut Tx<'_>,
    account_id: &str,
    window_ms: i64,
    now: UnixMillis,
) -> Result<i64, StoreError> {
    let active_since: Option<i64> =
        sqlx::query_scalar("SELECT status_changed_at FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_one(tx.conn())
            .await?;
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM policy_decisions WHERE account_id = $1 AND counted = 1 \
         AND created_at > $2 AND created_at >= $3 AND id > COALESCE((SELECT MAX(id) \
         FROM policy_decisions WHERE account_id = $1 AND suspended = 1), 0)",
    )
    .bind(account_id)
    .bind(now.saturating_sub(window_ms))
    .bind(active_since.unwrap_or(i64::MIN))
    .fetch_one(tx.conn())
    .await?)
}

impl Store {
    /// Records a decision that created no job and counts towards nothing (a
    /// moderation endpoint that could not answer, under fail-closed).
    pub async fn record_policy_decision(
        &self,
        draft: PolicyDecisionDraft,
        now: UnixMillis,
    ) -> Result<PolicyDecision, StoreError> {
        self.write(move |mut tx| {
            Box::pin(async move { insert_decision(&mut tx, &draft, None, false, false, now).await })
        })
        .await
    }

    /// Records a refusal. A refusal of an active account counts; when `rule` is set
    /// and the counted refusals reach its count, the account is suspended in the same
    /// transaction, as the operator's `SuspendAccount` does (queued jobs cancelled,
    /// holds released), by [`POLICY_ACTOR`], and the refusal says so.
    pub async fn record_policy_refusal(
        &self,
        draft: PolicyDecisionDraft,
        rule: Option<SuspensionRule>,
        now: UnixMillis,
    ) -> Result<PolicyRefusal, StoreError> {
        if draft.decision != PolicyVerdict::Refused {
            return Err(StoreError::Invalid("a refusal must be refused".into()));
        }
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                let account_id = draft.account_id.as_str();
                let counts = lock_account(tx, account_id).await?.status == AccountStatus::Active;
                let mut violations = 0;
                let mut suspends = false;
                if counts {
                    let window_ms = rule.as_ref().map_or(0, |r| r.window_ms);
                    violations = counted_refusals(tx, account_id, window_ms, now).await? + 1;
                    suspends = rule
                        .as_ref()
                        .is_some_and(|r| r.violations > 0 && violations >= i64::from(r.violations));
                }
                let decision = insert_decision(tx, &draft, None, counts, suspends, now).await?;
                let suspension = match (&rule, suspends) {
                    (Some(rule), true) => {
                        let cancelled =
                            suspend_locked(tx, account_id, &rule.reason, POLICY_ACTOR, now).await?;
                        Some(change(tx, account_id, cancelled, Vec::new(), 0).await?)
                    }
                    _ => None,
                };
                Ok(PolicyRefusal {
                    decision,
                    violations: u32::try_from(violations)?,
                    suspension,
                })
            })
        })
        .await
    }

    /// Decisions in the order they were taken, after id `after_id`.
    pub async fn policy_decisions(
        &self,
        filter: &DecisionFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<PolicyDecision>, StoreError> {
        let rows: Vec<DecisionRow> = sqlx::query_as(
            "SELECT * FROM policy_decisions WHERE ($1 = '' OR account_id = $1) \
             AND ($2 = '' OR decision = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(filter.account_id.as_deref().unwrap_or(""))
        .bind(filter.decision.map_or("", |d| d.as_str()))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(PolicyDecision::from).collect())
    }
}
