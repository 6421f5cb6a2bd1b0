//! `WatchJob` as server-sent events: one `job` event per `JobEvent` (its proto3 JSON),
//! an `error` event (the error body) if the stream fails after it started. Errors
//! before the first event (a wrong key, an unknown job) are plain JSON errors.

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kinema_proto::json::v1 as js;
use tokio_stream::StreamExt;

use super::in_process::InProcess;
use super::methods::WATCH_JOB;
use super::request::{decode, grpc_request};
use super::status::{error_response, ErrorBody};

pub async fn watch_job(grpc: &InProcess, headers: &HeaderMap, body: &[u8]) -> Response {
    let request = match decode::<js::WatchJobRequest>(body) {
        Ok(r) => r,
        Err(status) => return error_response(&status),
    };
    let path = format!("/{WATCH_JOB}");
    let stream = match grpc
        .server_streaming::<js::WatchJobRequest, js::JobEvent>(
            &path,
            grpc_request(headers, request),
        )
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return error_response(&status),
    };
    let events = stream.map(|item| {
        let event = match item {
            Ok(job_event) => Event::default().event("job").json_data(&job_event),
            Err(status) => Event::default()
                .event("error")
                .json_data(ErrorBody::from_status(&status)),
        };
        Ok::<_, Infallible>(event.unwrap_or_else(|e| {
            Event::default()
                .event("error")
                .data(format!("encoding the event: {e}"))
        }))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
