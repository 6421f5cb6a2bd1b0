//! Organisations and seats (docs/api.md, "Organisations and seats"): an account's
//! members, each with a role and its own keys, up to the seats the account has. A
//! member is added with its first key in one transaction, under the account's lock,
//! so two additions racing for the last seat cannot both win; removing one revokes
//! its keys in the same transaction.

use kinema_ledger::{seats_in_force, tick_subscriptions, Catalogue, UnixMillis};
use sqlx::AnyConnection;

use crate::catalog::catalogue_in;
use crate::db::new_id;
use crate::keys::create_key_in;
use crate::locks::lock_account;
use crate::subscriptions::{load_subscriptions, tick_locked};
use crate::tx::Tx;
use crate::{ApiKey, MemberRole, NotFound, Role, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub id: String,
    pub account_id: String,
    #[sqlx(try_from = "String")]
    pub role: MemberRole,
    pub name: String,
    pub created_at: UnixMillis,
    pub removed_at: Option<UnixMillis>,
}

/// How many seats an account has and how many its members take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    pub seats: u32,
    pub used: u32,
}

/// Where an account's seats come from: its plan in the catalogue, else `without_plan`.
#[derive(Debug, Clone)]
pub struct SeatRule {
    pub catalogue: Catalogue,
    pub without_plan: u32,
}

/// A member added, with its first key and that key's secret (shown once).
#[derive(Debug, Clone)]
pub struct MemberAdded {
    pub member: Member,
    pub key: ApiKey,
    pub secret: String,
    pub seats: Seats,
}

async fn members_in(conn: &mut AnyConnection, account_id: &str) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM members WHERE account_id = $1 AND removed_at IS NULL",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u32::try_from(n)?)
}

/// The live member `member_id` of `account_id`, else `NotFound::Member`.
async fn live_member(
    conn: &mut AnyConnection,
    account_id: &str,
    member_id: &str,
) -> Result<Member, StoreError> {
    sqlx::query_as("SELECT * FROM members WHERE id = $1 AND account_id = $2 AND removed_at IS NULL")
        .bind(member_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound(NotFound::Member))
}

/// Refuses to take the owner role from the account's last owner.
async fn keep_an_owner(tx: &mut Tx<'_>, member: &Member) -> Result<(), StoreError> {
    if member.role != MemberRole::Owner {
        return Ok(());
    }
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM members WHERE account_id = $1 AND role = 'owner' \
         AND removed_at IS NULL",
    )
    .bind(&member.account_id)
    .fetch_one(tx.conn())
    .await?;
    if owners <= 1 {
        return Err(StoreError::LastOwner {
            member_id: member.id.clone(),
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid(
            "a member's name must not be empty".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Adds a member with `role` and its first key, refused with `SeatsExhausted` (and
    /// nothing written) when every seat is taken. The account's plans are caught up
    /// first, so a plan that has just ended no longer counts.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_member(
        &self,
        rule: &SeatRule,
        account_id: &str,
        role: MemberRole,
        name: &str,
        key_name: &str,
        now: UnixMillis,
    ) -> Result<MemberAdded, StoreError> {
        check_name(name)?;
        let rule = rule.clone();
        let (account_id, name, key_name) =
            (account_id.to_owned(), name.to_owned(), key_name.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                lock_account(tx, &account_id).await?.require_open()?;
                let change = tick_locked(tx, &rule.catalogue, &account_id, now).await?;
                let cat = catalogue_in(tx.conn(), &rule.catalogue).await?;
                let seats = seats_in_force(&change.state, &cat, rule.without_plan, now);
                let used = members_in(tx.conn(), &account_id).await?;
                if used >= seats {
                    return Err(StoreError::SeatsExhausted {
                        seats,
                        members: used,
                    });
                }
                let member = Member {
                    id: new_id("mem"),
                    account_id: account_id.clone(),
                    role,
                    name,
                    created_at: now,
                    removed_at: None,
                };
                sqlx::query(
                    "INSERT INTO members (id, account_id, role, name, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&member.id)
                .bind(&member.account_id)
                .bind(member.role.as_str())
                .bind(&member.name)
                .bind(now)
                .execute(tx.conn())
                .await?;
                let (key, secret) = create_key_in(
                    tx,
                    Role::Account,
                    Some(&account_id),
                    Some(&member.id),
                    &key_name,
                    now,
                )
                .await?;
                Ok(MemberAdded {
                    member,
                    key,
                    secret,
                    seats: Seats {
                        seats,
                        used: used + 1,
                    },
                })
            })
        })
        .await
    }

    /// The account's members, oldest first; removed ones too when asked.
    pub async fn list_members(
        &self,
        account_id: &str,
        include_removed: bool,
    ) -> Result<Vec<Member>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM members WHERE account_id = $1 AND ($2 = 1 OR removed_at IS NULL) \
             ORDER BY created_at, id",
        )
        .bind(account_id)
        .bind(i64::from(include_removed))
        .fetch_all(&self.read)
        .await?)
    }

    /// The member, removed or not.
    pub async fn get_member(&self, member_id: &str) -> Result<Option<Member>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// The account's seats at `now` and how many are taken (its plans caught up in
    /// memory: nothing is written).
    pub async fn seats(
        &self,
        rule: &SeatRule,
        account_id: &str,
        now: UnixMillis,
    ) -> Result<Seats, StoreError> {
        let mut conn = self.read.acquire().await?;
        let cat = catalogue_in(&mut conn, &rule.catalogue).await?;
        let state = load_subscriptions(&mut conn, account_id).await?;
        let state = tick_subscriptions(&state, &cat, now).state;
        Ok(Seats {
            seats: seats_in_force(&state, &cat, rule.without_plan, now),
            used: members_in(&mut conn, account_id).await?,
        })
    }

    /// Gives a live member another role; the last owner keeps its own (`LastOwner`).
    pub async fn set_member_role(
        &self,
        account_id: &str,
        member_id: &str,
        role: MemberRole,
    ) -> Result<Member, StoreError> {
        let (account_id, member_id) = (account_id.to_owned(), member_id.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                lock_account(tx, &account_id).await?;
                let member = live_member(tx.conn(), &account_id, &member_id).await?;
                if role != MemberRole::Owner {
                    keep_an_owner(tx, &member).await?;
                }
                sqlx::query("UPDATE members SET role = $1 WHERE id = $2")
                    .bind(role.as_str())
                    .bind(&member_id)
                    .execute(tx.conn())
                    .await?;
                Ok(Member { role, ..member })
            })
        })
        .await
    }

    /// Removes a live member and revokes every key it has, in one transaction: its
    /// next call is refused. The last owner cannot be removed (`LastOwner`). Returns
    /// the member and how many keys were revoked.
    pub async fn remove_member(
        &self,
        account_id: &str,
        member_id: &str,
        now: UnixMillis,
    ) -> Result<(Member, u64), StoreError> {
        let (account_id, member_id) = (account_id.to_owned(), member_id.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                lock_account(tx, &account_id).await?;
                let member = live_member(tx.conn(), &account_id, &member_id).await?;
                keep_an_owner(tx, &member).await?;
                sqlx::query("UPDATE members SET removed_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&member_id)
                    .execute(tx.conn())
                    .await?;
                let revoked = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE member_id = $2 \
                     AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&member_id)
                .execute(tx.conn())
                .await?
                .rows_affected();
                Ok((
                    Member {
                        removed_at: Some(now),
                        ..member
                    },
                    revoked,
                ))
            })
        })
        .await
    }

    /// Another key for a live member.
    pub async fn create_member_key(
        &self,
        account_id: &str,
        member_id: &str,
        name: &str,
        now: UnixMillis,
    ) -> Result<(ApiKey, String), StoreError> {
        let (account_id, member_id, name) =
            (account_id.to_owned(), member_id.to_owned(), name.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let tx = &mut tx;
                lock_account(tx, &account_id).await?;
                live_member(tx.conn(), &account_id, &member_id).await?;
                create_key_in(
                    tx,
                    Role::Account,
                    Some(&account_id),
                    Some(&member_id),
                    &name,
                    now,
                )
                .await
            })
        })
        .await
    }
}
