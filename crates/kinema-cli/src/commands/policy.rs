//! `kinema policy`: the usage policy's audit log (AdminService.ListPolicyDecisions),
//! and a policy file tried on a text offline.

use std::path::Path;

use anyhow::{bail, Context};
use kinema_proto::v1 as pb;

use crate::cli::PolicyCommand;
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, account: &str, cmd: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Decisions {
        decision,
        after,
        limit,
        json,
    } = cmd
    else {
        bail!("`policy check` runs offline");
    };
    let decision = match decision.as_deref() {
        None => pb::PolicyDecisionKind::Unspecified,
        Some("allowed") => pb::PolicyDecisionKind::Allowed,
        Some("refused") => pb::PolicyDecisionKind::Refused,
        Some("unavailable") => pb::PolicyDecisionKind::Unavailable,
        Some(other) => bail!("--decision {other:?}: allowed, refused or unavailable"),
    };
    let page = c
        .admin
        .list_policy_decisions(pb::ListPolicyDecisionsRequest {
            account_id: account.to_string(),
            decision: decision as i32,
            page_size: limit,
            page_token: after,
        })
        .await?
        .into_inner();
    if json {
        let list: Vec<serde_json::Value> = page.decisions.iter().map(to_json).collect();
        let out = serde_json::json!({ "decisions": list, "next_page_token": page.next_page_token });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for d in &page.decisions {
        println!("{}", line(d));
    }
    if !page.next_page_token.is_empty() {
        println!("more: --after {}", page.next_page_token);
    }
    Ok(())
}

fn kind(d: &pb::PolicyDecision) -> &'static str {
    match pb::PolicyDecisionKind::try_from(d.decision) {
        Ok(pb::PolicyDecisionKind::Allowed) => "allowed",
        Ok(pb::PolicyDecisionKind::Refused) => "refused",
        Ok(pb::PolicyDecisionKind::Unavailable) => "unavailable",
        _ => "unknown",
    }
}

fn line(d: &pb::PolicyDecision) -> String {
    let mut out = format!(
        "{:>6}  {}  {}  {:<11} {}  key {}",
        d.id,
        print::time(&d.created_at),
        d.account_id,
        kind(d),
        d.source,
        d.key_id
    );
    if !d.category.is_empty() {
        out.push_str(&format!(
            "  category {} ({}, {})",
            d.category, d.field, d.rule
        ));
    }
    if !d.job_id.is_empty() {
        out.push_str(&format!("  job {}", d.job_id));
    }
    if d.suspended_account {
        out.push_str("  SUSPENDED the account");
    }
    if !d.note.is_empty() {
        out.push_str(&format!("  ({})", d.note));
    }
    out
}

fn to_json(d: &pb::PolicyDecision) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "created_at": print::time(&d.created_at),
        "account_id": d.account_id,
        "key_id": d.key_id,
        "decision": kind(d),
        "source": d.source,
        "category": d.category,
        "field": d.field,
        "rule": d.rule,
        "policy_version": d.policy_version,
        "counted": d.counted,
        "suspended_account": d.suspended_account,
        "note": d.note,
        "job_id": d.job_id,
    })
}

/// `kinema policy check`: loads the file as `serve` would, prints the text's normal
/// form and the rule it breaks; exits non-zero when it breaks one.
pub fn check(file: &Path, text: &str) -> anyhow::Result<()> {
    let policy = kinema_server::UsagePolicy::load(file).context("loading the policy")?;
    println!("normalised: {}", kinema_server::policy::normalise(text));
    match policy.check_local(text, "") {
        Some(v) => bail!("refused: category {} (rule {})", v.hit.category, v.hit.rule),
        None => {
            println!("allowed by the local policy");
            Ok(())
        }
    }
}
