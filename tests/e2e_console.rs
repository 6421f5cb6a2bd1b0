//! End to end: the web console (docs/operations.md, "Web console"). Its JSON API over
//! plain HTTP (the services' own rules and errors, server-sent events, ranged video),
//! then the page itself in headless Chromium driven through chromedriver: an account
//! logs in, submits a testsrc job, watches it reach 100 % and plays the video; an
//! operator sees the workers and an account's ledger; a wrong key is refused.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
fn console() -> Opts {
    Opts {
        // Fault injection for `kinema.step_delay_ms`: steps slow enough to be watched.
        extra_args: &["--console-listen", "127.0.0.1:0", "--fault-injection"],
        ..Opts::default()
    }
}

fn console_url(server: &Server) -> String {
    server
        .console_url
        .clone()
        .expect("kinema serve --console-listen printed `console listening on`")
}

/// POSTs `body` to `/api/<method>` with `key`; returns the HTTP status and the JSON.
async fn api(base: &str, method: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut request = http.post(format!("{base}api/{method}")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = bounded(method, request.send())
        .await
        .expect("console reachable");
    let status = response.status().as_u16();
    let json = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, json)
}

fn reason(body: &Value) -> (&str, &str) {
    (
        body["code"].as_str().unwrap_or_default(),
        body["reason"].as_str().unwrap_or_default(),
    )
}

/// An answer of HTTP `status` with the error body's gRPC code and reason.
fn assert_refused(status: u16, body: &Value, want: u16, code_and_reason: (&str, &str)) {
    assert_eq!(status, want, "{body}");
    assert_eq!(reason(body), code_and_reason, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_keeps_the_services_rules() {
    let dir = TestDir::new();
    let server = Server::start(&dir, console()).await;
    let base = console_url(&server);
    let admin = server.admin().await;
    let alice = admin.create_account("alice").await;
    let bob = admin.create_account("bob").await;
    admin.grant(&alice, 1000).await;
    admin.grant(&bob, 1000).await;
    let alice_key = admin.create_key(KeyRole::Account, &alice).await;
    let bob_key = admin.create_key(KeyRole::Account, &bob).await;

    // The page and its two files come from the binary.
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("", "text/html"),
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET /{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(kind), "/{path}: {content_type}");
    }

    // A wrong key and no key: 401 with the reason, as gRPC's UNAUTHENTICATED.
    let (status, body) = api(
        &base,
        "kinema.v1.JobService/ListJobs",
        Some("kin_wrong"),
        json!({}),
    )
    .await;
    assert_refused(status, &body, 401, ("UNAUTHENTICATED", "API_KEY_INVALID"));
    let (status, body) = api(&base, "kinema.v1.JobService/ListJobs", None, json!({})).await;
    assert_refused(status, &body, 401, ("UNAUTHENTICATED", "API_KEY_MISSING"));

    // Who a key is.
    let (status, body) = api(
        &base,
        "kinema.v1.AdminService/GetCallerKey",
        Some(&alice_key),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "KEY_ROLE_ACCOUNT", "{body}");
    assert_eq!(body["accountId"], alice.as_str(), "{body}");
    assert!(body.get("secret").is_none(), "{body}");

    // A bad spec: 400 naming the field, nothing held.
    let (status, body) = api(
        &base,
        "kinema.v1.JobService/CreateJob",
        Some(&alice_key),
        json!({"model": "testsrc", "prompt": "a fox", "width": 7}),
    )
    .await;
    assert_refused(status, &body, 400, ("INVALID_ARGUMENT", "INVALID_SPEC"));
    let fields: Vec<&str> = body["fieldViolations"]
        .as_array()
        .map(|v| v.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"width"), "{body}");
    assert_eq!(admin.balance(&alice).await.held, 0);

    // Not JSON, or not this method's message: 400 INVALID_JSON.
    let (status, body) = api(
        &base,
        "kinema.v1.JobService/CreateJob",
        Some(&alice_key),
        json!({"modle": "testsrc"}),
    )
    .await;
    assert_refused(status, &body, 400, ("INVALID_ARGUMENT", "INVALID_JSON"));

    // Only the whitelisted methods, even for the admin key.
    let (status, body) = api(
        &base,
        "kinema.v1.AdminService/CreateApiKey",
        Some(&server.admin_key),
        json!({"role": "KEY_ROLE_ADMIN"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(reason(&body), ("NOT_FOUND", "METHOD_NOT_EXPOSED"), "{body}");

    // Bob's job is NOT_FOUND for Alice: by id, watched and downloaded.
    let bobs = server
        .client(Some(&bob_key))
        .await
        .create_job(job_request("", 64, 64, 4, 8, 2))
        .await;
    let (status, body) = api(
        &base,
        "kinema.v1.JobService/GetJob",
        Some(&alice_key),
        json!({"jobId": bobs.id}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(reason(&body), ("NOT_FOUND", "JOB_NOT_FOUND"), "{body}");
    let (status, body) = api(
        &base,
        "kinema.v1.JobService/WatchJob",
        Some(&alice_key),
        json!({"jobId": bobs.id}),
    )
    .await;
    assert_eq!(
        (status, reason(&body)),
        (404, ("NOT_FOUND", "JOB_NOT_FOUND")),
        "{body}"
    );
    let r = http
        .get(format!(
            "{base}api/kinema.v1.JobService/DownloadArtifact?jobId={}",
            bobs.id
        ))
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Alice's own job through the console: created, watched to the end as events.
    let (status, job) = api(
        &base,
        "kinema.v1.JobService/CreateJob",
        Some(&alice_key),
        json!({"model": "testsrc", "prompt": "a red fox", "width": 64, "height": 64,
               "numFrames": 8, "fps": 8, "steps": 4,
               "metadata": {"kinema.step_delay_ms": "200"}}),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_string();
    assert_eq!(job["accountId"], alice.as_str());
    let events = watch_events(&base, &alice_key, &job_id).await;
    let last = events.last().expect("at least one event");
    assert_eq!(last["job"]["state"], "JOB_STATE_SUCCEEDED", "{last}");
    assert_eq!(
        events[0]["kind"], "JOB_EVENT_KIND_SNAPSHOT",
        "{}",
        events[0]
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "JOB_EVENT_KIND_PROGRESS"),
        "no progress event in {events:?}"
    );

    // The video: whole, and a range of it.
    let artifact = last["job"]["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["kind"] == "ARTIFACT_KIND_VIDEO"))
        .expect("a video artifact")
        .clone();
    let size: usize = artifact["bytes"].as_str().unwrap().parse().unwrap();
    let video_url =
        format!("{base}api/kinema.v1.JobService/DownloadArtifact?jobId={job_id}&kind=VIDEO");
    let r = http
        .get(&video_url)
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        artifact["mime"].as_str().unwrap()
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    let whole = r.bytes().await.unwrap();
    assert_eq!(whole.len(), size);
    assert_eq!(sha256_hex(&whole), artifact["sha256"].as_str().unwrap());
    let r = http
        .get(&video_url)
        .bearer_auth(&alice_key)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{size}").as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), whole.slice(10..20));
    let r = http
        .get(&video_url)
        .bearer_auth(&alice_key)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
}

/// Reads `WatchJob`'s server-sent events until the stream ends.
async fn watch_events(base: &str, key: &str, job_id: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!("{base}api/kinema.v1.JobService/WatchJob"))
        .bearer_auth(key)
        .json(&json!({"jobId": job_id}))
        .send()
        .await
        .expect("WatchJob");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = bounded("the event stream to end", response.text())
        .await
        .expect("event stream");
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut kind = "";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        match kind {
            "job" => events.push(serde_json::from_str(&data).expect("event JSON")),
            "error" => panic!("the stream failed: {data}"),
            _ => {}
        }
    }
    events
}

// ---------------------------------------------------------------------------------
// The page in headless Chromium
// ---------------------------------------------------------------------------------

/// A chromedriver on a free port; killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start(log: &Path) -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console test needs Debian's `{package}` (scripts/setup-debian installs it)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        bounded("chromedriver to answer", async {
            loop {
                if let Ok(r) = reqwest::get(&status).await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        Driver { child, url }
    }

    async fn browser(&self) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1400",
                         "--autoplay-policy=no-user-gesture-required"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        bounded(
            "a Chromium session",
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .expect("chromedriver started Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where screenshots are kept: `$KINEMA_TEST_ARTIFACTS`, else target/test-artifacts.
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("KINEMA_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Polls `script` (a function body returning a value) until `done` holds of its value.
async fn wait_for(
    browser: &Browser,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let waited = tokio::time::timeout(TIMEOUT, async {
        loop {
            last = browser
                .execute(script, vec![])
                .await
                .expect("running a script");
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}; last: {last}");
    last
}

async fn shown(browser: &Browser, id: &str) -> bool {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .is_displayed()
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
}

async fn click(browser: &Browser, at: Locator<'_>) {
    browser
        .find(at)
        .await
        .unwrap_or_else(|e| panic!("{at:?}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {at:?}: {e}"));
}

async fn type_into(browser: &Browser, at: Locator<'_>, text: &str) {
    browser
        .find(at)
        .await
        .unwrap_or_else(|e| panic!("{at:?}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {at:?}: {e}"));
}

async fn log_in(browser: &Browser, base: &str, key: &str) {
    browser.goto(base).await.expect("opening the console");
    let input = browser
        .find(Locator::Id("api-key"))
        .await
        .expect("#api-key");
    input.clear().await.expect("clearing the key");
    input.send_keys(key).await.expect("typing the key");
    click(browser, Locator::Id("login-button")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium() {
    let dir = TestDir::new();
    let server = Server::start(&dir, console()).await;
    let base = console_url(&server);
    let admin = server.admin().await;
    let account = admin.create_account("studio").await;
    admin.grant(&account, 1000).await;
    let key = admin.create_key(KeyRole::Account, &account).await;

    let driver = Driver::start(&dir.path().join("chromedriver.log")).await;
    let browser = driver.browser().await;

    // An account logs in: its balance, and the models with the smallest's defaults.
    log_in(&browser, &base, &key).await;
    wait_for(
        &browser,
        "the balance",
        "return document.getElementById('balance').textContent",
        |v| {
            v.as_str()
                .is_some_and(|s| s.starts_with("1000 credits available"))
        },
    )
    .await;
    assert!(shown(&browser, "account-view").await);
    assert!(!shown(&browser, "operator-view").await);
    let model = browser.find(Locator::Id("model")).await.expect("#model");
    model
        .select_by_value("testsrc")
        .await
        .expect("choosing testsrc");
    let defaults = browser
        .execute(
            "return ['width','height','frames','steps'].map(id => document.getElementById(id).value)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(defaults, json!(["320", "192", "33", "8"]));

    // It submits a prompt and watches the job to the end, then the video plays.
    type_into(
        &browser,
        Locator::Id("prompt"),
        "a red fox running through snow",
    )
    .await;
    click(&browser, Locator::Id("submit")).await;
    let done = wait_for(
        &browser,
        "the job to finish",
        "return document.getElementById('job-panel').dataset.done || document.getElementById('job-error').textContent",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    assert_eq!(done, "JOB_STATE_SUCCEEDED");
    let progress = browser
        .execute(
            "return [document.getElementById('job-progress').value, document.getElementById('job-percent').textContent, document.getElementById('job-state').textContent]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(progress, json!([100, "100%", "SUCCEEDED"]));
    let video = wait_for(
        &browser,
        "the video to load",
        "const v = document.getElementById('job-video'); return {ready: v.readyState, duration: v.duration, error: v.error && v.error.message, hidden: v.hidden}",
        |v| v["ready"].as_u64().unwrap_or(0) >= 2 || !v["error"].is_null(),
    )
    .await;
    assert!(video["error"].is_null(), "the video failed: {video}");
    assert!(video["duration"].as_f64().unwrap_or(0.0) > 0.0, "{video}");
    assert_eq!(video["hidden"], false);
    let png = browser.screenshot().await.expect("screenshot");
    let shot = artifacts_dir().join("console-account-job.png");
    std::fs::write(&shot, &png).expect("writing the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
    // The job shows in the account's list, finished.
    wait_for(
        &browser,
        "the finished job in the list",
        "return document.getElementById('jobs').textContent",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("SUCCEEDED") && s.contains("testsrc"))
        },
    )
    .await;

    // An operator: the workers and devices, an account's balance, lots and ledger.
    click(&browser, Locator::Id("logout")).await;
    log_in(&browser, &base, &server.admin_key).await;
    wait_for(
        &browser,
        "the workers",
        "return document.getElementById('workers').textContent",
        |v| v.as_str().is_some_and(|s| s.contains("cpu")),
    )
    .await;
    assert!(shown(&browser, "operator-view").await);
    assert!(!shown(&browser, "account-view").await);
    wait_for(
        &browser,
        "the accounts",
        "return document.getElementById('accounts').textContent",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("studio") && s.contains(&account))
        },
    )
    .await;
    let queue = browser
        .find(Locator::Id("queue"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(queue.starts_with("Job"), "the queue's table: {queue}");
    type_into(&browser, Locator::Id("account-id"), &account).await;
    click(&browser, Locator::Css("#account-form button")).await;
    let ledger = wait_for(
        &browser,
        "the ledger",
        "return document.getElementById('ledger').textContent",
        |v| v.as_str().is_some_and(|s| s.contains("debit")),
    )
    .await;
    assert!(ledger.as_str().unwrap().contains("grant"), "{ledger}");
    let summary = browser
        .find(Locator::Id("account-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.starts_with("studio: active"), "{summary}");
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(artifacts_dir().join("console-operator.png"), &png).unwrap();

    // A wrong key: the refusal and nothing else.
    click(&browser, Locator::Id("logout")).await;
    log_in(&browser, &base, "kin_not_a_key").await;
    let refusal = wait_for(
        &browser,
        "the refusal",
        "return document.getElementById('login-error').textContent",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    let refusal = refusal.as_str().unwrap();
    assert!(
        refusal.starts_with("UNAUTHENTICATED (API_KEY_INVALID)"),
        "{refusal}"
    );
    assert!(shown(&browser, "login-error").await);
    for hidden in [
        "account-view",
        "operator-view",
        "job-panel",
        "jobs-view",
        "logout",
    ] {
        assert!(
            !shown(&browser, hidden).await,
            "#{hidden} shown after a wrong key"
        );
    }
    let stored = browser
        .execute("return sessionStorage.getItem('kinema.apiKey')", vec![])
        .await
        .unwrap();
    assert_eq!(
        stored,
        Value::Null,
        "a refused key stays out of sessionStorage"
    );
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(artifacts_dir().join("console-wrong-key.png"), &png).unwrap();
    browser.close().await.expect("closing the browser");
}
