//! The shape every RPC shares: authenticate the caller, check its role, then run the
//! call's own logic on the request's message. That logic returns [`ApiError`], so the
//! store's and the ledger's errors convert with a plain `?`; the answer becomes a
//! status here, once.

use std::future::Future;

use kinema_proto::RequestIds;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::auth::{authenticate, Caller};
use crate::error::ApiError;

/// Which keys may make a call (docs/api.md, "Accounts"); calls whose rule depends on the
/// request check it themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any live key but a worker's.
    Any,
    /// Admin and platform keys.
    Operator,
    /// Admin keys.
    Admin,
    /// Worker keys (`WorkerService`).
    Worker,
}

/// Runs one RPC: `body` gets the authenticated caller and the request's message.
pub async fn handle<T, R, F, Fut>(
    app: &App,
    request: Request<T>,
    access: Access,
    body: F,
) -> Result<Response<R>, Status>
where
    T: RequestIds,
    F: FnOnce(Caller, T) -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    let caller = authenticate(app, &request).await?;
    let message = request.get_ref();
    crate::rpc_trace::record_caller(&caller.key, message.account_id(), message.job_id());
    match access {
        Access::Any => caller.require_client()?,
        Access::Operator => caller.require_operator()?,
        Access::Admin => caller.require_admin()?,
        Access::Worker => caller.require_worker()?,
    }
    Ok(Response::new(body(caller, request.into_inner()).await?))
}

/// One page of a listing: the rows past key `cursor` (after it, or before it for a
/// listing newest first), at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub cursor: i64,
    pub limit: u32,
}

impl Page {
    /// From a request's `page_token` (a key this server issued; empty: from `first`)
    /// and `page_size` (0: `default`; capped at `max`).
    pub fn from_request(
        token: &str,
        size: u32,
        first: i64,
        default: u32,
        max: u32,
    ) -> Result<Self, ApiError> {
        let cursor = if token.is_empty() {
            first
        } else {
            token
                .parse::<i64>()
                .map_err(|_| ApiError::field("page_token", "not a token this server issued"))?
        };
        let limit = if size == 0 { default } else { size.min(max) };
        Ok(Self { cursor, limit })
    }

    /// The next page's token: the last row's key when this page is full, empty when
    /// there is no more.
    pub fn next_token<T>(&self, rows: &[T], key: impl Fn(&T) -> i64) -> String {
        match rows.last() {
            Some(last) if rows.len() == self.limit as usize => key(last).to_string(),
            _ => String::new(),
        }
    }
}
