//! The delivery loop (docs/api.md, "Callbacks"): claims the outbox's due rows, POSTs
//! each signed, and records how it went. A failed attempt is tried again after an
//! exponential backoff with jitter, on the injected clock, until 24 hours (by
//! default) after the event, then marked FAILED. Redirects are not followed: a 3xx
//! answer is a failed attempt. At-least-once: a send whose record was lost (a crash
//! between the two) is sent again once its claim's hold has passed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kinema_engine::Clock;
use kinema_store::{AttemptNext, CallbackAttempt, CallbackDelivery, Store};
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::address::TargetPolicy;
use super::resolver::{CheckedResolver, Lookup, SystemLookup};
use super::{signing, target};

/// Deliveries one claim takes.
const BATCH: u32 = 64;
/// Bytes of a failed answer's body kept in `last_error`.
const ERROR_SNIPPET_BYTES: usize = 200;

pub const EVENT_ID_HEADER: &str = "Kinema-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Kinema-Event-Type";
pub const TIMESTAMP_HEADER: &str = "Kinema-Timestamp";
pub const SIGNATURE_HEADER: &str = "Kinema-Signature";

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// One attempt, connection to the end of the answer.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The first retry's wait; each further one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// After this long from its event a delivery is given up (FAILED).
    pub give_up_after: Duration,
    /// How often the outbox is looked at.
    pub poll_interval: Duration,
    /// The most of an answer's body read.
    pub max_response_bytes: usize,
    /// Deliveries sent at once.
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_millis(500),
            max_response_bytes: 64 * 1024,
            concurrency: 16,
        }
    }
}

pub struct Deliveries {
    store: Store,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    /// Signs for accounts without a secret of their own (`--callback-secret-file`).
    server_secret: Option<Vec<u8>>,
    settings: DeliverySettings,
    wake: Notify,
}

/// Why an attempt failed, and whether another could do better.
struct Failed {
    status: Option<u16>,
    error: String,
    /// The URL may never be reached (refused by the SSRF rules): no retry.
    final_: bool,
}

impl Failed {
    fn retry(status: Option<u16>, error: String) -> Self {
        Self {
            status,
            error,
            final_: false,
        }
    }
}

impl Deliveries {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        policy: Arc<TargetPolicy>,
        server_secret: Option<Vec<u8>>,
        settings: DeliverySettings,
    ) -> Result<Self, reqwest::Error> {
        Self::with_lookup(
            store,
            clock,
            policy,
            server_secret,
            settings,
            Arc::new(SystemLookup),
        )
    }

    pub fn with_lookup(
        store: Store,
        clock: Arc<dyn Clock>,
        policy: Arc<TargetPolicy>,
        server_secret: Option<Vec<u8>>,
        settings: DeliverySettings,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver::new(policy.clone(), lookup)))
            // A proxy from the environment would connect on the callback's behalf,
            // past the resolver's check.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("kinema-callbacks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            clock,
            client,
            policy,
            server_secret,
            settings,
            wake: Notify::new(),
        })
    }

    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// Whether deliveries for `account_id` can be signed now: it has a live secret of
    /// its own, or the server has one.
    pub async fn can_sign(&self, account_id: &str) -> Result<bool, kinema_store::StoreError> {
        if self.server_secret.is_some() {
            return Ok(true);
        }
        let now = self.clock.now_ms();
        Ok(!self
            .store
            .live_callback_secrets(account_id, now)
            .await?
            .is_empty())
    }

    /// Looks at the outbox now rather than at the next poll (AdvanceClock).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let more = self.run_once().await;
                self.count_pending().await;
                if !more {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }

    /// Claims and sends one batch of due deliveries; true if the batch was full
    /// (more may be due).
    pub async fn run_once(&self) -> bool {
        let now = self.clock.now_ms();
        // Past the send's own end: no other loop takes a row while it is in flight.
        let hold = self.settings.timeout + Duration::from_secs(5);
        let claimed = match self
            .store
            .claim_due_callbacks(now, BATCH, hold.as_millis() as i64)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "claiming due callbacks failed");
                return false;
            }
        };
        let full = claimed.len() == BATCH as usize;
        futures::stream::iter(claimed)
            .for_each_concurrent(self.settings.concurrency.max(1), |d| self.deliver(d))
            .await;
        full
    }

    async fn count_pending(&self) {
        match self.store.pending_callbacks().await {
            Ok(n) => metrics::gauge!("kinema_callback_pending").set(n as f64),
            Err(e) => debug!(error = %e, "counting pending callbacks failed"),
        }
    }

    async fn deliver(&self, d: CallbackDelivery) {
        let outcome = self.attempt(&d).await;
        let now = self.clock.now_ms();
        let event = d.event.as_str();
        let attempt = match outcome {
            Ok(status) => {
                metrics::counter!("kinema_callback_attempts_total", "event" => event, "result" => "delivered")
                    .increment(1);
                debug!(event_id = %d.id, job = %d.job_id, status, "callback delivered");
                CallbackAttempt {
                    status: Some(status),
                    error: String::new(),
                    next: AttemptNext::Delivered,
                }
            }
            Err(failed) => {
                metrics::counter!("kinema_callback_attempts_total", "event" => event, "result" => "failed")
                    .increment(1);
                let next = if failed.final_ {
                    AttemptNext::GiveUp
                } else {
                    self.next_try(&d, now)
                };
                if next == AttemptNext::GiveUp {
                    metrics::counter!("kinema_callback_failures_total", "event" => event)
                        .increment(1);
                    warn!(event_id = %d.id, job = %d.job_id, error = %failed.error, attempts = d.attempts + 1, "callback given up");
                } else {
                    debug!(event_id = %d.id, job = %d.job_id, error = %failed.error, "callback attempt failed");
                }
                CallbackAttempt {
                    status: failed.status,
                    error: failed.error,
                    next,
                }
            }
        };
        if let Err(e) = self
            .store
            .record_callback_attempt(&d.id, attempt, now)
            .await
        {
            // The claim's hold passes and the event is sent again: at-least-once.
            warn!(error = %e, event_id = %d.id, "recording a callback attempt failed");
        }
    }

    /// When a failed delivery is tried again: the base doubled per attempt made, capped,
    /// with jitter (half to all of it); given up once that is past its time.
    fn next_try(&self, d: &CallbackDelivery, now: i64) -> AttemptNext {
        let made = u32::try_from(d.attempts).unwrap_or(u32::MAX);
        let base = self.settings.retry_base.as_millis() as i64;
        let cap = self.settings.retry_max.as_millis() as i64;
        let wait = base.saturating_mul(1i64 << made.min(40)).min(cap).max(1);
        let jittered = rand::thread_rng().gen_range(wait / 2..=wait);
        let at = now.saturating_add(jittered);
        let deadline = d
            .created_at
            .saturating_add(self.settings.give_up_after.as_millis() as i64);
        if at > deadline {
            AttemptNext::GiveUp
        } else {
            AttemptNext::RetryAt(at)
        }
    }

    async fn attempt(&self, d: &CallbackDelivery) -> Result<u16, Failed> {
        let url = target::check_before_send(&self.policy, &d.url).map_err(|r| Failed {
            status: None,
            error: format!("refused: {r}"),
            final_: true,
        })?;
        let now = self.clock.now_ms();
        let mut secrets: Vec<Vec<u8>> = self
            .store
            .live_callback_secrets(&d.account_id, now)
            .await
            .map_err(|e| Failed::retry(None, format!("reading the signing secret: {e}")))?
            .into_iter()
            .map(String::into_bytes)
            .collect();
        if secrets.is_empty() {
            match &self.server_secret {
                Some(s) => secrets.push(s.clone()),
                None => return Err(Failed::retry(None, "no signing secret".into())),
            }
        }
        let timestamp = now.div_euclid(1000);
        let body = d.body.clone().into_bytes();
        let signature = signing::header(&secrets, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &d.id)
            .header(EVENT_TYPE_HEADER, d.event.as_str())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Failed::retry(None, error_chain(&e)))?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| target_snippet(l.as_bytes()));
        let answer = read_capped(response, self.settings.max_response_bytes).await;
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let error = if status.is_redirection() {
            format!(
                "HTTP {status}: redirects are not followed (Location: {})",
                location.unwrap_or_default()
            )
        } else {
            format!("HTTP {status}: {}", target_snippet(&answer))
        };
        Err(Failed::retry(Some(status.as_u16()), error))
    }
}

/// At most `cap` bytes of the answer's body; the rest is not read.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

fn target_snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_SNIPPET_BYTES)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

/// An error with its causes (reqwest's own message names only the outermost).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
