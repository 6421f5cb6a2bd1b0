//! A gRPC status as the console's JSON API answers it: the HTTP status that matches
//! the code, and `{code, reason, message, fieldViolations, metadata}` from the
//! status and its `ErrorInfo` / `BadRequest` details.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The gRPC code's name: `NOT_FOUND`.
    pub code: String,
    /// The `ErrorInfo` reason (`JOB_NOT_FOUND`); empty when the status has none.
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub field_violations: Vec<FieldViolation>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl ErrorBody {
    pub fn from_status(status: &Status) -> Self {
        let details = status.get_error_details();
        let (reason, metadata) = details
            .error_info()
            .map(|info| {
                let metadata = info.metadata.iter().map(|(k, v)| (k.clone(), v.clone()));
                (info.reason.clone(), metadata.collect())
            })
            .unwrap_or_default();
        let field_violations = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            code: code_name(status.code()).to_string(),
            reason,
            message: status.message().to_string(),
            field_violations,
            metadata,
        }
    }
}

/// The HTTP status of a gRPC code (the mapping of google.rpc.Code).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 Client Closed Request, as google.rpc maps CANCELLED.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code's name as proto3 JSON and gRPC documentation write it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP answer of a failed call.
pub fn error_response(status: &Status) -> Response {
    let http = http_status(status.code());
    let mut response = (http, Json(ErrorBody::from_status(status))).into_response();
    if http == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{reasons, ERROR_DOMAIN};
    use tonic_types::ErrorDetails;

    #[test]
    fn reason_and_field_violations_come_from_the_details() {
        let mut details = ErrorDetails::with_error_info(
            reasons::INVALID_SPEC,
            ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        details.add_bad_request_violation("width", "must be a multiple of 16");
        let status = Status::with_error_details(Code::InvalidArgument, "bad spec", details);
        let body = ErrorBody::from_status(&status);
        assert_eq!(body.code, "INVALID_ARGUMENT");
        assert_eq!(body.reason, "INVALID_SPEC");
        assert_eq!(
            body.field_violations,
            vec![FieldViolation {
                field: "width".into(),
                description: "must be a multiple of 16".into()
            }]
        );
        assert_eq!(http_status(status.code()), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_status_without_details_still_answers() {
        let body = ErrorBody::from_status(&Status::not_found("gone"));
        assert_eq!(
            (body.code.as_str(), body.reason.as_str()),
            ("NOT_FOUND", "")
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
