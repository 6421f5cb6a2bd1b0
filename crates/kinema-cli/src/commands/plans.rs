use anyhow::bail;
use kinema_proto::v1 as pb;

use crate::cli::{CatalogArgs, CatalogCommand, PlansCommand};
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, cmd: PlansCommand) -> anyhow::Result<()> {
    let account_id = c.account.clone();
    let r = match cmd {
        PlansCommand::Show => {
            c.billing
                .get_subscription(pb::GetSubscriptionRequest { account_id })
                .await?
        }
        PlansCommand::Subscribe {
            plan_id,
            payment_ref,
        } => {
            c.billing
                .subscribe(pb::SubscribeRequest {
                    account_id,
                    plan_id,
                    payment_ref,
                })
                .await?
        }
        PlansCommand::Cancel { queued } => {
            c.billing
                .cancel_subscription(pb::CancelSubscriptionRequest {
                    account_id,
                    subscription_id: String::new(),
                    queued,
                })
                .await?
        }
    };
    print::subscription(&r.into_inner());
    Ok(())
}

pub async fn catalog(mut c: Clients, args: CatalogArgs) -> anyhow::Result<()> {
    match args.command {
        None => {
            let cat = c
                .billing
                .list_catalog(pb::ListCatalogRequest {})
                .await?
                .into_inner();
            let scheduled = |s: &[pb::PriceChange]| {
                s.iter()
                    .map(|p| {
                        format!(
                            " -> {} from {}",
                            print::money(&p.price),
                            print::time(&p.effective_at)
                        )
                    })
                    .collect::<String>()
            };
            println!("packs");
            for p in &cat.packs {
                let validity = match (&p.validity, p.validity_months) {
                    (Some(d), _) => format!("{} days", d.seconds / 86_400),
                    (None, m) if m > 0 => format!("{m} months"),
                    _ => "never expire".into(),
                };
                println!(
                    "  {:<16} {:>8} credits, {validity}, {}{}",
                    p.id,
                    p.credits,
                    print::money(&p.price),
                    scheduled(&p.scheduled_prices)
                );
            }
            println!("plans");
            for p in &cat.plans {
                let interval = pb::PlanInterval::try_from(p.interval)
                    .map(|i| {
                        i.as_str_name()
                            .trim_start_matches("PLAN_INTERVAL_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                println!(
                    "  {:<16} {:>8} credits/month, {interval} {}{}",
                    p.id,
                    p.credits_per_month,
                    print::money(&p.price),
                    scheduled(&p.scheduled_prices)
                );
            }
            if let Some(t) = &cat.trial {
                println!(
                    "trial      {} credits for {} days",
                    t.credits,
                    t.duration.as_ref().map(|d| d.seconds / 86_400).unwrap_or(0)
                );
            }
            println!(
                "postpaid   {} per credit",
                print::money(&cat.usage_price_per_credit)
            );
        }
        Some(CatalogCommand::SchedulePrice {
            kind,
            item_id,
            price,
            currency,
            in_days,
        }) => {
            let item_kind = match kind.as_str() {
                "pack" => pb::CatalogItemKind::Pack,
                "plan" => pb::CatalogItemKind::Plan,
                other => bail!("kind must be pack or plan, not {other:?}"),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let r = c
                .billing
                .schedule_price_change(pb::SchedulePriceChangeRequest {
                    item_kind: item_kind as i32,
                    item_id,
                    price: Some(pb::Money {
                        minor: price,
                        currency,
                    }),
                    effective_at: Some(prost_types::Timestamp {
                        seconds: now + i64::from(in_days) * 86_400,
                        nanos: 0,
                    }),
                })
                .await?
                .into_inner();
            println!("price now  {}", print::money(&r.current_price));
            for p in &r.scheduled_prices {
                println!(
                    "scheduled  {} from {}",
                    print::money(&p.price),
                    print::time(&p.effective_at)
                );
            }
        }
    }
    Ok(())
}
