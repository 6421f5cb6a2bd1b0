//! `kinema ledger verify`: the store's lots, jobs and ledger entries exported as the
//! plain records [`kinema_ledger::verify_ledger`] checks (CONTRACT.md §2.7).

use std::str::FromStr;

use kinema_ledger::{EntryRecord, JobRecord, LotRecord, VerifyPolicy, VerifyReport};
use sqlx::Row;

use crate::db::Backend;
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
        let b = self.backend;
        let mut tx = self.read.begin().await?;
        if b == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let filter = if account_id.is_some() {
            " WHERE account_id = ?"
        } else {
            ""
        };
        let bind = account_id.unwrap_or_default();

        let sql = format!(
            "SELECT id, account_id, kind, amount, allocations, job_id, balance_after, \
             held_after, created_at FROM ledger_entries{filter} ORDER BY id"
        );
        let sql = b.sql(&sql).into_owned();
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
        let sql = b.sql(&sql).into_owned();
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
        let sql = b.sql(&sql).into_owned();
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
