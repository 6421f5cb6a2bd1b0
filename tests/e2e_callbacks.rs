//! End to end: callbacks (docs/api.md, "Callbacks"), against receivers on loopback.
//! - 100 jobs' start and end events reach a receiver that checks every signature (an
//!   HMAC-SHA256 written here from the spec, not the server's code) and the replay
//!   window, through a SIGKILL and restart of the server mid-delivery; deduped by
//!   event id, none missing, and GetJob shows each delivery DELIVERED.
//! - A receiver answering 500 gets the events once it recovers; meanwhile GetJob shows
//!   the failed attempts.
//! - SSRF: without the operator's allowance, loopback URLs in every spelling (and a
//!   name resolving to loopback) are refused at submission with nothing held, and no
//!   connection reaches the listeners behind them; a receiver the operator allowed
//!   that answers with a redirect to a refused address is not followed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kinema_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic_types::StatusExt;

/// The replay window a receiver applies (docs/api.md suggests 5 minutes).
const REPLAY_WINDOW_S: i64 = 300;

/// HMAC-SHA256 (RFC 2104) from the hash alone, so the check does not share the
/// server's code.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn the_tests_hmac_matches_rfc_4231() {
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// How the receiver answers.
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Status500,
    RedirectTo(String),
    /// Takes the request and never answers (until the sender goes away).
    Hang,
}

/// One event as the receiver took it (first delivery).
#[derive(Debug, Clone)]
struct Event {
    kind: String,
    job_id: String,
    job_state: String,
}

#[derive(Default)]
struct Seen {
    /// Every request, accepted or not.
    requests: usize,
    /// Requests answered 2xx (duplicates included).
    accepted: usize,
    /// Deduplicated by event id.
    events: BTreeMap<String, Event>,
    bad_signatures: Vec<String>,
    /// Event ids of the requests left unanswered (`Answer::Hang`).
    hung: Vec<String>,
}

/// A callback receiver on loopback: verifies each request's signature with `secret`
/// and answers as `answer` says.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    answer: Arc<Mutex<Answer>>,
}

impl Receiver {
    async fn start(ip: &str, secret: Arc<Mutex<Vec<u8>>>) -> Receiver {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("binding a receiver");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let answer = Arc::new(Mutex::new(Answer::Ok));
        let (s, a) = (seen.clone(), answer.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, a, secret) = (s.clone(), a.clone(), secret.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, s, a, secret).await;
                });
            }
        });
        Receiver { addr, seen, answer }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/kinema", self.addr)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// One request on a connection (the answer closes it).
async fn serve(
    mut stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    answer: Arc<Mutex<Answer>>,
    secret: Arc<Mutex<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..].to_vec();
    // Slow enough that a kill finds deliveries in flight.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let verdict = verify(&request_line, &headers, &body, &secret.lock().unwrap());
    let answer = answer.lock().unwrap().clone();
    let response = {
        let mut seen = seen.lock().unwrap();
        seen.requests += 1;
        match (&verdict, &answer) {
            (Err(why), _) => {
                seen.bad_signatures.push(why.clone());
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            }
            (Ok(_), Answer::Status500) => {
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown"
                    .to_string()
            }
            (Ok(_), Answer::RedirectTo(to)) => format!(
                "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ),
            (Ok((id, _)), Answer::Hang) => {
                seen.hung.push(id.clone());
                String::new()
            }
            (Ok((id, event)), Answer::Ok) => {
                seen.accepted += 1;
                seen.events.entry(id.clone()).or_insert_with(|| event.clone());
                "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_string()
            }
        }
    };
    if response.is_empty() {
        // Held open until the sender's process dies (or the test ends).
        tokio::time::sleep(Duration::from_secs(120)).await;
        return Ok(());
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// What docs/api.md tells a receiver to check: the signature over
/// `timestamp.body`, the timestamp within the replay window, the event id in the
/// body matching the header.
fn verify(
    request_line: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    secret: &[u8],
) -> Result<(String, Event), String> {
    if !request_line.starts_with("POST /hooks/kinema ") {
        return Err(format!("unexpected request {request_line:?}"));
    }
    let get = |name: &str| {
        headers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no {name} header"))
    };
    let timestamp: i64 = get("kinema-timestamp")?
        .parse()
        .map_err(|_| "bad timestamp".to_string())?;
    let expected = hex::encode(hmac_sha256(
        secret,
        &[timestamp.to_string().as_bytes(), b".", body].concat(),
    ));
    let signatures = get("kinema-signature")?;
    if !signatures
        .split(',')
        .any(|s| s.trim().strip_prefix("v1=") == Some(expected.as_str()))
    {
        return Err(format!("no matching signature in {signatures:?}"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > REPLAY_WINDOW_S {
        return Err(format!("timestamp {timestamp} outside the window at {now}"));
    }
    if get("content-type")? != "application/json" {
        return Err("not JSON".into());
    }
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let id = get("kinema-event-id")?;
    if json["id"] != id.as_str() || json["type"] != get("kinema-event-type")?.as_str() {
        return Err(format!("headers and body disagree: {json}"));
    }
    for private in ["prompt", "negative_prompt", "metadata"] {
        if json["job"].get(private).is_some() {
            return Err(format!("the body carries the job's {private}"));
        }
    }
    Ok((
        id,
        Event {
            kind: json["type"].as_str().unwrap_or_default().to_string(),
            job_id: json["job"]["id"].as_str().unwrap_or_default().to_string(),
            job_state: json["job"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        },
    ))
}

/// A `&'static str` for the servers' `extra_args`.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn secret_file(dir: &TestDir, secret: &str) -> &'static str {
    let path = dir.path().join("callback-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    leak(path.display().to_string())
}

fn small_job(account: &str, url: &str, i: usize) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        callback_url: url.into(),
        prompt: format!("callback job {i}"),
        ..job_request(account, 16, 16, 2, 8, 2)
    }
}

/// Waits (bounded) until `done` holds of what the receiver saw.
async fn until_seen(receiver: &Receiver, what: &str, done: impl Fn(&Seen) -> bool) {
    bounded(what, async {
        loop {
            if done(&receiver.seen.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn deliveries(client: &Client, account: &str, job_id: &str) -> Vec<pb::CallbackDelivery> {
    client.get_job(account, job_id).await.callbacks
}

/// The job's two deliveries once GetJob shows both as `done` says (a receiver has
/// the request a moment before the server records its answer).
async fn deliveries_once(
    client: &Client,
    account: &str,
    job_id: &str,
    done: impl Fn(&pb::CallbackDelivery) -> bool,
) -> Vec<pb::CallbackDelivery> {
    bounded("GetJob to show the deliveries", async {
        loop {
            let shown = deliveries(client, account, job_id).await;
            if shown.len() == 2 && shown.iter().all(&done) {
                return shown;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn delivered(d: &pb::CallbackDelivery) -> bool {
    d.state == pb::CallbackDeliveryState::Delivered as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_jobs_events_arrive_signed_through_a_crash() {
    let dir = TestDir::new();
    let opts = Opts {
        fault_injection: true,
        extra_args: &[
            "--callback-allow-cidr",
            "127.0.0.0/8",
            "--callback-timeout",
            "2s",
            "--callback-retry-base",
            "100ms",
            "--callback-retry-max",
            "500ms",
            "--callback-poll-interval",
            "50ms",
        ],
        ..Opts::default()
    };
    let mut server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("hooked").await;
    admin.grant(&account, 100_000).await;
    let secret = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start("127.0.0.1", secret.clone()).await;

    // No secret yet (none of the account's, none of the server's): refused.
    let refused = expect_err(
        "a callback without a secret",
        admin
            .create_job_raw(small_job(&account, &receiver.url(), 0))
            .await,
    );
    assert_status(
        &refused,
        Code::FailedPrecondition,
        "CALLBACK_SECRET_MISSING",
    );
    let rotated = admin
        .admin()
        .rotate_callback_secret(pb::RotateCallbackSecretRequest {
            account_id: account.clone(),
            overlap: None,
        })
        .await
        .expect("RotateCallbackSecret")
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_"), "{}", rotated.secret);
    assert!(rotated.previous_retire_at.is_none());
    *secret.lock().unwrap() = rotated.secret.clone().into_bytes();

    let mut jobs = Vec::new();
    for i in 0..100 {
        let mut req = small_job(&account, &receiver.url(), i);
        if i % 4 == 0 {
            req.metadata
                .insert("kinema.step_delay_ms".into(), "30".into());
        }
        if i % 10 == 3 {
            req.metadata
                .insert("kinema.fail_at".into(), "step:1".into());
        }
        let job = admin.create_job(req).await;
        assert_eq!(job.callback_url, receiver.url());
        jobs.push(job.id);
    }

    // Killed while events are being delivered (the receiver holds a request
    // unanswered), then started again on the same data.
    until_seen(&receiver, "the first events", |s| s.events.len() >= 40).await;
    receiver.set(Answer::Hang);
    until_seen(&receiver, "a delivery in flight", |s| !s.hung.is_empty()).await;
    server.kill().await;
    receiver.set(Answer::Ok);
    let server = Server::start(&dir, opts).await;
    let admin = server.admin().await;

    until_seen(&receiver, "every job's start and end", |s| {
        s.events.len() >= 200
    })
    .await;
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.bad_signatures.is_empty(), "{:?}", seen.bad_signatures);
    assert!(seen.accepted >= seen.events.len());
    let mut per_job: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in seen.events.values() {
        assert!(
            per_job.entry(&e.job_id).or_default().insert(&e.kind),
            "two event ids for {} {}",
            e.job_id,
            e.kind
        );
    }
    assert_eq!(per_job.len(), 100, "events for every job");
    // What was in flight at the kill was sent again after the restart.
    for id in &seen.hung {
        assert!(
            seen.events.contains_key(id),
            "{id} in flight at the kill, never delivered"
        );
    }
    drop(seen);
    for id in &jobs {
        let job = admin.get_job(&account, id).await;
        assert!(is_terminal(&job), "{}", describe_job(&job));
        let end = match state(&job) {
            JobState::Succeeded => "job.succeeded",
            JobState::Failed => "job.failed",
            JobState::Cancelled => "job.cancelled",
            other => panic!("{other:?}"),
        };
        let seen = receiver.seen.lock().unwrap();
        let events: BTreeMap<&str, &Event> = seen
            .events
            .values()
            .filter(|e| &e.job_id == id)
            .map(|e| (e.kind.as_str(), e))
            .collect();
        assert_eq!(events.len(), 2, "{id}: {events:?}");
        assert_eq!(events["job.running"].job_state, "RUNNING");
        assert_eq!(
            events[end].job_state,
            state(&job).as_str_name().trim_start_matches("JOB_STATE_")
        );
        drop(seen);
        // GetJob shows both delivered, under the ids the receiver got.
        let shown = deliveries_once(&admin, &account, id, delivered).await;
        for d in &shown {
            assert!(d.attempts >= 1 && d.delivered_at.is_some(), "{d:?}");
            assert_eq!(d.last_status, 204);
            assert!(receiver
                .seen
                .lock()
                .unwrap()
                .events
                .contains_key(&d.event_id));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_gets_the_events_after_it_recovers() {
    let dir = TestDir::new();
    let server_secret = "server-wide-secret-0123456789";
    let file = secret_file(&dir, server_secret);
    let opts = Opts {
        extra_args: vec![
            "--callback-allow-private",
            "--callback-retry-base",
            "100ms",
            "--callback-retry-max",
            "400ms",
            "--callback-poll-interval",
            "50ms",
            "--callback-secret-file",
            file,
        ]
        .leak(),
        ..Opts::default()
    };
    let server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("flaky").await;
    admin.grant(&account, 10_000).await;
    let secret = Arc::new(Mutex::new(server_secret.as_bytes().to_vec()));
    let receiver = Receiver::start("127.0.0.1", secret).await;
    receiver.set(Answer::Status500);

    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(
            admin
                .create_job(small_job(&account, &receiver.url(), i))
                .await
                .id,
        );
    }
    for id in &jobs {
        admin.wait_terminal(&account, id).await;
    }
    // Every event tried more than once meanwhile, none taken.
    until_seen(&receiver, "retries while failing", |s| s.requests >= 30).await;
    assert_eq!(receiver.seen.lock().unwrap().accepted, 0);
    let failing = deliveries_once(&admin, &account, &jobs[0], |d| d.last_status == 500).await;
    for d in &failing {
        assert_eq!(d.state, pb::CallbackDeliveryState::Pending as i32, "{d:?}");
        assert_eq!(d.last_status, 500);
        assert!(d.last_error.contains("500"), "{d:?}");
        assert!(d.next_attempt_at.is_some());
    }

    receiver.set(Answer::Ok);
    until_seen(&receiver, "every event after the recovery", |s| {
        s.events.len() >= 10
    })
    .await;
    assert!(receiver.seen.lock().unwrap().bad_signatures.is_empty());
    for id in &jobs {
        let shown = deliveries_once(&admin, &account, id, delivered).await;
        assert!(shown.iter().all(|d| d.attempts >= 2), "{shown:?}");
    }
}

/// Proves no connection arrives: after the refusals, nothing waits in the backlog.
async fn assert_nothing_connected(listener: &TcpListener, what: &str) {
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(accepted.is_err(), "{what}: a connection arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_targets_are_refused_and_redirects_not_followed() {
    let dir = TestDir::new();
    let file = secret_file(&dir, "server-wide-secret-0123456789");
    let opts = Opts {
        extra_args: vec!["--callback-secret-file", file].leak(),
        ..Opts::default()
    };
    let server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("ssrf").await;
    admin.grant(&account, 1_000).await;

    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = v4.local_addr().unwrap().port();
    let v6 = TcpListener::bind("[::1]:0").await.unwrap();
    let p6 = v6.local_addr().unwrap().port();
    for url in [
        format!("http://127.0.0.1:{p}/"),
        format!("http://[::1]:{p6}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://0x7f.1:{p}/"),
        format!("http://0177.0.0.1:{p}/"),
        format!("http://localhost:{p}/"),
        format!("http://[::]:{p}/"),
        format!("http://0.0.0.0:{p}/"),
        format!("https://user:pw@127.0.0.1:{p}/"),
        format!("ftp://127.0.0.1:{p}/"),
    ] {
        let status = expect_err(
            &url,
            admin.create_job_raw(small_job(&account, &url, 0)).await,
        );
        assert_status(&status, Code::InvalidArgument, "CALLBACK_URL_REFUSED");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a field violation");
        assert_eq!(bad.field_violations[0].field, "callback_url", "{url}");
    }
    // Nothing held, nothing charged, no job.
    let balance = admin.balance(&account).await;
    assert_eq!((balance.available, balance.held), (1_000, 0));
    let listed = admin
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty());
    assert_nothing_connected(&v4, "127.0.0.1").await;
    assert_nothing_connected(&v6, "::1").await;
    drop(server);

    // The operator allows exactly 127.0.0.2; its receiver redirects to 127.0.0.1.
    let dir = TestDir::new();
    let file = secret_file(&dir, "server-wide-secret-0123456789");
    let opts = Opts {
        extra_args: vec![
            "--callback-secret-file",
            file,
            "--callback-allow-cidr",
            "127.0.0.2/32",
            "--callback-retry-base",
            "100ms",
            "--callback-retry-max",
            "200ms",
            "--callback-poll-interval",
            "50ms",
        ]
        .leak(),
        ..Opts::default()
    };
    let server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("redirected").await;
    admin.grant(&account, 1_000).await;
    let secret = Arc::new(Mutex::new(b"server-wide-secret-0123456789".to_vec()));
    let allowed = Receiver::start("127.0.0.2", secret).await;
    allowed.set(Answer::RedirectTo(format!("http://127.0.0.1:{p}/")));
    let refused = expect_err(
        "the redirect's target itself",
        admin
            .create_job_raw(small_job(&account, &format!("http://127.0.0.1:{p}/"), 0))
            .await,
    );
    assert_status(&refused, Code::InvalidArgument, "CALLBACK_URL_REFUSED");
    let job = admin
        .create_job(small_job(&account, &allowed.url(), 1))
        .await;
    admin.wait_terminal(&account, &job.id).await;
    until_seen(&allowed, "the redirecting answers", |s| s.requests >= 4).await;
    let shown = deliveries_once(&admin, &account, &job.id, |d| d.last_status == 302).await;
    for d in &shown {
        assert_ne!(
            d.state,
            pb::CallbackDeliveryState::Delivered as i32,
            "{d:?}"
        );
        assert_eq!(d.last_status, 302, "{d:?}");
        assert!(d.last_error.contains("redirect"), "{d:?}");
    }
    assert_eq!(allowed.seen.lock().unwrap().accepted, 0);
    assert!(allowed.seen.lock().unwrap().bad_signatures.is_empty());
    assert_nothing_connected(&v4, "the redirect's target").await;
}

/// Two replicas on one PostgreSQL database share the outbox: every event arrives,
/// and none is sent twice (each replica claims rows with FOR UPDATE SKIP LOCKED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_share_the_outbox_without_sending_twice() {
    let db = common::postgres::PgDatabase::create().await;
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let file = secret_file(&dir_a, "server-wide-secret-0123456789");
    let opts = Opts {
        database_url: Some(db.url),
        extra_args: vec![
            "--callback-allow-cidr",
            "127.0.0.1/32",
            "--callback-secret-file",
            file,
            "--callback-poll-interval",
            "20ms",
        ]
        .leak(),
        ..Opts::default()
    };
    let a = Server::start(&dir_a, opts).await;
    std::fs::copy(&a.admin_key_file, dir_b.data_dir().join("admin-api-key")).unwrap();
    let b = Server::start(&dir_b, opts).await;
    let (admin_a, admin_b) = (a.admin().await, b.admin().await);
    let account = admin_a.create_account("replicated").await;
    admin_a.grant(&account, 100_000).await;
    let secret = Arc::new(Mutex::new(b"server-wide-secret-0123456789".to_vec()));
    let receiver = Receiver::start("127.0.0.1", secret).await;

    let mut jobs = Vec::new();
    for i in 0..40 {
        let via = if i % 2 == 0 { &admin_a } else { &admin_b };
        jobs.push(
            via.create_job(small_job(&account, &receiver.url(), i))
                .await
                .id,
        );
    }
    until_seen(&receiver, "every job's start and end", |s| {
        s.events.len() >= 80
    })
    .await;
    for id in &jobs {
        let shown = deliveries_once(&admin_b, &account, id, delivered).await;
        assert!(shown.iter().all(|d| d.attempts == 1), "{shown:?}");
    }
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.bad_signatures.is_empty(), "{:?}", seen.bad_signatures);
    assert_eq!(seen.events.len(), 80);
    assert_eq!(seen.accepted, 80, "an event was sent twice");
}

async fn scrape(addr: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("metrics listener");
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    bounded("metrics response", conn.read_to_string(&mut body))
        .await
        .unwrap();
    body
}

/// Retries run on the server's clock: under the test clock a failed delivery waits for
/// AdvanceClock, and one still failing 24 hours after its event is given up (FAILED),
/// counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_for_24_hours_is_given_up_on_the_test_clock() {
    let dir = TestDir::new();
    let file = secret_file(&dir, "server-wide-secret-0123456789");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = leak(format!("127.0.0.1:{port}"));
    let opts = Opts {
        test_clock: true,
        extra_args: vec![
            "--callback-allow-private",
            "--callback-secret-file",
            file,
            "--callback-poll-interval",
            "20ms",
            "--metrics-listen",
            metrics,
        ]
        .leak(),
        ..Opts::default()
    };
    let server = Server::start(&dir, opts).await;
    let admin = server.admin().await;
    let account = admin.create_account("unreachable").await;
    admin.grant(&account, 1_000).await;
    let secret = Arc::new(Mutex::new(b"server-wide-secret-0123456789".to_vec()));
    let receiver = Receiver::start("127.0.0.1", secret).await;
    receiver.set(Answer::Status500);
    let job = admin
        .create_job(small_job(&account, &receiver.url(), 0))
        .await;
    admin.wait_terminal(&account, &job.id).await;

    // One attempt each; the retry waits for the clock (30 s and more away).
    let first = deliveries_once(&admin, &account, &job.id, |d| d.attempts == 1).await;
    assert!(first
        .iter()
        .all(|d| d.state == pb::CallbackDeliveryState::Pending as i32 && d.last_status == 500));
    assert_eq!(receiver.seen.lock().unwrap().requests, 2);

    // A day later: tried once more, and given up.
    admin.advance(25 * 3600 * 1000).await;
    let given_up = deliveries_once(&admin, &account, &job.id, |d| {
        d.state == pb::CallbackDeliveryState::Failed as i32
    })
    .await;
    assert!(given_up
        .iter()
        .all(|d| d.attempts == 2 && d.failed_at.is_some() && d.next_attempt_at.is_none()));
    assert_eq!(receiver.seen.lock().unwrap().requests, 4);

    let text = bounded("the metrics to show the failures", async {
        loop {
            let text = scrape(metrics).await;
            if text.contains("kinema_callback_pending 0") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for line in [
        "kinema_callback_attempts_total{event=\"job.running\",result=\"failed\"} 2",
        "kinema_callback_attempts_total{event=\"job.succeeded\",result=\"failed\"} 2",
        "kinema_callback_failures_total{event=\"job.running\"} 1",
        "kinema_callback_failures_total{event=\"job.succeeded\"} 1",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}
