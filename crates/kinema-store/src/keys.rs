use crate::db::new_id;
use crate::tx::Tx;
use crate::{ApiKey, NotFound, Role, Store, StoreError};
use kinema_ledger::UnixMillis;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Secrets are 32 random bytes; only their SHA-256 is stored. A fast hash is right
/// here: the secret has full entropy, so there is nothing to brute-force.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new key and its secret (not yet stored).
pub(crate) fn new_key(
    role: Role,
    account_id: Option<&str>,
    member_id: Option<&str>,
    name: &str,
    now: UnixMillis,
) -> (ApiKey, String) {
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
        member_id: member_id.map(str::to_string),
    };
    (key, secret)
}

/// Stores `key` with the hash of its secret.
pub(crate) async fn insert_key(
    tx: &mut Tx<'_>,
    key: &ApiKey,
    secret_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, role, account_id, name, prefix, secret_hash, created_at, \
         member_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(key.role.as_str())
    .bind(&key.account_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(secret_hash)
    .bind(key.created_at)
    .bind(&key.member_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Stores a new key and returns it with its secret.
pub(crate) async fn create_key_in(
    tx: &mut Tx<'_>,
    role: Role,
    account_id: Option<&str>,
    member_id: Option<&str>,
    name: &str,
    now: UnixMillis,
) -> Result<(ApiKey, String), StoreError> {
    let (key, secret) = new_key(role, account_id, member_id, name, now);
    insert_key(tx, &key, &hash_secret(&secret)).await?;
    Ok((key, secret))
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
                .ok_or(StoreError::NotFound(NotFound::Account))?;
        }
        let (key, secret) = new_key(role, account_id, None, name, now);
        let (row_key, secret_hash) = (key.clone(), hash_secret(&secret));
        self.write(move |mut tx| {
            Box::pin(async move { insert_key(&mut tx, &row_key, &secret_hash).await })
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
        let key: Option<ApiKey> =
            sqlx::query_as("SELECT * FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL")
                .bind(hash_secret(secret))
                .fetch_optional(&self.read)
                .await?;
        let Some(mut key) = key else { return Ok(None) };
        // Recording last use costs a write; once a minute per key is enough.
        if key.last_used_at.is_none_or(|t| now - t >= 60_000) {
            let id = key.id.clone();
            self.write(move |mut tx| {
                Box::pin(async move {
                    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(id)
                        .execute(tx.conn())
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
        Ok(sqlx::query_as(
            "SELECT * FROM api_keys WHERE ($1 = '' OR account_id = $1) ORDER BY created_at, id",
        )
        .bind(account_id.unwrap_or(""))
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn revoke_api_key(
        &self,
        key_id: &str,
        now: UnixMillis,
    ) -> Result<ApiKey, StoreError> {
        let key_id = key_id.to_owned();
        self.write(move |mut tx| {
            Box::pin(async move {
                sqlx::query_as(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
                     RETURNING *",
                )
                .bind(now)
                .bind(key_id)
                .fetch_optional(tx.conn())
                .await?
                .ok_or(StoreError::NotFound(NotFound::ApiKey))
            })
        })
        .await
    }

    pub async fn count_live_keys(&self, role: Role) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE role = $1 AND revoked_at IS NULL",
        )
        .bind(role.as_str())
        .fetch_one(&self.read)
        .await?)
    }
}
