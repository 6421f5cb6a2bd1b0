//! The queue's order (issue 5): priority classes, per-account fair share within a
//! class, placement filters, batch companions, queue positions and queue bounds.
//!
//! Order: the highest class with a queued job first; within it, the account with the
//! fewest RUNNING jobs, ties to the account served least recently (`last_served`,
//! then account id), then that account's oldest job (`seq`) of the class.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use kinema_ledger::Credits;
use sqlx::AnyConnection;

use crate::db::placeholders;
use crate::locks::Queued;
use crate::tx::Tx;
use crate::{Job, JobBilling, JobState, NotFound, Store, StoreError};

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

    /// The filter's SQL, its values bound from placeholder `$first` on, in the order
    /// of [`Pick::binds`]; it may appear several times in one statement.
    fn sql(&self, first: usize) -> String {
        let mut sql = String::new();
        let mut next = first;
        if let Some(models) = self.models {
            sql.push_str(&format!(
                " AND model IN ({})",
                placeholders(next, models.len())
            ));
            next += models.len();
        }
        if self.batch_key.is_some() {
            sql.push_str(&format!(" AND batch_key = ${next} AND run_alone = 0"));
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
    tx: &mut Tx<'_>,
    pick: Pick<'_>,
    skip_locked: bool,
) -> Result<Option<(String, i64)>, StoreError> {
    let filter = pick.sql(1);
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
        tx.backend.for_update_of_account(skip_locked)
    );
    let mut query = sqlx::query_as(&sql);
    for v in pick.binds() {
        query = query.bind(v);
    }
    Ok(query.fetch_optional(tx.conn()).await?)
}

/// The head of an account's queue, as a lease reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Head {
    pub id: String,
    pub account_id: String,
    pub quoted: Credits,
    pub debited: Credits,
    #[sqlx(try_from = "String")]
    pub billing: JobBilling,
}

/// The account's oldest queued job of the class, row-locked. Called with the account
/// locked; on PostgreSQL a row another transaction holds is skipped, not waited for.
pub(crate) async fn head_job(
    tx: &mut Tx<'_>,
    account_id: &str,
    priority: i64,
    pick: Pick<'_>,
) -> Result<Option<Head>, StoreError> {
    // MIN(seq) rather than ORDER BY seq LIMIT 1: PostgreSQL would walk the primary key
    // in seq order for an account with many finished jobs (measured: 200 ms at 100k).
    let sql = format!(
        "SELECT id, account_id, quoted, debited, billing FROM jobs WHERE state = 'QUEUED' \
         AND seq = (SELECT MIN(seq) FROM jobs WHERE state = 'QUEUED' AND account_id = $1 \
         AND priority = $2{}){}",
        pick.sql(3),
        tx.backend.for_update_skip_locked()
    );
    let mut query = sqlx::query_as(&sql).bind(account_id).bind(priority);
    for v in pick.binds() {
        query = query.bind(v);
    }
    Ok(query.fetch_optional(tx.conn()).await?)
}

/// Records that the account was just served (its job leased).
pub(crate) async fn mark_served(tx: &mut Tx<'_>, account_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE accounts SET last_served = \
         (SELECT COALESCE(MAX(last_served), 0) + 1 FROM accounts) WHERE id = $1",
    )
    .bind(account_id)
    .execute(tx.conn())
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

/// Sets `queue_position` on each queued job of `jobs`: how many queued jobs will be
/// leased before it, assuming nothing finishes, nothing else is submitted, and every
/// device takes every model. Under those assumptions it is exact (the leases are
/// replayed, account by account, in the order `next_account` takes them); jobs
/// finishing, new submissions of a higher class or of accounts with fewer running
/// jobs, placement filters and batch companions move it. It reads the whole queue
/// once however many jobs it places (a page of `ListJobs`), and is not for write
/// transactions: the scan would hold up every other writer.
pub(crate) async fn set_queue_positions(
    conn: &mut AnyConnection,
    jobs: &mut [Job],
) -> Result<(), StoreError> {
    let queued: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].state == JobState::Queued)
        .collect();
    let Some(lowest) = queued.iter().map(|&i| jobs[i].priority.rank()).min() else {
        return Ok(());
    };
    // Each account's queued jobs per class from the lowest class asked about up, and
    // its running jobs and last service.
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT q.account_id, q.priority, q.n, a.last_served, COALESCE(r.n, 0) FROM \
         (SELECT account_id, priority, COUNT(*) AS n FROM jobs \
          WHERE state = 'QUEUED' AND priority >= $1 GROUP BY account_id, priority) q \
         JOIN accounts a ON a.id = q.account_id \
         LEFT JOIN (SELECT account_id, COUNT(*) AS n FROM jobs WHERE state = 'RUNNING' \
          GROUP BY account_id) r ON r.account_id = q.account_id",
    )
    .bind(lowest)
    .fetch_all(&mut *conn)
    .await?;
    let ahead = own_jobs_ahead(conn, queued.iter().map(|&i| &jobs[i])).await?;
    let mut standing = Standings::new();
    let mut classes = Classes::new();
    for (account, priority, queued, last_served, running) in rows {
        standing.insert(account.clone(), (running, last_served));
        classes.entry(priority).or_default().push((account, queued));
    }
    // One replay per account and class asked about, for all its jobs at once.
    let mut wanted: BTreeMap<(String, i64), BTreeSet<i64>> = BTreeMap::new();
    for &i in &queued {
        let own = ahead.get(&jobs[i].id).copied().unwrap_or(0);
        wanted
            .entry((jobs[i].account_id.clone(), jobs[i].priority.rank()))
            .or_default()
            .insert(own);
    }
    let mut places: HashMap<(String, i64), BTreeMap<i64, i64>> = HashMap::new();
    for ((account, class), own) in wanted {
        let found = replay_leases(standing.clone(), &classes, &account, class, &own);
        places.insert((account, class), found);
    }
    for &i in &queued {
        let job = &mut jobs[i];
        let own = ahead.get(&job.id).copied().unwrap_or(0);
        let place = places
            .get(&(job.account_id.clone(), job.priority.rank()))
            .and_then(|p| p.get(&own))
            .copied()
            .unwrap_or(0);
        job.queue_position = Some(u32::try_from(place).unwrap_or(u32::MAX));
    }
    Ok(())
}

/// For each job, how many queued jobs of its own account and class are older.
async fn own_jobs_ahead<'a>(
    conn: &mut AnyConnection,
    jobs: impl Iterator<Item = &'a Job>,
) -> Result<HashMap<String, i64>, StoreError> {
    let ids: Vec<&str> = jobs.map(|j| j.id.as_str()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT j.id, CAST((SELECT COUNT(*) FROM jobs o WHERE o.state = 'QUEUED' \
         AND o.account_id = j.account_id AND o.priority = j.priority AND o.seq < j.seq) \
         AS BIGINT) FROM jobs j WHERE j.id IN ({})",
        placeholders(1, ids.len())
    );
    let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
    for id in ids {
        q = q.bind(id);
    }
    Ok(q.fetch_all(&mut *conn).await?.into_iter().collect())
}

/// Replays leases from the highest class down: each takes the account with the fewest
/// running jobs, least recently served, which then runs one more and was served last.
/// For each count in `own_ahead` (of `account`'s jobs of `class` before a job), how
/// many leases come before that job.
fn replay_leases(
    mut standing: Standings,
    classes: &Classes,
    account: &str,
    class: i64,
    own_ahead: &BTreeSet<i64>,
) -> BTreeMap<i64, i64> {
    let mut found = BTreeMap::new();
    let mut targets = own_ahead.iter().copied().peekable();
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
                while targets.next_if_eq(&own_served).is_some() {
                    found.insert(own_served, leased);
                }
                if targets.peek().is_none() {
                    return found;
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
    // Jobs the replay never reached (the queue moved between the two reads) go last.
    for t in targets {
        found.insert(t, leased);
    }
    found
}

impl Store {
    /// Marks a job to run unbatched (or lifts that): companion leasing skips it.
    pub async fn set_run_alone(&self, id: &str, run_alone: bool) -> Result<(), StoreError> {
        let id = id.to_owned();
        let updated = self
            .write(move |mut tx| {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE jobs SET run_alone = $1 WHERE id = $2")
                        .bind(i64::from(run_alone))
                        .bind(id)
                        .execute(tx.conn())
                        .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound(NotFound::Job));
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

    /// Leases before `account`'s job with `own` of its own jobs of `class` ahead.
    fn place(s: Standings, c: &Classes, account: &str, class: i64, own: i64) -> i64 {
        replay_leases(s, c, account, class, &BTreeSet::from([own]))[&own]
    }

    #[test]
    fn one_replay_places_many_jobs_of_an_account() {
        let (s, c) = queue(&[("a", 0, 7, &[(1, 3)]), ("b", 0, 2, &[(1, 3)])]);
        let all = replay_leases(s.clone(), &c, "a", 1, &BTreeSet::from([0, 1, 2]));
        for own in 0..3 {
            assert_eq!(all[&own], place(s.clone(), &c, "a", 1, own), "own {own}");
        }
        assert_eq!(all.values().copied().collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn an_idle_account_goes_before_a_busy_one() {
        let (s, c) = queue(&[("a", 1, 5, &[(1, 200)]), ("b", 0, 0, &[(1, 1)])]);
        assert_eq!(place(s.clone(), &c, "b", 1, 0), 0);
        // a's first job waits for b's one; later ones too, once.
        assert_eq!(place(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(place(s, &c, "a", 1, 10), 11);
    }

    #[test]
    fn equal_accounts_alternate_least_recently_served_first() {
        let (s, c) = queue(&[("a", 0, 7, &[(1, 3)]), ("b", 0, 2, &[(1, 3)])]);
        assert_eq!(place(s.clone(), &c, "b", 1, 0), 0);
        assert_eq!(place(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(place(s.clone(), &c, "b", 1, 1), 2);
        assert_eq!(place(s, &c, "a", 1, 2), 5);
    }

    #[test]
    fn higher_classes_go_first_and_count_as_running_after() {
        // b's HIGH job runs first, so in NORMAL b already runs one: a goes first.
        let (s, c) = queue(&[("a", 0, 1, &[(1, 2)]), ("b", 0, 0, &[(2, 1), (1, 2)])]);
        assert_eq!(place(s.clone(), &c, "b", 2, 0), 0);
        assert_eq!(place(s.clone(), &c, "a", 1, 0), 1);
        assert_eq!(place(s, &c, "b", 1, 0), 2);
    }
}
