//! The usage policy's audit log and automatic suspension, on SQLite and PostgreSQL
//! (each scenario runs on both): an allowed decision commits with its job (and not
//! without it), refusals count within the window and the one that reaches the count
//! suspends the account as the operator's SuspendAccount does, reinstatement starts
//! the count again, and a suspended account's refusals do not count.

use kinema_ledger::calendar::HOUR_MS;
use kinema_store::*;

const T0: i64 = 1_700_000_000_000;

#[macro_use]
mod common;

use common::new_job;

struct Fixture {
    store: Store,
    account: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        store
            .grant_credits(&account, 100, None, "", "admin", T0)
            .await
            .unwrap();
        Fixture { store, account }
    }

    fn draft(&self, decision: PolicyVerdict, category: &str) -> PolicyDecisionDraft {
        PolicyDecisionDraft {
            account_id: self.account.clone(),
            key_id: "key_1".into(),
            decision,
            category: category.into(),
            field: if category.is_empty() { "" } else { "prompt" }.into(),
            rule: if category.is_empty() {
                String::new()
            } else {
                format!("term:{category}:0")
            },
            source: PolicySource::Local,
            policy_version: "abc123".into(),
            note: String::new(),
        }
    }

    async fn refuse(&self, rule: &SuspensionRule, now: i64) -> PolicyRefusal {
        self.store
            .record_policy_refusal(
                self.draft(PolicyVerdict::Refused, "violence"),
                Some(rule.clone()),
                now,
            )
            .await
            .unwrap()
    }

    async fn decisions(&self, decision: Option<PolicyVerdict>) -> Vec<PolicyDecision> {
        let filter = DecisionFilter {
            account_id: Some(self.account.clone()),
            decision,
        };
        self.store.policy_decisions(&filter, 0, 1000).await.unwrap()
    }

    async fn status(&self) -> AccountStatus {
        self.store
            .get_account(&self.account)
            .await
            .unwrap()
            .unwrap()
            .status
    }

    async fn assert_verified(&self) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
    }
}

fn three_a_day() -> SuspensionRule {
    SuspensionRule {
        violations: 3,
        window_ms: 24 * HOUR_MS,
        reason: "usage policy: 3 violations within 24h".into(),
    }
}

async fn an_allowed_decision_commits_with_its_job_and_only_with_it(f: Fixture) {
    let allowed = f.draft(PolicyVerdict::Allowed, "");
    let job = f
        .store
        .submit_job_with_decision(new_job(&f.account, 10), Some(allowed.clone()), "k", T0)
        .await
        .unwrap();
    let job_id = job.job().id.clone();
    // A replay of the same idempotent request is a decision too, naming the same job.
    let mut keyed = new_job(&f.account, 10);
    keyed.idempotency_key = Some("once".into());
    let first = f
        .store
        .submit_job_with_decision(keyed.clone(), Some(allowed.clone()), "k", T0 + 1)
        .await
        .unwrap();
    let replay = f
        .store
        .submit_job_with_decision(keyed, Some(allowed.clone()), "k", T0 + 2)
        .await
        .unwrap();
    assert!(matches!(replay, Submitted::Existing(_)));
    // Refused for credits: nothing is written, the decision included.
    let refused = f
        .store
        .submit_job_with_decision(new_job(&f.account, 1000), Some(allowed), "k", T0 + 3)
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::InsufficientCredits { .. })
    ));

    let decisions = f.decisions(None).await;
    let jobs: Vec<Option<&str>> = decisions.iter().map(|d| d.job_id.as_deref()).collect();
    let keyed_id = first.job().id.as_str();
    assert_eq!(
        jobs,
        [Some(job_id.as_str()), Some(keyed_id), Some(keyed_id)]
    );
    for d in &decisions {
        assert_eq!(d.decision, PolicyVerdict::Allowed);
        assert_eq!(
            (d.key_id.as_str(), d.source),
            ("key_1", PolicySource::Local)
        );
        assert!(!d.counted && !d.suspended);
    }
    assert_eq!(decisions[0].created_at, T0);
    assert!(f.decisions(Some(PolicyVerdict::Refused)).await.is_empty());
    f.assert_verified().await;
}

async fn refusals_within_the_window_suspend_the_account_as_an_operator_would(f: Fixture) {
    let rule = three_a_day();
    let queued = f
        .store
        .submit_job(new_job(&f.account, 30), "k", T0)
        .await
        .unwrap();
    assert_eq!(f.store.balance(&f.account, T0).await.unwrap().held, 30);

    // One refusal ages out of the window before the others come.
    let old = f.refuse(&rule, T0).await;
    assert_eq!((old.violations, old.decision.counted), (1, true));
    let later = T0 + 24 * HOUR_MS;
    let second = f.refuse(&rule, later).await;
    assert_eq!(second.violations, 1, "the first is a window old");
    assert!(second.suspension.is_none());
    assert_eq!(f.refuse(&rule, later + 1).await.violations, 2);
    assert_eq!(f.status().await, AccountStatus::Active);

    let tipping = f.refuse(&rule, later + 2).await;
    assert_eq!(tipping.violations, 3);
    assert!(tipping.decision.suspended);
    let change = tipping.suspension.expect("the third refusal suspends");
    assert_eq!(change.account.status, AccountStatus::Suspended);
    assert_eq!(change.account.status_reason, rule.reason);
    assert_eq!(
        change.cancelled.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&queued.job().id]
    );
    assert_eq!(change.cancelled[0].state, JobState::Cancelled);
    assert_eq!(f.status().await, AccountStatus::Suspended);
    let balance = f.store.balance(&f.account, later + 2).await.unwrap();
    assert_eq!((balance.total, balance.held), (100, 0));
    // The hold's release is the policy's doing.
    let entries = f
        .store
        .ledger_entries(&f.account, Some(&queued.job().id), 0, 100)
        .await
        .unwrap();
    let release = entries.last().unwrap();
    assert_eq!(
        (release.kind, release.actor.as_str()),
        (EntryKind::Release, POLICY_ACTOR)
    );
    let events = f.store.billing_events(&f.account, 0, 100).await.unwrap();
    let suspended = events
        .iter()
        .find(|e| e.kind == BillingEventKind::AccountSuspended)
        .expect("a suspension event");
    assert!(
        suspended.detail.contains("\"policy\""),
        "{}",
        suspended.detail
    );

    // A suspended account's refusals are recorded but do not count.
    let while_suspended = f.refuse(&rule, later + 3).await;
    assert!(!while_suspended.decision.counted);
    assert!(while_suspended.suspension.is_none());
    assert_eq!(f.decisions(Some(PolicyVerdict::Refused)).await.len(), 5);

    // Reinstated, the count starts again: two refusals do not suspend, the third does.
    f.store
        .reinstate_account(&f.account, "admin", later + 4)
        .await
        .unwrap();
    assert_eq!(f.refuse(&rule, later + 5).await.violations, 1);
    assert_eq!(f.refuse(&rule, later + 6).await.violations, 2);
    assert_eq!(f.status().await, AccountStatus::Active);
    assert!(f.refuse(&rule, later + 7).await.suspension.is_some());
    assert_eq!(f.status().await, AccountStatus::Suspended);
    f.assert_verified().await;
}

async fn without_a_rule_or_with_zero_violations_nothing_suspends(f: Fixture) {
    let never = SuspensionRule {
        violations: 0,
        ..three_a_day()
    };
    for i in 0..5 {
        let r = f.refuse(&never, T0 + i).await;
        assert!(r.suspension.is_none() && !r.decision.suspended);
    }
    for i in 5..10 {
        let r = f
            .store
            .record_policy_refusal(f.draft(PolicyVerdict::Refused, "hate"), None, T0 + i)
            .await
            .unwrap();
        assert!(r.suspension.is_none());
    }
    assert_eq!(f.status().await, AccountStatus::Active);
    // A fail-closed decision counts towards nothing and names no job.
    let mut unavailable = f.draft(PolicyVerdict::Unavailable, "");
    unavailable.source = PolicySource::External;
    unavailable.note = "timeout".into();
    let d = f
        .store
        .record_policy_decision(unavailable, T0 + 20)
        .await
        .unwrap();
    assert_eq!(
        (d.decision, d.source, d.counted, d.job_id),
        (
            PolicyVerdict::Unavailable,
            PolicySource::External,
            false,
            None
        )
    );
    // Filters and paging.
    assert_eq!(f.decisions(Some(PolicyVerdict::Refused)).await.len(), 10);
    assert_eq!(f.decisions(Some(PolicyVerdict::Unavailable)).await.len(), 1);
    let page = f
        .store
        .policy_decisions(&DecisionFilter::default(), 0, 4)
        .await
        .unwrap();
    let next = f
        .store
        .policy_decisions(&DecisionFilter::default(), page[3].id, 100)
        .await
        .unwrap();
    assert_eq!((page.len(), next.len()), (4, 7));
    assert!(next[0].id > page[3].id);
    let other = f.store.create_account("Other", None, T0).await.unwrap().id;
    let none = DecisionFilter {
        account_id: Some(other),
        decision: None,
    };
    assert!(f
        .store
        .policy_decisions(&none, 0, 100)
        .await
        .unwrap()
        .is_empty());
}

on_both_backends!(
    an_allowed_decision_commits_with_its_job_and_only_with_it,
    refusals_within_the_window_suspend_the_account_as_an_operator_would,
    without_a_rule_or_with_zero_violations_nothing_suspends,
);
