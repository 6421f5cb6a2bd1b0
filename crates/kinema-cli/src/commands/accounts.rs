use kinema_proto::v1 as pb;

use crate::cli::AccountsCommand;
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, cmd: AccountsCommand) -> anyhow::Result<()> {
    let account = match cmd {
        AccountsCommand::Create { name, external_id } => c
            .admin
            .create_account(pb::CreateAccountRequest { name, external_id })
            .await?
            .into_inner(),
        AccountsCommand::Get => c
            .admin
            .get_account(pb::GetAccountRequest {
                account_id: c.account.clone(),
                external_id: String::new(),
            })
            .await?
            .into_inner(),
    };
    let status = pb::AccountStatus::try_from(account.status)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    println!("account    {}", account.id);
    println!("name       {}", account.name);
    println!(
        "status     {}",
        status.trim_start_matches("ACCOUNT_STATUS_")
    );
    if !account.external_id.is_empty() {
        println!("external   {}", account.external_id);
    }
    println!("created    {}", print::time(&account.created_at));
    Ok(())
}
