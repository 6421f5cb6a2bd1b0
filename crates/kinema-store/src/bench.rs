//! The physical limit a ledger benchmark is measured against: one-row durable
//! transactions on this database (`kinema bench ledger`).

use std::time::{Duration, Instant};

use crate::{Store, StoreError};

impl Store {
    /// Commits `n` one-row transactions one after another (each BEGIN, INSERT,
    /// COMMIT, durable as every store transaction is, through the same writer) in a
    /// scratch table of its own, dropped afterwards, and returns how long they took.
    /// For benchmarks, on a scratch database.
    pub async fn bench_raw_commits(&self, n: u32) -> Result<Duration, StoreError> {
        let table = format!("bench_raw_{}", uuid::Uuid::new_v4().simple());
        let create = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)");
        self.write(move |mut tx| {
            Box::pin(async move {
                sqlx::query(&create).execute(tx.conn()).await?;
                Ok(())
            })
        })
        .await?;
        let insert = format!("INSERT INTO {table} (id, v) VALUES ($1, $2)");
        let start = Instant::now();
        let mut result = Ok(());
        for i in 1..=i64::from(n) {
            let insert = insert.clone();
            result = self
                .write(move |mut tx| {
                    Box::pin(async move {
                        sqlx::query(&insert)
                            .bind(i)
                            .bind(i)
                            .execute(tx.conn())
                            .await?;
                        Ok(())
                    })
                })
                .await;
            if result.is_err() {
                break;
            }
        }
        let elapsed = start.elapsed();
        let drop = format!("DROP TABLE {table}");
        self.write(move |mut tx| {
            Box::pin(async move {
                sqlx::query(&drop).execute(tx.conn()).await?;
                Ok(())
            })
        })
        .await?;
        result.map(|()| elapsed)
    }
}
