//! `kinema ledger verify`: the store's lots, jobs and ledger entries exported as the
//! plain records [`kinema_ledger::verify_ledger`] checks .

use std::str::FromStr;

use kinema_ledger::{EntryRecord, JobRecord, LotRecord, VerifyPolicy, VerifyReport};
use sqlx::Row;

use crate::{Store, StoreError};

/// Everything the checker needs, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct LedgerExport {
    pub entries: Vec<EntryRecord>,
    pub lots: Vec<LotRecord>,
    pub jobs: Vec<JobRecord>,
}

impl Store {
    /// Every ledger entry, lot and job (of one account when `account_id` is given),
    /// read in one transaction so the three agree with each other.
    pub async fn export_ledger(
        &self,
        account_id: Option<&str>,
    ) -> Result<LedgerExport, StoreError> {
        let mut tx = self.read_snapshot().await?;
        let filter = if account_id.is_some() {
            " WHERE account_id = $1"
        } else {
            ""
        };
        let bind = account_id.unwrap_or_default();

        let sql = format!(
            "SELECT id, account_id, kind, amount, allocations, job_id, balance_after, \
             held_after, created_at FROM ledger_entries{filter} ORDER BY id"
        );
        let mut q = sqlx::query(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let kind: String = r.try_get("kind")?;
            let allocations: String = r.try_get("allocations")?;
            entries.push(EntryRecord {
                id,
                account_id: r.try_get("account_id")?,
                kind: kinema_ledger::EntryKind::from_str(&kind)
                    .map_err(|e| StoreError::Corrupt(format!("ledger entry {id}: {e}")))?,
                amount: r.try_get("amount")?,
                allocations: serde_json::from_str(&allocations).map_err(|e| {
                    StoreError::Corrupt(format!("ledger entry {id}: allocations: {e}"))
                })?,
                job_id: r.try_get("job_id")?,
                balance_after: Some(r.try_get("balance_after")?),
                held_after: Some(r.try_get("held_after")?),
                created_at: r.try_get("created_at")?,
            });
        }

        let sql = format!(
            "SELECT id, account_id, original, remaining, expires_at, created_at FROM lots{filter} \
             ORDER BY id"
        );
        let mut q = sqlx::query(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let lots = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(LotRecord {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    original: r.try_get("original")?,
                    remaining: r.try_get("remaining")?,
                    expires_at: r.try_get("expires_at")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let sql = format!(
            "SELECT id, account_id, state, quoted, held, debited, refunded FROM jobs{filter} \
             ORDER BY seq"
        );
        let mut q = sqlx::query(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let mut jobs = Vec::new();
        for r in q.fetch_all(&mut *tx).await? {
            let id: String = r.try_get("id")?;
            let state: String = r.try_get("state")?;
            jobs.push(JobRecord {
                state: kinema_ledger::JobState::from_str(&state)
                    .map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))?,
                id,
                account_id: r.try_get("account_id")?,
                quoted: r.try_get("quoted")?,
                held: r.try_get("held")?,
                debited: r.try_get("debited")?,
                refunded: r.try_get("refunded")?,
            });
        }
        tx.commit().await?;
        Ok(LedgerExport {
            entries,
            lots,
            jobs,
        })
    }

    /// Recomputes every lot, job and balance from the entries and checks the
    /// invariants (with this store's `refund_on_cancel`).
    pub async fn verify_ledger(
        &self,
        account_id: Option<&str>,
    ) -> Result<VerifyReport, StoreError> {
        let export = self.export_ledger(account_id).await?;
        Ok(kinema_ledger::verify_ledger(
            &export.entries,
            &export.lots,
            &export.jobs,
            &VerifyPolicy {
                refund_on_cancel: self.policy.refund_on_cancel,
            },
        ))
    }
}

/// What `verify_money` found wrong with the postpaid money (empty: sound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyReport {
    pub accounts_checked: usize,
    pub jobs_checked: usize,
    pub problems: Vec<String>,
}

impl MoneyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Recomputes every postpaid balance from its billing events (top-ups less usage
    /// charges) and checks each postpaid job's charge: one USAGE_CHARGE of its price if
    /// it SUCCEEDED, none otherwise. One snapshot, like [`Store::export_ledger`].
    pub async fn verify_money(&self, account_id: Option<&str>) -> Result<MoneyReport, StoreError> {
        let mut tx = self.read_snapshot().await?;
        let (filter, bind) = match account_id {
            Some(a) => (" AND account_id = $1", a),
            None => ("", ""),
        };
        let mut report = MoneyReport::default();

        let sql = format!(
            "SELECT account_id, balance_minor, currency FROM postpaid_accounts WHERE 1 = 1{filter}"
        );
        let mut q = sqlx::query_as::<_, (String, i64, String)>(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let accounts = q.fetch_all(&mut *tx).await?;
        let sql = format!(
            "SELECT account_id, kind, amount_minor, currency, job_id FROM billing_events \
             WHERE kind IN ('TOP_UP', 'USAGE_CHARGE'){filter} ORDER BY id"
        );
        let mut q = sqlx::query_as::<_, (String, String, i64, String, Option<String>)>(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let events = q.fetch_all(&mut *tx).await?;
        for (account, stored, currency) in &accounts {
            let mut recomputed = 0i64;
            for (a, kind, minor, cur, _) in events.iter().filter(|e| &e.0 == account) {
                if cur != currency {
                    report.problems.push(format!(
                        "account {a}: a {kind} of {minor} {cur} on a balance in {currency}"
                    ));
                }
                recomputed += if kind == "TOP_UP" { *minor } else { -*minor };
            }
            if recomputed != *stored {
                report.problems.push(format!(
                    "account {account}: stored money balance {stored} {currency}, billing events say {recomputed}"
                ));
            }
        }
        report.accounts_checked = accounts.len();

        let sql = format!(
            "SELECT id, state, price_minor, charged_minor FROM jobs \
             WHERE billing = 'postpaid'{filter}"
        );
        let mut q = sqlx::query_as::<_, (String, String, Option<i64>, i64)>(&sql);
        if account_id.is_some() {
            q = q.bind(bind);
        }
        let jobs = q.fetch_all(&mut *tx).await?;
        for (id, state, price, charged) in &jobs {
            let charges: Vec<i64> = events
                .iter()
                .filter(|e| e.1 == "USAGE_CHARGE" && e.4.as_deref() == Some(id.as_str()))
                .map(|e| e.2)
                .collect();
            let expected = if state == "SUCCEEDED" {
                vec![price.unwrap_or_default()]
            } else {
                Vec::new()
            };
            if charges != expected {
                report.problems.push(format!(
                    "job {id} ({state}, price {price:?}): usage charges {charges:?}, expected {expected:?}"
                ));
            }
            if *charged != expected.iter().sum::<i64>() {
                report.problems.push(format!(
                    "job {id} ({state}): stored charged {charged}, expected {}",
                    expected.iter().sum::<i64>()
                ));
            }
        }
        report.jobs_checked = jobs.len();
        tx.commit().await?;
        Ok(report)
    }
}
