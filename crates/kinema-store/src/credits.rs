//! An account's credits as the API shows and changes them: admin grants, the balance,
//! and the sweeper's EXPIRE entries. The money moves of jobs are in `money.rs`.

use kinema_ledger::{debit_order, is_live, Allocation, Credits, UnixMillis};

use crate::entries::{append_entry, EntryDraft};
use crate::locks::{account_status, lock_account};
use crate::lots::{all_lots, expire_due_lots, held_credits, insert_lot, lot_state};
use crate::{Balance, EntryKind, LedgerEntry, Lot, Store, StoreError};

impl Store {
    /// Adds a lot of `credits` (an admin grant) and its GRANT entry.
    pub async fn grant_credits(
        &self,
        account_id: &str,
        credits: Credits,
        expires_at: Option<UnixMillis>,
        memo: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<(Lot, LedgerEntry), StoreError> {
        if credits <= 0 {
            return Err(StoreError::Invalid("credits must be positive".into()));
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::Invalid(
                "expires_at must be in the future".into(),
            ));
        }
        let (account_id, memo, actor) = (account_id.to_owned(), memo.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                lock_account(&mut tx, &account_id).await?.require_open()?;
                expire_due_lots(&mut tx, &account_id, now).await?;
                let lot =
                    insert_lot(&mut tx, &account_id, "grant", credits, expires_at, now).await?;
                let entry = append_entry(
                    &mut tx,
                    EntryDraft {
                        account_id: &account_id,
                        kind: EntryKind::Grant,
                        amount: credits,
                        allocations: &[Allocation {
                            lot_id: lot.id,
                            amount: credits,
                        }],
                        job_id: None,
                        actor: &actor,
                        memo: &memo,
                    },
                    now,
                )
                .await?;
                Ok((lot, entry))
            })
        })
        .await
    }

    pub async fn balance(&self, account_id: &str, now: UnixMillis) -> Result<Balance, StoreError> {
        // One snapshot: a debit committing between the two reads would otherwise show
        // its lot already spent and its hold not yet released (available too high).
        let mut conn = self.read_snapshot().await?;
        account_status(&mut conn, account_id).await?;
        let mut lots: Vec<Lot> = all_lots(&mut conn, account_id)
            .await?
            .into_iter()
            .filter(|l| l.remaining > 0 && is_live(&lot_state(l), now))
            .collect();
        lots.sort_by(|a, b| debit_order(&lot_state(a), &lot_state(b)));
        let total: Credits = lots.iter().map(|l| l.remaining).sum();
        let held = held_credits(&mut conn, account_id).await?;
        Ok(Balance {
            total,
            held,
            available: total - held,
            lots,
        })
    }

    /// Writes the EXPIRE entries of every account's lots due by `now` (the sweeper;
    /// expired credits are unusable from `expires_at` whether or not this has run).
    /// Returns how many accounts were processed (at most `limit`).
    pub async fn expire_due_lots_everywhere(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let accounts: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM lots WHERE expired_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        for account_id in &accounts {
            let account_id = account_id.clone();
            self.write(move |mut tx| {
                Box::pin(async move {
                    lock_account(&mut tx, &account_id).await?;
                    expire_due_lots(&mut tx, &account_id, now).await
                })
            })
            .await?;
        }
        Ok(accounts.len())
    }
}
