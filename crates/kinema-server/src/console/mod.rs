//! The web console (docs/operations.md, "Web console"): a small page shipped inside
//! the binary and a JSON API over the same gRPC services, called in-process, so keys,
//! roles and every rule have one source of truth.
//!
//! - `GET /`, `/console.js`, `/console.css`: the page.
//! - `POST /api/<service>/<method>`: a unary method of [`methods::UNARY`], the body
//!   and the answer in proto3 JSON; errors as `{code, reason, message,
//!   fieldViolations, metadata}` with the matching HTTP status.
//! - `POST /api/kinema.v1.JobService/WatchJob`: server-sent events.
//! - `GET /api/kinema.v1.JobService/DownloadArtifact?…`: the artifact, with `Range`.
//!
//! The key travels as `Authorization: Bearer <key>` on every call, as on gRPC.

mod in_process;
mod methods;
mod range;
mod request;
mod status;
mod tls_listener;
mod video;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use in_process::InProcess;

use crate::ServerError;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Request bodies up to this size (a CreateJob with an input image, base64-encoded).
const MAX_BODY_BYTES: usize = 8 << 20;

/// The page may load only its own script, style and API, and play videos it fetched.
const PAGE_POLICY: &str = "default-src 'self'; media-src 'self' blob:; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn router(grpc: InProcess) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/api/{service}/{method}", get(download).post(call))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(grpc)
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn call(
    State(grpc): State<InProcess>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = format!("{service}/{method}");
    let mut response = if name == methods::WATCH_JOB {
        watch::watch_job(&grpc, &headers, &body).await
    } else {
        methods::call_unary(&grpc, &name, &headers, &body).await
    };
    no_store(&mut response);
    response
}

async fn download(
    State(grpc): State<InProcess>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    query: Query<HashMap<String, String>>,
) -> Response {
    let name = format!("{service}/{method}");
    let mut response = if name == methods::DOWNLOAD_ARTIFACT {
        video::download(&grpc, &headers, query).await
    } else {
        status::error_response(&methods::not_exposed(&name))
    };
    no_store(&mut response);
    response
}

/// Answers carry account data: no cache keeps them.
fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Binds the console's port (`tls`: it will serve HTTPS).
pub async fn bind(addr: SocketAddr, tls: bool) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Listen { addr, source: e })?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServerError::Listen { addr, source: e })?;
    if !tls && !bound.ip().is_loopback() {
        warn!(%bound, "the web console serves API keys over plain HTTP: keep it on loopback or put it behind a TLS proxy");
    }
    Ok((listener, bound))
}

/// Serves the console until `shutdown` turns true: HTTPS with `tls`, else HTTP.
pub fn spawn(
    listener: TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    grpc: InProcess,
    mut shutdown: signal::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    let addr = listener.local_addr().ok();
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    let app = router(grpc);
    let served = match tls {
        Some(config) => {
            let listener = tls_listener::TlsListener::new(listener, config).map_err(|e| {
                ServerError::Listen {
                    addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    source: e,
                }
            })?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }),
    };
    Ok(tokio::spawn(async move {
        match served.await {
            Ok(Ok(())) => info!(?addr, "web console stopped"),
            Ok(Err(e)) => warn!(?addr, error = %e, "web console stopped"),
            Err(e) => warn!(?addr, error = %e, "web console task ended"),
        }
    }))
}
