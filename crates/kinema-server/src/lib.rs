//! The Kinema gRPC server: `JobService`, `BillingService`, `AdminService` and
//! `OrganisationService` over the
//! store and the in-process workers, `WorkerService` for remote GPU nodes, with
//! bearer-key auth, errors mapped once to gRPC status + `ErrorInfo` reason, health
//! checking and reflection; and the worker node's side of the protocol
//! (`worker_node`), which `kinema worker` runs.

mod admin_service;
mod app;
mod auth;
mod billing_service;
pub mod callbacks;
mod commerce;
mod config;
mod console;
mod convert;
mod data_dir;
mod error;
mod job_feed;
mod job_watch;
mod jobs_service;
mod member_access;
mod organisation_service;
pub mod policy;
mod rate_limit;
mod request_limits;
mod retention;
mod rpc;
mod rpc_limits;
mod rpc_trace;
mod server;
mod sweeper;
mod tls;
mod worker_messages;
mod worker_node;
mod worker_service;

pub use commerce::{CatalogError, CommerceConfig, CATALOG_FILE, DEFAULT_CATALOG};
pub use config::{CallbackConfig, ServerConfig};
pub use data_dir::DATABASE as DATABASE_FILE;
pub use error::{reasons, ServerError};
pub use policy::{PolicyError, UsagePolicy, POLICY_FILE};
pub use rpc_limits::MethodTimeout;
pub use server::{start, RunningServer};
pub use tls::{TlsError, TlsFiles};
pub use worker_node::{run_worker_node, NodeError, WorkerNodeConfig};
