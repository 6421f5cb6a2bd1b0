use kinema_proto::v1 as pb;

use crate::cli::AccountsCommand;
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, cmd: AccountsCommand) -> anyhow::Result<()> {
    let account_id = c.account.clone();
    let change = match cmd {
        AccountsCommand::Create {
            name,
            external_id,
            postpaid,
        } => {
            let billing = if postpaid {
                pb::BillingMode::Postpaid
            } else {
                pb::BillingMode::Prepaid
            };
            let account = c
                .admin
                .create_account(pb::CreateAccountRequest {
                    name,
                    external_id,
                    billing: billing as i32,
                })
                .await?
                .into_inner();
            print::account(&account);
            return Ok(());
        }
        AccountsCommand::Get => {
            let account = c
                .admin
                .get_account(pb::GetAccountRequest {
                    account_id,
                    external_id: String::new(),
                })
                .await?
                .into_inner();
            print::account(&account);
            return Ok(());
        }
        AccountsCommand::Suspend { reason } => {
            c.admin
                .suspend_account(pb::SuspendAccountRequest { account_id, reason })
                .await?
        }
        AccountsCommand::Reinstate => {
            c.admin
                .reinstate_account(pb::ReinstateAccountRequest { account_id })
                .await?
        }
        AccountsCommand::Terminate { reason } => {
            c.admin
                .terminate_account(pb::TerminateAccountRequest { account_id, reason })
                .await?
        }
        AccountsCommand::Delete => {
            c.admin
                .delete_account(pb::DeleteAccountRequest { account_id })
                .await?
        }
    }
    .into_inner();
    if let Some(a) = &change.account {
        print::account(a);
    }
    for j in &change.cancelled_jobs {
        println!("cancelled  {}", j.id);
    }
    for id in &change.stopping_job_ids {
        println!("stopping   {id}");
    }
    if change.forfeited_credits > 0 {
        println!("forfeited  {} credits", change.forfeited_credits);
    }
    Ok(())
}
