//! The physical limit a ledger benchmark is measured against: one-row durable
//! transactions on this database (`kinema bench ledger`).

use std::time::{Duration, Instant};

use crate::{Store, StoreError};

impl Store {
    /// Commits `n` one-row transactions one after another (each BEGIN, INSERT,
    /// COMMIT, durable as every store transaction is, through the same writer) in a
    /// scratch table, and returns how long they took. For benchmarks only: it writes
    /// to `bench_raw`.
    pub async fn bench_raw_commits(&self, n: u32) -> Result<Duration, StoreError> {
        let b = self.backend;
        let base: i64 = self
            .write(|tx| {
                Box::pin(async move {
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS bench_raw \
                         (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)",
                    )
                    .execute(&mut *tx)
                    .await?;
                    Ok(sqlx::query_scalar(
                        "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM bench_raw",
                    )
                    .fetch_one(&mut *tx)
                    .await?)
                })
            })
            .await?;
        let sql = b
            .sql("INSERT INTO bench_raw (id, v) VALUES (?, ?)")
            .into_owned();
        let start = Instant::now();
        for i in 1..=i64::from(n) {
            let sql = sql.clone();
            self.write(move |tx| {
                Box::pin(async move {
                    sqlx::query(&sql)
                        .bind(base + i)
                        .bind(i)
                        .execute(&mut *tx)
                        .await?;
                    Ok(())
                })
            })
            .await?;
        }
        Ok(start.elapsed())
    }
}
