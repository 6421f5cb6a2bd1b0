//! Helpers of the commerce scenarios: the test clock, catalogue calls, billing events.

use kinema_proto::v1 as pb;
use tonic::Status;

use super::{bounded, Client};

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

pub fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("timestamp set");
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn eur(minor: i64) -> pb::Money {
    pb::Money {
        minor,
        currency: "EUR".into(),
    }
}

impl Client {
    /// Moves the server's test clock by `ms` (the server sweeps before answering);
    /// returns the new time.
    pub async fn advance(&self, ms: i64) -> i64 {
        let r = bounded(
            "AdvanceClock",
            self.admin().advance_clock(pb::AdvanceClockRequest {
                by: Some(prost_types::Duration {
                    seconds: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                }),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("AdvanceClock: {s:?}"))
        .into_inner();
        millis(&r.now)
    }

    /// The server's clock now.
    pub async fn now(&self) -> i64 {
        self.advance(0).await
    }

    /// Moves the test clock to exactly `at`.
    pub async fn advance_to(&self, at: i64) -> i64 {
        let now = self.now().await;
        assert!(at >= now, "the clock only moves forward ({now} -> {at})");
        let reached = self.advance(at - now).await;
        assert_eq!(reached, at);
        reached
    }

    pub async fn grant_expiring(&self, account: &str, credits: i64, expires_at: i64) -> i64 {
        let resp = self
            .billing()
            .grant_credits(pb::GrantCreditsRequest {
                account_id: account.into(),
                credits,
                expires_at: Some(timestamp(expires_at)),
                memo: "e2e grant".into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GrantCredits: {s:?}"))
            .into_inner();
        resp.lot.expect("lot").id
    }

    pub async fn purchase(
        &self,
        account: &str,
        pack: &str,
        payment_ref: &str,
    ) -> Result<pb::PurchasePackResponse, Status> {
        self.billing()
            .purchase_pack(pb::PurchasePackRequest {
                account_id: account.into(),
                pack_id: pack.into(),
                payment_ref: payment_ref.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn subscribe(
        &self,
        account: &str,
        plan: &str,
    ) -> Result<pb::SubscriptionResponse, Status> {
        self.billing()
            .subscribe(pb::SubscribeRequest {
                account_id: account.into(),
                plan_id: plan.into(),
                payment_ref: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn cancel_plan(
        &self,
        account: &str,
        queued: bool,
    ) -> Result<pb::SubscriptionResponse, Status> {
        self.billing()
            .cancel_subscription(pb::CancelSubscriptionRequest {
                account_id: account.into(),
                subscription_id: String::new(),
                queued,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn subscription(&self, account: &str) -> pb::SubscriptionResponse {
        self.billing()
            .get_subscription(pb::GetSubscriptionRequest {
                account_id: account.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetSubscription: {s:?}"))
            .into_inner()
    }

    pub async fn balance_raw(&self, account: &str) -> Result<pb::Balance, Status> {
        self.billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: account.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn account(&self, account: &str) -> pb::Account {
        self.admin()
            .get_account(pb::GetAccountRequest {
                account_id: account.into(),
                external_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetAccount: {s:?}"))
            .into_inner()
    }

    pub async fn create_postpaid_account(&self, name: &str) -> String {
        let a = self
            .admin()
            .create_account(pb::CreateAccountRequest {
                name: name.into(),
                external_id: format!("ext-{name}"),
                billing: pb::BillingMode::Postpaid as i32,
            })
            .await
            .unwrap_or_else(|s| panic!("CreateAccount: {s:?}"))
            .into_inner();
        assert_eq!(a.billing, pb::BillingMode::Postpaid as i32);
        let pp = a.postpaid.expect("postpaid status");
        assert_eq!(pp.balance.expect("balance").minor, 0);
        a.id
    }

    pub async fn top_up(
        &self,
        account: &str,
        minor: i64,
        payment_ref: &str,
    ) -> Result<pb::TopUpResponse, Status> {
        self.billing()
            .top_up(pb::TopUpRequest {
                account_id: account.into(),
                amount: Some(eur(minor)),
                payment_ref: payment_ref.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Every billing event of the account, oldest first.
    pub async fn billing_events(&self, account: &str) -> Vec<pb::BillingEvent> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..1000 {
            let r = self
                .billing()
                .list_billing_events(pb::ListBillingEventsRequest {
                    account_id: account.into(),
                    page_size: 100,
                    page_token: page_token.clone(),
                })
                .await
                .unwrap_or_else(|s| panic!("ListBillingEvents: {s:?}"))
                .into_inner();
            out.extend(r.events);
            if r.next_page_token.is_empty() {
                return out;
            }
            page_token = r.next_page_token;
        }
        panic!("billing event pagination does not end");
    }
}

/// Amounts (minor units) of the events of `kind`.
pub fn amounts(events: &[pb::BillingEvent], kind: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.amount.as_ref().map(|m| m.minor).unwrap_or_default())
        .collect()
}
