//! Credit lots: reading them, adding one, moving credits in and out, and writing the
//! EXPIRE entries of those past their `expires_at`.

use kinema_ledger::{Allocation, Credits, LotState, UnixMillis};
use sqlx::AnyConnection;

use crate::db::placeholders;
use crate::entries::{append_entry, EntryDraft};
use crate::tx::Tx;
use crate::{EntryKind, Lot, NotFound, StoreError};

pub(crate) fn lot_state(l: &Lot) -> LotState {
    LotState {
        id: l.id,
        remaining: l.remaining,
        expires_at: l.expires_at,
        created_at: l.created_at,
    }
}

/// A lot as the rules see it, as a query returns it: id, remaining, expires_at,
/// created_at.
pub(crate) type LotStateRow = (i64, Credits, Option<UnixMillis>, UnixMillis);

pub(crate) fn lot_state_of((id, remaining, expires_at, created_at): LotStateRow) -> LotState {
    LotState {
        id,
        remaining,
        expires_at,
        created_at,
    }
}

/// The lot states of these ids (of `account_id`), as they stand.
pub(crate) async fn lot_states(
    tx: &mut Tx<'_>,
    account_id: &str,
    ids: &[i64],
) -> Result<Vec<LotState>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, remaining, expires_at, created_at FROM lots WHERE account_id = $1 \
         AND id IN ({})",
        placeholders(2, ids.len())
    );
    let mut q =
        sqlx::query_as::<_, (i64, Credits, Option<UnixMillis>, UnixMillis)>(&sql).bind(account_id);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.fetch_all(tx.conn())
        .await?
        .into_iter()
        .map(|(id, remaining, expires_at, created_at)| LotState {
            id,
            remaining,
            expires_at,
            created_at,
        })
        .collect())
}

pub(crate) async fn all_lots(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<Lot>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM lots WHERE account_id = $1 ORDER BY id")
            .bind(account_id)
            .fetch_all(&mut *conn)
            .await?,
    )
}

pub(crate) async fn load_lot(tx: &mut Tx<'_>, lot_id: i64) -> Result<Lot, StoreError> {
    sqlx::query_as("SELECT * FROM lots WHERE id = $1")
        .bind(lot_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound(NotFound::Lot))
}

pub(crate) async fn insert_lot(
    tx: &mut Tx<'_>,
    account_id: &str,
    source: &str,
    credits: Credits,
    expires_at: Option<UnixMillis>,
    now: UnixMillis,
) -> Result<Lot, StoreError> {
    // Every sum of the account's lots (its balance, each entry's balance_after) must
    // stay an i64: a lot that would overflow them is refused, not stored.
    let total: Credits = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM lots WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_one(tx.conn())
    .await?;
    if total.checked_add(credits).is_none() {
        return Err(StoreError::BalanceOverflow {
            total,
            adding: credits,
        });
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO lots (account_id, source, original, remaining, expires_at, created_at) \
         VALUES ($1, $2, $3, $3, $4, $5) RETURNING id",
    )
    .bind(account_id)
    .bind(source)
    .bind(credits)
    .bind(expires_at)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    Ok(Lot {
        id,
        account_id: account_id.to_string(),
        source: source.to_string(),
        original: credits,
        remaining: credits,
        expires_at,
        created_at: now,
    })
}

/// Credits in the account's lots that have not expired by `now`.
pub(crate) async fn live_total(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<Credits, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM lots WHERE account_id = $1 \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(account_id)
    .bind(now)
    .fetch_one(tx.conn())
    .await?)
}

/// What the account's jobs hold.
pub(crate) async fn held_credits(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Credits, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM jobs WHERE account_id = $1 \
         AND held > 0",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Writes the EXPIRE entries of lots whose `expires_at` has passed. Expired credits
/// are already unusable (every query filters on `expires_at`); this makes the ledger
/// say so before any other money moves on the account.
pub(crate) async fn expire_due_lots(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let due: Vec<(i64, Credits)> = sqlx::query_as(
        "SELECT id, remaining FROM lots WHERE account_id = $1 AND expired_at IS NULL \
         AND expires_at IS NOT NULL AND expires_at <= $2 ORDER BY expires_at, id",
    )
    .bind(account_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    for (lot_id, remaining) in due {
        sqlx::query("UPDATE lots SET remaining = 0, expired_at = $1 WHERE id = $2")
            .bind(now)
            .bind(lot_id)
            .execute(tx.conn())
            .await?;
        if remaining > 0 {
            expire_entry(tx, account_id, lot_id, remaining, now).await?;
        }
    }
    Ok(())
}

/// Adds `sign` x each allocation to its lot, in one statement. Every lot must exist;
/// the schema keeps each lot's remaining within 0..=original, so an over-draw or
/// over-refund aborts the transaction.
pub(crate) async fn move_lot_credits(
    tx: &mut Tx<'_>,
    allocations: &[Allocation],
    sign: i64,
    what: &str,
) -> Result<(), StoreError> {
    let mut per_lot: std::collections::BTreeMap<i64, Credits> = Default::default();
    for a in allocations {
        *per_lot.entry(a.lot_id).or_default() += a.amount * sign;
    }
    if per_lot.is_empty() {
        return Ok(());
    }
    // Each lot binds its id ($1, $3, ...) and its delta ($2, $4, ...).
    let n = per_lot.len();
    let cases: String = (0..n)
        .map(|i| format!(" WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2))
        .collect();
    let ids = (0..n)
        .map(|i| format!("${}", 2 * i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let sql =
        format!("UPDATE lots SET remaining = remaining + CASE id{cases} END WHERE id IN ({ids})");
    let mut q = sqlx::query(&sql);
    for (id, delta) in &per_lot {
        q = q.bind(*id).bind(*delta);
    }
    let moved = q.execute(tx.conn()).await?;
    if moved.rows_affected() != n as u64 {
        return Err(StoreError::Corrupt(format!(
            "{what} names lots that do not exist: {:?}",
            per_lot.keys().collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// The EXPIRE entry of one lot's credits.
async fn expire_entry(
    tx: &mut Tx<'_>,
    account_id: &str,
    lot_id: i64,
    remaining: Credits,
    now: UnixMillis,
) -> Result<(), StoreError> {
    append_entry(
        tx,
        EntryDraft {
            account_id,
            kind: EntryKind::Expire,
            amount: remaining,
            allocations: &[Allocation {
                lot_id,
                amount: remaining,
            }],
            job_id: None,
            actor: "system",
            memo: "",
        },
        now,
    )
    .await?;
    Ok(())
}
