use kinema_ledger::{PostpaidAccount, PostpaidStatus, UnixMillis};
use sqlx::AnyConnection;

use crate::db::new_id;
use crate::{Account, AccountStatus, AccountView, BillingMode, NotFound, Store, StoreError};

impl Store {
    /// A prepaid account (credit lots).
    pub async fn create_account(
        &self,
        name: &str,
        external_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Account, StoreError> {
        self.create_account_with(name, external_id, BillingMode::Prepaid, now)
            .await
    }

    /// An account billed by credit lots (`Prepaid`) or by a money balance in the
    /// usage price's currency, starting at zero (`Postpaid`, docs/api.md, "Postpaid accounts").
    pub async fn create_account_with(
        &self,
        name: &str,
        external_id: Option<&str>,
        billing: BillingMode,
        now: UnixMillis,
    ) -> Result<Account, StoreError> {
        let account = Account {
            id: new_id("acct"),
            name: name.to_string(),
            external_id: external_id.map(str::to_string),
            status: AccountStatus::Active,
            billing,
            status_reason: String::new(),
            status_changed_at: None,
            created_at: now,
        };
        self.write(move |mut tx| {
            Box::pin(async move {
                let inserted = sqlx::query(
                    "INSERT INTO accounts (id, name, external_id, status, billing, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&account.id)
                .bind(&account.name)
                .bind(&account.external_id)
                .bind(account.status.as_str())
                .bind(billing.as_str())
                .bind(now)
                .execute(tx.conn())
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Err(StoreError::Invalid(
                            "external_id is already used by another account".into(),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
                if billing == BillingMode::Postpaid {
                    let balance = kinema_ledger::Money::zero(tx.policy.usage_price.currency);
                    let postpaid = PostpaidAccount::new(balance);
                    crate::postpaid::insert_postpaid(&mut tx, &account.id, &postpaid, now).await?;
                }
                Ok(account)
            })
        })
        .await
    }

    /// Accounts in the order they were created, those after `after` (the last one of
    /// the previous page: its `created_at` and id), at most `limit`.
    pub async fn list_accounts(
        &self,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<Account>, StoreError> {
        let (created_at, id) = after.unwrap_or((i64::MIN, ""));
        Ok(sqlx::query_as(
            "SELECT * FROM accounts WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(created_at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn find_account_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Account>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM accounts WHERE external_id = $1")
                .bind(external_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// The account as of `now`: a postpaid account past its grace is suspended (or
    /// past its suspension limit terminated) by the clock, before the sweeper writes it.
    pub async fn account_view(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<AccountView>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let account: Option<Account> = sqlx::query_as("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(account) = account else {
            return Ok(None);
        };
        let postpaid = match crate::postpaid::load_postpaid(&mut conn, id).await? {
            Some(pp) => {
                let status = kinema_ledger::postpaid_status(&pp, &self.policy.postpaid, now);
                Some((pp, status))
            }
            None => None,
        };
        let status = match (account.status, postpaid.as_ref().map(|p| p.1)) {
            (AccountStatus::Active, Some(PostpaidStatus::Suspended { .. })) => {
                AccountStatus::Suspended
            }
            (AccountStatus::Active, Some(PostpaidStatus::Terminated { .. })) => {
                AccountStatus::Terminated
            }
            (s, _) => s,
        };
        let trial = crate::purchases::load_trial(&mut conn, id).await?;
        Ok(Some(AccountView {
            account,
            status,
            postpaid,
            trial,
        }))
    }
}

pub(crate) async fn load_account(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Account, StoreError> {
    sqlx::query_as("SELECT * FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound(NotFound::Account))
}
