//! The methods the console exposes as `POST /api/<service>/<method>` with a JSON body,
//! and nothing else: reading jobs, models, balances and ledgers, submitting and
//! cancelling jobs, and the operator's views. Key management, grants, account changes
//! and the test clock stay on the gRPC port.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kinema_proto::json::v1 as js;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use super::in_process::InProcess;
use super::request::{decode, grpc_request, refusal};
use super::status::error_response;
use crate::error::reasons;

macro_rules! unary_methods {
    ($($service:literal / $method:literal : $req:ty => $res:ty,)*) => {
        /// `service/method` of every unary method the console answers.
        #[cfg(test)]
        pub const UNARY: &[&str] = &[$(concat!($service, "/", $method)),*];

        /// Calls `name` (`kinema.v1.JobService/GetJob`) with the JSON `body`.
        pub async fn call_unary(
            grpc: &InProcess,
            name: &str,
            headers: &HeaderMap,
            body: &[u8],
        ) -> Response {
            $(
                if name == concat!($service, "/", $method) {
                    return unary::<$req, $res>(grpc, name, headers, body).await;
                }
            )*
            error_response(&not_exposed(name))
        }
    };
}

unary_methods! {
    "kinema.v1.JobService" / "CreateJob": js::CreateJobRequest => js::Job,
    "kinema.v1.JobService" / "GetJob": js::GetJobRequest => js::Job,
    "kinema.v1.JobService" / "ListJobs": js::ListJobsRequest => js::ListJobsResponse,
    "kinema.v1.JobService" / "CancelJob": js::CancelJobRequest => js::Job,
    "kinema.v1.JobService" / "EstimateCost": js::EstimateCostRequest => js::CostEstimate,
    "kinema.v1.JobService" / "ListModels": js::ListModelsRequest => js::ListModelsResponse,
    "kinema.v1.BillingService" / "GetBalance": js::GetBalanceRequest => js::Balance,
    "kinema.v1.BillingService" / "ListLedgerEntries": js::ListLedgerEntriesRequest => js::ListLedgerEntriesResponse,
    "kinema.v1.BillingService" / "ListCatalog": js::ListCatalogRequest => js::Catalog,
    "kinema.v1.AdminService" / "GetCallerKey": js::GetCallerKeyRequest => js::ApiKey,
    "kinema.v1.AdminService" / "GetAccount": js::GetAccountRequest => js::Account,
    "kinema.v1.AdminService" / "ListWorkers": js::ListWorkersRequest => js::ListWorkersResponse,
    "kinema.v1.AdminService" / "ListPolicyDecisions": js::ListPolicyDecisionsRequest => js::ListPolicyDecisionsResponse,
    "kinema.v1.AdminService" / "ListAccounts": js::ListAccountsRequest => js::ListAccountsResponse,
    "kinema.v1.AdminService" / "ListQueue": js::ListQueueRequest => js::ListQueueResponse,
}

/// The streaming method the console answers as server-sent events.
pub const WATCH_JOB: &str = "kinema.v1.JobService/WatchJob";
/// The download the console answers as `GET` with `Range`.
pub const DOWNLOAD_ARTIFACT: &str = "kinema.v1.JobService/DownloadArtifact";

pub fn not_exposed(name: &str) -> Status {
    refusal(
        Code::NotFound,
        reasons::METHOD_NOT_EXPOSED,
        format!(
            "{} is not a method the console exposes",
            crate::request_limits::echo(name)
        ),
    )
}

async fn unary<Req, Res>(grpc: &InProcess, name: &str, headers: &HeaderMap, body: &[u8]) -> Response
where
    Req: prost::Message + DeserializeOwned + Default + Send + Sync + 'static,
    Res: prost::Message + Serialize + Default + Send + Sync + 'static,
{
    let message = match decode::<Req>(body) {
        Ok(m) => m,
        Err(status) => return error_response(&status),
    };
    let path = format!("/{name}");
    match grpc
        .unary::<Req, Res>(&path, grpc_request(headers, message))
        .await
    {
        Ok(response) => Json(response.into_inner()).into_response(),
        Err(status) => error_response(&status),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    /// Every exposed name is a unary method of the contract, so a renamed RPC fails
    /// here rather than answering METHOD_NOT_EXPOSED.
    #[test]
    fn every_exposed_method_is_a_unary_rpc() {
        let set = prost_types::FileDescriptorSet::decode(kinema_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut unary = std::collections::HashSet::new();
        for file in &set.file {
            for service in &file.service {
                for m in &service.method {
                    if !m.client_streaming() && !m.server_streaming() {
                        unary.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            m.name()
                        ));
                    }
                }
            }
        }
        for name in super::UNARY {
            assert!(unary.contains(*name), "{name} is not a unary RPC");
        }
        assert!(!super::UNARY.iter().any(|n| n.ends_with("/CreateApiKey")));
    }
}
