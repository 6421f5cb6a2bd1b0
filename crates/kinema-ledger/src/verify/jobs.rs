//! The jobs' side: each job's HOLD, RELEASE, DEBIT and REFUND as they come, and at the
//! end each stored job against its entries and the refund rules (docs/api.md, "Refunds").

use super::{EntryRecord, JobRecord, JobState, JobTotals, Problem, Replay, VerifyPolicy};
use crate::{Allocation, Credits, EntryKind};

impl Replay<'_> {
    /// The job an entry of a job kind names (tracked even when not stored).
    pub(super) fn job_for(&mut self, e: &EntryRecord) -> Option<String> {
        let job_kind = matches!(
            e.kind,
            EntryKind::Hold | EntryKind::Release | EntryKind::Debit | EntryKind::Refund
        );
        if !job_kind {
            return None;
        }
        let Some(job_id) = e.job_id.clone() else {
            self.problems.push(Problem::MissingJobId {
                entry_id: e.id,
                kind: e.kind,
            });
            return None;
        };
        if !self.jobs.contains_key(&job_id) {
            match self.stored_jobs.get(job_id.as_str()) {
                None => self.problems.push(Problem::UnknownJob {
                    entry_id: e.id,
                    job_id: job_id.clone(),
                }),
                Some(j) if j.account_id != e.account_id => {
                    self.problems.push(Problem::JobAccountMismatch {
                        entry_id: e.id,
                        job_id: job_id.clone(),
                        entry_account: e.account_id.clone(),
                        job_account: j.account_id.clone(),
                    })
                }
                Some(_) => {}
            }
            self.jobs.insert(
                job_id.clone(),
                JobTotals {
                    account_id: e.account_id.clone(),
                    ..JobTotals::default()
                },
            );
        }
        Some(job_id)
    }

    fn job(&mut self, job_id: &str) -> &mut JobTotals {
        self.jobs.get_mut(job_id).expect("job_for inserts")
    }

    pub(super) fn hold(&mut self, e: &EntryRecord, job_id: &str) {
        let j = self.job(job_id);
        j.holds += 1;
        j.hold = e.amount;
        j.held = e.amount;
        *self.account_held.entry(e.account_id.clone()).or_default() += e.amount;
    }

    pub(super) fn release(&mut self, e: &EntryRecord, job_id: &str) {
        self.job(job_id).releases += 1;
        let held = self.end_hold(e, job_id);
        if held != 0 && held != e.amount {
            self.problems.push(Problem::ReleaseMismatch {
                entry_id: e.id,
                job_id: job_id.to_string(),
                amount: e.amount,
                held,
            });
        }
    }

    /// The job's side of a DEBIT (the lots' side is `take`).
    pub(super) fn debit_job(&mut self, e: &EntryRecord, job_id: &str) {
        self.job(job_id).debits += 1;
        self.end_hold(e, job_id);
        let j = self.job(job_id);
        j.debited += e.amount;
        j.debit_allocations.extend(e.allocations.iter().copied());
    }

    /// The job's side of a REFUND; returns what the job's DEBIT took from each lot,
    /// where the refund should go back to.
    pub(super) fn refund_job(&mut self, e: &EntryRecord, job_id: &str) -> Vec<Allocation> {
        let j = self.job(job_id);
        j.refunds += 1;
        j.refunded += e.amount;
        let (debits, debit) = (j.debits, j.debit_allocations.clone());
        if debits == 0 {
            self.problems.push(Problem::RefundWithoutDebit {
                entry_id: e.id,
                job_id: job_id.to_string(),
            });
        }
        debit
    }

    /// Ends the job's outstanding hold, as a RELEASE or a DEBIT does, reporting an
    /// entry that finds none; returns the hold it ended.
    fn end_hold(&mut self, e: &EntryRecord, job_id: &str) -> Credits {
        let held = std::mem::take(&mut self.job(job_id).held);
        if held == 0 {
            self.problems.push(Problem::NoOutstandingHold {
                entry_id: e.id,
                kind: e.kind,
                job_id: job_id.to_string(),
            });
        }
        *self.account_held.entry(e.account_id.clone()).or_default() -= held;
        held
    }

    pub(super) fn check_jobs(&mut self, jobs: &[JobRecord], policy: &VerifyPolicy) {
        for (job_id, t) in &self.jobs {
            for (kind, count) in [
                (EntryKind::Hold, t.holds),
                (EntryKind::Release, t.releases),
                (EntryKind::Debit, t.debits),
                (EntryKind::Refund, t.refunds),
            ] {
                if count > 1 {
                    self.problems.push(Problem::DuplicateJobEntry {
                        job_id: job_id.clone(),
                        kind,
                        count,
                    });
                }
            }
        }
        for job in jobs {
            let t = self.jobs.get(&job.id).cloned().unwrap_or_default();
            for (field, stored, recomputed) in [
                ("held", job.held, t.held),
                ("debited", job.debited, t.debited),
                ("refunded", job.refunded, t.refunded),
            ] {
                if stored != recomputed {
                    self.problems.push(Problem::JobMismatch {
                        job_id: job.id.clone(),
                        field,
                        stored,
                        recomputed,
                    });
                }
            }
            if t.holds > 0 && t.hold != job.quoted {
                self.problems.push(Problem::HoldNotQuote {
                    job_id: job.id.clone(),
                    held: t.hold,
                    quoted: job.quoted,
                });
            }
            if t.debited != 0 && t.debited != job.quoted {
                self.problems.push(Problem::DebitNotQuote {
                    job_id: job.id.clone(),
                    debited: t.debited,
                    quoted: job.quoted,
                });
            }
            if t.refunded != 0 && t.refunded != t.debited {
                self.problems.push(Problem::RefundNotDebit {
                    job_id: job.id.clone(),
                    refunded: t.refunded,
                    debited: t.debited,
                });
            }
            let refund_allowed = match job.state {
                JobState::Failed => true,
                JobState::Cancelled => policy.refund_on_cancel,
                _ => false,
            };
            if t.refunded > 0 && !refund_allowed {
                self.problems.push(Problem::RefundNotAllowed {
                    job_id: job.id.clone(),
                    state: job.state,
                    refunded: t.refunded,
                });
            }
            if refund_allowed && t.debited > 0 && t.refunded == 0 {
                self.problems.push(Problem::MissingRefund {
                    job_id: job.id.clone(),
                    state: job.state,
                    debited: t.debited,
                });
            }
            if job.state.is_terminal() && t.held > 0 {
                self.problems.push(Problem::HoldNotReleased {
                    job_id: job.id.clone(),
                    state: job.state,
                    held: t.held,
                });
            }
        }
    }
}
