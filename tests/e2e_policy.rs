//! End to end: the usage policy (docs/api.md, "Usage policy"). A server with a
//! policy file refuses evasions in English and Chinese with PERMISSION_DENIED /
//! CONTENT_POLICY and the right category, holding nothing; accepts ordinary prompts
//! that contain pieces of terms; suspends an account after N refusals (its queued
//! jobs cancelled, holds released) until the operator reinstates it; lists every
//! decision to the operator; and asks an external moderation endpoint (a small HTTP
//! server on loopback in this test) after the local policy, failing open or closed
//! as configured when it times out. No job runs: the servers have no workers.

mod common;

use std::sync::{Arc, Mutex};

use common::commerce::HOUR;
use common::*;
use kinema_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const POLICY: &str = r#"
[suspension]
violations = 3
window = "1h"

[categories.violence]
terms = ["kill", "murder", "杀人", "殺人", "屠杀"]
patterns = ['\bbehead(s|ed|ing)?\b']

[categories.insult]
terms = ["ass"]

[categories.self-harm]
terms = ["suicide method", "自杀"]
"#;

/// A server with `policy` as `policy.toml` in its data dir (found without a flag),
/// or passed with `--policy-file` when `flag`; no workers, so jobs stay queued.
async fn start(dir: &TestDir, policy: &str, flag: bool, test_clock: bool) -> Server {
    let extra: Vec<&'static str> = if flag {
        let file = dir.path().join("usage-policy.toml");
        std::fs::write(&file, policy).unwrap();
        let path: &'static str = Box::leak(file.display().to_string().into_boxed_str());
        vec!["--cpu-workers", "0", "--policy-file", path]
    } else {
        let data = dir.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("policy.toml"), policy).unwrap();
        vec!["--cpu-workers", "0"]
    };
    Server::start(
        dir,
        Opts {
            test_clock,
            extra_args: Box::leak(extra.into_boxed_slice()),
            ..Opts::default()
        },
    )
    .await
}

/// 40 frames at 8 fps, 64 px: a quote of 10 credits.
fn job(account: &str, prompt: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        prompt: prompt.into(),
        ..job_request(account, 64, 64, 40, 8, 8)
    }
}

/// Asserts a CONTENT_POLICY refusal naming `category` (and `field`), whose message
/// does not echo the prompt.
fn assert_refused(status: &Status, category: &str, field: Option<&str>, prompt: &str) {
    assert_status(status, Code::PermissionDenied, "CONTENT_POLICY");
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(
        info.metadata.get("category").map(String::as_str),
        Some(category),
        "{prompt:?}: {status:?}"
    );
    assert_eq!(
        info.metadata.get("field").map(String::as_str),
        field,
        "{prompt:?}"
    );
    assert!(status.message().contains(category), "{}", status.message());
    assert!(
        !status.message().contains(prompt.trim()),
        "the message echoes {prompt:?}"
    );
}

async fn decisions(
    admin: &Client,
    account: &str,
    kind: pb::PolicyDecisionKind,
) -> Vec<pb::PolicyDecision> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .admin()
            .list_policy_decisions(pb::ListPolicyDecisionsRequest {
                account_id: account.into(),
                decision: kind as i32,
                page_size: 7,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.decisions);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

const ENGLISH_EVASIONS: [&str; 12] = [
    "kill him",
    "k.i.l.l him",
    "k i l l him",
    "a k-i-l-l scene",
    "ｋｉｌｌ him",
    "kіll him",
    "ΚΙLL him",
    "k\u{200D}ill him",
    "k\u{200B}i\u{200C}l\u{2060}l",
    "k\u{0336}i\u{0336}l\u{0336}l\u{0336}",
    "murdеr in the dark",
    "𝐤𝐢𝐥𝐥 him",
];

const CHINESE_EVASIONS: [&str; 8] = [
    "他想杀人",
    "杀 人",
    "杀　人",
    "杀\u{200B}人",
    "杀\u{200D}人",
    "杀，人",
    "殺人",
    "我要ｋｉｌｌ他",
];

const ORDINARY: [&str; 12] = [
    "a class of students painting on the grass",
    "an assistant carrying a bass guitar through a glass door",
    "a skillful chef slicing vegetables, close-up",
    "killer whales breaching at sunset",
    "a massive cathedral with stained glass, drone shot",
    "a cassette player on a wooden desk, 1980s style",
    "an ambassador giving a speech, photorealistic",
    "the passage through a mountain pass in autumn",
    "使出杀手锏的篮球运动员",
    "杀毒软件的广告画面",
    "人们在广场上跳舞",
    "a man with a behemoth of a backpack",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evasions_are_refused_before_anything_is_held_and_ordinary_prompts_pass() {
    let dir = TestDir::new();
    // Suspension off here: only the refusals and what they leave are looked at.
    let policy = POLICY.replace("violations = 3", "violations = 0");
    let server = start(&dir, &policy, false, false).await;
    let admin = server.admin().await;
    let account = admin.create_account("policy").await;
    admin.grant(&account, 1000).await;
    let key = admin.create_key(KeyRole::Account, &account).await;
    let client = admin.with_key(Some(&key));

    let mut refused = 0;
    for prompt in ENGLISH_EVASIONS.iter().chain(&CHINESE_EVASIONS) {
        let status = expect_err(prompt, client.create_job_raw(job(&account, prompt)).await);
        assert_refused(&status, "violence", Some("prompt"), prompt);
        refused += 1;
    }
    for (prompt, category) in [
        ("you a s s", "insult"),
        ("sui\u{200B}cide  method", "self-harm"),
        ("不要自 杀", "self-harm"),
        ("b.e.h.e.a.d.e.d", "violence"),
    ] {
        let status = expect_err(prompt, client.create_job_raw(job(&account, prompt)).await);
        assert_refused(&status, category, Some("prompt"), prompt);
        refused += 1;
    }
    let negative = pb::CreateJobRequest {
        negative_prompt: "blurry, 杀 人".into(),
        ..job(&account, "a quiet lake at dawn")
    };
    let status = expect_err("negative", client.create_job_raw(negative).await);
    assert_refused(&status, "violence", Some("negative_prompt"), "杀 人");
    refused += 1;

    // Nothing held, nothing charged: the grant is the ledger's only entry.
    let balance = admin.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held, balance.available),
        (1000, 0, 1000)
    );
    assert_eq!(
        kinds(&admin.ledger(&account, None).await),
        [LedgerEntryKind::Grant]
    );
    assert!(admin
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .is_empty());

    let mut accepted = Vec::new();
    for prompt in ORDINARY {
        let created = client.create_job_raw(job(&account, prompt)).await;
        let created = created.unwrap_or_else(|s| panic!("{prompt:?} refused: {s:?}"));
        assert_eq!(state(&created), JobState::Queued);
        accepted.push(created.id);
    }
    assert_eq!(
        admin.balance(&account).await.held,
        10 * ORDINARY.len() as i64
    );

    // The operator sees every decision, with the rule and never the prompt.
    let refusals = decisions(&admin, &account, pb::PolicyDecisionKind::Refused).await;
    assert_eq!(refusals.len(), refused);
    let key_id = &refusals[0].key_id;
    for d in &refusals {
        assert_eq!(d.source, "local");
        assert!(
            d.rule.starts_with("term:") || d.rule.starts_with("pattern:"),
            "{d:?}"
        );
        assert!(d.job_id.is_empty() && !d.suspended_account, "{d:?}");
        assert!(d.counted && d.key_id == *key_id && d.policy_version.len() == 12);
    }
    assert_eq!(refusals[0].rule, "term:violence:0");
    assert!(
        !format!("{refusals:?}").contains("him"),
        "a prompt in the audit log"
    );
    let allowed = decisions(&admin, &account, pb::PolicyDecisionKind::Allowed).await;
    let allowed_jobs: Vec<&String> = allowed.iter().map(|d| &d.job_id).collect();
    assert_eq!(allowed_jobs, accepted.iter().collect::<Vec<_>>());
    let all = decisions(&admin, &account, pb::PolicyDecisionKind::Unspecified).await;
    assert_eq!(all.len(), refused + ORDINARY.len());

    // The account's own key may not read the audit log; the CLI prints it.
    let denied = client
        .admin()
        .list_policy_decisions(pb::ListPolicyDecisionsRequest::default())
        .await;
    assert_status(
        &expect_err("account key", denied),
        Code::PermissionDenied,
        "ROLE",
    );
    let (ok, out) = server
        .cli(&[
            "--account",
            &account,
            "policy",
            "decisions",
            "--decision",
            "refused",
            "--limit",
            "3",
        ])
        .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("refused") && out.contains("category violence (prompt, term:violence:0)"),
        "{out}"
    );
    assert!(out.contains("more: --after "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_violations_suspend_the_account_until_the_operator_reinstates_it() {
    let dir = TestDir::new();
    let server = start(&dir, POLICY, true, true).await;
    let admin = server.admin().await;
    let account = admin.create_account("repeat").await;
    admin.grant(&account, 100).await;
    let queued: Vec<String> = [
        admin.create_job(job(&account, "a red fox")).await.id,
        admin.create_job(job(&account, "a blue whale")).await.id,
    ]
    .into();
    assert_eq!(admin.balance(&account).await.held, 20);

    let refuse = |prompt: &'static str| {
        let admin = admin.clone_client();
        let account = account.clone();
        async move { expect_err(prompt, admin.create_job_raw(job(&account, prompt)).await) }
    };
    // Two refusals, then the window passes: they no longer count.
    refuse("k i l l").await;
    refuse("杀 人").await;
    admin.advance(HOUR + 1).await;
    let status = refuse("kіll").await;
    assert!(error_metadata(&status, "account_suspended").is_none());
    refuse("ｋｉｌｌ").await;
    let account_now = get_account(&admin, &account).await;
    assert_eq!(account_now.status, pb::AccountStatus::Active as i32);

    // The third within the hour suspends, and says so.
    let tipping = refuse("屠 杀").await;
    assert_refused(&tipping, "violence", Some("prompt"), "屠 杀");
    assert_eq!(
        error_metadata(&tipping, "account_suspended").as_deref(),
        Some("true")
    );
    assert!(
        tipping.message().contains("suspended"),
        "{}",
        tipping.message()
    );
    let suspended = get_account(&admin, &account).await;
    assert_eq!(suspended.status, pb::AccountStatus::Suspended as i32);
    assert!(
        suspended
            .status_reason
            .contains("usage policy: 3 violations within 1h"),
        "{}",
        suspended.status_reason
    );
    for id in &queued {
        let j = admin.get_job(&account, id).await;
        assert_eq!(state(&j), JobState::Cancelled, "{}", describe_job(&j));
        let entries = admin.ledger(&account, Some(id)).await;
        assert_eq!(
            kinds(&entries),
            [LedgerEntryKind::Hold, LedgerEntryKind::Release]
        );
        assert_eq!(entries[1].actor, "policy");
    }
    let balance = admin.balance(&account).await;
    assert_eq!((balance.total, balance.held), (100, 0));
    let valid = admin.create_job_raw(job(&account, "a calm sea")).await;
    assert_status(
        &expect_err("suspended", valid),
        Code::FailedPrecondition,
        "ACCOUNT_SUSPENDED",
    );
    let refusals = decisions(&admin, &account, pb::PolicyDecisionKind::Refused).await;
    let flags: Vec<bool> = refusals.iter().map(|d| d.suspended_account).collect();
    assert_eq!(flags, [false, false, false, false, true]);

    // Reinstated, it works again and the count starts afresh.
    admin
        .admin()
        .reinstate_account(pb::ReinstateAccountRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap();
    admin.create_job(job(&account, "a calm sea")).await;
    refuse("k.i.l.l").await;
    let second = refuse("kill").await;
    assert!(error_metadata(&second, "account_suspended").is_none());
    assert_eq!(
        get_account(&admin, &account).await.status,
        pb::AccountStatus::Active as i32
    );
    assert_ledger_verifies(&server.data_dir);
}

fn error_metadata(status: &Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()?
        .metadata
        .get(key)
        .cloned()
}

async fn get_account(admin: &Client, account: &str) -> pb::Account {
    admin
        .admin()
        .get_account(pb::GetAccountRequest {
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

trait CloneClient {
    fn clone_client(&self) -> Client;
}

impl CloneClient for Client {
    fn clone_client(&self) -> Client {
        self.with_key(self.key.as_deref())
    }
}

/// A moderation endpoint on loopback: flags prompts containing `flagme`, answers
/// prompts containing `slowpoke` only after `delay`, passes the rest; keeps every
/// request body it was sent.
struct Moderator {
    url: String,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Moderator {
    async fn start(delay: std::time::Duration) -> Moderator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/moderate", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut conn).await else {
                        return;
                    };
                    let request: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let prompt = request["prompt"].as_str().unwrap_or_default().to_string();
                    log.lock().unwrap().push(request);
                    let answer = if prompt.contains("flagme") {
                        r#"{"flagged": true, "category": "graphic-violence"}"#
                    } else {
                        if prompt.contains("slowpoke") {
                            tokio::time::sleep(delay).await;
                        }
                        r#"{"flagged": false, "category": ""}"#
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        Moderator { url, seen }
    }

    fn prompts(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|r| r["prompt"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// One HTTP/1.1 request's body (by Content-Length).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < length {
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Some(body);
        }
    }
}

fn with_external(url: &str, fail: &str) -> String {
    format!("{POLICY}\n[external]\nurl = \"{url}\"\ntimeout = \"300ms\"\nfail = \"{fail}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_endpoint_flags_after_the_local_policy_and_fails_open_or_closed() {
    let moderator = Moderator::start(std::time::Duration::from_secs(3)).await;

    // Fail closed.
    let dir = TestDir::new();
    let server = start(&dir, &with_external(&moderator.url, "closed"), true, false).await;
    let admin = server.admin().await;
    let account = admin.create_account("external").await;
    admin.grant(&account, 100).await;
    let ok = admin.create_job(job(&account, "a red fox in snow")).await;
    let flagged = admin.create_job_raw(job(&account, "flagme: a scene")).await;
    assert_refused(
        &expect_err("flagged", flagged),
        "graphic-violence",
        None,
        "flagme: a scene",
    );
    let local = admin.create_job_raw(job(&account, "k i l l")).await;
    assert_refused(
        &expect_err("local", local),
        "violence",
        Some("prompt"),
        "k i l l",
    );
    let slow = admin.create_job_raw(job(&account, "slowpoke river")).await;
    assert_status(
        &expect_err("timeout", slow),
        Code::Unavailable,
        "MODERATION_UNAVAILABLE",
    );
    // The local refusal never reached the endpoint; the others did, with the account
    // and the model.
    assert_eq!(
        moderator.prompts(),
        ["a red fox in snow", "flagme: a scene", "slowpoke river"]
    );
    let first = moderator.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (first["account_id"].as_str(), first["model"].as_str()),
        (Some(account.as_str()), Some("testsrc"))
    );
    let balance = admin.balance(&account).await;
    assert_eq!(
        (balance.total, balance.held),
        (100, 10),
        "only the allowed job holds"
    );
    let all = decisions(&admin, &account, pb::PolicyDecisionKind::Unspecified).await;
    let summary: Vec<(i32, &str, &str)> = all
        .iter()
        .map(|d| (d.decision, d.source.as_str(), d.rule.as_str()))
        .collect();
    use pb::PolicyDecisionKind as K;
    assert_eq!(
        summary,
        [
            (K::Allowed as i32, "external", ""),
            (K::Refused as i32, "external", "external:graphic-violence"),
            (K::Refused as i32, "local", "term:violence:0"),
            (K::Unavailable as i32, "external", ""),
        ]
    );
    assert_eq!(all[0].job_id, ok.id);
    assert!(
        all[3].note.contains("timed out") && all[3].note.contains("fail closed"),
        "{:?}",
        all[3]
    );
    assert!(!all[3].counted, "an unavailable endpoint is no violation");

    // Fail open: the same timeout lets the request through, and the log says so.
    let dir = TestDir::new();
    let server = start(&dir, &with_external(&moderator.url, "open"), true, false).await;
    let admin = server.admin().await;
    let account = admin.create_account("external-open").await;
    admin.grant(&account, 100).await;
    let through = admin.create_job(job(&account, "slowpoke lake")).await;
    assert_eq!(state(&through), JobState::Queued);
    let flagged = admin.create_job_raw(job(&account, "flagme again")).await;
    assert_refused(
        &expect_err("flagged", flagged),
        "graphic-violence",
        None,
        "flagme again",
    );
    let all = decisions(&admin, &account, pb::PolicyDecisionKind::Allowed).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].job_id.as_str(), all[0].source.as_str()),
        (through.id.as_str(), "external")
    );
    assert!(all[0].note.contains("fail open"), "{:?}", all[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_file_fails_the_start_with_its_line_and_field() {
    let dir = TestDir::new();
    let file = dir.path().join("bad-policy.toml");
    std::fs::write(
        &file,
        "[categories.violence]\nterms = [\"kill\"]\npatterns = [\"(unclosed\"]\n",
    )
    .unwrap();
    let log = dir.path().join("bad.log");
    let out = serve_command(&dir.data_dir(), Opts::default(), &log)
        .arg("--policy-file")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    // The error is on stderr (the log file, or the pipe `output` may give it).
    let stderr = std::fs::read_to_string(&log).unwrap() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("categories.violence.patterns[0]"),
        "{stderr}"
    );
}
