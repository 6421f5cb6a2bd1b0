use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::StoreError;

/// Money rules the operator can switch (CONTRACT.md §1, §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePolicy {
    /// A job cancelled while running gets its debit back.
    pub refund_on_cancel: bool,
    /// Life of the lot that takes refunds whose original lot has expired.
    pub refund_grace_ms: i64,
}

impl Default for StorePolicy {
    fn default() -> Self {
        Self {
            refund_on_cancel: true,
            refund_grace_ms: kinema_ledger::DEFAULT_REFUND_GRACE_MS,
        }
    }
}

/// The database. SQLite allows one writer at a time, so writes go through a pool of
/// one connection (transactions queue in-process instead of failing with BUSY) and
/// reads through their own pool, which WAL lets run beside the writer.
#[derive(Clone)]
pub struct Store {
    pub(crate) write: SqlitePool,
    pub(crate) read: SqlitePool,
    pub(crate) policy: StorePolicy,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up
    /// to date. Commits are durable: WAL with `synchronous=FULL`.
    pub async fn open_sqlite(path: &Path, policy: StorePolicy) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Store {
            write,
            read,
            policy,
        })
    }

    pub fn policy(&self) -> &StorePolicy {
        &self.policy
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// A fresh random identifier with a readable prefix (`job_…`, `acct_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
