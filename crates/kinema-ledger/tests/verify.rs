//! `verify_ledger` finds each kind of difference and broken invariant it is meant to
//! (each test corrupts one clean ledger in one way).

mod common;

use common::Model;
use kinema_ledger::calendar::DAY_MS;
use kinema_ledger::{
    admin_grant, verify_ledger, Allocation, EntryKind, JobState, LotRecord, Problem, VerifyPolicy,
};

const A: &str = "acct-a";
const B: &str = "acct-b";

/// Two lots of A, a succeeded job, a failed (refunded) job with part of its debit in
/// a lot that expired meanwhile, a cancelled queued job; two lots of B, one expired.
fn clean() -> (Model, String, String, String) {
    let mut m = Model::new(0);
    m.grant(A, &admin_grant(100, Some(10 * DAY_MS), 0).unwrap());
    m.grant(A, &admin_grant(100, None, 0).unwrap());
    m.grant(B, &admin_grant(40, None, 0).unwrap());
    m.grant(B, &admin_grant(15, Some(5 * DAY_MS), 0).unwrap());
    let ok = m.submit(A, 30).unwrap();
    m.start(&ok).unwrap();
    m.succeed(&ok);
    let failed = m.submit(A, 90).unwrap();
    m.start(&failed).unwrap();
    m.advance(11 * DAY_MS);
    m.sweep();
    m.fail(&failed);
    let cancelled = m.submit(A, 20).unwrap();
    m.cancel(&cancelled);
    m.assert_clean();
    (m, ok, failed, cancelled)
}

fn problems(m: &Model) -> Vec<Problem> {
    m.verify().problems
}

fn has(m: &Model, pred: impl Fn(&Problem) -> bool) -> bool {
    let p = problems(m);
    assert!(!p.is_empty(), "a corruption went unnoticed");
    p.iter().any(pred)
}

fn entry_of(m: &Model, kind: EntryKind, job: &str) -> usize {
    m.entries
        .iter()
        .position(|e| e.kind == kind && e.job_id.as_deref() == Some(job))
        .unwrap()
}

#[test]
fn the_clean_ledger_recomputes_every_total() {
    let (m, ok, failed, _) = clean();
    let r = m.verify();
    assert_eq!(r.entries_checked, m.entries.len());
    assert_eq!(r.jobs[&ok].debited, 30);
    assert_eq!(r.jobs[&failed].refunded, 90);
    let a = &r.accounts[A];
    assert_eq!(
        a.granted + a.adjusted,
        a.remaining + a.debited - a.refunded + a.expired + a.forfeited
    );
    assert_eq!(r.accounts[B].expired, 15, "B's short lot expired");
    // The refund lot holds the share of the expired lot.
    let refund_lot = r
        .lots
        .values()
        .find(|l| l.refunded > 0 && l.original == l.refunded);
    assert!(refund_lot.is_some());
}

#[test]
fn a_stored_lot_that_differs_from_its_entries() {
    let (mut m, ..) = clean();
    m.lots[1].remaining += 1;
    assert!(has(
        &m,
        |p| matches!(p, Problem::LotRemainingMismatch { lot_id: 2, stored, recomputed } if stored - recomputed == 1)
    ));
    assert!(has(&m, |p| matches!(
        p,
        Problem::ConservationViolated { .. }
    )));
    let (mut m, ..) = clean();
    m.lots[1].original -= 1;
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotOriginalMismatch { .. }
    )));
}

#[test]
fn negative_and_overfull_lots() {
    let (mut m, ..) = clean();
    let lot = m.lots[1].clone();
    m.lots[1].remaining = -5;
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotNegative { entry_id: None, .. }
    )));
    m.lots[1].remaining = lot.original + 1;
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotAboveOriginal { entry_id: None, .. }
    )));
    // An entry that drives a lot below zero.
    let (mut m, ..) = clean();
    m.entries.push(kinema_ledger::EntryRecord {
        id: 10_000,
        account_id: A.into(),
        kind: EntryKind::Forfeit,
        amount: 1_000,
        allocations: vec![Allocation {
            lot_id: 2,
            amount: 1_000,
        }],
        job_id: None,
        balance_after: None,
        held_after: None,
        created_at: m.now,
    });
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotNegative {
            entry_id: Some(10_000),
            ..
        }
    )));
}

#[test]
fn a_second_debit_or_refund_for_one_job() {
    let (mut m, ok, failed, _) = clean();
    let mut again = m.entries[entry_of(&m, EntryKind::Debit, &ok)].clone();
    again.id = 10_000;
    m.entries.push(again);
    assert!(has(&m, |p| matches!(
        p,
        Problem::DuplicateJobEntry {
            kind: EntryKind::Debit,
            count: 2,
            ..
        }
    )));
    let (mut m, ..) = clean();
    let mut again = m.entries[entry_of(&m, EntryKind::Refund, &failed)].clone();
    again.id = 10_000;
    again.allocations.retain(|a| a.lot_id == 2);
    again.amount = again.allocations.iter().map(|a| a.amount).sum();
    m.entries.push(again);
    assert!(has(&m, |p| matches!(
        p,
        Problem::DuplicateJobEntry {
            kind: EntryKind::Refund,
            ..
        }
    )));
}

#[test]
fn job_rules_debit_is_the_quote_and_refund_is_the_debit_on_failure_only() {
    let (mut m, ok, failed, cancelled) = clean();
    m.jobs.iter_mut().find(|j| j.id == ok).unwrap().quoted = 31;
    assert!(has(&m, |p| matches!(p, Problem::DebitNotQuote { .. })));
    assert!(has(&m, |p| matches!(p, Problem::HoldNotQuote { .. })));

    // A succeeded job with a refund.
    let (mut m, _, failed2, _) = clean();
    m.jobs.iter_mut().find(|j| j.id == failed2).unwrap().state = JobState::Succeeded;
    assert!(has(&m, |p| matches!(
        p,
        Problem::RefundNotAllowed {
            state: JobState::Succeeded,
            ..
        }
    )));

    // A failed job whose debit was never refunded.
    let (mut m, ..) = clean();
    let i = entry_of(&m, EntryKind::Refund, &failed);
    m.entries.remove(i);
    assert!(has(&m, |p| matches!(p, Problem::MissingRefund { .. })));
    assert!(has(&m, |p| matches!(
        p,
        Problem::JobMismatch {
            field: "refunded",
            ..
        }
    )));

    // A partial refund.
    let (mut m, ..) = clean();
    let i = entry_of(&m, EntryKind::Refund, &failed);
    m.entries[i].amount -= 1;
    m.entries[i].allocations.last_mut().unwrap().amount -= 1;
    assert!(has(&m, |p| matches!(p, Problem::RefundNotDebit { .. })));

    // Refund on cancel when the policy is off.
    let mut m = Model::new(0);
    m.refund_on_cancel = true;
    m.grant(A, &admin_grant(10, None, 0).unwrap());
    let j = m.submit(A, 10).unwrap();
    m.start(&j).unwrap();
    m.cancel(&j);
    m.assert_clean();
    let r = verify_ledger(
        &m.entries,
        &m.lots,
        &m.jobs,
        &VerifyPolicy {
            refund_on_cancel: false,
        },
    );
    assert!(r.problems.iter().any(|p| matches!(
        p,
        Problem::RefundNotAllowed {
            state: JobState::Cancelled,
            ..
        }
    )));

    // A terminal job that still holds credits.
    let (mut m, ..) = clean();
    let i = entry_of(&m, EntryKind::Release, &cancelled);
    m.entries.remove(i);
    m.jobs.iter_mut().find(|j| j.id == cancelled).unwrap().held = 20;
    assert!(has(&m, |p| matches!(p, Problem::HoldNotReleased { .. })));
}

#[test]
fn time_rules_no_debit_from_or_refund_into_an_expired_lot_and_no_early_expiry() {
    let (mut m, ok, failed, _) = clean();
    let i = entry_of(&m, EntryKind::Debit, &ok);
    m.entries[i].created_at = 10 * DAY_MS; // lot 1 expires exactly then
    assert!(has(&m, |p| matches!(
        p,
        Problem::DebitFromExpiredLot { lot_id: 1, .. }
    )));

    // Refund into the expired lot instead of a refund lot.
    let (mut m, ..) = clean();
    let i = entry_of(&m, EntryKind::Refund, &failed);
    let refund_lot = m.entries[i].allocations.last().unwrap().lot_id;
    m.entries[i].allocations.last_mut().unwrap().lot_id = 1;
    m.lots.retain(|l| l.id != refund_lot);
    assert!(has(&m, |p| matches!(
        p,
        Problem::RefundIntoExpiredLot { lot_id: 1, .. }
    )));

    let (mut m, ..) = clean();
    let i = m
        .entries
        .iter()
        .position(|e| e.kind == EntryKind::Expire)
        .unwrap();
    m.entries[i].created_at = 5 * DAY_MS - 1;
    assert!(has(&m, |p| matches!(p, Problem::ExpiredEarly { .. })));
}

#[test]
fn recorded_balances_and_holds_are_recomputed() {
    let (mut m, ..) = clean();
    m.entries[3].balance_after = Some(m.entries[3].balance_after.unwrap() + 1);
    assert!(has(&m, |p| matches!(
        p,
        Problem::EntryBalanceMismatch {
            field: "balance_after",
            ..
        }
    )));
    let (mut m, ..) = clean();
    m.entries[3].held_after = Some(7);
    assert!(has(&m, |p| matches!(
        p,
        Problem::EntryBalanceMismatch {
            field: "held_after",
            ..
        }
    )));
}

#[test]
fn over_submission_is_a_hold_beyond_the_balance() {
    let mut m = Model::new(0);
    m.grant(A, &admin_grant(10, None, 0).unwrap());
    m.submit(A, 10).unwrap();
    m.assert_clean();
    // Bypass the check: a second hold the balance cannot cover.
    let mut hold = m.entries.last().unwrap().clone();
    hold.id += 1;
    hold.job_id = Some("job-x".into());
    hold.held_after = Some(20);
    m.entries.push(hold);
    let mut job = m.jobs[0].clone();
    job.id = "job-x".into();
    m.jobs.push(job);
    assert!(has(&m, |p| matches!(
        p,
        Problem::HoldExceedsBalance {
            held: 20,
            balance: 10,
            ..
        }
    )));
}

#[test]
fn lots_and_jobs_must_exist_and_belong_to_the_entry_account() {
    let (mut m, ..) = clean();
    m.lots.push(LotRecord {
        id: 999,
        account_id: A.into(),
        original: 5,
        remaining: 5,
        expires_at: None,
        created_at: 0,
    });
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotWithoutEntry { lot_id: 999 }
    )));

    let (mut m, ..) = clean();
    m.lots.retain(|l| l.id != 2);
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotMissing { lot_id: 2, .. }
    )));

    let (mut m, ok, ..) = clean();
    let i = entry_of(&m, EntryKind::Debit, &ok);
    m.entries[i].allocations[0].lot_id = 3; // account B's lot
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotAccountMismatch { lot_id: 3, .. }
    )));

    let (mut m, ok, ..) = clean();
    m.jobs.retain(|j| j.id != ok);
    assert!(has(&m, |p| matches!(p, Problem::UnknownJob { .. })));

    let (mut m, ok, ..) = clean();
    let i = entry_of(&m, EntryKind::Debit, &ok);
    m.entries[i].job_id = None;
    assert!(has(&m, |p| matches!(p, Problem::MissingJobId { .. })));
}

#[test]
fn malformed_entries() {
    let (mut m, ok, ..) = clean();
    let i = entry_of(&m, EntryKind::Debit, &ok);
    m.entries[i].amount += 1;
    assert!(has(&m, |p| matches!(
        p,
        Problem::AllocationSumMismatch { .. }
    )));

    let (mut m, ..) = clean();
    let dup = m.entries[0].clone();
    m.entries.push(dup);
    assert!(has(&m, |p| matches!(p, Problem::DuplicateEntryId { .. })));
    assert!(has(&m, |p| matches!(p, Problem::LotCreatedTwice { .. })));

    let (mut m, ..) = clean();
    m.entries.remove(0);
    assert!(has(&m, |p| matches!(
        p,
        Problem::LotUsedBeforeCreated { lot_id: 1, .. }
    )));
}

#[test]
fn adjustments_are_signed_and_conserved() {
    let (mut m, ..) = clean();
    let lot = m.lots.iter().find(|l| l.id == 2).unwrap().remaining;
    m.lots.iter_mut().find(|l| l.id == 2).unwrap().remaining = lot - 5;
    m.entries.push(kinema_ledger::EntryRecord {
        id: 10_000,
        account_id: A.into(),
        kind: EntryKind::Adjust,
        amount: 5,
        allocations: vec![Allocation {
            lot_id: 2,
            amount: -5,
        }],
        job_id: None,
        balance_after: None,
        held_after: None,
        created_at: m.now,
    });
    m.assert_clean();
    assert_eq!(m.verify().accounts[A].adjusted, -5);
}
