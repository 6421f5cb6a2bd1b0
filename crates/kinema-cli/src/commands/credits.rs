use kinema_proto::v1 as pb;

use crate::cli::CreditsCommand;
use crate::client::Clients;
use crate::print;

const DAY_SECONDS: i64 = 86_400;

pub async fn run(mut c: Clients, cmd: CreditsCommand) -> anyhow::Result<()> {
    let account_id = c.account.clone();
    match cmd {
        CreditsCommand::Balance => {
            print::balance(
                &c.billing
                    .get_balance(pb::GetBalanceRequest { account_id })
                    .await?
                    .into_inner(),
            );
        }
        CreditsCommand::Grant {
            credits,
            expires_in_days,
            memo,
        } => {
            // The server's clock decides expiry; a lifetime is sent as an absolute time
            // from this machine's clock, which is what an operator means by "in N days".
            let expires_at = expires_in_days.map(|days| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                prost_types::Timestamp {
                    seconds: now + i64::from(days) * DAY_SECONDS,
                    nanos: 0,
                }
            });
            let r = c
                .billing
                .grant_credits(pb::GrantCreditsRequest {
                    account_id,
                    credits,
                    expires_at,
                    memo,
                })
                .await?
                .into_inner();
            if let Some(lot) = r.lot {
                println!("granted    {} credits as lot {}", lot.original, lot.id);
            }
            if let Some(b) = r.balance {
                print::balance(&b);
            }
        }
        CreditsCommand::Ledger { job, member, limit } => {
            let entries = c
                .billing
                .list_ledger_entries(pb::ListLedgerEntriesRequest {
                    account_id,
                    job_id: job.unwrap_or_default(),
                    page_size: limit,
                    page_token: String::new(),
                    member_id: member,
                })
                .await?
                .into_inner()
                .entries;
            for e in &entries {
                print::entry(e);
            }
        }
        CreditsCommand::Buy {
            pack_id,
            payment_ref,
        } => {
            let r = c
                .billing
                .purchase_pack(pb::PurchasePackRequest {
                    account_id,
                    pack_id,
                    payment_ref,
                })
                .await?
                .into_inner();
            if let Some(lot) = &r.lot {
                println!(
                    "{}  {} credits as lot {} for {}",
                    if r.created { "bought " } else { "already" },
                    lot.original,
                    lot.id,
                    print::money(&r.price)
                );
            }
            if let Some(b) = &r.balance {
                print::balance(b);
            }
        }
        CreditsCommand::Trial => {
            let r = c
                .billing
                .start_trial(pb::StartTrialRequest { account_id })
                .await?
                .into_inner();
            if let Some(lot) = &r.lot {
                println!(
                    "trial      {} credits until {}",
                    lot.original,
                    print::time(&r.ends_at)
                );
            }
        }
        CreditsCommand::TopUp {
            amount,
            currency,
            payment_ref,
        } => {
            let r = c
                .billing
                .top_up(pb::TopUpRequest {
                    account_id,
                    amount: Some(pb::Money {
                        minor: amount,
                        currency,
                    }),
                    payment_ref,
                })
                .await?
                .into_inner();
            if let Some(p) = &r.postpaid {
                println!(
                    "{} balance {}",
                    if r.created { "topped up" } else { "already  " },
                    print::money(&p.balance)
                );
            }
        }
        CreditsCommand::Events { limit } => {
            let events = c
                .billing
                .list_billing_events(pb::ListBillingEventsRequest {
                    account_id,
                    page_size: limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner()
                .events;
            for e in &events {
                print::billing_event(e);
            }
        }
    }
    Ok(())
}
