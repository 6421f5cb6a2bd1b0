//! `OrganisationService`: an account's members, their roles and keys, and extra seats
//! (docs/api.md, "Organisations and seats"). Who may do what is `member_access`'s.

use std::sync::Arc;

use kinema_proto::v1 as pb;
use kinema_proto::v1::organisation_service_server::OrganisationService;
use kinema_store::MemberRole;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::billing_service::check_payment_ref;
use crate::convert;
use crate::error::ApiError;
use crate::member_access::Manager;
use crate::request_limits::{check_text, MAX_TEXT_CHARS};
use crate::rpc::{handle, Access};

pub struct Organisations {
    pub app: Arc<App>,
}

/// The role a request names; `default` for UNSPECIFIED when there is one.
fn role(value: i32, default: Option<MemberRole>) -> Result<MemberRole, ApiError> {
    match (pb::MemberRole::try_from(value), default) {
        (Ok(pb::MemberRole::Owner), _) => Ok(MemberRole::Owner),
        (Ok(pb::MemberRole::Admin), _) => Ok(MemberRole::Admin),
        (Ok(pb::MemberRole::Member), _) => Ok(MemberRole::Member),
        (Ok(pb::MemberRole::Unspecified), Some(d)) => Ok(d),
        _ => Err(ApiError::field("role", "must be OWNER, ADMIN or MEMBER")),
    }
}

fn member_id(value: &str) -> Result<&str, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field("member_id", "required"));
    }
    check_text("member_id", value, MAX_TEXT_CHARS)?;
    Ok(value)
}

impl Organisations {
    /// The live member of the account the request names.
    async fn target(&self, account_id: &str, id: &str) -> Result<kinema_store::Member, ApiError> {
        self.app
            .store
            .get_member(id)
            .await?
            .filter(|m| m.account_id == account_id && m.removed_at.is_none())
            .ok_or_else(|| ApiError::from(kinema_store::NotFound::Member))
    }
}

#[tonic::async_trait]
impl OrganisationService for Organisations {
    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            if req.name.trim().is_empty() {
                return Err(ApiError::field("name", "must not be empty"));
            }
            check_text("name", &req.name, MAX_TEXT_CHARS)?;
            check_text("key_name", &req.key_name, MAX_TEXT_CHARS)?;
            let role = role(req.role, Some(MemberRole::Member))?;
            Manager::of(app, &caller).await?.may_grant(role)?;
            let added = app
                .store
                .add_member(
                    &app.commerce.seat_rule(),
                    &account_id,
                    role,
                    req.name.trim(),
                    &req.key_name,
                    app.now(),
                )
                .await?;
            tracing::info!(account_id, member_id = %added.member.id, role = %role, actor = %caller.actor(), "member added");
            Ok(pb::AddMemberResponse {
                member: Some(convert::member(&added.member)),
                key: Some(convert::api_key(&added.key)),
                secret: added.secret,
                seats: Some(convert::seats(&added.seats)),
            })
        })
        .await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            Manager::of(app, &caller).await?;
            if app.store.get_account(&account_id).await?.is_none() {
                return Err(ApiError::account_not_found());
            }
            let members = app
                .store
                .list_members(&account_id, req.include_removed)
                .await?;
            let seats = app
                .store
                .seats(&app.commerce.seat_rule(), &account_id, app.now())
                .await?;
            Ok(pb::ListMembersResponse {
                members: members.iter().map(convert::member).collect(),
                seats: Some(convert::seats(&seats)),
            })
        })
        .await
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let id = member_id(&req.member_id)?;
            let role = role(req.role, None)?;
            let manager = Manager::of(app, &caller).await?;
            let target = self.target(&account_id, id).await?;
            manager.may_manage(target.role)?;
            manager.may_grant(role)?;
            let member = app.store.set_member_role(&account_id, id, role).await?;
            Ok(convert::member(&member))
        })
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let id = member_id(&req.member_id)?;
            let manager = Manager::of(app, &caller).await?;
            let target = self.target(&account_id, id).await?;
            manager.may_manage(target.role)?;
            let (member, revoked) = app.store.remove_member(&account_id, id, app.now()).await?;
            tracing::info!(account_id, member_id = %member.id, revoked, actor = %caller.actor(), "member removed");
            let seats = app
                .store
                .seats(&app.commerce.seat_rule(), &account_id, app.now())
                .await?;
            Ok(pb::RemoveMemberResponse {
                member: Some(convert::member(&member)),
                revoked_keys: u32::try_from(revoked).unwrap_or(u32::MAX),
                seats: Some(convert::seats(&seats)),
            })
        })
        .await
    }

    async fn create_member_key(
        &self,
        request: Request<pb::CreateMemberKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let id = member_id(&req.member_id)?;
            check_text("name", &req.name, MAX_TEXT_CHARS)?;
            let manager = Manager::of(app, &caller).await?;
            let target = self.target(&account_id, id).await?;
            manager.may_key(id, target.role)?;
            let (key, secret) = app
                .store
                .create_member_key(&account_id, id, &req.name, app.now())
                .await?;
            Ok(pb::CreateApiKeyResponse {
                key: Some(convert::api_key(&key)),
                secret,
            })
        })
        .await
    }

    async fn buy_seats(
        &self,
        request: Request<pb::BuySeatsRequest>,
    ) -> Result<Response<pb::BuySeatsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            if req.seats == 0 {
                return Err(ApiError::field("seats", "must be at least 1"));
            }
            check_payment_ref(&req.payment_ref, true)?;
            let change = app
                .store
                .buy_seats(
                    &app.commerce.catalogue,
                    &account_id,
                    req.seats,
                    &req.payment_ref,
                    &caller.actor(),
                    app.now(),
                )
                .await?;
            let seats = app
                .store
                .seats(&app.commerce.seat_rule(), &account_id, app.now())
                .await?;
            Ok(pb::BuySeatsResponse {
                subscription: Some(convert::subscription_state(&account_id, &change)),
                seats: Some(convert::seats(&seats)),
            })
        })
        .await
    }
}
