use kinema_ledger::UnixMillis;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::new_id;
use crate::{Account, Store, StoreError};

impl Store {
    pub async fn create_account(
        &self,
        name: &str,
        external_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Account, StoreError> {
        let account = Account {
            id: new_id("acct"),
            name: name.to_string(),
            external_id: external_id.map(str::to_string),
            status: crate::AccountStatus::Active,
            created_at: now,
        };
        let inserted = sqlx::query(&self.backend.sql(
            "INSERT INTO accounts (id, name, external_id, status, created_at) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(&account.id)
        .bind(&account.name)
        .bind(&account.external_id)
        .bind(account.status.as_str())
        .bind(now)
        .execute(&self.write)
        .await;
        match inserted {
            Ok(_) => Ok(account),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Invalid(
                "external_id is already used by another account".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        sqlx::query(&self.backend.sql("SELECT * FROM accounts WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(|r| account_from_row(&r))
            .transpose()
    }

    pub async fn find_account_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Account>, StoreError> {
        sqlx::query(
            &self
                .backend
                .sql("SELECT * FROM accounts WHERE external_id = ?"),
        )
        .bind(external_id)
        .fetch_optional(&self.read)
        .await?
        .map(|r| account_from_row(&r))
        .transpose()
    }
}

fn account_from_row(r: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        external_id: r.try_get("external_id")?,
        status: r.try_get::<String, _>("status")?.parse()?,
        created_at: r.try_get("created_at")?,
    })
}
