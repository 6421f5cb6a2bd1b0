use anyhow::bail;
use kinema_proto::v1 as pb;

use crate::cli::KeysCommand;
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { role, name } => {
            let role = match role.as_str() {
                "admin" => pb::KeyRole::Admin,
                "platform" => pb::KeyRole::Platform,
                "account" => pb::KeyRole::Account,
                "worker" => pb::KeyRole::Worker,
                other => bail!("--role must be admin, platform, account or worker, not {other:?}"),
            };
            let account_id = if role == pb::KeyRole::Account {
                c.account.clone()
            } else {
                String::new()
            };
            let r = c
                .admin
                .create_api_key(pb::CreateApiKeyRequest {
                    role: role as i32,
                    account_id,
                    name,
                })
                .await?
                .into_inner();
            if let Some(k) = r.key {
                println!(
                    "key        {} ({})",
                    k.id,
                    role.as_str_name().trim_start_matches("KEY_ROLE_")
                );
            }
            println!("secret     {}", r.secret);
            eprintln!("the secret is shown only now: store it safely");
        }
        KeysCommand::List => {
            let keys = c
                .admin
                .list_api_keys(pb::ListApiKeysRequest {
                    account_id: c.account.clone(),
                })
                .await?
                .into_inner()
                .keys;
            for k in keys {
                let role = pb::KeyRole::try_from(k.role)
                    .map(|r| r.as_str_name())
                    .unwrap_or("?");
                println!(
                    "{}  {:<9} {:<14} {:<24} created {} last used {}{}",
                    k.id,
                    role.trim_start_matches("KEY_ROLE_"),
                    k.prefix,
                    if k.account_id.is_empty() {
                        "-"
                    } else {
                        &k.account_id
                    },
                    print::time(&k.created_at),
                    print::time(&k.last_used_at),
                    if k.revoked_at.is_some() {
                        "  REVOKED"
                    } else {
                        ""
                    }
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let k = c
                .admin
                .revoke_api_key(pb::RevokeApiKeyRequest { key_id })
                .await?
                .into_inner();
            println!("revoked    {} at {}", k.id, print::time(&k.revoked_at));
        }
    }
    Ok(())
}
