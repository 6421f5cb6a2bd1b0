//! Lots and ledger entries. The `pub(crate)` helpers run inside a caller's transaction
//! so a job's state change and its money effect commit together.

use kinema_ledger::{
    allocate_debit, debit_order, is_live, plan_refund, Allocation, Credits, LotState, UnixMillis,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::db::Backend;
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
        let b = self.backend;
        if credits <= 0 {
            return Err(StoreError::Invalid("credits must be positive".into()));
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::Invalid(
                "expires_at must be in the future".into(),
            ));
        }
        let account_id = account_id.to_owned();
        let memo = memo.to_owned();
        let actor = actor.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let account_id = account_id.as_str();
                let memo = memo.as_str();
                let actor = actor.as_str();
                lock_account(&mut *tx, b, account_id)
                    .await?
                    .require_open()?;
                expire_due_lots(&mut *tx, b, account_id, now).await?;
                let lot =
                    insert_lot(&mut *tx, b, account_id, "grant", credits, expires_at, now).await?;
                let entry = append_entry(
                    &mut *tx,
                    b,
                    EntryDraft {
                        account_id,
                        kind: EntryKind::Grant,
                        amount: credits,
                        allocations: &[Allocation {
                            lot_id: lot.id,
                            amount: credits,
                        }],
                        job_id: None,
                        actor,
                        memo,
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
        let b = self.backend;
        // One snapshot: a debit committing between the two reads would otherwise show
        // its lot already spent and its hold not yet released (available too high).
        let mut conn = self.read_snapshot().await?;
        require_account(&mut conn, b, account_id).await?;
        let mut lots: Vec<Lot> = all_lots(&mut conn, b, account_id)
            .await?
            .into_iter()
            .filter(|l| l.remaining > 0 && is_live(&lot_state(l), now))
            .collect();
        lots.sort_by(|a, b| debit_order(&lot_state(a), &lot_state(b)));
        let total: Credits = lots.iter().map(|l| l.remaining).sum();
        let held = held_credits(&mut conn, b, account_id).await?;
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
        let b = self.backend;
        let accounts: Vec<String> = sqlx::query_scalar(&b.sql(
            "SELECT DISTINCT account_id FROM lots WHERE expired_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        for account_id in &accounts {
            let account_id = account_id.clone();
            self.write(move |tx| {
                Box::pin(async move {
                    lock_account(&mut *tx, b, &account_id).await?;
                    expire_due_lots(&mut *tx, b, &account_id, now).await
                })
            })
            .await?;
        }
        Ok(accounts.len())
    }

    /// Entries oldest first, after entry id `after_id`, at most `limit`.
    pub async fn ledger_entries(
        &self,
        account_id: &str,
        job_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let b = self.backend;
        let rows = sqlx::query(&b.sql(
            "SELECT * FROM ledger_entries WHERE account_id = ? AND (? = '' OR job_id = ?) \
             AND id > ? ORDER BY id LIMIT ?",
        ))
        .bind(account_id)
        .bind(job_id.unwrap_or(""))
        .bind(job_id.unwrap_or(""))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }
}

/// Locks the account row for the rest of the transaction and returns its status.
/// Every write that moves an account's money or its jobs' states takes this lock
/// first (before any job row), so concurrent writers, across server replicas sharing
/// PostgreSQL, see each other's holds and debits and never deadlock on lock order.
pub(crate) async fn lock_account(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<LockedAccount, StoreError> {
    let sql = format!(
        "SELECT status, billing, created_at FROM accounts WHERE id = ?{}",
        b.for_update()
    );
    let row: Option<(String, String, i64)> = sqlx::query_as(&b.sql(&sql))
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (status, billing, created_at) = row.ok_or(StoreError::NotFound("account"))?;
    Ok(LockedAccount {
        status: status.parse()?,
        billing: billing.parse()?,
        created_at,
    })
}

/// A prepaid account's credits as a money transaction finds them, read under the
/// account lock: whether lots are due to expire (so [`expire_due_lots`] has work),
/// credits in unexpired lots, and what jobs hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditPosition {
    pub due_lots: bool,
    pub live: Credits,
    pub held: Credits,
}

impl CreditPosition {
    pub fn available(&self) -> Credits {
        self.live - self.held
    }
}

/// Jobs waiting in the queue, the account's and everyone's (for the queue bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queued {
    pub account: i64,
    pub total: i64,
}

/// Lots whose `expires_at` has passed without their EXPIRE entry yet.
const DUE_LOTS: &str =
    "CAST((SELECT COUNT(*) FROM lots WHERE account_id = ? AND expired_at IS NULL \
     AND expires_at IS NOT NULL AND expires_at <= ?) AS BIGINT)";

/// The account's queued jobs and the whole queue's.
const QUEUED: &str = "CAST((SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED' AND account_id = ?) \
     AS BIGINT), CAST((SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED') AS BIGINT)";

/// What a submission needs to know, read under the account lock: [`lock_account`],
/// for a prepaid account its [`CreditPosition`], and the queue's [`Queued`] counts.
/// On SQLite (one writer, no row locks) all of it comes from one statement;
/// PostgreSQL reads the rest in a statement of its own after the lock is granted, so
/// it sees every write committed before.
pub(crate) async fn lock_account_for_submit(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    now: UnixMillis,
) -> Result<(LockedAccount, Option<CreditPosition>, Queued), StoreError> {
    type Rest = (i64, Credits, Credits, i64, i64);
    let (locked, rest): (LockedAccount, Rest) = match b {
        Backend::Postgres => {
            let locked = lock_account(conn, b, account_id).await?;
            let rest: Rest =
                sqlx::query_as(&b.sql(&format!("SELECT {DUE_LOTS}, {BALANCE_AND_HELD}, {QUEUED}")))
                    .bind(account_id)
                    .bind(now)
                    .bind(account_id)
                    .bind(now)
                    .bind(account_id)
                    .bind(account_id)
                    .fetch_one(&mut *conn)
                    .await?;
            (locked, rest)
        }
        Backend::Sqlite => {
            type Row = (String, String, i64, i64, Credits, Credits, i64, i64);
            let row: Option<Row> = sqlx::query_as(&b.sql(&format!(
                "SELECT status, billing, created_at, {DUE_LOTS}, {BALANCE_AND_HELD}, {QUEUED} \
                 FROM accounts WHERE id = ?"
            )))
            .bind(account_id)
            .bind(now)
            .bind(account_id)
            .bind(now)
            .bind(account_id)
            .bind(account_id)
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
            let (status, billing, created_at, due, live, held, mine, total) =
                row.ok_or(StoreError::NotFound("account"))?;
            let locked = LockedAccount {
                status: status.parse()?,
                billing: billing.parse()?,
                created_at,
            };
            (locked, (due, live, held, mine, total))
        }
    };
    let (due, live, held, mine, total) = rest;
    let position = (locked.billing == crate::BillingMode::Prepaid).then_some(CreditPosition {
        due_lots: due > 0,
        live,
        held,
    });
    Ok((
        locked,
        position,
        Queued {
            account: mine,
            total,
        },
    ))
}

/// What [`lock_account`] read of the locked account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockedAccount {
    pub status: crate::AccountStatus,
    pub billing: crate::BillingMode,
    pub created_at: UnixMillis,
}

impl LockedAccount {
    /// Refuses what only an open account may do (buy, subscribe, top up).
    pub fn require_open(&self) -> Result<(), StoreError> {
        match self.status {
            crate::AccountStatus::Terminated | crate::AccountStatus::Deleted => {
                Err(StoreError::AccountClosed {
                    status: self.status.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn require_billing(
        &self,
        needed: crate::BillingMode,
        what: &'static str,
    ) -> Result<(), StoreError> {
        if self.billing == needed {
            Ok(())
        } else {
            Err(StoreError::BillingMode {
                actual: self.billing,
                needed,
                what,
            })
        }
    }
}

/// Locks the account of a job (see [`lock_account`]); `None` if there is no such job.
pub(crate) async fn lock_job_account(
    conn: &mut AnyConnection,
    b: Backend,
    job_id: &str,
) -> Result<Option<String>, StoreError> {
    // One round trip: the job's account row, locked (a job never changes account).
    let sql = format!(
        "SELECT a.id FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = ?{}",
        b.for_update_of_account()
    );
    let account: Option<String> = sqlx::query_scalar(&b.sql(&sql))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(account)
}

/// [`lock_job_account`] where only the lock matters: nothing to do on SQLite (one
/// writer). Returns false when PostgreSQL finds no such job.
pub(crate) async fn lock_job_account_only(
    conn: &mut AnyConnection,
    b: Backend,
    job_id: &str,
) -> Result<bool, StoreError> {
    match b {
        Backend::Postgres => Ok(lock_job_account(conn, b, job_id).await?.is_some()),
        Backend::Sqlite => Ok(true),
    }
}

pub(crate) async fn require_account(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<crate::AccountStatus, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar(&b.sql("SELECT status FROM accounts WHERE id = ?"))
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    status.ok_or(StoreError::NotFound("account"))?.parse()
}

pub(crate) fn lot_state(l: &Lot) -> LotState {
    LotState {
        id: l.id,
        remaining: l.remaining,
        expires_at: l.expires_at,
        created_at: l.created_at,
    }
}

pub(crate) async fn all_lots(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<Vec<Lot>, StoreError> {
    let rows = sqlx::query(&b.sql("SELECT * FROM lots WHERE account_id = ? ORDER BY id"))
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Lot {
                id: r.try_get("id")?,
                account_id: r.try_get("account_id")?,
                source: r.try_get("source")?,
                original: r.try_get("original")?,
                remaining: r.try_get("remaining")?,
                expires_at: r.try_get("expires_at")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub(crate) async fn insert_lot(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    source: &str,
    credits: Credits,
    expires_at: Option<UnixMillis>,
    now: UnixMillis,
) -> Result<Lot, StoreError> {
    let id: i64 = sqlx::query_scalar(&b.sql(
        "INSERT INTO lots (account_id, source, original, remaining, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    ))
    .bind(account_id)
    .bind(source)
    .bind(credits)
    .bind(credits)
    .bind(expires_at)
    .bind(now)
    .fetch_one(&mut *conn)
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

pub(crate) async fn live_total(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    now: UnixMillis,
) -> Result<Credits, StoreError> {
    Ok(sqlx::query_scalar(&b.sql(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM lots WHERE account_id = ? \
         AND (expires_at IS NULL OR expires_at > ?)",
    ))
    .bind(account_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?)
}

pub(crate) async fn held_credits(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<Credits, StoreError> {
    Ok(sqlx::query_scalar(&b.sql(
        "SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM jobs WHERE account_id = ? AND held > 0",
    ))
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// The account's credits in unexpired lots and its outstanding holds, in one query.
const BALANCE_AND_HELD: &str =
    "CAST(COALESCE((SELECT SUM(remaining) FROM lots WHERE account_id = ? \
     AND (expires_at IS NULL OR expires_at > ?)), 0) AS BIGINT), \
     CAST(COALESCE((SELECT SUM(held) FROM jobs WHERE account_id = ? AND held > 0), 0) AS BIGINT)";

pub(crate) struct EntryDraft<'a> {
    pub account_id: &'a str,
    pub kind: EntryKind,
    pub amount: Credits,
    pub allocations: &'a [Allocation],
    pub job_id: Option<&'a str>,
    pub actor: &'a str,
    pub memo: &'a str,
}

/// Appends an entry, recording the balance and holds as they stand after it.
pub(crate) async fn append_entry(
    conn: &mut AnyConnection,
    b: Backend,
    draft: EntryDraft<'_>,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    insert_entry(conn, b, draft, None, now).await
}

/// [`append_entry`] when the caller, holding the account lock, already knows the
/// balance and holds after the entry (so the database need not add them up again).
pub(crate) async fn append_entry_known(
    conn: &mut AnyConnection,
    b: Backend,
    draft: EntryDraft<'_>,
    balance_after: Credits,
    held_after: Credits,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    insert_entry(conn, b, draft, Some((balance_after, held_after)), now).await
}

async fn insert_entry(
    conn: &mut AnyConnection,
    b: Backend,
    draft: EntryDraft<'_>,
    known: Option<(Credits, Credits)>,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    let allocations = serde_json::to_string(draft.allocations)?;
    let (id, balance_after, held_after) = match known {
        Some((balance_after, held_after)) => {
            let id: i64 = sqlx::query_scalar(&b.sql(
                "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, \
                 actor, balance_after, held_after, memo, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            ))
            .bind(draft.account_id)
            .bind(draft.kind.as_str())
            .bind(draft.amount)
            .bind(&allocations)
            .bind(draft.job_id)
            .bind(draft.actor)
            .bind(balance_after)
            .bind(held_after)
            .bind(draft.memo)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            (id, balance_after, held_after)
        }
        // One round trip: the balance and holds after the entry are computed in the insert.
        None => {
            sqlx::query_as(&b.sql(&format!(
                "INSERT INTO ledger_entries (account_id, kind, amount, allocations, job_id, actor, \
                 balance_after, held_after, memo, created_at) SELECT ?, ?, ?, ?, ?, ?, \
                 {BALANCE_AND_HELD}, ?, ? RETURNING id, balance_after, held_after"
            )))
            .bind(draft.account_id)
            .bind(draft.kind.as_str())
            .bind(draft.amount)
            .bind(&allocations)
            .bind(draft.job_id)
            .bind(draft.actor)
            .bind(draft.account_id)
            .bind(now)
            .bind(draft.account_id)
            .bind(draft.memo)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok(LedgerEntry {
        id,
        account_id: draft.account_id.to_string(),
        kind: draft.kind,
        amount: draft.amount,
        allocations: draft.allocations.to_vec(),
        job_id: draft.job_id.map(str::to_string),
        actor: draft.actor.to_string(),
        balance_after,
        held_after,
        memo: draft.memo.to_string(),
        created_at: now,
    })
}

/// Writes the EXPIRE entries of lots whose `expires_at` has passed. Expired credits
/// are already unusable (every query filters on `expires_at`); this makes the ledger
/// say so before any other money moves on the account.
pub(crate) async fn expire_due_lots(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let due: Vec<(i64, Credits)> = sqlx::query_as(&b.sql(
        "SELECT id, remaining FROM lots WHERE account_id = ? AND expired_at IS NULL \
         AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, id",
    ))
    .bind(account_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for (lot_id, remaining) in due {
        sqlx::query(&b.sql("UPDATE lots SET remaining = 0, expired_at = ? WHERE id = ?"))
            .bind(now)
            .bind(lot_id)
            .execute(&mut *conn)
            .await?;
        if remaining > 0 {
            append_entry(
                conn,
                b,
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
        }
    }
    Ok(())
}

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
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    amount: Credits,
    now: UnixMillis,
) -> Result<PlannedDebit, StoreError> {
    // Lots with credits left, and those due to expire (whatever they have left).
    let rows: Vec<(i64, Credits, Option<UnixMillis>, UnixMillis)> = sqlx::query_as(&b.sql(
        "SELECT id, remaining, expires_at, created_at FROM lots WHERE account_id = ? \
         AND expired_at IS NULL AND (remaining > 0 OR expires_at <= ?)",
    ))
    .bind(account_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let lots: Vec<LotState> = rows
        .into_iter()
        .map(|(id, remaining, expires_at, created_at)| LotState {
            id,
            remaining,
            expires_at,
            created_at,
        })
        .collect();
    if lots.iter().any(|l| !is_live(l, now)) {
        expire_due_lots(conn, b, account_id, now).await?;
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
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    job_id: &str,
    debit: &PlannedDebit,
    actor: &str,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    move_lot_credits(conn, b, &debit.allocations, -1, "a debit").await?;
    let entry = append_entry(
        conn,
        b,
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

/// Adds `sign` x each allocation to its lot, in one statement. Every lot must exist;
/// the schema keeps each lot's remaining within 0..=original, so an over-draw or
/// over-refund aborts the transaction.
pub(crate) async fn move_lot_credits(
    conn: &mut AnyConnection,
    b: Backend,
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
    let cases = " WHEN ? THEN ?".repeat(per_lot.len());
    let ids = vec!["?"; per_lot.len()].join(", ");
    let sql = b
        .sql(&format!(
            "UPDATE lots SET remaining = remaining + CASE id{cases} END WHERE id IN ({ids})"
        ))
        .into_owned();
    let mut q = sqlx::query(&sql);
    for (id, delta) in &per_lot {
        q = q.bind(*id).bind(*delta);
    }
    for id in per_lot.keys() {
        q = q.bind(*id);
    }
    let moved = q.execute(&mut *conn).await?;
    if moved.rows_affected() != per_lot.len() as u64 {
        return Err(StoreError::Corrupt(format!(
            "{what} names lots that do not exist: {:?}",
            per_lot.keys().collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Gives a job's debit back, exactly once: to the lots it came from, or to a new
/// refund lot for the share whose lot has expired since.
pub(crate) async fn refund_job(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    job_id: &str,
    refund_grace_ms: i64,
    actor: &str,
    now: UnixMillis,
) -> Result<Option<LedgerEntry>, StoreError> {
    let moved: Vec<(String, String)> = sqlx::query_as(&b.sql(
        "SELECT kind, allocations FROM ledger_entries WHERE job_id = ? \
         AND kind IN ('DEBIT', 'REFUND')",
    ))
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    if moved.iter().any(|(kind, _)| kind == "REFUND") {
        return Ok(None);
    }
    let Some((_, debit)) = moved.into_iter().find(|(kind, _)| kind == "DEBIT") else {
        return Ok(None);
    };
    let debit: Vec<Allocation> = serde_json::from_str(&debit)?;
    let entry = refund_debit(
        conn,
        b,
        account_id,
        job_id,
        &debit,
        true,
        refund_grace_ms,
        actor,
        now,
    )
    .await?;
    sqlx::query(&b.sql("UPDATE jobs SET refunded = ? WHERE id = ?"))
        .bind(entry.amount)
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(entry))
}

/// Writes the REFUND of a debit that has none yet (the caller checked, and sets the
/// job's `refunded`): each credit back to the lot it came from, or into a new refund
/// lot (expiring `refund_grace_ms` from now) for the share whose lot has expired.
/// `due_lots`: whether the account may have lots past expiry without their EXPIRE
/// entry, written first.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn refund_debit(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    job_id: &str,
    debit: &[Allocation],
    due_lots: bool,
    refund_grace_ms: i64,
    actor: &str,
    now: UnixMillis,
) -> Result<LedgerEntry, StoreError> {
    if due_lots {
        expire_due_lots(conn, b, account_id, now).await?;
    }
    let mut ids: Vec<i64> = debit.iter().map(|a| a.lot_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = b
        .sql(&format!(
            "SELECT id, remaining, expires_at, created_at FROM lots WHERE account_id = ? \
             AND id IN ({})",
            vec!["?"; ids.len().max(1)].join(", ")
        ))
        .into_owned();
    let mut q =
        sqlx::query_as::<_, (i64, Credits, Option<UnixMillis>, UnixMillis)>(&sql).bind(account_id);
    if ids.is_empty() {
        q = q.bind(0i64);
    }
    for id in &ids {
        q = q.bind(*id);
    }
    let lots: Vec<LotState> = q
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(id, remaining, expires_at, created_at)| LotState {
            id,
            remaining,
            expires_at,
            created_at,
        })
        .collect();
    let plan = plan_refund(debit, &lots, now, refund_grace_ms)?;
    let mut allocations = plan.to_lots.clone();
    move_lot_credits(conn, b, &plan.to_lots, 1, "a refund").await?;
    if plan.to_refund_lot > 0 {
        let lot = insert_lot(
            conn,
            b,
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
        conn,
        b,
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

/// Drops a job's outstanding hold (cancelled or refused before its debit).
pub(crate) async fn release_hold(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    job_id: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<Option<LedgerEntry>, StoreError> {
    let held: Credits = sqlx::query_scalar(&b.sql("SELECT held FROM jobs WHERE id = ?"))
        .bind(job_id)
        .fetch_one(&mut *conn)
        .await?;
    if held == 0 {
        return Ok(None);
    }
    sqlx::query(&b.sql("UPDATE jobs SET held = 0 WHERE id = ?"))
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    let entry = append_entry(
        conn,
        b,
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
    .await?;
    Ok(Some(entry))
}

pub(crate) fn entry_from_row(r: &AnyRow) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        kind: r.try_get::<String, _>("kind")?.parse()?,
        amount: r.try_get("amount")?,
        allocations: serde_json::from_str(&r.try_get::<String, _>("allocations")?)?,
        job_id: r.try_get("job_id")?,
        actor: r.try_get("actor")?,
        balance_after: r.try_get("balance_after")?,
        held_after: r.try_get("held_after")?,
        memo: r.try_get("memo")?,
        created_at: r.try_get("created_at")?,
    })
}
