//! One worker's loop: preload, lease a job and its batch companions, run them, hand
//! out-of-memory retries to an idle peer, wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kinema_store::{Job, LeaseFilter};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{default_max_batch, Worker};
use crate::idle_gap::IdleGap;
use crate::{meters, JobEventKind};

impl Worker {
    /// A receiver that turns true when this worker must stop leasing.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    pub(crate) fn heartbeat(&self) {
        self.inner.lock_activity().last_heartbeat_ms = self.inner.clock.now_ms();
    }

    async fn preload(&self) {
        for model in &self.inner.config.preload {
            if !self.inner.models.can_hold(model) {
                warn!(
                    model,
                    "not preloaded: it does not fit this device's memory budget"
                );
                continue;
            }
            let models = self.inner.models.clone();
            let m = model.clone();
            match tokio::task::spawn_blocking(move || models.get(&m).map(|_| ())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(model, error = %e, "preloading failed"),
                Err(e) => error!(model, error = %e, "preloading ended abnormally"),
            }
        }
    }

    pub(super) async fn run_loop(self) {
        let inner = &self.inner;
        info!(budget = inner.models.budget(), "worker started");
        let mut stop = self.stop_signal();
        self.preload().await;
        let filter = LeaseFilter {
            models: inner.models.placeable_models(),
        };
        let mut idle = IdleGap::default();
        loop {
            if *stop.borrow() {
                break;
            }
            inner.pool.idle[inner.index].store(true, Ordering::SeqCst);
            self.heartbeat();
            let now = inner.clock.now_ms();
            match inner
                .control
                .lease(&inner.owner, &filter, inner.config.lease_ms, now)
                .await
            {
                Ok(leased) => {
                    for job in leased.refused {
                        warn!(job = %job.id, state = %job.state, "job ended at start instead of running");
                        inner.events.publish(JobEventKind::StateChanged, job, now);
                    }
                    if let Some(job) = leased.job {
                        meters::leased(&inner.device.name);
                        meters::queue_wait(now - job.created_at);
                        inner.pool.idle[inner.index].store(false, Ordering::SeqCst);
                        meters::busy(&inner.owner, true);
                        inner
                            .events
                            .publish(JobEventKind::StateChanged, job.clone(), now);
                        let idle_since = idle.since(job.created_at);
                        let jobs = self.with_companions(job).await;
                        let n = jobs.len() as u64;
                        let oom_retries = self.run_batch(jobs, idle_since).await;
                        idle.job_ended(inner.clock.now_ms());
                        inner.lock_activity().jobs_done += n;
                        meters::busy(&inner.owner, false);
                        for job in &oom_retries {
                            self.hand_off(job).await;
                        }
                        continue;
                    }
                }
                Err(e) => error!(error = %e, "leasing a job failed"),
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        inner.pool.idle[inner.index].store(false, Ordering::SeqCst);
        info!("worker stopped leasing");
    }

    /// An out-of-memory retry runs elsewhere if it can: while another worker that can
    /// hold the model is idle, this one leases nothing until the job has left the
    /// queue (bounded, so a lost wake-up cannot stall it).
    async fn hand_off(&self, job: &kinema_store::Job) {
        let inner = &self.inner;
        if !inner.pool.idle_peer_for(inner.index, &job.params.model) {
            return;
        }
        inner.wake_all();
        for _ in 0..100 {
            match inner.control.still_queued(&job.id).await {
                Ok(true) => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Worker {
    /// The leader and the queued jobs leased to run in one batch with it: up to the
    /// server's `max_batch`, the model's, and what the device's budget leaves beside
    /// the model.
    async fn with_companions(&self, leader: Job) -> Vec<Job> {
        let inner = &self.inner;
        let room = match inner.models.manifest(&leader.params.model) {
            Some(m) if leader.batch_key.is_some() => {
                let free = inner.models.budget().saturating_sub(m.memory_bytes);
                let limit = inner
                    .config
                    .max_batch
                    .unwrap_or_else(|| default_max_batch(&inner.device));
                m.batch_capacity(free).min(limit)
            }
            _ => 1,
        };
        if room <= 1 {
            return vec![leader];
        }
        let now = inner.clock.now_ms();
        let leased = inner
            .control
            .lease_companions(&inner.owner, &leader, room - 1, inner.config.lease_ms, now)
            .await;
        let mut jobs = vec![leader];
        match leased {
            Ok(leased) => {
                for job in leased.refused {
                    warn!(job = %job.id, state = %job.state, "job ended at start instead of running");
                    inner.events.publish(JobEventKind::StateChanged, job, now);
                }
                for job in leased.companions {
                    meters::leased(&inner.device.name);
                    meters::queue_wait(now - job.created_at);
                    inner
                        .events
                        .publish(JobEventKind::StateChanged, job.clone(), now);
                    jobs.push(job);
                }
            }
            Err(e) => error!(error = %e, "leasing batch companions failed"),
        }
        if jobs.len() > 1 {
            info!(
                size = jobs.len(),
                key = jobs[0].batch_key.as_deref().unwrap_or_default(),
                "running a batch"
            );
        }
        jobs
    }
}
