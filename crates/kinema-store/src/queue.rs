//! The queue's order (issue 5): priority classes, per-account fair share within a
//! class, placement filters, batch companions, queue positions and queue bounds.
//!
//! Order: the highest class with a queued job first; within it, the account with the
//! fewest RUNNING jobs, ties to the account served least recently (`last_served`,
//! then account id), then that account's oldest job (`seq`) of the class.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;

use sqlx::AnyConnection;

use crate::credits::Queued;
use crate::db::Backend;
use crate::{Job, Store, StoreError};

/// Which jobs a device may take. `models: None` takes any model; `Some` only those
/// listed (the models this device can hold), so jobs for models no device can hold
/// stay queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    pub models: Option<Vec<String>>,
}

impl LeaseFilter {
    pub fn any() -> Self {
        Self::default()
    }

    pub fn models<I, S>(models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            models: Some(models.into_iter().map(Into::into).collect()),
        }
    }
}

/// How many jobs may wait in the queue; 0 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub per_account: u32,
    pub total: u32,
}

impl QueueLimits {
    pub const UNLIMITED: QueueLimits = QueueLimits {
        per_account: 0,
        total: 0,
    };
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            per_account: 1_000,
            total: 100_000,
        }
    }
}

/// Which queue bound a submission hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    PerAccount,
    Total,
}

impl QueueLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerAccount => "per_account",
            Self::Total => "total",
        }
    }
}

impl fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subset of the queue one lease looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pick<'a> {
    pub models: Option<&'a [String]>,
    /// Companions of a batch: only this key, never a `run_alone` job.
    pub batch_key: Option<&'a str>,
}

impl Pick<'_> {
    /// Nothing could match (a device that holds no model).
    pub fn is_empty(&self) -> bool {
        self.models.is_some_and(|m| m.is_empty())
    }

    fn sql(&self) -> String {
        let mut sql = String::new();
        if let Some(models) = self.models {
            sql.push_str(&format!(
                " AND model IN ({})",
                vec!["?"; models.len()].join(", ")
            ));
        }
        if self.batch_key.is_some() {
            sql.push_str(" AND batch_key = ? AND run_alone = 0");
        }
        sql
    }

    fn binds(&self) -> impl Iterator<Item = &str> {
        self.models
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.batch_key)
    }
}

/// The account whose job is next and the class to take it from, its row locked for
/// the rest of the transaction (the store's lock order: account first). The accounts
/// with queued jobs are found by skipping through the queue index (one probe per
/// account, not one row per queued job), so the cost follows the number of waiting
/// accounts. On PostgreSQL, with `skip_locked`, an account whose row another
/// transaction holds (another worker leasing from it, a submission to it) is passed
/// over for the next in order rather than waited for, so concurrent leases do not
/// queue behind one another on the same account; `None` then may mean only that every
/// waiting account is locked.
pub(crate) async fn next_account(
    conn: &mut AnyConnection,
    b: Backend,
    pick: Pick<'_>,
    skip_locked: bool,
) -> Result<Option<(String, i64)>, StoreError> {
    let filter = pick.sql();
    let sql = format!(
        "WITH RECURSIVE waiting(id) AS ( \
           SELECT MIN(account_id) FROM jobs WHERE state = 'QUEUED'{filter} \
           UNION ALL \
           SELECT (SELECT MIN(account_id) FROM jobs WHERE state = 'QUEUED'{filter} \
                   AND account_id > waiting.id) \
           FROM waiting WHERE waiting.id IS NOT NULL) \
         SELECT w.id, w.top FROM ( \
           SELECT waiting.id, \
             (SELECT MAX(priority) FROM jobs WHERE state = 'QUEUED'{filter} \
              AND account_id = waiting.id) AS top, \
             (SELECT COUNT(*) FROM jobs WHERE state = 'RUNNING' \
              AND account_id = waiting.id) AS running \
           FROM waiting WHERE waiting.id IS NOT NULL) w \
         JOIN accounts a ON a.id = w.id \
         ORDER BY w.top DESC, w.running, a.last_served, w.id LIMIT 1{}",
        if skip_locked {
            b.for_update_of_account_skip_locked()
        } else {
            b.for_update_of_account()
        }
    );
    let sql = b.sql(&sql);
    let mut query = sqlx::query_as(&sql);
    // The filter appears three times: the anchor, the recursive step, the class.
    for _ in 0..3 {
        for v in pick.binds() {
            query = query.bind(v);
        }
    }
    Ok(query.fetch_optional(&mut *conn).await?)
}

/// The account's oldest queued job of the class, row-locked. Called with the account
/// locked; on PostgreSQL a row another transaction holds is skipped, not waited for.
pub(crate) async fn head_job(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
    priority: i64,
    pick: Pick<'_>,
) -> Result<Option<(String, String, i64, i64, String)>, StoreError> {
    // MIN(seq) rather than ORDER BY seq LIMIT 1: PostgreSQL would walk the primary key
    // in seq order for an account with many finished jobs (measured: 200 ms at 100k).
    let sql = format!(
        "SELECT id, account_id, quoted, debited, billing FROM jobs WHERE state = 'QUEUED' \
         AND seq = (SELECT MIN(seq) FROM jobs WHERE state = 'QUEUED' AND account_id = ? \
         AND priority = ?{}){}",
        pick.sql(),
        b.for_update_skip_locked()
    );
    let sql = b.sql(&sql);
    let mut query = sqlx::query_as(&sql).bind(account_id).bind(priority);
    for v in pick.binds() {
        query = query.bind(v);
    }
    Ok(query.fetch_optional(&mut *conn).await?)
}

/// Records that the account was just served (its job leased).
pub(crate) async fn mark_served(
    conn: &mut AnyConnection,
    b: Backend,
    account_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(&b.sql(
        "UPDATE accounts SET last_served = \
         (SELECT COALESCE(MAX(last_served), 0) + 1 FROM accounts) WHERE id = ?",
    ))
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refuses a submission that would exceed a queue bound, given the queue as read
/// with the account locked (`lock_account_for_submit`), so the per-account bound is
/// exact; the total is read without a lock and may be exceeded by as many jobs as
/// replicas submit at the same instant.
pub(crate) fn check_limits(queued: &Queued, limits: &QueueLimits) -> Result<(), StoreError> {
    if limits.per_account > 0 && queued.account >= i64::from(limits.per_account) {
        return Err(StoreError::QueueFull {
            limit: QueueLimit::PerAccount,
            max: limits.per_account,
            queued: queued.account as u64,
        });
    }
    if limits.total > 0 && queued.total >= i64::from(limits.total) {
        return Err(StoreError::QueueFull {
            limit: QueueLimit::Total,
            max: limits.total,
            queued: queued.total as u64,
        });
    }
    Ok(())
}

/// Per account: (running jobs, last_served).
type Standings = HashMap<String, (i64, i64)>;
/// Per class: each account's queued jobs of it.
type Classes = BTreeMap<i64, Vec<(String, i64)>>;

/// Where an account stands for fair share: the sort key of `next_account`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Standing {
    running: i64,
    last_served: i64,
    account: String,
}

/// How many queued jobs will be leased before `job`, assuming nothing finishes,
/// nothing else is submitted, and every device takes every model: under those
/// assumptions it is exact (the leases are replayed, account by account, in the order
/// `next_account` takes them). Jobs finishing, new submissions of a higher class or of
/// accounts with fewer running jobs, placement filters and batch companions move it.
pub(crate) async fn queue_position(
    conn: &mut AnyConnection,
    b: Backend,
    job: &Job,
) -> Result<u32, StoreError> {
    let class = job.priority.rank();
    // One statement: each account's queued jobs per class, and how many of them are
    // older than this job (this job's account's count is its own jobs ahead).
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(&b.sql(
        "SELECT q.account_id, q.priority, q.n, q.older, a.last_served, COALESCE(r.n, 0) FROM \
         (SELECT account_id, priority, COUNT(*) AS n, \
           SUM(CASE WHEN seq < ? THEN 1 ELSE 0 END) AS older FROM jobs \
          WHERE state = 'QUEUED' AND priority >= ? GROUP BY account_id, priority) q \
         JOIN accounts a ON a.id = q.account_id \
         LEFT JOIN (SELECT account_id, COUNT(*) AS n FROM jobs WHERE state = 'RUNNING' \
          GROUP BY account_id) r ON r.account_id = q.account_id",
    ))
    .bind(job.seq)
    .bind(class)
    .fetch_all(&mut *conn)
    .await?;
    let own_ahead = rows
        .iter()
        .find(|r| r.0 == job.account_id && r.1 == class)
        .map_or(0, |r| r.3);
    let mut standing = Standings::new();
    let mut classes = Classes::new();
    for (account, priority, queued, _, last_served, running) in rows {
        standing.insert(account.clone(), (running, last_served));
        classes.entry(priority).or_default().push((account, queued));
    }
    let ahead = replay_leases(standing, &classes, &job.account_id, class, own_ahead);
    Ok(u32::try_from(ahead).unwrap_or(u32::MAX))
}

/// Replays leases from the highest class down: each takes the account with the fewest
/// running jobs, least recently served, which then runs one more and was served last.
/// Counts the leases before `account`'s job with `own_ahead` of its own jobs of
/// `class` before it.
fn replay_leases(
    mut standing: Standings,
    classes: &Classes,
    account: &str,
    class: i64,
    own_ahead: i64,
) -> i64 {
    let mut serial = standing
        .values()
        .map(|&(_, served)| served)
        .max()
        .unwrap_or(0);
    let mut leased = 0i64;
    for (&priority, queued) in classes.iter().rev() {
        if priority < class {
            break;
        }
        let mut remaining: HashMap<&str, i64> = HashMap::new();
        let mut heap = BinaryHeap::new();
        for (id, n) in queued {
            remaining.insert(id, *n);
            let (running, last_served) = standing.get(id).copied().unwrap_or_default();
            heap.push(Reverse(Standing {
                running,
                last_served,
                account: id.clone(),
            }));
        }
        let mut own_served = 0;
        while let Some(Reverse(next)) = heap.pop() {
            if priority == class && next.account == account {
                if own_served == own_ahead {
                    return leased;
                }
                own_served += 1;
            }
            leased += 1;
            serial += 1;
            let more = match remaining.get_mut(next.account.as_str()) {
                Some(left) => {
                    *left -= 1;
                    *left > 0
                }
                None => false,
            };
            standing.insert(next.account.clone(), (next.running + 1, serial));
            if more {
                heap.push(Reverse(Standing {
                    running: next.running + 1,
                    last_served: serial,
                    account: next.account,
                }));
            }
        }
    }
    leased
}

impl Store {
    /// Marks a job to run unbatched (or lifts that): companion leasing skips it.
    pub async fn set_run_alone(&self, id: &str, run_alone: bool) -> Result<(), StoreError> {
        let (b, id) = (self.backend, id.to_owned());
        let updated = self
            .write(move |tx| {
                Box::pin(async move {
                    let done = sqlx::query(&b.sql("UPDATE jobs SET run_alone = ? WHERE id = ?"))
                        .bind(i64::from(run_alone))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound("job"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (account, running, last_served, [(class, queued)])
    type Entry<'a> = (&'a str, i64, i64, &'a [(i64, i64)]);

    fn queue(entries: &[Entry<'_>]) -> (Standings, Classes) {
        let mut standing = Standings::new();
        let mut classes = Classes::new();
        for &(id, running, served, queued) in entries {
            standing.insert(id.to_string(), (running, served));
            for &(class, n) in queued {
                classes.entry(class).or_default().push((id.to_string(), n));
            }
        }
        (standing, classes)
    }

    #[test]
    fn an_idle_account_goes_before_a_busy_one() {
        let (s, c) = queue(&[("a", 1, 5, &[(1, 200)]), ("b", 0, 0, &[(1, 1)])]);
        assert_eq!(replay_leases(s.clone(), &c, "b", 1, 0), 0);
        // a's first job waits for b's one; later ones too, once.
        assert_eq!(replay_leases(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(replay_leases(s, &c, "a", 1, 10), 11);
    }

    #[test]
    fn equal_accounts_alternate_least_recently_served_first() {
        let (s, c) = queue(&[("a", 0, 7, &[(1, 3)]), ("b", 0, 2, &[(1, 3)])]);
        assert_eq!(replay_leases(s.clone(), &c, "b", 1, 0), 0);
        assert_eq!(replay_leases(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(replay_leases(s.clone(), &c, "b", 1, 1), 2);
        assert_eq!(replay_leases(s, &c, "a", 1, 2), 5);
    }

    #[test]
    fn higher_classes_go_first_and_count_as_running_after() {
        // b's HIGH job runs first, so in NORMAL b already runs one: a goes first.
        let (s, c) = queue(&[("a", 0, 1, &[(1, 2)]), ("b", 0, 0, &[(2, 1), (1, 2)])]);
        assert_eq!(replay_leases(s.clone(), &c, "b", 2, 0), 0);
        assert_eq!(replay_leases(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(replay_leases(s, &c, "b", 1, 0), 2);
    }
}
