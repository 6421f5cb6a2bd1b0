//! Ledger entries: appended (never updated or deleted) with the balance and holds as
//! they stand after each, and read back.

use kinema_ledger::{Allocation, Credits, UnixMillis};

use crate::rows::EntryRow;
use crate::tx::Tx;
use crate::{EntryKind, LedgerEntry, Store, StoreError};

pub(crate) struct EntryDraft<'a> {
    pub account_id: &'a str,
    pub kind: EntryKind,
    pub amount: Credits,
    pub allocations: &'a [Allocation],
    pub job_id: Option<&'a str>,
    pub actor: &'a str,
    pub memo: &'a str,
}

/// Appends an entry, recording the balance and holds as they stand after it (worked
/// out by the database in the same statement).
pub(crate) async fn append_entry(
    tx: &mut Tx<'_>,
    draft: EntryDraft<'_>,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    insert_entry(tx, draft, None, now).await
}

/// [`append_entry`] when the caller, holding the account lock, already knows the
/// balance and holds after the entry (so the database need not add them up again).
pub(crate) async fn append_entry_known(
    tx: &mut Tx<'_>,
    draft: EntryDraft<'_>,
    balance_after: Credits,
    held_after: Credits,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    insert_entry(tx, draft, Some((balance_after, held_after)), now).await
}

async fn insert_entry(
    tx: &mut Tx<'_>,
    draft: EntryDraft<'_>,
    known: Option<(Credits, Credits)>,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    let allocations = serde_json::to_string(draft.allocations)?;
    // $1 account, $2 kind, $3 amount, $4 allocations, $5 job, $6 actor, $7 memo,
    // $8 time; then either the known balance and holds ($9, $10), or the database
    // adds them up. A job's entries carry the member that submitted it.
    let after = match known {
        Some(_) => "$9, $10",
        None => {
            "CAST(COALESCE((SELECT SUM(remaining) FROM lots WHERE account_id = $1 \
             AND (expires_at IS NULL OR expires_at > $8)), 0) AS BIGINT), \
             CAST(COALESCE((SELECT SUM(held) FROM jobs WHERE account_id = $1 AND held > 0), 0) \
             AS BIGINT)"
        }
    };
    let sql = format!(
        "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, actor, \
         memo, created_at, balance_after, held_after, member_id) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, {after}, \
         (SELECT member_id FROM jobs WHERE id = $5) \
         RETURNING id, balance_after, held_after, member_id"
    );
    let mut q = sqlx::query_as::<_, (i64, Credits, Credits, Option<String>)>(&sql)
        .bind(draft.account_id)
        .bind(draft.kind.as_str())
        .bind(draft.amount)
        .bind(&allocations)
        .bind(draft.job_id)
        .bind(draft.actor)
        .bind(draft.memo)
        .bind(now);
    if let Some((balance_after, held_after)) = known {
        q = q.bind(balance_after).bind(held_after);
    }
    let (id, balance_after, held_after, member_id) = q.fetch_one(tx.conn()).await?;
    Ok(LedgerEntry {
        id,
        account_id: draft.account_id.to_string(),
        kind: draft.kind,
        amount: draft.amount,
        allocations: draft.allocations.to_vec(),
        job_id: draft.job_id.map(str::to_string),
        member_id,
        actor: draft.actor.to_string(),
        balance_after,
        held_after,
        memo: draft.memo.to_string(),
        created_at: now,
    })
}

impl Store {
    /// Entries oldest first, after entry id `after_id`, at most `limit`.
    pub async fn ledger_entries(
        &self,
        account_id: &str,
        job_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.member_ledger_entries(account_id, job_id, None, after_id, limit)
            .await
    }

    /// [`Store::ledger_entries`], only those of `member_id`'s jobs when it is given.
    pub async fn member_ledger_entries(
        &self,
        account_id: &str,
        job_id: Option<&str>,
        member_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT * FROM ledger_entries WHERE account_id = $1 AND ($2 = '' OR job_id = $2) \
             AND ($5 = '' OR member_id = $5) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(account_id)
        .bind(job_id.unwrap_or(""))
        .bind(after_id)
        .bind(i64::from(limit))
        .bind(member_id.unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(LedgerEntry::try_from).collect()
    }
}
