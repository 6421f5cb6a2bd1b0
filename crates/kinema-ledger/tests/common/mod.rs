//! An in-memory account store that applies the ledger rules the way the database
//! store does (one "transaction" per method), writing lots, jobs and entries that
//! `verify_ledger` then checks.
#![allow(dead_code)]

pub mod sweeper;

use kinema_ledger::{
    allocate_debit, due_expiries, forfeit_all, live_total, plan_refund, verify_ledger, Allocation,
    Credits, EntryKind, EntryRecord, JobRecord, JobState, LedgerError, LotRecord, LotState, NewLot,
    UnixMillis, VerifyPolicy, VerifyReport, DEFAULT_REFUND_GRACE_MS,
};

#[derive(Debug, Clone)]
pub struct Model {
    pub now: UnixMillis,
    pub lots: Vec<LotRecord>,
    pub jobs: Vec<JobRecord>,
    pub entries: Vec<EntryRecord>,
    pub refund_grace_ms: i64,
    pub refund_on_cancel: bool,
    next_lot: i64,
    next_entry: i64,
    next_job: u64,
}

impl Model {
    pub fn new(now: UnixMillis) -> Self {
        Self {
            now,
            lots: Vec::new(),
            jobs: Vec::new(),
            entries: Vec::new(),
            refund_grace_ms: DEFAULT_REFUND_GRACE_MS,
            refund_on_cancel: true,
            next_lot: 1,
            next_entry: 1,
            next_job: 1,
        }
    }

    pub fn advance(&mut self, ms: i64) {
        self.now += ms;
    }

    pub fn lot_states(&self, account: &str) -> Vec<LotState> {
        self.lots
            .iter()
            .filter(|l| l.account_id == account)
            .map(|l| LotState {
                id: l.id,
                remaining: l.remaining,
                expires_at: l.expires_at,
                created_at: l.created_at,
            })
            .collect()
    }

    pub fn lot(&self, id: i64) -> &LotRecord {
        self.lots.iter().find(|l| l.id == id).expect("lot")
    }

    fn lot_mut(&mut self, id: i64) -> &mut LotRecord {
        self.lots.iter_mut().find(|l| l.id == id).expect("lot")
    }

    pub fn job(&self, id: &str) -> &JobRecord {
        self.jobs.iter().find(|j| j.id == id).expect("job")
    }

    fn job_mut(&mut self, id: &str) -> &mut JobRecord {
        self.jobs.iter_mut().find(|j| j.id == id).expect("job")
    }

    pub fn held(&self, account: &str) -> Credits {
        self.jobs
            .iter()
            .filter(|j| j.account_id == account)
            .map(|j| j.held)
            .sum()
    }

    /// Credits a new hold can take.
    pub fn available(&self, account: &str) -> Credits {
        live_total(&self.lot_states(account), self.now) - self.held(account)
    }

    fn append(
        &mut self,
        account: &str,
        kind: EntryKind,
        amount: Credits,
        allocations: Vec<Allocation>,
        job_id: Option<&str>,
    ) {
        let balance_after = live_total(&self.lot_states(account), self.now);
        let held_after = self.held(account);
        self.entries.push(EntryRecord {
            id: self.next_entry,
            account_id: account.to_string(),
            kind,
            amount,
            allocations,
            job_id: job_id.map(str::to_string),
            balance_after: Some(balance_after),
            held_after: Some(held_after),
            created_at: self.now,
        });
        self.next_entry += 1;
    }

    fn insert_lot(
        &mut self,
        account: &str,
        credits: Credits,
        expires_at: Option<UnixMillis>,
    ) -> i64 {
        let id = self.next_lot;
        self.next_lot += 1;
        self.lots.push(LotRecord {
            id,
            account_id: account.to_string(),
            original: credits,
            remaining: credits,
            expires_at,
            created_at: self.now,
        });
        id
    }

    /// Writes the EXPIRE entries of the account's lots due by now.
    pub fn expire_due(&mut self, account: &str) {
        for e in due_expiries(&self.lot_states(account), self.now) {
            self.lot_mut(e.lot_id).remaining = 0;
            self.append(
                account,
                EntryKind::Expire,
                e.amount,
                vec![Allocation {
                    lot_id: e.lot_id,
                    amount: e.amount,
                }],
                None,
            );
        }
    }

    pub fn sweep(&mut self) {
        let mut accounts: Vec<String> = self.lots.iter().map(|l| l.account_id.clone()).collect();
        accounts.sort();
        accounts.dedup();
        for a in accounts {
            self.expire_due(&a);
        }
    }

    /// Creates a lot a rule asked for, with its entry.
    pub fn grant(&mut self, account: &str, lot: &NewLot) -> i64 {
        self.expire_due(account);
        let id = self.insert_lot(account, lot.credits, lot.expires_at);
        self.append(
            account,
            lot.entry_kind(),
            lot.credits,
            vec![Allocation {
                lot_id: id,
                amount: lot.credits,
            }],
            None,
        );
        // A lot granted while catching up may already be past its expiry.
        self.expire_due(account);
        id
    }

    /// Submission: a hold of the quote, or `InsufficientCredits` and nothing written.
    pub fn submit(&mut self, account: &str, quote: Credits) -> Result<String, LedgerError> {
        self.expire_due(account);
        let available = self.available(account);
        if available < quote {
            return Err(LedgerError::InsufficientCredits {
                needed: quote,
                available,
            });
        }
        let id = format!("job-{}", self.next_job);
        self.next_job += 1;
        self.jobs.push(JobRecord {
            id: id.clone(),
            account_id: account.to_string(),
            state: JobState::Queued,
            quoted: quote,
            held: quote,
            debited: 0,
            refunded: 0,
        });
        self.append(account, EntryKind::Hold, quote, vec![], Some(&id));
        Ok(id)
    }

    fn release(&mut self, job_id: &str) {
        let (account, held) = {
            let j = self.job(job_id);
            (j.account_id.clone(), j.held)
        };
        if held > 0 {
            self.job_mut(job_id).held = 0;
            self.append(&account, EntryKind::Release, held, vec![], Some(job_id));
        }
    }

    /// The job starts: its hold becomes a debit, or it fails with
    /// `InsufficientCredits` (hold released) when lots expired while it was queued.
    pub fn start(&mut self, job_id: &str) -> Result<Vec<Allocation>, LedgerError> {
        let j = self.job(job_id).clone();
        assert_eq!(j.state, JobState::Queued);
        let account = j.account_id.clone();
        self.expire_due(&account);
        match allocate_debit(&self.lot_states(&account), j.quoted, self.now) {
            Ok(allocs) => {
                for a in &allocs {
                    self.lot_mut(a.lot_id).remaining -= a.amount;
                }
                let job = self.job_mut(job_id);
                job.held = 0;
                job.debited = j.quoted;
                job.state = JobState::Running;
                self.append(
                    &account,
                    EntryKind::Debit,
                    j.quoted,
                    allocs.clone(),
                    Some(job_id),
                );
                Ok(allocs)
            }
            Err(e) => {
                self.job_mut(job_id).state = JobState::Failed;
                self.release(job_id);
                Err(e)
            }
        }
    }

    fn refund(&mut self, job_id: &str) {
        let j = self.job(job_id).clone();
        let debit = self
            .entries
            .iter()
            .find(|e| e.kind == EntryKind::Debit && e.job_id.as_deref() == Some(job_id))
            .map(|e| e.allocations.clone())
            .expect("a debit to refund");
        let account = j.account_id.clone();
        self.expire_due(&account);
        let plan = plan_refund(
            &debit,
            &self.lot_states(&account),
            self.now,
            self.refund_grace_ms,
        )
        .expect("refund plan");
        let mut allocations = plan.to_lots.clone();
        for a in &plan.to_lots {
            self.lot_mut(a.lot_id).remaining += a.amount;
        }
        if plan.to_refund_lot > 0 {
            let id = self.insert_lot(
                &account,
                plan.to_refund_lot,
                Some(plan.refund_lot_expires_at),
            );
            allocations.push(Allocation {
                lot_id: id,
                amount: plan.to_refund_lot,
            });
        }
        self.job_mut(job_id).refunded = plan.total();
        self.append(
            &account,
            EntryKind::Refund,
            plan.total(),
            allocations,
            Some(job_id),
        );
    }

    pub fn succeed(&mut self, job_id: &str) {
        let job = self.job_mut(job_id);
        assert_eq!(job.state, JobState::Running);
        job.state = JobState::Succeeded;
    }

    /// Fails a queued or running job: hold released, or debit refunded.
    pub fn fail(&mut self, job_id: &str) {
        let state = self.job(job_id).state;
        assert!(!state.is_terminal());
        self.job_mut(job_id).state = JobState::Failed;
        if self.job(job_id).debited > 0 {
            self.refund(job_id);
        } else {
            self.release(job_id);
        }
    }

    pub fn cancel(&mut self, job_id: &str) {
        let state = self.job(job_id).state;
        if state.is_terminal() {
            return;
        }
        self.job_mut(job_id).state = JobState::Cancelled;
        if self.job(job_id).debited > 0 {
            if self.refund_on_cancel {
                self.refund(job_id);
            }
        } else {
            self.release(job_id);
        }
    }

    /// Termination for violation: queued jobs cancelled, due lots expired, the rest
    /// forfeited.
    pub fn forfeit(&mut self, account: &str) -> Credits {
        let queued: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| j.account_id == account && j.state == JobState::Queued && j.held > 0)
            .map(|j| j.id.clone())
            .collect();
        for id in queued {
            self.cancel(&id);
        }
        let plan = forfeit_all(&self.lot_states(account), self.now);
        self.expire_due(account);
        if !plan.forfeit.is_empty() {
            for a in &plan.forfeit {
                self.lot_mut(a.lot_id).remaining -= a.amount;
            }
            self.append(
                account,
                EntryKind::Forfeit,
                plan.forfeited(),
                plan.forfeit.clone(),
                None,
            );
        }
        plan.forfeited()
    }

    pub fn verify(&self) -> VerifyReport {
        verify_ledger(
            &self.entries,
            &self.lots,
            &self.jobs,
            &VerifyPolicy {
                refund_on_cancel: self.refund_on_cancel,
            },
        )
    }

    pub fn assert_clean(&self) {
        let report = self.verify();
        assert!(
            report.is_clean(),
            "ledger problems: {:#?}\nentries: {:#?}",
            report.problems,
            self.entries
        );
    }
}
