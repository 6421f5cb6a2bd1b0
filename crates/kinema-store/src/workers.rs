//! Remote worker nodes as every replica sees them: each device's last report (its
//! status, opaque to the store), and the drain an operator asked for.

use kinema_ledger::UnixMillis;

use crate::{Store, StoreError};

/// One device of a remote worker node, as it last reported.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RemoteWorker {
    /// The lease owner its jobs carry.
    pub owner: String,
    /// The worker key it authenticated with.
    pub key_id: String,
    pub node: String,
    /// What it reported, as the server encoded it (opaque to the store).
    pub status: String,
    pub seen_at: UnixMillis,
    pub drain_requested_at: Option<UnixMillis>,
}

impl Store {
    /// Records a device's report; returns whether a drain was asked for it.
    pub async fn report_worker(
        &self,
        owner: &str,
        key_id: &str,
        node: &str,
        status: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (owner, key_id, node, status) = (
            owner.to_owned(),
            key_id.to_owned(),
            node.to_owned(),
            status.to_owned(),
        );
        self.write(move |mut tx| {
            Box::pin(async move {
                let drain: Option<Option<UnixMillis>> = sqlx::query_scalar(
                    "INSERT INTO workers (owner, key_id, node, status, seen_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner) DO UPDATE SET \
                     key_id = excluded.key_id, node = excluded.node, status = excluded.status, \
                     seen_at = excluded.seen_at RETURNING drain_requested_at",
                )
                .bind(owner)
                .bind(key_id)
                .bind(node)
                .bind(status)
                .bind(now)
                .fetch_optional(tx.conn())
                .await?;
                Ok(drain.flatten().is_some())
            })
        })
        .await
    }

    /// The devices that reported at or after `since`, by owner.
    pub async fn remote_workers(&self, since: UnixMillis) -> Result<Vec<RemoteWorker>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM workers WHERE seen_at >= $1 ORDER BY owner")
                .bind(since)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Asks a remote device to stop leasing (it hears it at its next report). False
    /// when no device has that owner.
    pub async fn request_worker_drain(
        &self,
        owner: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.write(move |mut tx| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE workers SET drain_requested_at = COALESCE(drain_requested_at, $1) \
                     WHERE owner = $2",
                )
                .bind(now)
                .bind(owner)
                .execute(tx.conn())
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }
}
