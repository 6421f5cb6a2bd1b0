//! The worker pool against a real SQLite store and `testsrc` on CPU worker slots:
//! cancel latency in steps, retries of retryable failures (one debit, at most one
//! refund), time limits, placement by memory budget, drain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kinema_artifacts::{Artifacts, LocalArtifacts};
use kinema_engine::*;
use kinema_store::{EntryKind, Job, JobPriority, JobState, NewJob, Store, StorePolicy};
use tokio::sync::watch;

const GRANT: i64 = 10_000;
const QUOTE: i64 = 10;

struct Rig {
    store: Store,
    pool: WorkerPool,
    account: String,
    shutdown: watch::Sender<bool>,
    handle: Option<PoolHandle>,
    _dir: tempfile::TempDir,
}

struct Setup {
    /// Memory budget of each CPU worker.
    budgets: Vec<u64>,
    max_attempts: u32,
    timeouts: Timeouts,
    drain_grace: Duration,
    max_batch: usize,
    registry: Option<Arc<ModelRegistry>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            budgets: vec![u64::MAX],
            max_attempts: 3,
            timeouts: Timeouts::default(),
            drain_grace: Duration::from_secs(20),
            max_batch: 4,
            registry: None,
        }
    }
}

impl Rig {
    async fn start(setup: Setup) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("k.db"), StorePolicy::default())
            .await
            .unwrap();
        let artifacts: Artifacts = Arc::new(
            LocalArtifacts::open(dir.path().join("artifacts"))
                .await
                .unwrap(),
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now_ms();
        let account = store.create_account("acme", None, now).await.unwrap().id;
        store
            .grant_credits(&account, GRANT, None, "test", "test", now)
            .await
            .unwrap();
        let devices = setup
            .budgets
            .iter()
            .map(|b| DeviceSlot {
                info: cpu_info(),
                memory_budget: *b,
            })
            .collect();
        let pool = WorkerPool::new(
            store.clone(),
            setup
                .registry
                .unwrap_or_else(|| Arc::new(ModelRegistry::builtin())),
            artifacts,
            clock,
            JobEvents::default(),
            WorkerConfig {
                owner: "test".into(),
                lease_ms: 30_000,
                max_attempts: setup.max_attempts,
                fault_injection: true,
                artifact_ttl_ms: 3_600_000,
                scratch_dir: dir.path().join("scratch"),
                poll_interval: Duration::from_millis(50),
                drain_grace: setup.drain_grace,
                timeouts: setup.timeouts,
                preload: Vec::new(),
                sample_interval: Duration::from_secs(5),
                max_batch: Some(setup.max_batch),
            },
            devices,
        );
        let (shutdown, rx) = watch::channel(false);
        let handle = Some(pool.spawn(rx));
        Rig {
            store,
            pool,
            account,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    async fn submit(&self, steps: u32, meta: &[(&str, &str)]) -> Job {
        self.submit_keyed(steps, meta, None).await
    }

    async fn submit_keyed(&self, steps: u32, meta: &[(&str, &str)], key: Option<&str>) -> Job {
        let metadata: BTreeMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let job = NewJob {
            account_id: self.account.clone(),
            external_id: None,
            idempotency_key: None,
            request_hash: format!("{metadata:?}-{steps}"),
            params: GenerationParams {
                model: "testsrc".into(),
                prompt: "a fox".into(),
                width: 32,
                height: 32,
                num_frames: 3,
                fps: 8,
                steps,
                guidance_scale: 5.0,
                seed: 7,
                output: "mp4".into(),
                ..GenerationParams::default()
            },
            callback_url: String::new(),
            metadata,
            quote: QUOTE,
            member_id: None,
            priority: JobPriority::Normal,
            batch_key: key.map(str::to_string),
        };
        let job = self
            .store
            .submit_job(job, "test", SystemClock.now_ms())
            .await
            .unwrap()
            .job()
            .clone();
        self.pool.wake();
        job
    }

    async fn job(&self, id: &str) -> Job {
        self.store.get_job(None, id).await.unwrap().unwrap()
    }

    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..1200 {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {id} never got {what}: {:?}", self.job(id).await);
    }

    async fn terminal(&self, id: &str) -> Job {
        self.wait_for(id, "terminal", |j| j.state.is_terminal())
            .await
    }

    /// The job was debited once and refunded once, in full: Hold, Debit, Refund.
    async fn assert_refunded_once(&self, job: &Job) {
        assert_eq!((job.debited, job.refunded), (QUOTE, QUOTE), "{job:?}");
        assert_eq!(
            self.kinds(&job.id).await,
            [EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
        );
    }

    async fn kinds(&self, job: &str) -> Vec<EntryKind> {
        self.store
            .ledger_entries(&self.account, Some(job), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(h) = self.handle.take() {
            h.join().await;
        }
        self.store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_denoising_within_one_step_and_frees_the_worker() {
    let rig = Rig::start(Setup::default()).await;
    let steps = 200;
    let job = rig.submit(steps, &[("kinema.step_delay_ms", "20")]).await;
    rig.wait_for(&job.id, "step 3", |j| j.progress_step >= 3)
        .await;
    rig.store
        .cancel_job(&rig.account, &job.id, "test", SystemClock.now_ms())
        .await
        .unwrap();
    rig.pool.request_cancel(&job.id);
    let done = rig.terminal(&job.id).await;
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    let seen = done.usage.cancel_seen_at_step.expect("cancel seen");
    let stopped = done.usage.stopped_at_step.expect("denoising stopped early");
    assert!(seen >= 3 && seen < steps, "{:?}", done.usage);
    assert!(
        stopped == seen || stopped == seen + 1,
        "stopped after step {stopped}, cancel seen after step {seen}"
    );
    rig.assert_refunded_once(&done).await;

    // The worker is free: the next job runs to the end.
    let next = rig.submit(2, &[]).await;
    assert_eq!(rig.terminal(&next.id).await.state, JobState::Succeeded);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_is_retried_without_a_second_debit() {
    let rig = Rig::start(Setup::default()).await;
    let job = rig
        .submit(
            2,
            &[("kinema.fail_at", "store"), ("kinema.fail_times", "1")],
        )
        .await;
    let done = rig.terminal(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
    assert_eq!((done.debited, done.refunded), (QUOTE, 0));
    assert_eq!(
        rig.kinds(&job.id).await,
        [EntryKind::Hold, EntryKind::Debit]
    );

    // Failing every time: FAILED after max_attempts, refunded once.
    let job = rig.submit(2, &[("kinema.fail_at", "store")]).await;
    let done = rig.terminal(&job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert_eq!(done.attempts, 3);
    assert_eq!(done.failure.as_ref().unwrap().code, "STORAGE_ERROR");
    rig.assert_refunded_once(&done).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_memory_is_retried_once_on_another_device() {
    let rig = Rig::start(Setup {
        budgets: vec![u64::MAX, u64::MAX],
        ..Setup::default()
    })
    .await;
    let once = rig
        .submit(
            3,
            &[
                ("kinema.fail_at", "step:2"),
                ("kinema.fail_code", "OUT_OF_MEMORY"),
                ("kinema.fail_times", "1"),
            ],
        )
        .await;
    let done = rig.terminal(&once.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
    assert!(done.run_alone, "an OOM retry runs alone (unbatched)");
    assert_eq!(
        rig.kinds(&once.id).await,
        [EntryKind::Hold, EntryKind::Debit]
    );

    // Each worker ran it once: the retry went to the other (idle) device.
    let status = rig.pool.status();
    assert_eq!(
        status.iter().map(|w| w.jobs_done).collect::<Vec<_>>(),
        [1, 1],
        "{status:?}"
    );

    let always = rig
        .submit(
            3,
            &[
                ("kinema.fail_at", "decode"),
                ("kinema.fail_code", "OUT_OF_MEMORY"),
            ],
        )
        .await;
    let done = rig.terminal(&always.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert_eq!(
        done.attempts, 2,
        "an OOM is retried once, not up to max_attempts"
    );
    let failure = done.failure.clone().unwrap();
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        ("OUT_OF_MEMORY", true)
    );
    rig.assert_refunded_once(&done).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_fail_the_job_with_a_refund() {
    let rig = Rig::start(Setup {
        budgets: vec![u64::MAX, u64::MAX],
        timeouts: Timeouts {
            job: Some(Duration::from_millis(400)),
            ..Timeouts::default()
        },
        ..Setup::default()
    })
    .await;
    let slow = rig.submit(200, &[("kinema.step_delay_ms", "20")]).await;
    let quick = rig.submit(2, &[]).await;
    let done = rig.terminal(&slow.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let failure = done.failure.clone().unwrap();
    assert_eq!(failure.code, "TIMEOUT", "{failure:?}");
    assert_eq!(done.attempts, 1, "a timeout is not retried");
    let stopped = done
        .usage
        .stopped_at_step
        .expect("stopped by the step callback");
    assert!(stopped < 200, "{stopped}");
    rig.assert_refunded_once(&done).await;
    assert_eq!(rig.terminal(&quick.id).await.state, JobState::Succeeded);
    rig.stop().await;

    // A model's own job limit overrides the server's (none here).
    let testsrc = ModelRegistry::builtin()
        .manifest("testsrc")
        .unwrap()
        .clone();
    let mut registry = ModelRegistry::empty();
    registry.register(
        ModelManifest {
            job_timeout: Some(Duration::from_millis(300)),
            ..testsrc
        },
        |_device| {
            Ok(Arc::new(kinema_testsrc::TestSource::new()) as Arc<dyn kinema_diffusion::Pipeline>)
        },
    );
    let rig = Rig::start(Setup {
        registry: Some(Arc::new(registry)),
        ..Setup::default()
    })
    .await;
    let slow = rig.submit(200, &[("kinema.step_delay_ms", "20")]).await;
    let done = rig.terminal(&slow.id).await;
    let failure = done.failure.clone().unwrap();
    assert_eq!(failure.code, "TIMEOUT", "{failure:?}");
    assert!(failure.message.contains("the job exceeded"), "{failure:?}");
    rig.stop().await;

    // A stage limit: denoising alone.
    let rig = Rig::start(Setup {
        timeouts: Timeouts {
            denoise: Some(Duration::from_millis(300)),
            ..Timeouts::default()
        },
        ..Setup::default()
    })
    .await;
    let slow = rig.submit(200, &[("kinema.step_delay_ms", "20")]).await;
    let done = rig.terminal(&slow.id).await;
    let failure = done.failure.clone().unwrap();
    assert_eq!(failure.code, "TIMEOUT", "{failure:?}");
    assert!(failure.message.contains("DENOISING"), "{failure:?}");
    assert_eq!((done.debited, done.refunded), (QUOTE, QUOTE));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_only_to_devices_that_can_hold_the_model() {
    // testsrc needs 64 MiB: the first worker's budget is too small for it.
    let rig = Rig::start(Setup {
        budgets: vec![1 << 20, 1 << 30],
        ..Setup::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(rig.submit(2, &[]).await.id);
    }
    for id in &ids {
        assert_eq!(rig.terminal(id).await.state, JobState::Succeeded);
    }
    let status = rig.pool.status();
    assert_eq!(status[0].jobs_done, 0, "{status:?}");
    assert!(status[0].resident.is_empty(), "{status:?}");
    assert_eq!(status[1].jobs_done, 4, "{status:?}");
    assert_eq!(
        status[1]
            .resident
            .iter()
            .map(|r| r.model.as_str())
            .collect::<Vec<_>>(),
        ["testsrc"]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_finishes_its_job_and_leases_nothing_more() {
    let rig = Rig::start(Setup {
        budgets: vec![u64::MAX, u64::MAX],
        ..Setup::default()
    })
    .await;
    let first = rig.submit(20, &[("kinema.step_delay_ms", "20")]).await;
    rig.wait_for(&first.id, "a step", |j| j.progress_step >= 1)
        .await;
    let owner = rig
        .pool
        .status()
        .into_iter()
        .find(|w| w.current_jobs.contains(&first.id))
        .expect("a worker runs it")
        .owner;
    let drained = rig.pool.drain(&owner).unwrap();
    assert_eq!(drained.state, WorkerState::Draining);
    assert!(matches!(
        rig.pool.drain("nobody"),
        Err(DrainError::UnknownWorker(_))
    ));
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(rig.submit(2, &[]).await.id);
    }
    assert_eq!(rig.terminal(&first.id).await.state, JobState::Succeeded);
    for id in &later {
        assert_eq!(rig.terminal(id).await.state, JobState::Succeeded);
    }
    let status = rig.pool.status();
    let (drained, other): (Vec<_>, Vec<_>) = status.iter().partition(|w| w.owner == owner);
    assert_eq!(drained[0].jobs_done, 1, "{status:?}");
    assert_eq!(drained[0].state, WorkerState::Draining);
    assert_eq!(other[0].jobs_done, 3, "{status:?}");
    rig.stop().await;
}

/// The test source, except that a shared denoise of more than one job fails.
struct FailingBatch(kinema_testsrc::TestSource);

impl kinema_diffusion::Pipeline for FailingBatch {
    fn encode_prompt(
        &self,
        r: &kinema_diffusion::GenerationRequest,
    ) -> Result<kinema_diffusion::Conditioning, kinema_diffusion::PipelineError> {
        self.0.encode_prompt(r)
    }
    fn denoise(
        &self,
        r: &kinema_diffusion::GenerationRequest,
        c: &kinema_diffusion::Conditioning,
        on_step: &mut dyn FnMut(kinema_diffusion::StepProgress) -> kinema_diffusion::StepControl,
    ) -> Result<kinema_diffusion::Latents, kinema_diffusion::PipelineError> {
        self.0.denoise(r, c, on_step)
    }
    fn decode(
        &self,
        r: &kinema_diffusion::GenerationRequest,
        l: kinema_diffusion::Latents,
    ) -> Result<kinema_diffusion::VideoFrames, kinema_diffusion::PipelineError> {
        self.0.decode(r, l)
    }
    fn max_batch(&self) -> usize {
        4
    }
    fn denoise_batch(
        &self,
        items: &[kinema_diffusion::BatchItem<'_>],
        on_step: &mut dyn FnMut(
            usize,
            kinema_diffusion::StepProgress,
        ) -> kinema_diffusion::StepControl,
    ) -> Vec<Result<kinema_diffusion::Latents, kinema_diffusion::PipelineError>> {
        if items.len() == 1 {
            return self.0.denoise_batch(items, on_step);
        }
        let e = kinema_diffusion::PipelineError::Model("the shared denoise failed".into());
        items.iter().map(|_| Err(e.clone())).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_error_in_a_batch_fails_each_member_with_one_refund() {
    let testsrc = ModelRegistry::builtin()
        .manifest("testsrc")
        .unwrap()
        .clone();
    let mut registry = ModelRegistry::empty();
    registry.register(
        ModelManifest {
            max_batch: 4,
            ..testsrc
        },
        |_device| {
            Ok(Arc::new(FailingBatch(kinema_testsrc::TestSource::new()))
                as Arc<dyn kinema_diffusion::Pipeline>)
        },
    );
    let rig = Rig::start(Setup {
        registry: Some(Arc::new(registry)),
        ..Setup::default()
    })
    .await;
    // a job without a key keeps the worker busy while the batch queues
    let blocker = rig.submit(200, &[("kinema.step_delay_ms", "20")]).await;
    rig.wait_for(&blocker.id, "step 1", |j| j.progress_step >= 1)
        .await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(rig.submit_keyed(2, &[], Some("testsrc/32x32x3/2")).await);
    }
    rig.store
        .cancel_job(&rig.account, &blocker.id, "test", SystemClock.now_ms())
        .await
        .unwrap();
    rig.pool.request_cancel(&blocker.id);
    for m in &members {
        let done = rig.terminal(&m.id).await;
        assert_eq!(done.state, JobState::Failed, "{done:?}");
        assert_eq!(done.failure.as_ref().unwrap().code, "MODEL_ERROR");
        assert_eq!(done.usage.batch_size, 3, "{:?}", done.usage);
        rig.assert_refunded_once(&done).await;
    }
    rig.stop().await;
}
