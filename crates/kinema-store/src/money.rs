//! A job's money moves, each run inside the transaction that changes the job's state:
//! the debit at start (earliest-expiring lots first), the refund of that debit (back
//! to the lots it came from, or into a refund lot for the share whose lot has expired
//! since), the release of a hold, and the forfeit of a terminated account's credits.
//! Which of them a job's ending calls for is decided in one place, `ending.rs`.

use kinema_ledger::{allocate_debit, forfeit_all, is_live, plan_refund, Allocation, Credits};
use kinema_ledger::{LotState, UnixMillis};

use crate::entries::{append_entry, EntryDraft};
use crate::lots::{
    all_lots, expire_due_lots, insert_lot, lot_state, lot_state_of, lot_states, move_lot_credits,
    LotStateRow,
};
use crate::tx::Tx;
use crate::{EntryKind, LedgerEntry, StoreError};

/// A debit worked out under the account lock, before anything is written.
#[derive(Debug, Clone)]
pub(crate) struct PlannedDebit {
    pub amount: Credits,
    pub allocations: Vec<Allocation>,
    /// Credits in unexpired lots once the debit is taken.
    pub live_after: Credits,
}

/// Works out a debit of `amount`, lot by lot, earliest expiry first, from the lots that
/// can still give (writing first the EXPIRE entries of lots past their expiry). On
/// insufficient credits nothing is written and the caller fails the job.
pub(crate) async fn plan_debit(
    tx: &mut Tx<'_>,
    account_id: &str,
    amount: Credits,
    now: UnixMillis,
) -> Result<PlannedDebit, StoreError> {
    // Lots with credits left, and those due to expire (whatever they have left).
    let rows: Vec<LotStateRow> = sqlx::query_as(
        "SELECT id, remaining, expires_at, created_at FROM lots WHERE account_id = $1 \
         AND expired_at IS NULL AND (remaining > 0 OR expires_at <= $2)",
    )
    .bind(account_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    let lots: Vec<LotState> = rows.into_iter().map(lot_state_of).collect();
    if lots.iter().any(|l| !is_live(l, now)) {
        expire_due_lots(tx, account_id, now).await?;
    }
    let allocations = allocate_debit(&lots, amount, now).map_err(|e| match e {
        kinema_ledger::LedgerError::InsufficientCredits { needed, available } => {
            StoreError::InsufficientCredits { needed, available }
        }
        other => other.into(),
    })?;
    let live: Credits = lots
        .iter()
        .filter(|l| is_live(l, now))
        .map(|l| l.remaining)
        .sum();
    Ok(PlannedDebit {
        amount,
        allocations,
        live_after: live - amount,
    })
}

/// Takes a planned debit from its lots and writes the DEBIT entry; the caller has
/// already moved the job's hold to `debited` (so the entry's `held_after` counts it).
pub(crate) async fn write_debit(
    tx: &mut Tx<'_>,
    account_id: &str,
    job_id: &str,
    debit: &PlannedDebit,
    actor: &str,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    move_lot_credits(tx, &debit.allocations, -1, "a debit").await?;
    let entry = append_entry(
        tx,
        EntryDraft {
            account_id,
            kind: EntryKind::Debit,
            amount: debit.amount,
            allocations: &debit.allocations,
            job_id: Some(job_id),
            actor,
            memo: "",
        },
        now,
    )
    .await?;
    if entry.balance_after != debit.live_after {
        return Err(StoreError::Corrupt(format!(
            "debit of job {job_id}: balance after {} where the lots read gave {}",
            entry.balance_after, debit.live_after
        )));
    }
    Ok(entry)
}

/// Writes the REFUND of a job's DEBIT (`debit`, its allocations): each credit back to
/// the lot it came from, or into a new refund lot (expiring `refund_grace_ms` from
/// now) for the share whose lot has expired. `due_lots`: whether the account may have
/// lots past expiry without their EXPIRE entry, written first. The database refuses a
/// second REFUND for a job (a unique index), whatever path asks for one.
pub(crate) async fn refund_debit(
    tx: &mut Tx<'_>,
    account_id: &str,
    job_id: &str,
    debit: &[Allocation],
    due_lots: bool,
    actor: &str,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    if due_lots {
        expire_due_lots(tx, account_id, now).await?;
    }
    let mut ids: Vec<i64> = debit.iter().map(|a| a.lot_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let lots = lot_states(tx, account_id, &ids).await?;
    let plan = plan_refund(debit, &lots, now, tx.policy.refund_grace_ms)?;
    let mut allocations = plan.to_lots.clone();
    move_lot_credits(tx, &plan.to_lots, 1, "a refund").await?;
    if plan.to_refund_lot > 0 {
        let lot = insert_lot(
            tx,
            account_id,
            "refund",
            plan.to_refund_lot,
            Some(plan.refund_lot_expires_at),
            now,
        )
        .await?;
        allocations.push(Allocation {
            lot_id: lot.id,
            amount: plan.to_refund_lot,
        });
    }
    append_entry(
        tx,
        EntryDraft {
            account_id,
            kind: EntryKind::Refund,
            amount: plan.total(),
            allocations: &allocations,
            job_id: Some(job_id),
            actor,
            memo: "",
        },
        now,
    )
    .await
}

/// The RELEASE entry of a hold the caller has just dropped from its job.
pub(crate) async fn release_hold(
    tx: &mut Tx<'_>,
    account_id: &str,
    job_id: &str,
    held: Credits,
    actor: &str,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    append_entry(
        tx,
        EntryDraft {
            account_id,
            kind: EntryKind::Release,
            amount: held,
            allocations: &[],
            job_id: Some(job_id),
            actor,
            memo: "",
        },
        now,
    )
    .await
}

/// Forfeits every credit left (a termination for violation): lots already past their
/// expiry are expired first, the rest goes in one FORFEIT entry. Returns the credits
/// forfeited.
pub(crate) async fn forfeit_credits(
    tx: &mut Tx<'_>,
    account_id: &str,
    actor: &str,
    memo: &str,
    now: UnixMillis,
) -> Result<Credits, StoreError> {
    expire_due_lots(tx, account_id, now).await?;
    let lots: Vec<_> = all_lots(tx.conn(), account_id)
        .await?
        .iter()
        .map(lot_state)
        .collect();
    let plan = forfeit_all(&lots, now);
    let forfeited = plan.forfeited();
    if forfeited == 0 {
        return Ok(0);
    }
    for a in &plan.forfeit {
        let moved = sqlx::query(
            "UPDATE lots SET remaining = remaining - $1 WHERE id = $2 AND remaining >= $1",
        )
        .bind(a.amount)
        .bind(a.lot_id)
        .execute(tx.conn())
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Corrupt(format!(
                "lot {} changed under a forfeit",
                a.lot_id
            )));
        }
    }
    append_entry(
        tx,
        EntryDraft {
            account_id,
            kind: EntryKind::Forfeit,
            amount: forfeited,
            allocations: &plan.forfeit,
            job_id: None,
            actor,
            memo,
        },
        now,
    )
    .await?;
    Ok(forfeited)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kinema_params::GenerationParams;

    use super::refund_debit;
    use crate::{Failure, JobPriority, NewJob, Store, StoreError, Usage};

    const T0: i64 = 1_700_000_000_000;

    /// The store's own refund path, asked for a second REFUND of a refunded job (as a
    /// bug that skipped `end_job`'s check would), is refused by the database and
    /// rolls back whole.
    #[tokio::test]
    async fn a_second_refund_through_the_store_is_refused_by_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("k.db"), Default::default())
            .await
            .unwrap();
        let account = store.create_account("a", None, T0).await.unwrap().id;
        store
            .grant_credits(&account, 30, None, "", "admin", T0)
            .await
            .unwrap();
        let new = NewJob {
            account_id: account.clone(),
            external_id: None,
            idempotency_key: None,
            request_hash: "h".into(),
            params: GenerationParams {
                model: "testsrc".into(),
                prompt: "p".into(),
                negative_prompt: String::new(),
                width: 64,
                height: 64,
                num_frames: 9,
                fps: 8,
                steps: 4,
                guidance_scale: 5.0,
                seed: 1,
                output: "mp4".into(),
                preview: None,
                ..GenerationParams::default()
            },
            callback_url: String::new(),
            metadata: BTreeMap::new(),
            quote: 10,
            member_id: None,
            priority: JobPriority::Normal,
            batch_key: None,
        };
        let job = store
            .submit_job(new.clone(), "t", T0)
            .await
            .unwrap()
            .job()
            .clone();
        store.lease_next_job("w", 60_000, T0).await.unwrap();
        let failure = Failure {
            code: "MODEL_ERROR".into(),
            message: "x".into(),
            retryable: false,
        };
        store
            .fail_job(&job.id, "w", &failure, &Usage::default(), T0 + 1)
            .await
            .unwrap();
        let debit = store
            .ledger_entries(&account, Some(&job.id), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.kind == crate::EntryKind::Debit)
            .unwrap();
        // Another job spends from the same lot, so giving the first job's credits back
        // again would fit in the lot: only the ledger's uniqueness stands in the way.
        store.submit_job(new, "t", T0 + 1).await.unwrap();
        store.lease_next_job("w", 60_000, T0 + 1).await.unwrap();
        let (account_id, job_id) = (account.clone(), job.id.clone());
        let again = store
            .write(move |mut tx| {
                Box::pin(async move {
                    let allocations = debit.allocations;
                    refund_debit(
                        &mut tx,
                        &account_id,
                        &job_id,
                        &allocations,
                        false,
                        "t",
                        T0 + 2,
                    )
                    .await
                })
            })
            .await;
        match again {
            Err(StoreError::Database(e)) => {
                assert!(
                    e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()),
                    "{e}"
                )
            }
            other => panic!("a second refund was not refused: {other:?}"),
        }
        // Nothing of it stayed: the lot holds what one refund gave back, less the
        // second job's debit.
        let balance = store.balance(&account, T0 + 3).await.unwrap();
        assert_eq!((balance.total, balance.held), (20, 0));
        assert!(store.verify_ledger(None).await.unwrap().is_clean());
        store.close().await;
    }
}
