//! A remote GPU worker node (`kinema worker`): the same worker loop as `kinema serve`'s
//! in-process workers, reaching the control plane only through `WorkerService` with a
//! worker key — leases, progress, endings (`control.rs`) and artifact uploads
//! (`uploads.rs`) — and reporting each device's status so any replica lists
//! and drains it.

mod channel;
mod control;
mod node;
mod status;
mod uploads;

pub use node::{run_worker_node, NodeError, WorkerNodeConfig};
