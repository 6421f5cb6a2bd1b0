//! Who may manage an account's members (docs/api.md, "Organisations and seats"):
//! operator keys, the account's own keys and owner members manage everyone; admin
//! members manage members and admins but not owners; plain members manage no one but
//! may mint keys for themselves. Pure rules, so they are tested without a server.

use kinema_store::{MemberRole, Role};
use tonic::Code;

use crate::app::App;
use crate::auth::Caller;
use crate::error::{reasons, ApiError};

/// The caller's standing in the account whose members it manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// Admin and platform keys, the account's own keys (bound to no member), owners.
    Full,
    /// An admin member.
    Admin,
    /// A plain member, by id.
    Member(String),
}

impl Manager {
    /// The caller's standing: a member key's member is read afresh, so a role changed
    /// a moment ago applies to the next call.
    pub async fn of(app: &App, caller: &Caller) -> Result<Manager, ApiError> {
        let Some(member_id) = caller.key.member_id.as_deref() else {
            return match caller.role() {
                Role::Admin | Role::Platform | Role::Account => Ok(Manager::Full),
                Role::Worker => Err(ApiError::role("admin, platform or account")),
            };
        };
        let member = app
            .store
            .get_member(member_id)
            .await?
            .filter(|m| m.removed_at.is_none())
            .ok_or_else(|| {
                ApiError::status(
                    Code::Unauthenticated,
                    reasons::API_KEY_INVALID,
                    "the key's member was removed",
                )
            })?;
        Ok(match member.role {
            MemberRole::Owner => Manager::Full,
            MemberRole::Admin => Manager::Admin,
            MemberRole::Member => Manager::Member(member.id),
        })
    }

    /// May give a new or existing member `role`?
    pub fn may_grant(&self, role: MemberRole) -> Result<(), ApiError> {
        match (self, role) {
            (Manager::Full, _) => Ok(()),
            (Manager::Admin, MemberRole::Admin | MemberRole::Member) => Ok(()),
            (Manager::Admin, MemberRole::Owner) => Err(denied("only an owner makes owners")),
            (Manager::Member(_), _) => Err(denied("managing members needs an owner or admin")),
        }
    }

    /// May change or remove a member that now has `role`?
    pub fn may_manage(&self, role: MemberRole) -> Result<(), ApiError> {
        match (self, role) {
            (Manager::Full, _) => Ok(()),
            (Manager::Admin, MemberRole::Admin | MemberRole::Member) => Ok(()),
            (Manager::Admin, MemberRole::Owner) => Err(denied("only an owner manages owners")),
            (Manager::Member(_), _) => Err(denied("managing members needs an owner or admin")),
        }
    }

    /// May mint a key for member `member_id`, which has `role`?
    pub fn may_key(&self, member_id: &str, role: MemberRole) -> Result<(), ApiError> {
        match self {
            Manager::Member(own) if own == member_id => Ok(()),
            _ => self.may_manage(role),
        }
    }
}

fn denied(message: &str) -> ApiError {
    ApiError::status(Code::PermissionDenied, reasons::ROLE, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_manage_members_and_admins_but_not_owners() {
        let admin = Manager::Admin;
        assert!(admin.may_grant(MemberRole::Member).is_ok());
        assert!(admin.may_grant(MemberRole::Admin).is_ok());
        assert!(admin.may_grant(MemberRole::Owner).is_err());
        assert!(admin.may_manage(MemberRole::Owner).is_err());
        assert!(admin.may_manage(MemberRole::Member).is_ok());
        assert!(Manager::Full.may_grant(MemberRole::Owner).is_ok());
        assert!(Manager::Full.may_manage(MemberRole::Owner).is_ok());
    }

    #[test]
    fn a_plain_member_manages_no_one_but_keys_itself() {
        let me = Manager::Member("mem_1".into());
        assert!(me.may_grant(MemberRole::Member).is_err());
        assert!(me.may_manage(MemberRole::Member).is_err());
        assert!(me.may_key("mem_1", MemberRole::Member).is_ok());
        assert!(me.may_key("mem_2", MemberRole::Member).is_err());
        let status = tonic::Status::from(me.may_grant(MemberRole::Member).unwrap_err());
        assert_eq!(status.code(), Code::PermissionDenied);
    }
}
