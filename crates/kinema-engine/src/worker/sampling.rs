//! Samples each GPU's memory and utilisation every `sample_interval` (where NVML is
//! present) for `ListWorkers` and the meters.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Worker;
use crate::{meters, DeviceSampler};

pub(super) async fn sample_devices(
    workers: Arc<Vec<Worker>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let sampler = Arc::new(DeviceSampler::new());
    loop {
        for w in workers.iter() {
            let sampler = sampler.clone();
            let device = w.inner.device.clone();
            let sample = tokio::task::spawn_blocking(move || sampler.sample(&device))
                .await
                .ok()
                .flatten();
            if let Some(s) = &sample {
                meters::device_sample(&w.inner.device.name, s);
            }
            w.inner.lock_activity().sample = sample;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
