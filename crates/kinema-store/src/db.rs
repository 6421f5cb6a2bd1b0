use std::path::Path;
use std::sync::{Arc, Once};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::writer::SqliteWriter;
use crate::StoreError;

/// Money rules the operator can switch (docs/api.md, "Jobs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePolicy {
    /// A job cancelled while running gets its debit back.
    pub refund_on_cancel: bool,
    /// Life of the lot that takes refunds whose original lot has expired.
    pub refund_grace_ms: i64,
    /// Grace and suspension limit of postpaid accounts in arrears (docs/api.md, "Postpaid accounts").
    pub postpaid: kinema_ledger::PostpaidPolicy,
    /// What one credit of a quote costs a postpaid account, in money.
    pub usage_price: kinema_ledger::Money,
    /// How many jobs may wait in the queue (docs/api.md, "Accounts").
    pub queue: crate::QueueLimits,
    /// How long a finished job's prompt, negative prompt and metadata are kept
    /// (docs/api.md, "Retention").
    pub prompt_log_ttl_ms: i64,
}

/// `prompt_log_ttl`'s default: 30 days.
pub const DEFAULT_PROMPT_LOG_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

impl Default for StorePolicy {
    fn default() -> Self {
        Self {
            refund_on_cancel: true,
            refund_grace_ms: kinema_ledger::DEFAULT_REFUND_GRACE_MS,
            postpaid: kinema_ledger::PostpaidPolicy::default(),
            usage_price: kinema_ledger::Money::new(1, DEFAULT_CURRENCY),
            queue: crate::QueueLimits::default(),
            prompt_log_ttl_ms: DEFAULT_PROMPT_LOG_TTL_MS,
        }
    }
}

/// A pooled PostgreSQL connection idle this long is pinged before it is used.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The currency of the built-in catalogue and of postpaid usage by default.
pub const DEFAULT_CURRENCY: kinema_ledger::Currency = kinema_ledger::Currency::EUR;

/// Which database the store runs on. Queries are written once, with numbered
/// placeholders (`$1`, which both accept) and portable SQL; the few places the
/// dialects differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Row lock on the rows a `SELECT` reads, held to the end of the transaction.
    /// SQLite needs none: the store gives it a single writer.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Row lock that skips rows another transaction has locked (PostgreSQL).
    pub(crate) fn for_update_skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Row lock on the rows of the `accounts` table (aliased `a`) in a join; with
    /// `skip_locked`, passing over rows another transaction has locked (PostgreSQL).
    pub(crate) fn for_update_of_account(self, skip_locked: bool) -> &'static str {
        match (self, skip_locked) {
            (Backend::Sqlite, _) => "",
            (Backend::Postgres, false) => " FOR UPDATE OF a",
            (Backend::Postgres, true) => " FOR UPDATE OF a SKIP LOCKED",
        }
    }
}

/// `n` numbered placeholders from `$first` on, comma-separated (`$3, $4, $5`), for
/// an `IN (…)` list built at run time.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database: SQLite (embedded default) or PostgreSQL (replicas sharing one).
/// SQLite allows one writer at a time, so its writes go through one connection owned
/// by the writer thread (`writer.rs`: transactions queue in-process instead of failing
/// with BUSY, and commit in groups) and reads through their own pool, which WAL lets
/// run beside the writer. On PostgreSQL both are one pool, and money transactions lock
/// the account row.
#[derive(Clone)]
pub struct Store {
    pub(crate) writer: Writer,
    pub(crate) read: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) policy: Arc<StorePolicy>,
}

/// Where write transactions run.
#[derive(Clone)]
pub(crate) enum Writer {
    /// A transaction per call on a pool connection (PostgreSQL; read-only stores).
    Pool(AnyPool),
    Sqlite(SqliteWriter),
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Store {
    /// Opens `sqlite://PATH` or `postgres://…` and brings its schema up to date.
    pub async fn open(url: &str, policy: StorePolicy) -> Result<Store, StoreError> {
        install_drivers();
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Self::open_sqlite(Path::new(path), policy).await;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Invalid(format!(
                "database URL must start with sqlite:// or postgres://, got {url:?}"
            )));
        }
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            // A connection handed back and taken again at once is alive; one that sat
            // idle (through a database restart, say) is pinged first. Pinging every
            // acquire cost a round trip per transaction.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Store {
            writer: Writer::Pool(pool.clone()),
            read: pool,
            backend: Backend::Postgres,
            policy: Arc::new(policy),
        })
    }

    /// Opens (creating if needed) the SQLite database at `path`. Commits are durable:
    /// WAL with `synchronous=FULL`.
    pub async fn open_sqlite(path: &Path, policy: StorePolicy) -> Result<Store, StoreError> {
        install_drivers();
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("database path {path:?} is not UTF-8")))?;
        let options: AnyConnectOptions = format!("sqlite://{path}?mode=rwc").parse()?;
        let writer = SqliteWriter::start(move || {
            Box::pin(async move {
                let mut conn = AnyConnection::connect_with(&options).await?;
                sqlite_pragmas(&mut conn).await?;
                sqlx::migrate!("./migrations/sqlite")
                    .run_direct(&mut conn)
                    .await?;
                Ok(conn)
            })
        })
        .await?;
        let reader: AnyConnectOptions = format!("sqlite://{path}?mode=ro").parse()?;
        let read = AnyPoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
            .connect_with(reader)
            .await?;
        Ok(Store {
            writer: Writer::Sqlite(writer),
            read,
            backend: Backend::Sqlite,
            policy: Arc::new(policy),
        })
    }

    /// Opens an existing database only to read it (`kinema ledger verify`): no schema
    /// change and no write; a missing SQLite file is an error, not created. Both pools
    /// are read-only, so any write through this store fails.
    pub async fn open_read_only(url: &str, policy: StorePolicy) -> Result<Store, StoreError> {
        install_drivers();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if !Path::new(path).is_file() {
                return Err(StoreError::Invalid(format!("no database at {path:?}")));
            }
            let options: AnyConnectOptions = format!("sqlite://{path}?mode=ro").parse()?;
            let pool = AnyPoolOptions::new()
                .max_connections(2)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            return Ok(Store {
                writer: Writer::Pool(pool.clone()),
                read: pool,
                backend: Backend::Sqlite,
                policy: Arc::new(policy),
            });
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Invalid(format!(
                "database URL must start with sqlite:// or postgres://, got {url:?}"
            )));
        }
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Store {
            writer: Writer::Pool(pool.clone()),
            read: pool,
            backend: Backend::Postgres,
            policy: Arc::new(policy),
        })
    }

    /// A read-only transaction whose statements all see one snapshot, so figures read
    /// in several statements (lots and holds, entries and jobs) agree with each other
    /// while money transactions commit around them. SQLite's deferred transaction holds
    /// its WAL snapshot from the first read; PostgreSQL needs REPEATABLE READ for that
    /// (its default, READ COMMITTED, takes a new snapshot per statement).
    pub(crate) async fn read_snapshot(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.read.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn policy(&self) -> &StorePolicy {
        &self.policy
    }

    pub async fn close(&self) {
        self.read.close().await;
        match &self.writer {
            Writer::Pool(pool) => pool.close().await,
            Writer::Sqlite(writer) => writer.close().await,
        }
    }
}

async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // journal_mode answers with a row; the others are silent.
    conn.fetch_all("PRAGMA journal_mode = WAL").await?;
    // secure_delete: what an update or delete removes (a purged prompt) is overwritten
    // in the file, not left in free space (docs/api.md, "Retention").
    conn.execute(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
         PRAGMA secure_delete = ON",
    )
    .await?;
    let _ = conn.ping().await;
    Ok(())
}

/// A fresh random identifier with a readable prefix (`job_…`, `acct_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(super::placeholders(3, 3), "$3, $4, $5");
        assert_eq!(super::placeholders(1, 1), "$1");
        assert_eq!(super::placeholders(1, 0), "");
    }
}
