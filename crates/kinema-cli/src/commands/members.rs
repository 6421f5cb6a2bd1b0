//! `kinema members`: an account's members, their roles and keys, and extra seats
//! (docs/api.md, "Organisations and seats").

use anyhow::bail;
use kinema_proto::v1 as pb;

use crate::cli::MembersCommand;
use crate::client::Clients;
use crate::print;

fn role(text: &str) -> anyhow::Result<pb::MemberRole> {
    Ok(match text {
        "owner" => pb::MemberRole::Owner,
        "admin" => pb::MemberRole::Admin,
        "member" => pb::MemberRole::Member,
        other => bail!("the role must be owner, admin or member, not {other:?}"),
    })
}

fn role_name(role: i32) -> String {
    pb::MemberRole::try_from(role)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("MEMBER_ROLE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn member(m: &pb::Member) {
    println!(
        "{}  {:<6}  {:<32} added {}{}",
        m.id,
        role_name(m.role),
        m.name,
        print::time(&m.created_at),
        if m.removed_at.is_some() {
            format!("  REMOVED {}", print::time(&m.removed_at))
        } else {
            String::new()
        }
    );
}

fn seats(s: &Option<pb::Seats>) {
    if let Some(s) = s {
        println!("seats      {} of {} taken", s.used, s.seats);
    }
}

pub async fn run(mut c: Clients, cmd: MembersCommand) -> anyhow::Result<()> {
    let account_id = c.account.clone();
    match cmd {
        MembersCommand::Add {
            name,
            role: r,
            key_name,
        } => {
            let r = c
                .orgs
                .add_member(pb::AddMemberRequest {
                    account_id,
                    name,
                    role: role(&r)? as i32,
                    key_name,
                })
                .await?
                .into_inner();
            if let Some(m) = &r.member {
                member(m);
            }
            if let Some(k) = &r.key {
                println!("key        {}", k.id);
            }
            println!("secret     {}", r.secret);
            seats(&r.seats);
            eprintln!("the secret is shown only now: give it to the member");
        }
        MembersCommand::List { all } => {
            let r = c
                .orgs
                .list_members(pb::ListMembersRequest {
                    account_id,
                    include_removed: all,
                })
                .await?
                .into_inner();
            for m in &r.members {
                member(m);
            }
            seats(&r.seats);
        }
        MembersCommand::Role { member_id, role: r } => {
            let m = c
                .orgs
                .update_member_role(pb::UpdateMemberRoleRequest {
                    account_id,
                    member_id,
                    role: role(&r)? as i32,
                })
                .await?
                .into_inner();
            member(&m);
        }
        MembersCommand::Remove { member_id } => {
            let r = c
                .orgs
                .remove_member(pb::RemoveMemberRequest {
                    account_id,
                    member_id,
                })
                .await?
                .into_inner();
            if let Some(m) = &r.member {
                member(m);
            }
            println!("revoked    {} keys", r.revoked_keys);
            seats(&r.seats);
        }
        MembersCommand::Key { member_id, name } => {
            let r = c
                .orgs
                .create_member_key(pb::CreateMemberKeyRequest {
                    account_id,
                    member_id,
                    name,
                })
                .await?
                .into_inner();
            if let Some(k) = &r.key {
                println!("key        {} (member {})", k.id, k.member_id);
            }
            println!("secret     {}", r.secret);
            eprintln!("the secret is shown only now: store it safely");
        }
        MembersCommand::BuySeats {
            seats: n,
            payment_ref,
        } => {
            let r = c
                .orgs
                .buy_seats(pb::BuySeatsRequest {
                    account_id,
                    seats: n,
                    payment_ref,
                })
                .await?
                .into_inner();
            if let Some(s) = &r.subscription {
                for e in &s.events {
                    print::billing_event(e);
                }
                if !s.created {
                    println!("payment_ref already recorded: nothing changed");
                }
            }
            seats(&r.seats);
        }
    }
    Ok(())
}
