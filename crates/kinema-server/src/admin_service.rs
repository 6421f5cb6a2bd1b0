use std::sync::Arc;

use kinema_proto::v1 as pb;
use kinema_proto::v1::admin_service_server::AdminService;
use kinema_store::{AccountChange, BillingMode, PolicyVerdict, Role};
use tonic::{Code, Request, Response, Status};

use crate::app::App;
use crate::convert;
use crate::error::{reasons, ApiError};
use crate::request_limits::{check_text, MAX_TEXT_CHARS};
use crate::rpc::{handle, Access, Page};

pub struct Admin {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |_, req| async move {
            if req.name.trim().is_empty() {
                return Err(ApiError::field("name", "must not be empty"));
            }
            check_text("name", &req.name, MAX_TEXT_CHARS)?;
            check_text("external_id", &req.external_id, MAX_TEXT_CHARS)?;
            let external_id = (!req.external_id.is_empty()).then_some(req.external_id.as_str());
            let billing = match pb::BillingMode::try_from(req.billing) {
                Ok(pb::BillingMode::Unspecified | pb::BillingMode::Prepaid) => BillingMode::Prepaid,
                Ok(pb::BillingMode::Postpaid) => BillingMode::Postpaid,
                Err(_) => return Err(ApiError::field("billing", "must be PREPAID or POSTPAID")),
            };
            let now = app.now();
            let account = app
                .store
                .create_account_with(&req.name, external_id, billing, now)
                .await?;
            self.account_view(&account.id, now).await
        })
        .await
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = if req.account_id.is_empty() && !req.external_id.is_empty() {
                caller.require_operator()?;
                app.store
                    .find_account_by_external_id(&req.external_id)
                    .await?
                    .ok_or_else(ApiError::account_not_found)?
                    .id
            } else {
                caller.account(&req.account_id)?
            };
            self.account_view(&account_id, app.now()).await
        })
        .await
    }

    async fn suspend_account(
        &self,
        request: Request<pb::SuspendAccountRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            check_text("reason", &req.reason, MAX_TEXT_CHARS)?;
            let reason = non_blank(&req.reason, "operator");
            let change = app
                .store
                .suspend_account(&account_id, &reason, &caller.actor(), app.now())
                .await?;
            self.publish_cancelled(&change);
            self.change_response(change).await
        })
        .await
    }

    async fn reinstate_account(
        &self,
        request: Request<pb::ReinstateAccountRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            let change = app
                .store
                .reinstate_account(&account_id, &caller.actor(), app.now())
                .await?;
            self.change_response(change).await
        })
        .await
    }

    async fn terminate_account(
        &self,
        request: Request<pb::TerminateAccountRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            check_text("reason", &req.reason, MAX_TEXT_CHARS)?;
            let reason = non_blank(&req.reason, "violation");
            let change = app
                .store
                .terminate_account(
                    &app.commerce.catalogue,
                    &account_id,
                    &reason,
                    &caller.actor(),
                    app.now(),
                )
                .await?;
            for id in &change.stopping {
                app.worker.request_cancel(id);
            }
            self.publish_cancelled(&change);
            self.change_response(change).await
        })
        .await
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account_id = caller.account(&req.account_id)?;
            // An organisation's member asks for its deletion only as an owner.
            if crate::member_access::Manager::of(app, &caller).await?
                != crate::member_access::Manager::Full
            {
                return Err(ApiError::status(
                    Code::PermissionDenied,
                    reasons::ROLE,
                    "only an owner member may ask for its account's deletion",
                ));
            }
            let change = app
                .store
                .delete_account(
                    &app.commerce.catalogue,
                    &account_id,
                    app.commerce.account_min_age_ms,
                    &caller.actor(),
                    app.now(),
                )
                .await?;
            self.change_response(change).await
        })
        .await
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let role = match pb::KeyRole::try_from(req.role) {
                Ok(pb::KeyRole::Admin) => Role::Admin,
                Ok(pb::KeyRole::Platform) => Role::Platform,
                Ok(pb::KeyRole::Account) => Role::Account,
                Ok(pb::KeyRole::Worker) => Role::Worker,
                _ => {
                    return Err(ApiError::field(
                        "role",
                        "must be ADMIN, PLATFORM, ACCOUNT or WORKER",
                    ))
                }
            };
            // Platform keys may mint keys for accounts; only the operator mints the rest.
            match (caller.role(), role) {
                (Role::Admin, _) | (Role::Platform, Role::Account) => {}
                _ => return Err(ApiError::role("admin")),
            }
            let account_id = match role {
                Role::Account => Some(caller.account(&req.account_id)?),
                _ if !req.account_id.is_empty() => {
                    return Err(ApiError::field(
                        "account_id",
                        "only account keys belong to an account",
                    ))
                }
                _ => None,
            };
            check_text("name", &req.name, MAX_TEXT_CHARS)?;
            let (key, secret) = app
                .store
                .create_api_key(role, account_id.as_deref(), &req.name, app.now())
                .await?;
            Ok(pb::CreateApiKeyResponse {
                key: Some(convert::api_key(&key)),
                secret,
            })
        })
        .await
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Any, |caller, req| async move {
            let account = match caller.role() {
                Role::Admin if req.account_id.is_empty() => None,
                _ => Some(caller.account(&req.account_id)?),
            };
            let keys = app.store.list_api_keys(account.as_deref()).await?;
            Ok(pb::ListApiKeysResponse {
                keys: keys.iter().map(convert::api_key).collect(),
            })
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |_, req| async move {
            let key = app.store.revoke_api_key(&req.key_id, app.now()).await?;
            Ok(convert::api_key(&key))
        })
        .await
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |_, req| async move {
            let Some(clock) = &app.test_clock else {
                return Err(ApiError::status(
                    Code::FailedPrecondition,
                    reasons::TEST_CLOCK_DISABLED,
                    "the server was not started with --test-clock",
                ));
            };
            let by = req.by.unwrap_or_default();
            let by_ms = by
                .seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(by.nanos) / 1_000_000);
            if by_ms < 0 {
                return Err(ApiError::field("by", "the clock only moves forward"));
            }
            let now = clock.advance(by_ms);
            // Every time rule shows before the call returns.
            app.sweeper.sweep().await;
            app.worker.wake();
            app.callbacks.wake();
            Ok(pb::AdvanceClockResponse {
                now: Some(convert::timestamp(now)),
            })
        })
        .await
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |_, _| async move {
            let mut workers: Vec<pb::Worker> =
                app.worker.status().iter().map(convert::worker).collect();
            workers.extend(self.remote_workers().await?);
            Ok(pb::ListWorkersResponse { workers })
        })
        .await
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        let app = &self.app;
        handle(app, request, Access::Admin, |_, req| async move {
            if let Ok(local) = app.worker.drain(&req.owner) {
                return Ok(convert::worker(&local));
            }
            // A remote node's device: it stops leasing when its next report hears it.
            if !app
                .store
                .request_worker_drain(&req.owner, app.now())
                .await?
            {
                return Err(kinema_engine::DrainError::UnknownWorker(req.owner).into());
            }
            let mut remote = self
                .remote_workers()
                .await?
                .into_iter()
                .find(|w| w.owner == req.owner)
                .unwrap_or_default();
            remote.owner = req.owner;
            remote.state = pb::WorkerState::Draining as i32;
            Ok(remote)
        })
        .await
    }

    async fn list_policy_decisions(
        &self,
        request: Request<pb::ListPolicyDecisionsRequest>,
    ) -> Result<Response<pb::ListPolicyDecisionsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |_, req| async move {
            let decision = match pb::PolicyDecisionKind::try_from(req.decision) {
                Ok(pb::PolicyDecisionKind::Unspecified) => None,
                Ok(pb::PolicyDecisionKind::Allowed) => Some(PolicyVerdict::Allowed),
                Ok(pb::PolicyDecisionKind::Refused) => Some(PolicyVerdict::Refused),
                Ok(pb::PolicyDecisionKind::Unavailable) => Some(PolicyVerdict::Unavailable),
                Err(_) => {
                    let message = format!("{} is not a decision", req.decision);
                    return Err(ApiError::field("decision", message));
                }
            };
            let filter = kinema_store::DecisionFilter {
                account_id: (!req.account_id.is_empty()).then(|| req.account_id.clone()),
                decision,
            };
            let page =
                Page::from_request(&req.page_token, req.page_size, 0, DEFAULT_PAGE, MAX_PAGE)?;
            let decisions = app
                .store
                .policy_decisions(&filter, page.cursor, page.limit)
                .await?;
            Ok(pb::ListPolicyDecisionsResponse {
                next_page_token: page.next_token(&decisions, |d| d.id),
                decisions: decisions.iter().map(convert::policy_decision).collect(),
            })
        })
        .await
    }

    async fn rotate_callback_secret(
        &self,
        request: Request<pb::RotateCallbackSecretRequest>,
    ) -> Result<Response<pb::RotateCallbackSecretResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |_, req| async move {
            let overlap_ms = match req.overlap {
                None => DEFAULT_SECRET_OVERLAP_MS,
                Some(d) if d.seconds < 0 || d.nanos < 0 => {
                    return Err(ApiError::field("overlap", "must not be negative"))
                }
                Some(d) => d
                    .seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(d.nanos) / 1_000_000),
            };
            let secret = crate::callbacks::new_secret();
            let rotated = app
                .store
                .rotate_callback_secret(&req.account_id, &secret, overlap_ms, app.now())
                .await?;
            tracing::info!(account = %req.account_id, secret = %rotated.id, "rotated the callback signing secret");
            Ok(pb::RotateCallbackSecretResponse {
                secret,
                created_at: Some(convert::timestamp(rotated.created_at)),
                previous_retire_at: rotated.previous_retire_at.map(convert::timestamp),
            })
        })
        .await
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |_, req| async move {
            let after = account_cursor(&req.page_token)?;
            let limit = match req.page_size {
                0 => ACCOUNT_PAGE,
                n => n.min(MAX_ACCOUNT_PAGE),
            };
            let accounts = app
                .store
                .list_accounts(after.as_ref().map(|(t, id)| (*t, id.as_str())), limit)
                .await?;
            let now = app.now();
            let mut summaries = Vec::with_capacity(accounts.len());
            for account in &accounts {
                let balance = app.store.balance(&account.id, now).await?;
                summaries.push(pb::AccountSummary {
                    account: Some(self.account_view(&account.id, now).await?),
                    balance: Some(convert::balance(&account.id, &balance)),
                });
            }
            let next_page_token = match accounts.last() {
                Some(last) if accounts.len() == limit as usize => {
                    format!("{}.{}", last.created_at, last.id)
                }
                _ => String::new(),
            };
            Ok(pb::ListAccountsResponse {
                accounts: summaries,
                next_page_token,
            })
        })
        .await
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        let app = &self.app;
        handle(app, request, Access::Operator, |_, req| async move {
            let page =
                Page::from_request(&req.page_token, req.page_size, 0, DEFAULT_PAGE, MAX_PAGE)?;
            let jobs = app.store.list_live_jobs(page.cursor, page.limit).await?;
            Ok(pb::ListQueueResponse {
                next_page_token: page.next_token(&jobs, |j| j.seq),
                jobs: jobs.iter().map(convert::job).collect(),
            })
        })
        .await
    }

    async fn get_caller_key(
        &self,
        request: Request<pb::GetCallerKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        handle(&self.app, request, Access::Any, |caller, _| async move {
            Ok(convert::api_key(&caller.key))
        })
        .await
    }
}

/// How long a rotated-out callback secret still signs, unless the request says.
const DEFAULT_SECRET_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// Listing pages (ListPolicyDecisions, ListQueue), as the ledger's.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// ListAccounts pages: each account is read with its balance.
const ACCOUNT_PAGE: u32 = 50;
const MAX_ACCOUNT_PAGE: u32 = 200;

/// A ListAccounts page token: `<created_at>.<id>` of the previous page's last account.
fn account_cursor(token: &str) -> Result<Option<(i64, String)>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once('.')
        .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
        .filter(|(_, id)| !id.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::field("page_token", "not a token this server issued"))
}

/// Remote devices that reported within this many of their report intervals are listed.
const REMOTE_WORKER_LIVENESS: u64 = 10;

impl Admin {
    /// Remote nodes' devices as they last reported (recent reports only), a drain an
    /// operator asked for shown as DRAINING.
    async fn remote_workers(&self) -> Result<Vec<pb::Worker>, ApiError> {
        let app = &self.app;
        let window = (app.workers.status_interval_ms * REMOTE_WORKER_LIVENESS) as i64;
        let rows = app.store.remote_workers(app.now() - window).await?;
        let mut workers = Vec::with_capacity(rows.len());
        for row in rows {
            let mut w = hex::decode(&row.status)
                .ok()
                .and_then(|bytes| <pb::Worker as prost::Message>::decode(bytes.as_slice()).ok())
                .unwrap_or_default();
            w.owner = row.owner;
            if row.drain_requested_at.is_some() {
                w.state = pb::WorkerState::Draining as i32;
            }
            w.last_heartbeat = Some(convert::timestamp(row.seen_at));
            workers.push(w);
        }
        Ok(workers)
    }
}

impl Admin {
    /// Watchers of jobs a change cancelled see them end.
    fn publish_cancelled(&self, change: &AccountChange) {
        for job in &change.cancelled {
            self.app.events.publish(
                kinema_engine::JobEventKind::StateChanged,
                job.clone(),
                self.app.now(),
            );
        }
    }

    /// An account as the API shows it.
    async fn account_view(&self, account_id: &str, now: i64) -> Result<pb::Account, ApiError> {
        let view = self
            .app
            .store
            .account_view(account_id, now)
            .await?
            .ok_or_else(ApiError::account_not_found)?;
        Ok(convert::account_view(&view))
    }

    async fn change_response(
        &self,
        change: AccountChange,
    ) -> Result<pb::AccountChangeResponse, ApiError> {
        let app = &self.app;
        let account = match app
            .store
            .account_view(&change.account.id, app.now())
            .await?
        {
            Some(view) => convert::account_view(&view),
            None => convert::account(&change.account),
        };
        Ok(pb::AccountChangeResponse {
            account: Some(account),
            cancelled_jobs: change.cancelled.iter().map(convert::job).collect(),
            stopping_job_ids: change.stopping.clone(),
            forfeited_credits: change.forfeited,
        })
    }
}

fn non_blank(s: &str, default: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        default.to_string()
    } else {
        s.chars().take(200).collect()
    }
}
