use kinema_ledger::UnixMillis;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::new_id;
use crate::{ApiKey, Role, Store, StoreError};

/// Secrets are 32 random bytes; only their SHA-256 is stored. A fast hash is right
/// here: the secret has full entropy, so there is nothing to brute-force.
fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Creates a key and returns it with its secret, which is not stored anywhere.
    pub async fn create_api_key(
        &self,
        role: Role,
        account_id: Option<&str>,
        name: &str,
        now: UnixMillis,
    ) -> Result<(ApiKey, String), StoreError> {
        if (role == Role::Account) != account_id.is_some() {
            return Err(StoreError::Invalid(
                "account keys need an account_id; admin and platform keys take none".into(),
            ));
        }
        if let Some(id) = account_id {
            self.get_account(id)
                .await?
                .ok_or(StoreError::NotFound("account"))?;
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = format!("kin_{}", hex::encode(raw));
        let key = ApiKey {
            id: new_id("key"),
            role,
            account_id: account_id.map(str::to_string),
            name: name.to_string(),
            prefix: secret[..12].to_string(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let b = self.backend;
        let (row_key, secret_hash) = (key.clone(), hash_secret(&secret));
        self.write(move |tx| {
            Box::pin(async move {
                sqlx::query(&b.sql(
                    "INSERT INTO api_keys (id, role, account_id, name, prefix, secret_hash, \
                     created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&row_key.id)
                .bind(role.as_str())
                .bind(&row_key.account_id)
                .bind(&row_key.name)
                .bind(&row_key.prefix)
                .bind(secret_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok((key, secret))
    }

    /// The live key for a bearer secret, recording its use; `None` for an unknown or
    /// revoked secret.
    pub async fn authenticate(
        &self,
        secret: &str,
        now: UnixMillis,
    ) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            &self
                .backend
                .sql("SELECT * FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL"),
        )
        .bind(hash_secret(secret))
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut key = key_from_row(&row)?;
        // Recording last use costs a write; once a minute per key is enough.
        if key.last_used_at.is_none_or(|t| now - t >= 60_000) {
            let (b, id) = (self.backend, key.id.clone());
            self.write(move |tx| {
                Box::pin(async move {
                    sqlx::query(&b.sql("UPDATE api_keys SET last_used_at = ? WHERE id = ?"))
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Ok(())
                })
            })
            .await?;
            key.last_used_at = Some(now);
        }
        Ok(Some(key))
    }

    pub async fn list_api_keys(&self, account_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let rows = match account_id {
            Some(id) => {
                sqlx::query(
                    &self
                        .backend
                        .sql("SELECT * FROM api_keys WHERE account_id = ? ORDER BY created_at, id"),
                )
                .bind(id)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(
                    &self
                        .backend
                        .sql("SELECT * FROM api_keys ORDER BY created_at, id"),
                )
                .fetch_all(&self.read)
                .await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    pub async fn revoke_api_key(
        &self,
        key_id: &str,
        now: UnixMillis,
    ) -> Result<ApiKey, StoreError> {
        let (b, key_id) = (self.backend, key_id.to_owned());
        let row = self
            .write(move |tx| {
                Box::pin(async move {
                    sqlx::query(&b.sql(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
                         RETURNING *",
                    ))
                    .bind(now)
                    .bind(key_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound("api key"))
                })
            })
            .await?;
        key_from_row(&row)
    }

    pub async fn count_live_keys(&self, role: Role) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            &self
                .backend
                .sql("SELECT COUNT(*) FROM api_keys WHERE role = ? AND revoked_at IS NULL"),
        )
        .bind(role.as_str())
        .fetch_one(&self.read)
        .await?)
    }
}

fn key_from_row(r: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        role: r.try_get::<String, _>("role")?.parse()?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}
