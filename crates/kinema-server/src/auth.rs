use kinema_store::{ApiKey, JobPriority, Role};
use tonic::{Code, Request};

use crate::app::App;
use crate::error::{reasons, ApiError};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

impl Caller {
    pub fn actor(&self) -> String {
        format!("key:{}", self.key.id)
    }

    pub fn role(&self) -> Role {
        self.key.role
    }

    /// Any key but a worker's: workers call only `WorkerService`.
    pub fn require_client(&self) -> Result<(), ApiError> {
        match self.key.role {
            Role::Worker => Err(ApiError::role("admin, platform or account")),
            _ => Ok(()),
        }
    }

    pub fn require_worker(&self) -> Result<(), ApiError> {
        match self.key.role {
            Role::Worker => Ok(()),
            _ => Err(ApiError::role("worker")),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.key.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::role("admin")),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.key.role {
            Role::Admin | Role::Platform => Ok(()),
            Role::Account | Role::Worker => Err(ApiError::role("admin or platform")),
        }
    }

    /// The queue class a submission asks for. HIGH is for the operator and the
    /// platform (which decides which of its users pay for it), never an account's
    /// own key: otherwise every account would ask for it and classes would mean nothing.
    pub fn priority(&self, requested: i32) -> Result<JobPriority, ApiError> {
        let priority = crate::convert::store_priority(requested)
            .ok_or_else(|| ApiError::field("priority", format!("{requested} is not a priority")))?;
        if priority == JobPriority::High && self.key.role == Role::Account {
            return Err(ApiError::status(
                Code::PermissionDenied,
                reasons::ROLE,
                "priority HIGH needs a platform or admin key",
            ));
        }
        Ok(priority)
    }

    /// The account a request acts on: an account key's own, whatever the request
    /// names; for platform and admin keys, the one the request names.
    pub fn account(&self, requested: &str) -> Result<String, ApiError> {
        match (&self.key.role, &self.key.account_id) {
            (Role::Account, Some(own)) => Ok(own.clone()),
            (Role::Account, None) => Err(ApiError::Internal("account key without account".into())),
            (Role::Worker, _) => Err(ApiError::role("admin, platform or account")),
            _ if requested.trim().is_empty() => Err(ApiError::field(
                "account_id",
                "required with admin and platform keys",
            )),
            _ => Ok(requested.to_string()),
        }
    }
}

/// Reads `authorization: Bearer <key>` and finds the live key it names.
pub async fn authenticate<T>(app: &App, request: &Request<T>) -> Result<Caller, ApiError> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        ApiError::status(
            Code::Unauthenticated,
            reasons::API_KEY_MISSING,
            "missing authorization: Bearer <key>",
        )
    })?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::status(
                Code::Unauthenticated,
                reasons::API_KEY_MISSING,
                "authorization must be \"Bearer <key>\"",
            )
        })?;
    let key = app
        .store
        .authenticate(secret, app.now())
        .await?
        .ok_or_else(|| {
            ApiError::status(
                Code::Unauthenticated,
                reasons::API_KEY_INVALID,
                "unknown or revoked api key",
            )
        })?;
    if let Some(limit) = &app.rate_limit {
        limit
            .check(&key.id)
            .map_err(|wait| ApiError::rate_limited(limit.rps, wait))?;
    }
    Ok(Caller { key })
}
