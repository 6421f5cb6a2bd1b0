//! CreateJob's usage-policy check (docs/api.md, "Usage policy"), run after the
//! request is validated and before anything is held: the local policy, then the
//! external endpoint if there is one. A refusal is recorded (and may suspend the
//! account) before the error goes back; an allowed decision is handed to the
//! submission, which writes it in the job's own transaction.

use kinema_proto::v1 as pb;
use kinema_store::{PolicyDecisionDraft, PolicySource, PolicyVerdict, SuspensionRule};
use tonic::Code;
use tracing::{info, warn};

use super::{FailMode, ModerationRequest, UsagePolicy};
use crate::app::App;
use crate::auth::Caller;
use crate::error::{reasons, ApiError};

/// What CreateJob does next.
pub type Allowed = Option<PolicyDecisionDraft>;

/// Checks the request's prompts. `Ok(Some(decision))`: allowed, the decision to
/// record with the job; `Ok(None)`: no policy is configured (nothing is recorded);
/// `Err`: refused (recorded already), PERMISSION_DENIED / CONTENT_POLICY, or
/// UNAVAILABLE / MODERATION_UNAVAILABLE when a fail-closed endpoint cannot answer.
pub async fn check(
    app: &App,
    caller: &Caller,
    account_id: &str,
    req: &pb::CreateJobRequest,
    model: &str,
) -> Result<Allowed, ApiError> {
    let policy = &app.policy;
    if !policy.is_active() {
        return Ok(None);
    }
    let draft = |decision: PolicyVerdict, source: PolicySource| {
        count(decision, source);
        PolicyDecisionDraft {
            account_id: account_id.to_string(),
            key_id: caller.key.id.clone(),
            decision,
            category: String::new(),
            field: String::new(),
            rule: String::new(),
            source,
            policy_version: policy.version.clone(),
            note: String::new(),
        }
    };
    if let Some(v) = policy.check_local(&req.prompt, &req.negative_prompt) {
        let refused = PolicyDecisionDraft {
            category: v.hit.category.clone(),
            field: v.field.to_string(),
            rule: v.hit.rule.clone(),
            ..draft(PolicyVerdict::Refused, PolicySource::Local)
        };
        return Err(refuse(app, refused).await);
    }
    let Some(external) = &policy.external else {
        return Ok(Some(draft(PolicyVerdict::Allowed, PolicySource::Local)));
    };
    let asked = ModerationRequest {
        prompt: &req.prompt,
        negative_prompt: &req.negative_prompt,
        account_id,
        model,
    };
    match external.check(&asked).await {
        Ok(verdict) if verdict.flagged => {
            let refused = PolicyDecisionDraft {
                rule: format!("external:{}", verdict.category),
                category: verdict.category,
                field: verdict.field,
                ..draft(PolicyVerdict::Refused, PolicySource::External)
            };
            Err(refuse(app, refused).await)
        }
        Ok(_) => Ok(Some(draft(PolicyVerdict::Allowed, PolicySource::External))),
        Err(e) => {
            warn!(account = %account_id, error = %e, fail = ?external.fail, "moderation endpoint failed");
            let note = format!("moderation endpoint {e}");
            match external.fail {
                FailMode::Open => Ok(Some(PolicyDecisionDraft {
                    note: format!("{note}: allowed (fail open)"),
                    ..draft(PolicyVerdict::Allowed, PolicySource::External)
                })),
                FailMode::Closed => {
                    let unavailable = PolicyDecisionDraft {
                        note: format!("{note}: refused (fail closed)"),
                        ..draft(PolicyVerdict::Unavailable, PolicySource::External)
                    };
                    app.store
                        .record_policy_decision(unavailable, app.now())
                        .await?;
                    Err(ApiError::status(
                        Code::Unavailable,
                        reasons::MODERATION_UNAVAILABLE,
                        "the moderation service is unavailable; nothing was charged, retry later",
                    ))
                }
            }
        }
    }
}

/// `kinema_policy_decisions_total{decision, source}` (docs/operations.md, "Metrics").
fn count(decision: PolicyVerdict, source: PolicySource) {
    metrics::counter!(
        "kinema_policy_decisions_total",
        "decision" => decision.as_str(),
        "source" => source.as_str()
    )
    .increment(1);
}

/// Records a refusal (with the count that may suspend the account) and builds its
/// error, which names the category and the field but never the text that matched.
async fn refuse(app: &App, refused: PolicyDecisionDraft) -> ApiError {
    let policy: &UsagePolicy = &app.policy;
    let rule = SuspensionRule {
        violations: policy.suspension.violations,
        window_ms: i64::try_from(policy.suspension.window.as_millis()).unwrap_or(i64::MAX),
        reason: format!(
            "usage policy: {} violations within {}",
            policy.suspension.violations,
            humantime::format_duration(policy.suspension.window)
        ),
    };
    let (category, field) = (refused.category.clone(), refused.field.clone());
    let recorded = match app
        .store
        .record_policy_refusal(refused, Some(rule.clone()), app.now())
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let mut metadata =
        std::collections::HashMap::from([("category".to_string(), category.clone())]);
    if !field.is_empty() {
        metadata.insert("field".into(), field.clone());
    }
    let what = if field.is_empty() {
        "the request"
    } else {
        field.as_str()
    };
    let mut message = format!(
        "{what} was refused by the usage policy (category {category}); nothing was charged"
    );
    if let Some(change) = &recorded.suspension {
        for job in &change.cancelled {
            app.events.publish(
                kinema_engine::JobEventKind::StateChanged,
                job.clone(),
                app.now(),
            );
        }
        metadata.insert("account_suspended".into(), "true".into());
        message.push_str(&format!(
            "; the account is suspended ({}) and its queued jobs are cancelled",
            rule.reason
        ));
        info!(account = %recorded.decision.account_id, cancelled = change.cancelled.len(), "usage policy suspended the account");
    }
    info!(account = %recorded.decision.account_id, category = %category, rule = %recorded.decision.rule, "prompt refused by the usage policy");
    ApiError::Detailed {
        code: Code::PermissionDenied,
        reason: reasons::CONTENT_POLICY,
        message,
        metadata,
    }
}
