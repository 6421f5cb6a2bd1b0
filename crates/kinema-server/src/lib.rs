//! The Kinema gRPC server: `JobService`, `BillingService` and `AdminService` over the
//! store and the in-process worker, with bearer-key auth, errors mapped once to gRPC
//! status + `ErrorInfo` reason, health checking and reflection.

mod admin_service;
mod app;
mod auth;
mod billing_service;
mod commerce;
mod config;
mod convert;
mod data_dir;
mod error;
mod job_feed;
mod job_watch;
mod jobs_service;
mod rate_limit;
mod rpc;
mod server;
mod sweeper;

pub use commerce::{CatalogError, CommerceConfig, CATALOG_FILE, DEFAULT_CATALOG};
pub use config::ServerConfig;
pub use data_dir::DATABASE as DATABASE_FILE;
pub use error::{reasons, ServerError};
pub use server::{start, RunningServer};
