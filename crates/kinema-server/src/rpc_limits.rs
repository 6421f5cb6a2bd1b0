//! Backpressure at the gRPC edge (docs/operations.md, "Request limits"): a bound on
//! the calls the server works on at once, answering RESOURCE_EXHAUSTED (reason
//! `OVERLOADED`, with a retry delay) past it instead of queueing without end, and a
//! deadline on each unary call answering DEADLINE_EXCEEDED (reason `RPC_TIMEOUT`).
//!
//! Streams (WatchJob, DownloadArtifact, UploadArtifact, health Watch, reflection)
//! have no deadline: they last as long as their client wants. A call holds its
//! permit until its response starts, so an open stream does not hold one. Health
//! checks are never shed: an orchestrator must not restart a busy server.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::error::{reasons, ERROR_DOMAIN};

/// How long a client shed by the concurrency limit is told to wait.
pub const OVERLOADED_RETRY_DELAY: Duration = Duration::from_millis(500);

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The limits, shared by every connection.
#[derive(Clone)]
pub struct RpcLimits {
    inner: Arc<Limits>,
}

struct Limits {
    /// `None`: no bound on calls at once.
    permits: Option<Arc<Semaphore>>,
    max_concurrent: usize,
    /// Deadline of each unary call by path (`/kinema.v1.JobService/GetJob`).
    deadlines: HashMap<String, Duration>,
}

/// A method's deadline given by the operator, by its full name or its bare name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodTimeout {
    pub method: String,
    pub timeout: Duration,
}

impl std::str::FromStr for MethodTimeout {
    type Err = String;

    /// `CreateJob=10s` or `kinema.v1.JobService/CreateJob=10s`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (method, timeout) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected METHOD=DURATION, e.g. CreateJob=10s"))?;
        let timeout =
            humantime::parse_duration(timeout.trim()).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(MethodTimeout {
            method: method.trim().trim_start_matches('/').to_string(),
            timeout,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpcLimitsError {
    #[error("--rpc-timeout-method {0:?}: no unary RPC of this server has that name")]
    UnknownMethod(String),
    #[error("--rpc-timeout-method {0:?}: more than one service has a method of that name; give Service/Method")]
    AmbiguousMethod(String),
}

impl RpcLimits {
    /// `max_concurrent` 0: unbounded; `timeout` zero: no default deadline (each
    /// `overrides` entry still applies to its method).
    pub fn new(
        max_concurrent: usize,
        timeout: Duration,
        overrides: &[MethodTimeout],
    ) -> Result<Self, RpcLimitsError> {
        let unary = unary_methods();
        let mut deadlines: HashMap<String, Duration> = HashMap::new();
        if !timeout.is_zero() {
            for path in &unary {
                deadlines.insert(path.clone(), timeout);
            }
        }
        for o in overrides {
            let matches: Vec<&String> = unary
                .iter()
                .filter(|p| {
                    p.trim_start_matches('/') == o.method
                        || p.rsplit('/').next() == Some(o.method.as_str())
                })
                .collect();
            let path = match matches.as_slice() {
                [] => return Err(RpcLimitsError::UnknownMethod(o.method.clone())),
                [one] => (*one).clone(),
                _ => return Err(RpcLimitsError::AmbiguousMethod(o.method.clone())),
            };
            if o.timeout.is_zero() {
                deadlines.remove(&path);
            } else {
                deadlines.insert(path, o.timeout);
            }
        }
        Ok(RpcLimits {
            inner: Arc::new(Limits {
                permits: (max_concurrent > 0).then(|| Arc::new(Semaphore::new(max_concurrent))),
                max_concurrent,
                deadlines,
            }),
        })
    }

    /// The deadline of the call to `path`, if it has one.
    #[cfg(test)]
    pub fn deadline(&self, path: &str) -> Option<Duration> {
        self.inner.deadlines.get(path).copied()
    }
}

/// The paths of every unary RPC served: this server's services and health checking.
fn unary_methods() -> HashSet<String> {
    let mut unary = HashSet::new();
    for bytes in [
        kinema_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        // Both sets are compiled into this binary: one that does not decode is a build
        // error, and leaving it out only means its calls get no deadline.
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    if !method.client_streaming() && !method.server_streaming() {
                        unary.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
    }
    unary
}

impl<S> Layer<S> for RpcLimits {
    type Service = RpcLimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLimitsService {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcLimitsService<S> {
    inner: S,
    limits: RpcLimits,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcLimitsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_string();
        let limits = self.limits.inner.clone();
        // The ready inner service serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let permit = match &limits.permits {
                Some(permits) if !path.starts_with(HEALTH_PREFIX) => {
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            metrics::counter!("kinema_rpc_shed_total").increment(1);
                            return Ok(overloaded(limits.max_concurrent));
                        }
                    }
                }
                _ => None,
            };
            let call = inner.call(request);
            let response = match limits.deadlines.get(&path) {
                Some(deadline) => match tokio::time::timeout(*deadline, call).await {
                    Ok(response) => response,
                    Err(_) => {
                        metrics::counter!("kinema_rpc_timeouts_total").increment(1);
                        tracing::warn!(method = %path, deadline_ms = deadline.as_millis() as u64, "call passed its deadline");
                        return Ok(timed_out(&path, *deadline));
                    }
                },
                None => call.await,
            };
            drop(permit);
            Ok(response.map_err(Into::into)?.map(Body::new))
        })
    }
}

fn overloaded(max: usize) -> http::Response<Body> {
    let mut details = ErrorDetails::with_error_info(
        reasons::OVERLOADED,
        ERROR_DOMAIN,
        HashMap::from([("max_concurrent_rpcs".to_string(), max.to_string())]),
    );
    details.set_retry_info(Some(OVERLOADED_RETRY_DELAY));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("the server is working on its limit of {max} calls at once; retry shortly"),
        details,
    )
    .into_http()
}

fn timed_out(path: &str, deadline: Duration) -> http::Response<Body> {
    Status::with_error_details(
        Code::DeadlineExceeded,
        format!(
            "{} did not finish within the server's {} ms deadline",
            path.trim_start_matches('/'),
            deadline.as_millis()
        ),
        ErrorDetails::with_error_info(
            reasons::RPC_TIMEOUT,
            ERROR_DOMAIN,
            HashMap::from([("deadline_ms".to_string(), deadline.as_millis().to_string())]),
        ),
    )
    .into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Notify;

    const GET_JOB: &str = "/kinema.v1.JobService/GetJob";
    const WATCH_JOB: &str = "/kinema.v1.JobService/WatchJob";
    const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

    /// A service whose calls finish only when `release` is notified.
    fn held(
        release: Arc<Notify>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = std::convert::Infallible,
        Future = Pin<
            Box<
                dyn Future<Output = Result<http::Response<String>, std::convert::Infallible>>
                    + Send,
            >,
        >,
    > + Clone {
        tower::service_fn(move |_req: http::Request<()>| {
            let release = release.clone();
            Box::pin(async move {
                release.notified().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        })
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<Code> {
        Status::from_header_map(response.headers()).map(|s| s.code())
    }

    #[test]
    fn every_unary_rpc_is_known_and_streams_are_not() {
        let unary = unary_methods();
        assert!(unary.contains(GET_JOB));
        assert!(unary.contains("/kinema.v1.JobService/CreateJob"));
        assert!(unary.contains("/kinema.v1.WorkerService/LeaseJob"));
        assert!(unary.contains(HEALTH_CHECK));
        assert!(!unary.contains(WATCH_JOB));
        assert!(!unary.contains("/kinema.v1.JobService/DownloadArtifact"));
        assert!(!unary.contains("/kinema.v1.WorkerService/UploadArtifact"));
        assert!(!unary.contains("/grpc.health.v1.Health/Watch"));
    }

    #[tokio::test]
    async fn a_call_past_the_limit_is_shed_with_a_retry_delay() {
        let release = Arc::new(Notify::new());
        let limits = RpcLimits::new(1, Duration::ZERO, &[]).unwrap();
        let mut svc = limits.layer(held(release.clone()));
        let first = tokio::spawn(svc.call(request(GET_JOB)));
        tokio::task::yield_now().await;
        // The first call holds the only permit.
        let shed = svc.call(request(GET_JOB)).await.unwrap();
        assert_eq!(grpc_status(&shed), Some(Code::ResourceExhausted));
        let status = Status::from_header_map(shed.headers()).unwrap();
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, reasons::OVERLOADED);
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(OVERLOADED_RETRY_DELAY)
        );
        // Health checks are never shed.
        let health = tokio::spawn(svc.call(request(HEALTH_CHECK)));
        tokio::task::yield_now().await;
        release.notify_waiters();
        let ok = first.await.unwrap().unwrap();
        assert_eq!(grpc_status(&ok), None);
        assert_eq!(grpc_status(&health.await.unwrap().unwrap()), None);
        // With the permit back, the next call runs.
        let next = tokio::spawn(svc.call(request(GET_JOB)));
        tokio::task::yield_now().await;
        release.notify_waiters();
        assert_eq!(grpc_status(&next.await.unwrap().unwrap()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_call_past_its_deadline_is_deadline_exceeded_and_a_stream_is_not_cut() {
        let release = Arc::new(Notify::new());
        let limits = RpcLimits::new(0, Duration::from_secs(5), &[]).unwrap();
        let mut svc = limits.layer(held(release.clone()));
        let late = svc.call(request(GET_JOB)).await.unwrap();
        assert_eq!(grpc_status(&late), Some(Code::DeadlineExceeded));
        let status = Status::from_header_map(late.headers()).unwrap();
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            reasons::RPC_TIMEOUT
        );
        // A stream's handler may take longer than any unary deadline.
        let watch = tokio::spawn(svc.call(request(WATCH_JOB)));
        tokio::time::sleep(Duration::from_secs(60)).await;
        release.notify_waiters();
        assert_eq!(grpc_status(&watch.await.unwrap().unwrap()), None);
    }

    #[test]
    fn method_overrides_name_a_method_or_fail() {
        let o: MethodTimeout = "CreateJob=10s".parse().unwrap();
        let limits = RpcLimits::new(0, Duration::from_secs(30), &[o]).unwrap();
        assert_eq!(
            limits.deadline("/kinema.v1.JobService/CreateJob"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(limits.deadline(GET_JOB), Some(Duration::from_secs(30)));
        assert_eq!(limits.deadline(WATCH_JOB), None);
        let full: MethodTimeout = "kinema.v1.JobService/GetJob=0s".parse().unwrap();
        let limits = RpcLimits::new(0, Duration::from_secs(30), &[full]).unwrap();
        assert_eq!(limits.deadline(GET_JOB), None);
        assert_eq!(
            RpcLimits::new(0, Duration::ZERO, &["Nope=1s".parse().unwrap()]).err(),
            Some(RpcLimitsError::UnknownMethod("Nope".into()))
        );
        assert!("CreateJob".parse::<MethodTimeout>().is_err());
        assert!("CreateJob=soon".parse::<MethodTimeout>().is_err());
    }
}
