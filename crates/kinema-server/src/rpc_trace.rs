//! Every call in a tracing span and in the metrics (docs/operations.md, "Tracing and
//! per-call metrics"): the span `rpc` carries the method, and `rpc::handle` adds the
//! key, account and job the call is about, so every log line the call writes names
//! them. Each call is counted by method and gRPC code (`kinema_rpc_requests_total`)
//! and timed until its response starts (`kinema_rpc_duration_seconds`).
//!
//! This layer sits outside the request limits, so shed and timed-out calls are
//! counted with their codes too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument;

pub const REQUESTS_TOTAL: &str = "kinema_rpc_requests_total";
pub const DURATION_SECONDS: &str = "kinema_rpc_duration_seconds";

/// Histogram buckets of `kinema_rpc_duration_seconds`: 100 µs to 30 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Calls answered, by method and gRPC code (the code the response started with)"
    );
    metrics::describe_histogram!(
        DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a call's arrival to the start of its response, by method"
    );
}

#[derive(Clone, Copy, Default)]
pub struct RpcTrace;

impl<S> Layer<S> for RpcTrace {
    type Service = RpcTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTraceService { inner }
    }
}

#[derive(Clone)]
pub struct RpcTraceService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTraceService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_string();
        let span =
            tracing::info_span!("rpc", method = %method, key = Empty, account = Empty, job = Empty);
        // Latency of a call, not business time: the injected clock is not for this.
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let response = call.await;
                let code = match &response {
                    Ok(response) => response_code(response.headers()),
                    Err(_) => Code::Internal,
                };
                let elapsed = started.elapsed();
                let code_label = format!("{code:?}");
                metrics::counter!(REQUESTS_TOTAL, "method" => method.clone(), "code" => code_label.clone())
                    .increment(1);
                metrics::histogram!(DURATION_SECONDS, "method" => method)
                    .record(elapsed.as_secs_f64());
                tracing::debug!(code = %code_label, micros = elapsed.as_micros() as u64, "rpc answered");
                response
            }
            .instrument(span),
        )
    }
}

/// The code a response starts with: a `grpc-status` header (an error, answered with
/// trailers only), else OK (the status follows in the trailers).
fn response_code(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from)
        .unwrap_or(Code::Ok)
}

/// Names the key and account a call acts as, and the job it names, on the call's span.
pub fn record_caller(key: &kinema_store::ApiKey, account_id: &str, job_id: &str) {
    let span = tracing::Span::current();
    span.record("key", key.id.as_str());
    let account = key.account_id.as_deref().unwrap_or(account_id);
    if !account.is_empty() {
        span.record("account", account);
    }
    if !job_id.is_empty() {
        span.record("job", job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_from_a_trailers_only_answer() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(response_code(&headers), Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(response_code(&headers), Code::NotFound);
    }
}
