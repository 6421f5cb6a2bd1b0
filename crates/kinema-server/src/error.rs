use std::path::PathBuf;

use crate::request_limits::clamp;
use kinema_engine::FieldViolation;
use kinema_store::{NotFound, StoreError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Stable machine-readable reasons (`google.rpc.ErrorInfo.reason`), docs/api.md, "Errors".
pub mod reasons {
    pub const INVALID_SPEC: &str = "INVALID_SPEC";
    pub const API_KEY_MISSING: &str = "API_KEY_MISSING";
    pub const API_KEY_INVALID: &str = "API_KEY_INVALID";
    pub const ROLE: &str = "ROLE";
    pub const JOB_NOT_FOUND: &str = "JOB_NOT_FOUND";
    pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
    pub const KEY_NOT_FOUND: &str = "KEY_NOT_FOUND";
    pub const ARTIFACT_NOT_FOUND: &str = "ARTIFACT_NOT_FOUND";
    pub const ARTIFACT_EXPIRED: &str = "ARTIFACT_EXPIRED";
    pub const ARTIFACT_DELETED: &str = "ARTIFACT_DELETED";
    pub const INSUFFICIENT_CREDITS: &str = "INSUFFICIENT_CREDITS";
    pub const ACCOUNT_SUSPENDED: &str = "ACCOUNT_SUSPENDED";
    pub const TEST_CLOCK_DISABLED: &str = "TEST_CLOCK_DISABLED";
    pub const IDEMPOTENCY_CONFLICT: &str = "IDEMPOTENCY_CONFLICT";
    pub const EXTERNAL_ID_CONFLICT: &str = "EXTERNAL_ID_CONFLICT";
    pub const DRAINING: &str = "DRAINING";
    pub const INTERNAL: &str = "INTERNAL";
    pub const PRICE_NOTICE_TOO_SHORT: &str = "PRICE_NOTICE_TOO_SHORT";
    pub const ACCOUNT_DELETION_REFUSED: &str = "ACCOUNT_DELETION_REFUSED";
    pub const ACCOUNT_CLOSED: &str = "ACCOUNT_CLOSED";
    pub const BILLING_MODE: &str = "BILLING_MODE";
    pub const PAYMENT_REF_CONFLICT: &str = "PAYMENT_REF_CONFLICT";
    pub const TRIAL_ALREADY_USED: &str = "TRIAL_ALREADY_USED";
    pub const TRIAL_NOT_OFFERED: &str = "TRIAL_NOT_OFFERED";
    pub const PACK_NOT_FOUND: &str = "PACK_NOT_FOUND";
    pub const PLAN_NOT_FOUND: &str = "PLAN_NOT_FOUND";
    pub const SUBSCRIPTION_NOT_FOUND: &str = "SUBSCRIPTION_NOT_FOUND";
    pub const NO_SUBSCRIPTION: &str = "NO_SUBSCRIPTION";
    pub const NO_QUEUED_PLAN: &str = "NO_QUEUED_PLAN";
    pub const PLAN_ALREADY_QUEUED: &str = "PLAN_ALREADY_QUEUED";
    pub const ALREADY_SUBSCRIBED: &str = "ALREADY_SUBSCRIBED";
    pub const NO_PRICE_IN_EFFECT: &str = "NO_PRICE_IN_EFFECT";
    pub const WORKER_NOT_FOUND: &str = "WORKER_NOT_FOUND";
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The server is at its bound of calls at once (`--max-concurrent-rpcs`).
    pub const OVERLOADED: &str = "OVERLOADED";
    /// A unary call ran past the server's deadline (`--rpc-timeout`).
    pub const RPC_TIMEOUT: &str = "RPC_TIMEOUT";
    /// A prompt broke the usage policy (ErrorInfo metadata: `category`, `field`).
    pub const CONTENT_POLICY: &str = "CONTENT_POLICY";
    /// The external moderation endpoint could not answer and the policy fails closed.
    pub const MODERATION_UNAVAILABLE: &str = "MODERATION_UNAVAILABLE";
    /// The artifact store refused or failed an upload (a worker retries the attempt).
    pub const STORAGE: &str = "STORAGE_UNAVAILABLE";
    /// A callback URL the SSRF rules refuse (INVALID_ARGUMENT, field `callback_url`).
    pub const CALLBACK_URL_REFUSED: &str = "CALLBACK_URL_REFUSED";
    /// A callback URL given, but no secret to sign its deliveries with.
    pub const CALLBACK_SECRET_MISSING: &str = "CALLBACK_SECRET_MISSING";
    /// Every seat of the account is taken (ErrorInfo metadata: `seats`, `members`).
    pub const SEATS_EXHAUSTED: &str = "SEATS_EXHAUSTED";
    /// The account's last owner cannot be removed or demoted.
    pub const LAST_OWNER: &str = "LAST_OWNER";
    pub const MEMBER_NOT_FOUND: &str = "MEMBER_NOT_FOUND";
    /// Extra seats need a plan in force that sells them.
    pub const SEATS_NOT_SOLD: &str = "SEATS_NOT_SOLD";
    /// The web console: a body that is not the method's request as proto3 JSON.
    pub const INVALID_JSON: &str = "INVALID_JSON";
    /// The web console: a method its JSON API does not expose (gRPC has them all).
    pub const METHOD_NOT_EXPOSED: &str = "METHOD_NOT_EXPOSED";
}

/// What a client is told to wait before submitting again into a full queue: about
/// the time a short job takes to leave it.
pub const QUEUE_FULL_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

pub const ERROR_DOMAIN: &str = "kinema.v1";

/// Everything an RPC can answer with instead of a result. Mapped to a status once,
/// here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    InvalidSpec(Vec<FieldViolation>),
    #[error("{message}")]
    Status {
        code: Code,
        reason: &'static str,
        message: String,
    },
    /// A status whose ErrorInfo carries metadata (every reason of a refusal).
    #[error("{message}")]
    Detailed {
        code: Code,
        reason: &'static str,
        message: String,
        metadata: std::collections::HashMap<String, String>,
    },
    /// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when to come back.
    #[error("{message}")]
    Exhausted {
        reason: &'static str,
        message: String,
        metadata: std::collections::HashMap<String, String>,
        retry_delay: std::time::Duration,
    },
    #[error("internal: {0}")]
    Internal(String),
    /// INVALID_ARGUMENT with a reason of its own and the field it names.
    #[error("{field}: {description}")]
    FieldRefused {
        reason: &'static str,
        field: &'static str,
        description: String,
    },
}

impl ApiError {
    pub fn status(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::Status {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn field(field: &'static str, description: impl Into<String>) -> Self {
        ApiError::InvalidSpec(vec![FieldViolation {
            field,
            description: description.into(),
        }])
    }

    pub fn job_not_found() -> Self {
        Self::status(Code::NotFound, reasons::JOB_NOT_FOUND, "job not found")
    }

    /// The artifact's retention period has ended (its file is deleted, or about to be).
    pub fn artifact_expired() -> Self {
        Self::status(
            Code::NotFound,
            reasons::ARTIFACT_EXPIRED,
            "the artifact's retention period has ended",
        )
    }

    pub fn account_not_found() -> Self {
        Self::status(
            Code::NotFound,
            reasons::ACCOUNT_NOT_FOUND,
            "account not found",
        )
    }

    /// The key is over its requests-per-second allowance (docs/api.md, "Accounts").
    pub fn rate_limited(rps: u32, retry_delay: std::time::Duration) -> Self {
        ApiError::Exhausted {
            reason: reasons::RATE_LIMITED,
            message: format!(
                "rate limited: at most {rps} requests per second per key; retry in {} ms",
                retry_delay.as_millis().max(1)
            ),
            metadata: [("limit_rps".to_string(), rps.to_string())].into(),
            retry_delay,
        }
    }

    pub fn role(needed: &str) -> Self {
        Self::status(
            Code::PermissionDenied,
            reasons::ROLE,
            format!("this call needs a {needed} key"),
        )
    }
}

impl From<kinema_engine::DrainError> for ApiError {
    fn from(e: kinema_engine::DrainError) -> Self {
        match e {
            kinema_engine::DrainError::UnknownWorker(_) => {
                ApiError::status(Code::NotFound, reasons::WORKER_NOT_FOUND, e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use reasons::*;
        match e {
            StoreError::NotFound(what) => ApiError::from(what),
            StoreError::InsufficientCredits { needed, available } => ApiError::status(
                Code::FailedPrecondition,
                INSUFFICIENT_CREDITS,
                format!("insufficient credits: {needed} needed, {available} available"),
            ),
            StoreError::AccountNotActive { status } => ApiError::status(
                Code::FailedPrecondition,
                ACCOUNT_SUSPENDED,
                format!("the account is {status}: no new jobs"),
            ),
            StoreError::IdempotencyConflict => ApiError::status(
                Code::AlreadyExists,
                IDEMPOTENCY_CONFLICT,
                "idempotency_key was already used for a different request",
            ),
            StoreError::ExternalIdConflict { job_id } => ApiError::status(
                Code::AlreadyExists,
                EXTERNAL_ID_CONFLICT,
                format!("external_id is already used by job {job_id}"),
            ),
            StoreError::BalanceOverflow { .. } => ApiError::field("credits", e.to_string()),
            StoreError::Invalid(message) => {
                ApiError::status(Code::InvalidArgument, INVALID_SPEC, message)
            }
            StoreError::PaymentRefConflict { .. } => {
                ApiError::status(Code::AlreadyExists, PAYMENT_REF_CONFLICT, e.to_string())
            }
            StoreError::AccountClosed { .. } => {
                ApiError::status(Code::FailedPrecondition, ACCOUNT_CLOSED, e.to_string())
            }
            StoreError::BillingMode { .. } => {
                ApiError::status(Code::FailedPrecondition, BILLING_MODE, e.to_string())
            }
            StoreError::DeletionRefused(refusals) => {
                let mut metadata = std::collections::HashMap::new();
                metadata.insert(
                    "reasons".to_string(),
                    refusals
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                for r in &refusals {
                    metadata.insert(r.code().to_string(), r.describe());
                }
                ApiError::Detailed {
                    code: Code::FailedPrecondition,
                    reason: ACCOUNT_DELETION_REFUSED,
                    message: format!(
                        "account deletion refused: {}",
                        kinema_store::DeletionRefusal::describe_all(&refusals)
                    ),
                    metadata,
                }
            }
            StoreError::QueueFull { limit, max, queued } => ApiError::Exhausted {
                reason: QUEUE_FULL,
                message: format!(
                    "the queue is full: {queued} jobs queued, the {limit} limit is {max}; retry later"
                ),
                metadata: [
                    ("limit".to_string(), limit.as_str().to_string()),
                    ("max".to_string(), max.to_string()),
                    ("queued".to_string(), queued.to_string()),
                ]
                .into(),
                retry_delay: QUEUE_FULL_RETRY_DELAY,
            },
            StoreError::SeatsExhausted { seats, members } => ApiError::Detailed {
                code: Code::FailedPrecondition,
                reason: SEATS_EXHAUSTED,
                message: e.to_string(),
                metadata: [
                    ("seats".to_string(), seats.to_string()),
                    ("members".to_string(), members.to_string()),
                ]
                .into(),
            },
            StoreError::LastOwner { .. } => {
                ApiError::status(Code::FailedPrecondition, LAST_OWNER, e.to_string())
            }
            StoreError::Ledger(rule) => ApiError::from(rule),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<NotFound> for ApiError {
    fn from(what: NotFound) -> Self {
        use reasons::*;
        match what {
            NotFound::Job => ApiError::job_not_found(),
            NotFound::Account => ApiError::account_not_found(),
            NotFound::ApiKey => {
                ApiError::status(Code::NotFound, KEY_NOT_FOUND, "api key not found")
            }
            NotFound::Subscription => ApiError::status(
                Code::NotFound,
                SUBSCRIPTION_NOT_FOUND,
                "the account has no subscription with that id",
            ),
            NotFound::Member => ApiError::status(
                Code::NotFound,
                MEMBER_NOT_FOUND,
                "the account has no such member",
            ),
            // Lots are never named by a request: one missing is the store's problem.
            NotFound::Lot => ApiError::Internal("a lot the ledger names is missing".into()),
        }
    }
}

impl From<kinema_ledger::LedgerError> for ApiError {
    fn from(e: kinema_ledger::LedgerError) -> Self {
        use kinema_ledger::LedgerError as L;
        use reasons::*;
        let message = e.to_string();
        let (code, reason) = match &e {
            L::InsufficientCredits { .. } => (Code::FailedPrecondition, INSUFFICIENT_CREDITS),
            L::PriceNoticeTooShort { .. } => (Code::FailedPrecondition, PRICE_NOTICE_TOO_SHORT),
            L::NoPriceInEffect { .. } => (Code::FailedPrecondition, NO_PRICE_IN_EFFECT),
            L::UnknownPack(_) => (Code::NotFound, PACK_NOT_FOUND),
            L::UnknownPlan(_) => (Code::NotFound, PLAN_NOT_FOUND),
            L::TrialAlreadyUsed { .. } => (Code::FailedPrecondition, TRIAL_ALREADY_USED),
            L::NoSubscription => (Code::FailedPrecondition, NO_SUBSCRIPTION),
            L::NoQueuedPlan => (Code::FailedPrecondition, NO_QUEUED_PLAN),
            L::PlanAlreadyQueued => (Code::FailedPrecondition, PLAN_ALREADY_QUEUED),
            L::AlreadySubscribed(_) => (Code::FailedPrecondition, ALREADY_SUBSCRIBED),
            L::AccountSuspended => (Code::FailedPrecondition, ACCOUNT_SUSPENDED),
            L::AccountTerminated => (Code::FailedPrecondition, ACCOUNT_CLOSED),
            L::SeatsNotSold(_) | L::NoPlanForSeats => (Code::FailedPrecondition, SEATS_NOT_SOLD),
            L::NonPositiveAmount(_)
            | L::InvalidQuote { .. }
            | L::ExpiryNotInFuture { .. }
            | L::InvalidCurrency(_)
            | L::CurrencyMismatch { .. }
            | L::NegativePrice(_)
            | L::AmountOverflow => (Code::InvalidArgument, INVALID_SPEC),
            L::UnknownLot(_)
            | L::UnknownJobState(_)
            | L::UnknownEntryKind(_)
            | L::InvalidCatalogue(_)
            | L::InvalidPrice(_) => return ApiError::Internal(message),
        };
        ApiError::status(code, reason, message)
    }
}

/// The most bytes of a status message, and of one field violation or ErrorInfo
/// value: gRPC carries them in headers (16 KiB in all by default), and an answer
/// over that reaches the client as RESOURCE_EXHAUSTED with no reason at all.
const MAX_MESSAGE_BYTES: usize = 2048;
const MAX_DETAIL_BYTES: usize = 512;

fn clamp_metadata(
    metadata: std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    metadata
        .into_iter()
        .map(|(k, v)| (k, clamp(v, MAX_DETAIL_BYTES)))
        .collect()
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidSpec(violations) => {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    reasons::INVALID_SPEC,
                    ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                );
                for v in &violations {
                    details.add_bad_request_violation(
                        v.field,
                        clamp(v.description.clone(), MAX_DETAIL_BYTES),
                    );
                }
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    clamp(message, MAX_MESSAGE_BYTES),
                    details,
                )
            }
            ApiError::Status {
                code,
                reason,
                message,
            } => Status::with_error_details(
                code,
                clamp(message, MAX_MESSAGE_BYTES),
                ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                ),
            ),
            ApiError::Detailed {
                code,
                reason,
                message,
                metadata,
            } => Status::with_error_details(
                code,
                clamp(message, MAX_MESSAGE_BYTES),
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, clamp_metadata(metadata)),
            ),
            ApiError::Exhausted {
                reason,
                message,
                metadata,
                retry_delay,
            } => {
                let mut details =
                    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, clamp_metadata(metadata));
                details.set_retry_info(Some(retry_delay));
                Status::with_error_details(
                    Code::ResourceExhausted,
                    clamp(message, MAX_MESSAGE_BYTES),
                    details,
                )
            }
            ApiError::FieldRefused {
                reason,
                field,
                description,
            } => {
                let mut details = ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    std::collections::HashMap::from([("field".to_string(), field.to_string())]),
                );
                details
                    .add_bad_request_violation(field, clamp(description.clone(), MAX_DETAIL_BYTES));
                Status::with_error_details(
                    Code::InvalidArgument,
                    clamp(format!("{field}: {description}"), MAX_MESSAGE_BYTES),
                    details,
                )
            }
            ApiError::Internal(detail) => {
                // The detail goes to the log only: no internals reach the client.
                tracing::error!(error = %detail, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    "internal error",
                    ErrorDetails::with_error_info(
                        reasons::INTERNAL,
                        ERROR_DOMAIN,
                        std::collections::HashMap::new(),
                    ),
                )
            }
        }
    }
}

/// Failures of starting or running the server itself.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another kinema server")]
    DataDirInUse(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("artifacts: {0}")]
    Artifacts(#[from] kinema_artifacts::ArtifactError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Catalog(#[from] crate::commerce::CatalogError),
    #[error("models: {0}")]
    Models(#[from] kinema_engine::CatalogError),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("devices")]
    Devices(#[from] kinema_engine::DeviceError),
    #[error("--preload: {0}")]
    Preload(String),
    #[error("{0}")]
    RpcLimits(#[from] crate::rpc_limits::RpcLimitsError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("metrics exporter on {addr}: {message}")]
    Metrics {
        addr: std::net::SocketAddr,
        message: String,
    },
    /// The server's task panicked; `message` is the panic's.
    #[error("the server task panicked: {message}")]
    Panicked { message: String },
    /// The server's task was cancelled before it finished.
    #[error("the server task was cancelled")]
    TaskCancelled,
    #[error("callbacks: {0}")]
    Callbacks(String),
}

impl From<tokio::task::JoinError> for ServerError {
    fn from(e: tokio::task::JoinError) -> Self {
        match e.try_into_panic() {
            Ok(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                ServerError::Panicked { message }
            }
            Err(_) => ServerError::TaskCancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServerError;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_message() {
        let joined = tokio::spawn(async { panic!("the worker pool is gone") }).await;
        let e = ServerError::from(joined.unwrap_err());
        assert!(
            matches!(&e, ServerError::Panicked { message } if message == "the worker pool is gone"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the server task panicked: the worker pool is gone"
        );
        let formatted = tokio::spawn(async { panic!("lost {} jobs", 3) }).await;
        assert!(matches!(
            ServerError::from(formatted.unwrap_err()),
            ServerError::Panicked { message } if message == "lost 3 jobs"
        ));
    }

    #[test]
    fn an_answer_stays_within_grpc_header_limits_whatever_the_input() {
        use super::{ApiError, MAX_DETAIL_BYTES, MAX_MESSAGE_BYTES};
        use tonic_types::StatusExt;
        let huge = "x".repeat(20_000);
        let status = tonic::Status::from(ApiError::field("model", huge.clone()));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "model");
        assert!(violation.description.len() <= MAX_DETAIL_BYTES);
        assert!(status.details().len() < 4096);

        let status = tonic::Status::from(ApiError::Detailed {
            code: tonic::Code::FailedPrecondition,
            reason: "X",
            message: huge.clone(),
            metadata: [("k".to_string(), huge)].into(),
        });
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        let info = status.get_error_details().error_info().unwrap().clone();
        assert_eq!(info.reason, "X");
        assert!(info.metadata["k"].len() <= MAX_DETAIL_BYTES);
    }

    #[tokio::test]
    async fn a_cancelled_task_is_not_a_panic() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = ServerError::from(task.await.unwrap_err());
        assert!(matches!(e, ServerError::TaskCancelled), "{e:?}");
    }
}
