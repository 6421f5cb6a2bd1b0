//! From an HTTP request to a gRPC one: the JSON body decoded as the method's proto3
//! JSON message, and the `Authorization` header carried over as gRPC metadata.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{reasons, ERROR_DOMAIN};

/// A console-side refusal, shaped like the services' own errors.
pub fn refusal(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

/// The body as the message `T` (an empty body is the empty message).
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        refusal(
            Code::InvalidArgument,
            reasons::INVALID_JSON,
            format!("the body is not this method's request as proto3 JSON: {e}"),
        )
    })
}

/// A gRPC request of `message` with the caller's `Authorization` header.
pub fn grpc_request<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<MetadataValue<Ascii>>().ok())
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
