use std::sync::Arc;

use kinema_proto::v1 as pb;
use kinema_proto::v1::billing_service_server::BillingService;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::auth::authenticate;
use crate::convert;
use crate::error::ApiError;

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
        let caller = authenticate(app, &request).await?;
        let account_id = caller.account(&request.get_ref().account_id)?;
        let balance = app
            .store
            .balance(&account_id, app.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::balance(&account_id, &balance)))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let app = &self.app;
        let caller = authenticate(app, &request).await?;
        let req = request.into_inner();
        let account_id = caller.account(&req.account_id)?;
        app.store
            .get_account(&account_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::from(kinema_store::StoreError::NotFound(
                "account",
            )))?;
        let after = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse::<i64>()
                .map_err(|_| ApiError::field("page_token", "not a token this server issued"))?
        };
        let limit = if req.page_size == 0 {
            DEFAULT_PAGE
        } else {
            req.page_size.min(MAX_PAGE)
        };
        let job_id = (!req.job_id.is_empty()).then_some(req.job_id.as_str());
        let entries = app
            .store
            .ledger_entries(&account_id, job_id, after, limit)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match entries.last() {
            Some(last) if entries.len() == limit as usize => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            entries: entries.iter().map(convert::entry).collect(),
            next_page_token,
        }))
    }

    async fn grant_credits(
        &self,
        request: Request<pb::GrantCreditsRequest>,
    ) -> Result<Response<pb::GrantCreditsResponse>, Status> {
        let app = &self.app;
        let caller = authenticate(app, &request).await?;
        caller.require_admin()?;
        let req = request.into_inner();
        let account_id = caller.account(&req.account_id)?;
        if req.credits <= 0 {
            return Err(ApiError::field("credits", "must be positive").into());
        }
        let now = app.now();
        let expires_at = req.expires_at.as_ref().map(convert::millis);
        if expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::field("expires_at", "must be in the future").into());
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
            .await
            .map_err(ApiError::from)?;
        let balance = app
            .store
            .balance(&account_id, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GrantCreditsResponse {
            lot: Some(convert::lot(&lot)),
            entry: Some(convert::entry(&entry)),
            balance: Some(convert::balance(&account_id, &balance)),
        }))
    }
}
