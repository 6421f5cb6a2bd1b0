//! `GET /api/kinema.v1.JobService/DownloadArtifact?accountId=…&jobId=…&kind=VIDEO`:
//! the artifact's bytes with its content type, from `DownloadArtifact` at the offset
//! a `Range: bytes=START-[END]` header asks for (206), so players can seek.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kinema_proto::json::v1 as js;
use tokio_stream::StreamExt;
use tonic::Code;

use super::in_process::InProcess;
use super::methods::DOWNLOAD_ARTIFACT;
use super::range::parse_range;
use super::request::{grpc_request, refusal};
use super::status::error_response;
use crate::error::reasons;

pub async fn download(
    grpc: &InProcess,
    headers: &HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let account_id = query.get("accountId").cloned().unwrap_or_default();
    let job_id = query.get("jobId").cloned().unwrap_or_default();
    let kind_name = query.get("kind").map(String::as_str).unwrap_or("VIDEO");
    let Some(kind) = artifact_kind(kind_name) else {
        let status = refusal(
            Code::InvalidArgument,
            reasons::INVALID_SPEC,
            format!(
                "kind {}: expected VIDEO, POSTER or PREVIEW",
                crate::request_limits::echo(kind_name)
            ),
        );
        return error_response(&status);
    };
    // The job first: its artifact's type and size, checked by the same rules.
    let job = match grpc
        .unary::<js::GetJobRequest, js::Job>(
            "/kinema.v1.JobService/GetJob",
            grpc_request(
                headers,
                js::GetJobRequest {
                    account_id: account_id.clone(),
                    job_id: job_id.clone(),
                },
            ),
        )
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return error_response(&status),
    };
    let artifact = job.artifacts.iter().find(|a| a.kind == kind as i32);
    let (mime, total) = artifact
        .map(|a| (a.mime.clone(), a.bytes))
        .unwrap_or_default();
    // Without the artifact, DownloadArtifact below answers why (not found, expired).
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if artifact.is_some() => match parse_range(value, total) {
            Ok(r) => r,
            Err(()) => return unsatisfiable(total),
        },
        _ => None,
    };
    let offset = range.map_or(0, |r| r.start);
    let stream = match grpc
        .server_streaming::<js::DownloadArtifactRequest, js::ArtifactChunk>(
            &format!("/{DOWNLOAD_ARTIFACT}"),
            grpc_request(
                headers,
                js::DownloadArtifactRequest {
                    account_id,
                    job_id,
                    kind: kind as i32,
                    offset,
                },
            ),
        )
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return error_response(&status),
    };
    let length = range.map_or(total, |r| r.end - r.start + 1);
    let mut left = length;
    let bytes = stream
        .map_while(move |chunk| {
            if left == 0 {
                return None;
            }
            Some(chunk.map(|c| {
                let mut data = c.data;
                data.truncate(left.min(data.len() as u64) as usize);
                left -= data.len() as u64;
                bytes::Bytes::from(data)
            }))
        })
        .map(|chunk| chunk.map_err(|status| std::io::Error::other(status.message().to_string())));
    let mut response = Response::new(Body::from_stream(bytes));
    let h = response.headers_mut();
    let mime = if mime.is_empty() {
        "application/octet-stream".to_string()
    } else {
        mime
    };
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{total}", r.start, r.end)) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

fn artifact_kind(name: &str) -> Option<js::ArtifactKind> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("ARTIFACT_KIND_") {
        upper
    } else {
        format!("ARTIFACT_KIND_{upper}")
    };
    js::ArtifactKind::from_str_name(&full).filter(|k| *k != js::ArtifactKind::Unspecified)
}

fn unsatisfiable(total: u64) -> Response {
    let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}
