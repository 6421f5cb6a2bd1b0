//! One write transaction: the connection it runs on, with what the store's rules
//! need (the backend's dialect, the operator's money policy), and how the store runs
//! one.
//!
//! A public store method takes its arguments by reference, turns the ones the
//! transaction needs into owned values, and hands the transaction's body to
//! [`Store::write`]; the body's logic lives in functions that take `&mut Tx`, so the
//! state change and its money effect are written on the same connection and commit
//! together.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::AnyConnection;

use crate::db::{Backend, StorePolicy, Writer};
use crate::writer::Body;
use crate::{Store, StoreError};

pub(crate) struct Tx<'c> {
    conn: &'c mut AnyConnection,
    pub backend: Backend,
    pub policy: Arc<StorePolicy>,
}

impl Tx<'_> {
    /// The transaction's connection, for a statement.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn
    }

    /// `FOR UPDATE` on PostgreSQL, nothing on SQLite (one writer).
    pub fn for_update(&self) -> &'static str {
        self.backend.for_update()
    }
}

impl Store {
    /// Runs `body` as one write transaction: committed (durably) if it returns `Ok`,
    /// rolled back, with nothing it wrote kept, if it returns an error.
    pub(crate) async fn write<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let (backend, policy) = (self.backend, self.policy.clone());
        let body: Body<T> = Box::new(move |conn| {
            body(Tx {
                conn,
                backend,
                policy,
            })
        });
        match &self.writer {
            Writer::Sqlite(writer) => writer.run(body).await,
            Writer::Pool(pool) => {
                let mut tx = pool.begin().await?;
                let value = body(&mut tx).await?;
                tx.commit().await?;
                Ok(value)
            }
        }
    }
}
