//! The store's lock order: every write that moves an account's money or its jobs'
//! states locks the account row first (before any job row), so concurrent writers,
//! across server replicas sharing PostgreSQL, see each other's holds and debits and
//! never deadlock on lock order. SQLite has one writer and needs no row locks: there
//! the same statements only read.

use kinema_ledger::{Credits, UnixMillis};
use sqlx::AnyConnection;

use crate::rows::JobRow;
use crate::tx::Tx;
use crate::{AccountStatus, BillingMode, Job, NotFound, StoreError};

/// What [`lock_account`] read of the locked account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct LockedAccount {
    #[sqlx(try_from = "String")]
    pub status: AccountStatus,
    #[sqlx(try_from = "String")]
    pub billing: BillingMode,
    pub created_at: UnixMillis,
}

impl LockedAccount {
    /// Refuses what only an open account may do (buy, subscribe, top up).
    pub fn require_open(&self) -> Result<(), StoreError> {
        match self.status {
            AccountStatus::Terminated | AccountStatus::Deleted => Err(StoreError::AccountClosed {
                status: self.status.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses new jobs unless the account is active: closed for good
    /// (`AccountClosed`) or suspended (`AccountNotActive`).
    pub fn require_active(&self) -> Result<(), StoreError> {
        self.require_open()?;
        match self.status {
            AccountStatus::Active => Ok(()),
            status => Err(StoreError::AccountNotActive {
                status: status.to_string(),
            }),
        }
    }

    pub fn require_billing(
        &self,
        needed: BillingMode,
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

/// Locks the account row for the rest of the transaction and returns its status.
pub(crate) async fn lock_account(
    tx: &mut Tx<'_>,
    account_id: &str,
) -> Result<LockedAccount, StoreError> {
    let sql = format!(
        "SELECT status, billing, created_at FROM accounts WHERE id = $1{}",
        tx.for_update()
    );
    sqlx::query_as(&sql)
        .bind(account_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound(NotFound::Account))
}

/// Locks the job's account and reads the job as it stands (without its artifacts:
/// for the jobs a transaction changes, which are not finished yet). `None` if there
/// is no such job.
pub(crate) async fn lock_job(tx: &mut Tx<'_>, id: &str) -> Result<Option<Job>, StoreError> {
    // One round trip: the job's row, and its account's row locked (a job never
    // changes account).
    let sql = format!(
        "SELECT j.* FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = $1{}",
        tx.backend.for_update_of_account(false)
    );
    let row: Option<JobRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(Job::try_from).transpose()
}

/// The account's status as last written (no lock).
pub(crate) async fn account_status(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<AccountStatus, StoreError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    status
        .ok_or(StoreError::NotFound(NotFound::Account))?
        .parse()
}

/// A prepaid account's credits as a money transaction finds them, read under the
/// account lock: whether lots are due to expire (so `expire_due_lots` has work),
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

/// Lots of account `$1` whose `expires_at` (before `$2`) has passed without their
/// EXPIRE entry yet; then credits in its unexpired lots and its outstanding holds;
/// then its queued jobs and the whole queue's.
const POSITION: &str = "CAST((SELECT COUNT(*) FROM lots WHERE account_id = $1 \
     AND expired_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $2) AS BIGINT), \
     CAST(COALESCE((SELECT SUM(remaining) FROM lots WHERE account_id = $1 \
     AND (expires_at IS NULL OR expires_at > $2)), 0) AS BIGINT), \
     CAST(COALESCE((SELECT SUM(held) FROM jobs WHERE account_id = $1 AND held > 0), 0) AS BIGINT), \
     CAST((SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED' AND account_id = $1) AS BIGINT), \
     CAST((SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED') AS BIGINT)";

/// What a submission needs to know, read under the account lock: [`lock_account`],
/// for a prepaid account its [`CreditPosition`], and the queue's [`Queued`] counts.
/// On SQLite (one writer, no row locks) all of it comes from one statement;
/// PostgreSQL reads the rest in a statement of its own after the lock is granted, so
/// it sees every write committed before.
pub(crate) async fn lock_account_for_submit(
    tx: &mut Tx<'_>,
    account_id: &str,
    now: UnixMillis,
) -> Result<(LockedAccount, Option<CreditPosition>, Queued), StoreError> {
    type Rest = (i64, Credits, Credits, i64, i64);
    let (locked, (due, live, held, mine, total)): (LockedAccount, Rest) = match tx.backend {
        crate::Backend::Postgres => {
            let locked = lock_account(tx, account_id).await?;
            let rest: Rest = sqlx::query_as(&format!("SELECT {POSITION}"))
                .bind(account_id)
                .bind(now)
                .fetch_one(tx.conn())
                .await?;
            (locked, rest)
        }
        crate::Backend::Sqlite => {
            type Row = (String, String, i64, i64, Credits, Credits, i64, i64);
            let row: Option<Row> = sqlx::query_as(&format!(
                "SELECT status, billing, created_at, {POSITION} FROM accounts WHERE id = $1"
            ))
            .bind(account_id)
            .bind(now)
            .fetch_optional(tx.conn())
            .await?;
            let (status, billing, created_at, due, live, held, mine, total) =
                row.ok_or(StoreError::NotFound(NotFound::Account))?;
            let locked = LockedAccount {
                status: status.parse()?,
                billing: billing.parse()?,
                created_at,
            };
            (locked, (due, live, held, mine, total))
        }
    };
    let position = (locked.billing == BillingMode::Prepaid).then_some(CreditPosition {
        due_lots: due > 0,
        live,
        held,
    });
    let queued = Queued {
        account: mine,
        total,
    };
    Ok((locked, position, queued))
}
