use kinema_ledger::{PostpaidAccount, PostpaidStatus, UnixMillis};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::db::{new_id, Backend};
use crate::{Account, AccountStatus, AccountView, BillingMode, Store, StoreError};

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
    /// usage price's currency, starting at zero (`Postpaid`, CONTRACT.md §4).
    pub async fn create_account_with(
        &self,
        name: &str,
        external_id: Option<&str>,
        billing: BillingMode,
        now: UnixMillis,
    ) -> Result<Account, StoreError> {
        let b = self.backend;
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
        let this = self.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let inserted = sqlx::query(&b.sql(
                    "INSERT INTO accounts (id, name, external_id, status, billing, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
                ))
                .bind(&account.id)
                .bind(&account.name)
                .bind(&account.external_id)
                .bind(account.status.as_str())
                .bind(billing.as_str())
                .bind(now)
                .execute(&mut *tx)
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
                    let balance = kinema_ledger::Money::zero(this.policy.usage_price.currency);
                    crate::postpaid::insert_postpaid(
                        &mut *tx,
                        b,
                        &account.id,
                        &PostpaidAccount::new(balance),
                        now,
                    )
                    .await?;
                }
                Ok(account)
            })
        })
        .await
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

    /// The account as of `now`: a postpaid account past its grace is suspended (or
    /// past its suspension limit terminated) by the clock, before the sweeper writes it.
    pub async fn account_view(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<AccountView>, StoreError> {
        let b = self.backend;
        let mut conn = self.read.acquire().await?;
        let Some(row) = sqlx::query(&b.sql("SELECT * FROM accounts WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let account = account_from_row(&row)?;
        let postpaid = match crate::postpaid::load_postpaid(&mut conn, b, id).await? {
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
        let trial = crate::purchases::load_trial(&mut conn, b, id).await?;
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
    b: Backend,
    id: &str,
) -> Result<Account, StoreError> {
    let row = sqlx::query(&b.sql("SELECT * FROM accounts WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("account"))?;
    account_from_row(&row)
}

fn account_from_row(r: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        external_id: r.try_get("external_id")?,
        status: r.try_get::<String, _>("status")?.parse()?,
        billing: r.try_get::<String, _>("billing")?.parse()?,
        status_reason: r.try_get("status_reason")?,
        status_changed_at: r.try_get("status_changed_at")?,
        created_at: r.try_get("created_at")?,
    })
}
