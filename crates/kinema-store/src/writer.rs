//! SQLite's single writer: a thread that owns the write connection, runs every write
//! transaction on it, and makes them durable in groups (group commit).
//!
//! Why a thread of its own: sqlx runs each SQLite connection on a worker thread, so
//! every statement is a hand-off between the thread that awaits it and that worker.
//! Between CPUs a hand-off costs more than the statement (measured ~65 µs per statement
//! on a 2-vCPU VM, against ~19 µs on one CPU). The writer thread is pinned to one CPU
//! and opens the connection itself, so the connection's worker inherits the pin and
//! each statement is a same-CPU switch; a transaction then costs one hand-off to the
//! writer and one back.
//!
//! Why groups: a durable commit is an fsync (~300 µs on that VM's disk). Transactions
//! that arrive while a group runs join it, each from the second on in its own
//! savepoint, so a transaction that fails rolls back alone; one COMMIT then makes the
//! whole group durable. A transaction's caller hears of its success only after that
//! COMMIT returned, so a crash loses nothing it was told had happened.

use std::panic::AssertUnwindSafe;
use std::thread;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::StoreError;

/// How many transactions one COMMIT makes durable at most (bounds how long a group
/// holds the database's write lock).
const MAX_GROUP: usize = 64;

/// Transactions that may wait for the writer at once. Past it a caller waits for room
/// (its RPC's deadline bounds the wait) instead of the queue growing without end.
pub(crate) const INBOX: usize = 1024;

/// A write transaction's body: runs on the writer's connection inside an open
/// transaction. It must not begin or end transactions itself.
pub(crate) type Body<T> = Box<
    dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
>;

/// The handle every clone of the store shares.
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    requests: mpsc::Sender<Request>,
}

enum Request {
    Txn(Box<dyn Txn>),
    /// `PRAGMA wal_checkpoint(TRUNCATE)` between groups (it cannot run inside a
    /// transaction, and a read-only connection may not truncate the log).
    Checkpoint(oneshot::Sender<Result<Checkpoint, StoreError>>),
    Close(oneshot::Sender<()>),
}

/// What a checkpoint did: `busy` when a reader kept it from finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub busy: bool,
    pub log_frames: i64,
    pub checkpointed_frames: i64,
}

impl SqliteWriter {
    /// Starts the writer thread and opens its connection with `open` (on that thread,
    /// so the connection's worker shares its CPU). Returns once the connection is open.
    pub(crate) async fn start<O>(open: O) -> Result<SqliteWriter, StoreError>
    where
        O: FnOnce() -> BoxFuture<'static, Result<AnyConnection, StoreError>> + Send + 'static,
    {
        Self::start_with_inbox(open, INBOX).await
    }

    /// [`SqliteWriter::start`] with room for `inbox` waiting transactions.
    pub(crate) async fn start_with_inbox<O>(
        open: O,
        inbox: usize,
    ) -> Result<SqliteWriter, StoreError>
    where
        O: FnOnce() -> BoxFuture<'static, Result<AnyConnection, StoreError>> + Send + 'static,
    {
        let (requests, inbox) = mpsc::channel(inbox.max(1));
        let (opened, opening) = oneshot::channel();
        thread::Builder::new()
            .name("kinema-sqlite-writer".into())
            .spawn(move || {
                pin_to_one_cpu();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = opened.send(Err(StoreError::Writer(format!(
                            "cannot start the writer's runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match open().await {
                        Ok(conn) => {
                            let _ = opened.send(Ok(()));
                            serve(conn, inbox).await;
                        }
                        Err(e) => {
                            let _ = opened.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| StoreError::Writer(format!("cannot start the writer thread: {e}")))?;
        opening
            .await
            .map_err(|_| StoreError::Writer("the writer thread stopped while opening".into()))??;
        Ok(SqliteWriter { requests })
    }

    /// Runs `body` as one durable write transaction and returns what it returned, once
    /// its group has committed. An error from `body` rolls back what it wrote, and
    /// nothing else.
    pub(crate) async fn run<T: Send + 'static>(&self, body: Body<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        // The body runs on the writer thread inside the caller's span, so what it logs
        // is told apart by request.
        let span = tracing::Span::current();
        self.requests
            .send(Request::Txn(Box::new(Pending { body, reply, span })))
            .await
            .map_err(|_| StoreError::Writer("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Writer("the writer stopped before answering".into()))?
    }

    /// Copies the write-ahead log into the database and truncates it, once the
    /// transactions queued before it have committed.
    pub(crate) async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Checkpoint(reply))
            .await
            .map_err(|_| StoreError::Writer("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Writer("the writer stopped before answering".into()))?
    }

    /// Finishes the group in progress, closes the connection and stops the thread.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.requests.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// A transaction waiting to run, its result type erased.
trait Txn: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Box<dyn Outcome>>;
    fn refuse(self: Box<Self>, error: StoreError);
}

/// A transaction that has run: failed ones answer at once, succeeded ones wait for
/// their group's COMMIT.
trait Outcome: Send {
    fn succeeded(&self) -> bool;
    fn answer(self: Box<Self>, commit: Result<(), String>);
}

struct Pending<T> {
    body: Body<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    span: tracing::Span,
}

struct Ran<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Txn for Pending<T> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Box<dyn Outcome>> {
        let Pending { body, reply, span } = *self;
        Box::pin(async move {
            // A panicking body fails its own transaction, not the writer.
            let result = match AssertUnwindSafe(body(conn).instrument(span))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(_) => Err(StoreError::Writer("the transaction panicked".into())),
            };
            Box::new(Ran { result, reply }) as Box<dyn Outcome>
        })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Outcome for Ran<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let result = match (self.result, commit) {
            (Ok(_), Err(e)) => Err(StoreError::Writer(format!("commit failed: {e}"))),
            (result, _) => result,
        };
        let _ = self.reply.send(result);
    }
}

/// The writer's loop: one group per turn, until closed or every store handle is gone.
async fn serve(mut conn: AnyConnection, mut inbox: mpsc::Receiver<Request>) {
    let mut closing = None;
    while closing.is_none() {
        let Some(request) = inbox.recv().await else {
            break;
        };
        let first = match request {
            Request::Txn(txn) => txn,
            Request::Checkpoint(reply) => {
                let _ = reply.send(checkpoint(&mut conn).await);
                continue;
            }
            Request::Close(done) => {
                closing = Some(done);
                break;
            }
        };
        closing = run_group(&mut conn, first, &mut inbox).await;
    }
    // What arrived after the close is refused, not silently dropped.
    inbox.close();
    while let Ok(request) = inbox.try_recv() {
        match request {
            Request::Txn(txn) => txn.refuse(StoreError::Writer("the store is closed".into())),
            Request::Checkpoint(reply) => {
                let _ = reply.send(Err(StoreError::Writer("the store is closed".into())));
            }
            Request::Close(_) => {}
        }
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Runs `first` and whatever arrives while the group runs, then commits them at once.
/// Returns the close request if one arrived meanwhile.
async fn run_group(
    conn: &mut AnyConnection,
    first: Box<dyn Txn>,
    inbox: &mut mpsc::Receiver<Request>,
) -> Option<oneshot::Sender<()>> {
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        first.refuse(e.into());
        return None;
    }
    // The first transaction needs no savepoint: if it fails, the group is only it.
    let outcome = first.run(conn).await;
    if !outcome.succeeded() {
        let rollback = conn.execute("ROLLBACK").await.map(|_| ());
        outcome.answer(rollback.map_err(|e| e.to_string()));
        return None;
    }
    let mut committed = vec![outcome];
    let mut closing = None;
    let mut deferred = None;
    while committed.len() < MAX_GROUP {
        let next = match inbox.try_recv() {
            Ok(Request::Txn(txn)) => txn,
            Ok(Request::Close(done)) => {
                closing = Some(done);
                break;
            }
            Ok(Request::Checkpoint(reply)) => {
                // After this group's COMMIT: a checkpoint waits for what was queued
                // before it.
                deferred = Some(reply);
                break;
            }
            Err(_) => break,
        };
        if let Err(e) = conn.execute("SAVEPOINT kinema_txn").await {
            next.refuse(e.into());
            break;
        }
        let outcome = next.run(conn).await;
        let end = if outcome.succeeded() {
            conn.execute("RELEASE kinema_txn").await
        } else {
            conn.execute("ROLLBACK TO kinema_txn; RELEASE kinema_txn")
                .await
        };
        match end {
            Ok(_) if outcome.succeeded() => committed.push(outcome),
            Ok(_) => outcome.answer(Ok(())),
            Err(e) => {
                // The connection is in a state we cannot vouch for: the whole group
                // rolls back and fails.
                let message = e.to_string();
                let _ = conn.execute("ROLLBACK").await;
                outcome.answer(Err(message.clone()));
                for outcome in committed {
                    outcome.answer(Err(message.clone()));
                }
                return closing;
            }
        }
    }
    let commit = conn.execute("COMMIT").await.map(|_| ());
    if commit.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    let commit = commit.map_err(|e| e.to_string());
    for outcome in committed {
        outcome.answer(commit.clone());
    }
    if let Some(reply) = deferred {
        let _ = reply.send(checkpoint(conn).await);
    }
    closing
}

async fn checkpoint(conn: &mut AnyConnection) -> Result<Checkpoint, StoreError> {
    let (busy, log_frames, checkpointed_frames): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
    Ok(Checkpoint {
        busy: busy != 0,
        log_frames,
        checkpointed_frames,
    })
}

/// Where the operator puts the writer: `off` leaves it unpinned, a CPU number pins it
/// there; unset, it goes to the last CPU the process may run on. Two servers on one
/// host would otherwise share that CPU's writer time.
pub(crate) const WRITER_CPU_ENV: &str = "KINEMA_SQLITE_WRITER_CPU";

/// Pins this thread (and the threads it starts) to the CPU [`WRITER_CPU_ENV`] names.
/// Best effort: where affinity cannot be read or set, the writer runs unpinned.
fn pin_to_one_cpu() {
    let setting = std::env::var(WRITER_CPU_ENV).ok();
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    let ids: Vec<usize> = allowed.iter().map(|c| c.id).collect();
    let cpu = match writer_cpu(setting.as_deref(), &ids) {
        Ok(Some(cpu)) => cpu,
        Ok(None) => {
            tracing::debug!("sqlite writer not pinned");
            return;
        }
        Err(problem) => {
            tracing::warn!(%problem, "sqlite writer not pinned");
            return;
        }
    };
    let Some(core) = allowed.into_iter().find(|c| c.id == cpu) else {
        return;
    };
    if core_affinity::set_for_current(core) {
        tracing::debug!(cpu, "sqlite writer pinned");
    } else {
        tracing::warn!(cpu, "sqlite writer: pinning refused, not pinned");
    }
}

/// The CPU to pin the writer to, from the setting and the CPUs the process may use.
fn writer_cpu(setting: Option<&str>, allowed: &[usize]) -> Result<Option<usize>, String> {
    match setting.map(str::trim) {
        None | Some("") => Ok(allowed.iter().max().copied()),
        Some("off") => Ok(None),
        Some(value) => {
            let cpu: usize = value
                .parse()
                .map_err(|_| format!("{WRITER_CPU_ENV}={value:?} is neither off nor a CPU"))?;
            if allowed.contains(&cpu) {
                Ok(Some(cpu))
            } else {
                Err(format!(
                    "{WRITER_CPU_ENV}={cpu} is not among the CPUs this process may use {allowed:?}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::any::AnyConnectOptions;

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> SqliteWriter {
        writer_with_inbox(dir, INBOX).await
    }

    async fn writer_with_inbox(dir: &tempfile::TempDir, inbox: usize) -> SqliteWriter {
        sqlx::any::install_default_drivers();
        let path = dir.path().join("w.db");
        let options: AnyConnectOptions = format!("sqlite://{}?mode=rwc", path.display())
            .parse()
            .unwrap();
        SqliteWriter::start_with_inbox(
            move || {
                Box::pin(async move {
                    let mut conn = AnyConnection::connect_with(&options).await?;
                    conn.fetch_all("PRAGMA journal_mode = WAL").await?;
                    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
                        .await?;
                    Ok(conn)
                })
            },
            inbox,
        )
        .await
        .unwrap()
    }

    /// Inserts `id`, waits `hold` (so others queue behind it), then fails if asked.
    fn insert(id: i64, hold: Duration, fail: bool) -> Body<i64> {
        Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (id) VALUES (?)")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                tokio::time::sleep(hold).await;
                if fail {
                    return Err(StoreError::Invalid(format!("{id} fails")));
                }
                assert!(id != 99, "{id} panics");
                Ok(id)
            })
        })
    }

    async fn ids(w: &SqliteWriter) -> Vec<i64> {
        w.run(Box::new(|conn| {
            Box::pin(async move {
                Ok(sqlx::query_scalar("SELECT id FROM t ORDER BY id")
                    .fetch_all(&mut *conn)
                    .await?)
            })
        }))
        .await
        .unwrap()
    }

    #[test]
    fn the_writer_cpu_is_the_last_allowed_unless_named_or_off() {
        assert_eq!(writer_cpu(None, &[0, 1, 2, 3]), Ok(Some(3)));
        assert_eq!(writer_cpu(Some(""), &[2, 5]), Ok(Some(5)));
        assert_eq!(writer_cpu(Some("off"), &[0, 1]), Ok(None));
        assert_eq!(writer_cpu(Some(" 1 "), &[0, 1]), Ok(Some(1)));
        assert!(writer_cpu(Some("7"), &[0, 1]).is_err());
        assert!(writer_cpu(Some("last"), &[0, 1]).is_err());
        assert_eq!(writer_cpu(None, &[]), Ok(None));
    }

    #[tokio::test]
    async fn a_failing_transaction_in_a_group_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        // 1 holds the writer while 2, 3, 4 and 5 queue: they run as one group after
        // it, 3 failing and 5 panicking after their inserts.
        let first = tokio::spawn({
            let w = w.clone();
            async move { w.run(insert(1, Duration::from_millis(200), false)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest: Vec<_> = [(2, false), (3, true), (4, false), (99, false)]
            .into_iter()
            .map(|(id, fail)| {
                let w = w.clone();
                tokio::spawn(async move { w.run(insert(id, Duration::ZERO, fail)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        let mut results = Vec::new();
        for r in rest {
            results.push(r.await.unwrap());
        }
        assert_eq!(results[0].as_ref().unwrap(), &2);
        assert!(matches!(&results[1], Err(StoreError::Invalid(m)) if m == "3 fails"));
        assert_eq!(results[2].as_ref().unwrap(), &4);
        assert!(matches!(&results[3], Err(StoreError::Writer(_))));
        assert_eq!(ids(&w).await, vec![1, 2, 4]);
        w.close().await;
    }

    #[tokio::test]
    async fn a_failing_first_transaction_rolls_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        assert!(w.run(insert(7, Duration::ZERO, true)).await.is_err());
        assert_eq!(w.run(insert(8, Duration::ZERO, false)).await.unwrap(), 8);
        assert_eq!(ids(&w).await, vec![8]);
        w.close().await;
        assert!(matches!(
            w.run(insert(9, Duration::ZERO, false)).await,
            Err(StoreError::Writer(_))
        ));
    }

    #[tokio::test]
    async fn committed_groups_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let runs: Vec<_> = (1..=50)
            .map(|id| {
                let w = w.clone();
                tokio::spawn(async move { w.run(insert(id, Duration::ZERO, false)).await })
            })
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        w.close().await;
        let path = dir.path().join("w.db");
        let mut conn = AnyConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 50);
    }

    #[tokio::test]
    async fn a_full_inbox_makes_callers_wait_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer_with_inbox(&dir, 2).await;
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let (started, running) = oneshot::channel();
        let blocker = tokio::spawn({
            let (w, release) = (w.clone(), release.clone());
            async move {
                w.run(Box::new(move |conn| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO t (id) VALUES (1)")
                            .execute(&mut *conn)
                            .await?;
                        let _ = started.send(());
                        release.notified().await;
                        Ok(1i64)
                    })
                }))
                .await
            }
        });
        running.await.unwrap();
        // The writer is busy with 1; 2 and 3 fill the inbox, 4..=6 wait for room.
        let waiting: Vec<_> = (2..=6)
            .map(|id| {
                let w = w.clone();
                tokio::spawn(async move { w.run(insert(id, Duration::ZERO, false)).await })
            })
            .collect();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            waiting.iter().all(|t| !t.is_finished()),
            "nothing is refused or answered while the writer is busy"
        );
        assert_eq!(w.requests.max_capacity(), 2);
        assert_eq!(w.requests.capacity(), 0, "the inbox is full, not growing");
        release.notify_one();
        assert_eq!(blocker.await.unwrap().unwrap(), 1);
        for (i, t) in waiting.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i as i64 + 2);
        }
        assert_eq!(ids(&w).await, vec![1, 2, 3, 4, 5, 6]);
        w.close().await;
    }

    #[tokio::test]
    async fn a_checkpoint_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let runs: Vec<_> = (1..=20)
            .map(|id| {
                let w = w.clone();
                tokio::spawn(async move { w.run(insert(id, Duration::ZERO, false)).await })
            })
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        let wal = dir.path().join("w.db-wal");
        let wal_bytes = || std::fs::metadata(&wal).map(|m| m.len()).unwrap();
        assert!(wal_bytes() > 0, "the inserts are in the log");
        let checkpoint = w.checkpoint().await.unwrap();
        assert!(!checkpoint.busy, "{checkpoint:?}");
        assert_eq!(wal_bytes(), 0, "the log is truncated");
        assert_eq!(ids(&w).await.len(), 20);
        w.close().await;
        assert!(w.checkpoint().await.is_err(), "refused after the close");
    }
}
