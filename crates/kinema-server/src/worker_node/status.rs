//! Each device's status, reported to the control plane every few seconds (so
//! `ListWorkers` on any replica shows it), and the drains an operator asked for.

use std::time::Duration;

use kinema_engine::WorkerPool;
use kinema_proto::v1 as pb;
use tokio::sync::watch;
use tracing::{info, warn};

use super::channel::WorkerClient;
use crate::convert;

pub async fn report_status(
    client: WorkerClient,
    pool: WorkerPool,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let devices: Vec<pb::Worker> = pool.status().iter().map(convert::worker).collect();
        let mut c = client.clone();
        match c.report_status(pb::ReportStatusRequest { devices }).await {
            Ok(answer) => {
                for owner in answer.into_inner().drain_owners {
                    if pool.status().iter().any(|w| {
                        w.owner == owner && w.state != kinema_engine::WorkerState::Draining
                    }) {
                        info!(owner, "the control plane asked this device to drain");
                        let _ = pool.drain(&owner);
                    }
                }
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "reporting status failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
