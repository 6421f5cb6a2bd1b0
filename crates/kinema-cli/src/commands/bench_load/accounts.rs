//! The accounts the load runs on: created and funded with an admin key, or named by
//! `--account` (already funded).

use anyhow::Context;
use kinema_proto::v1 as pb;

use super::mix::Mix;
use crate::client::Clients;

/// What each mix entry costs on this server (validating the mix on the way: an
/// unknown model or a shape outside its limits fails here, before any load).
pub async fn quotes(c: &mut Clients, mix: &Mix) -> anyhow::Result<Vec<i64>> {
    let mut quotes = Vec::new();
    for e in &mix.entries {
        let estimate = c
            .jobs
            .estimate_cost(pb::EstimateCostRequest {
                job: Some(e.request("", 0)),
            })
            .await
            .with_context(|| format!("mix entry {:?}", e.name))?
            .into_inner();
        quotes.push(estimate.credits);
    }
    Ok(quotes)
}

/// `count` new accounts, each granted `credits` (needs an admin key).
pub async fn create(
    c: &mut Clients,
    count: u32,
    credits: i64,
    tag: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..count.max(1) {
        let account = c
            .admin
            .create_account(pb::CreateAccountRequest {
                name: format!("bench {tag} #{i}"),
                external_id: format!("kinema-bench-{tag}-{i}"),
                billing: pb::BillingMode::Prepaid as i32,
            })
            .await
            .context("creating a bench account (needs an admin key; or name funded accounts with --account)")?
            .into_inner();
        if credits > 0 {
            c.billing
                .grant_credits(pb::GrantCreditsRequest {
                    account_id: account.id.clone(),
                    credits,
                    expires_at: None,
                    memo: format!("kinema bench load {tag}"),
                })
                .await
                .context("granting the bench account's credits")?;
        }
        ids.push(account.id);
    }
    Ok(ids)
}

/// Credits per account for the run: twice the dearest job for every job the account
/// may get (a duration run assumes up to 100,000 jobs per account).
pub fn credits_per_account(quotes: &[i64], jobs: Option<u64>, accounts: u32) -> i64 {
    let dearest = quotes.iter().copied().max().unwrap_or(1).max(1);
    let per_account = match jobs {
        Some(n) => n.div_ceil(u64::from(accounts.max(1))),
        None => 100_000,
    };
    dearest
        .saturating_mul(i64::try_from(per_account).unwrap_or(i64::MAX))
        .saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_credits_for_every_job() {
        assert_eq!(credits_per_account(&[3, 7], Some(10), 3), 7 * 4 * 2);
        assert_eq!(credits_per_account(&[5], Some(1), 4), 5 * 2);
        assert_eq!(credits_per_account(&[], Some(2), 1), 4);
        assert_eq!(credits_per_account(&[2], None, 1), 400_000);
        assert_eq!(credits_per_account(&[i64::MAX], None, 1), i64::MAX);
    }
}
