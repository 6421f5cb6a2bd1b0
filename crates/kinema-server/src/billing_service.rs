use std::sync::Arc;

use kinema_proto::v1 as pb;
use kinema_proto::v1::billing_service_server::BillingService;
use kinema_store::{CancelTarget, ItemKind};
use tonic::{Code, Request, Response, Status};

use crate::app::App;
use crate::convert;
use crate::error::{reasons, ApiError};
use crate::request_limits::{check_text, MAX_TEXT_CHARS};
use crate::rpc::{handle, Access, Page};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct Billing {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl BillingService for Billing {
    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let balance = app.store.balance(&account_id, app.now()).await?;
            Ok(convert::balance(&account_id, &balance))
        })
        .await
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            app.store
                .get_account(&account_id)
                .await?
                .ok_or_else(ApiError::account_not_found)?;
            let page =
                Page::from_request(&req.page_token, req.page_size, 0, DEFAULT_PAGE, MAX_PAGE)?;
            let job_id = (!req.job_id.is_empty()).then_some(req.job_id.as_str());
            check_text("member_id", &req.member_id, MAX_TEXT_CHARS)?;
            let member = (!req.member_id.is_empty()).then_some(req.member_id.as_str());
            let entries = app
                .store
                .member_ledger_entries(&account_id, job_id, member, page.cursor, page.limit)
                .await?;
            Ok(pb::ListLedgerEntriesResponse {
                next_page_token: page.next_token(&entries, |e| e.id),
                entries: entries.iter().map(convert::entry).collect(),
            })
        })
        .await
    }

    async fn grant_credits(
        &self,
        request: Request<pb::GrantCreditsRequest>,
    ) -> Result<Response<pb::GrantCreditsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            if req.credits <= 0 {
                return Err(ApiError::field("credits", "must be positive"));
            }
            check_text("memo", &req.memo, MAX_TEXT_CHARS)?;
            let now = app.now();
            let expires_at = req.expires_at.as_ref().map(convert::millis);
            if expires_at.is_some_and(|at| at <= now) {
                return Err(ApiError::field("expires_at", "must be in the future"));
            }
            let (lot, entry) = app
                .store
                .grant_credits(
                    &account_id,
                    req.credits,
                    expires_at,
                    &req.memo,
                    &caller.actor(),
                    now,
                )
                .await?;
            let balance = app.store.balance(&account_id, now).await?;
            Ok(pb::GrantCreditsResponse {
                lot: Some(convert::lot(&lot)),
                entry: Some(convert::entry(&entry)),
                balance: Some(convert::balance(&account_id, &balance)),
            })
        })
        .await
    }

    async fn list_catalog(
        &self,
        request: Request<pb::ListCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |_, _| async move {
            let cat = app.store.catalogue(&app.commerce.catalogue).await?;
            Ok(convert::catalog(&app.commerce, &cat, app.now()))
        })
        .await
    }

    async fn purchase_pack(
        &self,
        request: Request<pb::PurchasePackRequest>,
    ) -> Result<Response<pb::PurchasePackResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            check_payment_ref(&req.payment_ref, true)?;
            if req.pack_id.trim().is_empty() {
                return Err(ApiError::field("pack_id", "required"));
            }
            let now = app.now();
            let bought = app
                .store
                .purchase_pack(
                    &app.commerce.catalogue,
                    &account_id,
                    &req.pack_id,
                    &req.payment_ref,
                    &caller.actor(),
                    now,
                )
                .await?;
            let balance = app.store.balance(&account_id, now).await?;
            Ok(pb::PurchasePackResponse {
                lot: Some(convert::lot(&bought.lot)),
                price: Some(convert::money(&bought.payment.amount)),
                created: bought.created,
                balance: Some(convert::balance(&account_id, &balance)),
            })
        })
        .await
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscriptionResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            check_payment_ref(&req.payment_ref, false)?;
            if req.plan_id.trim().is_empty() {
                return Err(ApiError::field("plan_id", "required"));
            }
            let payment_ref = (!req.payment_ref.is_empty()).then_some(req.payment_ref.as_str());
            let change = app
                .store
                .subscribe(
                    &app.commerce.catalogue,
                    &account_id,
                    &req.plan_id,
                    payment_ref,
                    &caller.actor(),
                    app.now(),
                )
                .await?;
            Ok(convert::subscription_state(&account_id, &change))
        })
        .await
    }

    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let target = match (req.subscription_id.trim(), req.queued) {
                ("", false) => CancelTarget::Current,
                ("", true) => CancelTarget::Queued,
                (id, false) => CancelTarget::Id(id.to_string()),
                (_, true) => {
                    return Err(ApiError::field(
                        "queued",
                        "name the subscription_id or set queued, not both",
                    ))
                }
            };
            let change = app
                .store
                .cancel_subscription(
                    &app.commerce.catalogue,
                    &account_id,
                    &target,
                    &caller.actor(),
                    app.now(),
                )
                .await?;
            Ok(convert::subscription_state(&account_id, &change))
        })
        .await
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let change = app
                .store
                .subscriptions(&app.commerce.catalogue, &account_id, app.now())
                .await?;
            Ok(convert::subscription_state(&account_id, &change))
        })
        .await
    }

    async fn start_trial(
        &self,
        request: Request<pb::StartTrialRequest>,
    ) -> Result<Response<pb::StartTrialResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            if !app.commerce.has_trial() {
                return Err(ApiError::status(
                    Code::FailedPrecondition,
                    reasons::TRIAL_NOT_OFFERED,
                    "this server's catalogue offers no trial",
                ));
            }
            let started = app
                .store
                .start_trial(&account_id, &app.commerce.trial, &caller.actor(), app.now())
                .await?;
            Ok(pb::StartTrialResponse {
                lot: Some(convert::lot(&started.lot)),
                started_at: Some(convert::timestamp(started.trial.started_at)),
                ends_at: Some(convert::timestamp(started.trial.ends_at)),
            })
        })
        .await
    }

    async fn top_up(
        &self,
        request: Request<pb::TopUpRequest>,
    ) -> Result<Response<pb::TopUpResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            check_payment_ref(&req.payment_ref, true)?;
            let amount = money_in("amount", req.amount.as_ref())?;
            if amount.minor <= 0 {
                return Err(ApiError::field("amount", "must be positive"));
            }
            let now = app.now();
            let topped = app
                .store
                .top_up(&account_id, amount, &req.payment_ref, now)
                .await?;
            for job in &topped.cancelled {
                app.events
                    .publish(kinema_engine::JobEventKind::StateChanged, job.clone(), now);
            }
            let status =
                kinema_ledger::postpaid_status(&topped.account, app.store.postpaid_policy(), now);
            Ok(pb::TopUpResponse {
                postpaid: Some(convert::postpaid(&topped.account, &status)),
                created: topped.created,
            })
        })
        .await
    }

    async fn schedule_price_change(
        &self,
        request: Request<pb::SchedulePriceChangeRequest>,
    ) -> Result<Response<pb::SchedulePriceChangeResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |caller, req| async move {
            let kind = match pb::CatalogItemKind::try_from(req.item_kind) {
                Ok(pb::CatalogItemKind::Pack) => ItemKind::Pack,
                Ok(pb::CatalogItemKind::Plan) => ItemKind::Plan,
                _ => return Err(ApiError::field("item_kind", "must be PACK or PLAN")),
            };
            let price = money_in("price", req.price.as_ref())?;
            let effective_at = req
                .effective_at
                .as_ref()
                .map(convert::millis)
                .ok_or_else(|| ApiError::field("effective_at", "required"))?;
            let now = app.now();
            let history = app
                .store
                .schedule_price_change(
                    &app.commerce.catalogue,
                    kind,
                    &req.item_id,
                    price,
                    effective_at,
                    app.commerce.price_notice_ms,
                    &caller.actor(),
                    now,
                )
                .await?;
            Ok(convert::price_changes(&history, now))
        })
        .await
    }

    async fn list_billing_events(
        &self,
        request: Request<pb::ListBillingEventsRequest>,
    ) -> Result<Response<pb::ListBillingEventsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let page =
                Page::from_request(&req.page_token, req.page_size, 0, DEFAULT_PAGE, MAX_PAGE)?;
            let events = app
                .store
                .billing_events(&account_id, page.cursor, page.limit)
                .await?;
            Ok(pb::ListBillingEventsResponse {
                next_page_token: page.next_token(&events, |e| e.id),
                events: events.iter().map(convert::billing_event).collect(),
            })
        })
        .await
    }
}

/// A payment reference: required (or optional when `required` is false), bounded.
pub(crate) fn check_payment_ref(payment_ref: &str, required: bool) -> Result<(), ApiError> {
    if payment_ref.trim().is_empty() {
        if required {
            return Err(ApiError::field(
                "payment_ref",
                "required: the platform's own reference of the payment",
            ));
        }
        if !payment_ref.is_empty() {
            return Err(ApiError::field("payment_ref", "must not be blank"));
        }
        return Ok(());
    }
    if payment_ref.chars().count() > kinema_store::MAX_PAYMENT_REF_CHARS {
        return Err(ApiError::field(
            "payment_ref",
            format!("at most {} characters", kinema_store::MAX_PAYMENT_REF_CHARS),
        ));
    }
    Ok(())
}

/// A money amount of a request.
fn money_in(field: &'static str, m: Option<&pb::Money>) -> Result<kinema_ledger::Money, ApiError> {
    let m = m.ok_or_else(|| ApiError::field(field, "required"))?;
    let currency = kinema_ledger::Currency::new(&m.currency)
        .map_err(|e| ApiError::field(field, e.to_string()))?;
    Ok(kinema_ledger::Money::new(m.minor, currency))
}
