//! TLS and tracing (issue 13, item 7): the gRPC port serves TLS with the operator's
//! certificate (clients, the CLI and worker nodes trust it with `--tls-ca`; plain-text
//! and untrusting clients get nowhere), and every call runs in a span naming its
//! method, key, account and job — written as JSON lines with `--log-json` — and is
//! counted and timed by method and code in the Prometheus metrics.

mod common;

use common::nodes::{worker_key, Node};
use common::*;
use kinema_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

/// A self-signed certificate for `localhost`, written as PEM files; (cert, key).
fn self_signed(dir: &TestDir) -> (&'static str, &'static str) {
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("certificate parameters")
        .self_signed(&key)
        .expect("a self-signed certificate");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let leak = |p: std::path::PathBuf| -> &'static str {
        Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
    };
    (leak(cert_path), leak(key_path))
}

async fn tls_channel(port: u16, ca: Option<&str>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_serves_tls_to_clients_that_trust_its_certificate() {
    let dir = TestDir::new();
    let (cert, key) = self_signed(&dir);
    let args: &'static [&'static str] = Box::leak(Box::new([
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--cpu-workers",
        "0",
        "--console-listen",
        "127.0.0.1:0",
    ]));
    let server = Server::start(
        &dir,
        Opts {
            extra_args: args,
            ..Opts::default()
        },
    )
    .await;
    let port = server.addr.port();

    let admin = Client {
        channel: bounded("a TLS connection", tls_channel(port, Some(cert)))
            .await
            .expect("connecting over TLS with the certificate trusted"),
        key: Some(server.admin_key.clone()),
    };
    let account = admin.create_account("over tls").await;
    admin.grant(&account, 1_000).await;

    // A plain-text client reaches no service.
    let plain = server.admin().await;
    let refused = plain
        .billing()
        .get_balance(pb::GetBalanceRequest {
            account_id: account.clone(),
        })
        .await
        .expect_err("a plain-text call to a TLS port");
    assert_ne!(refused.code(), Code::Ok);
    // A client that trusts only the public roots does not accept the certificate.
    assert!(
        bounded("an untrusting TLS client", tls_channel(port, None))
            .await
            .is_err(),
        "a self-signed certificate was accepted without --tls-ca"
    );

    // The CLI with --tls-ca, and without it.
    let url = format!("https://localhost:{port}");
    let cli = |extra: &'static [&'static str]| {
        let url = url.clone();
        let key_file = server.admin_key_file.clone();
        let account = account.clone();
        async move {
            let out = tokio::process::Command::new(KINEMA)
                .arg("--server")
                .arg(&url)
                .arg("--api-key-file")
                .arg(&key_file)
                .args(extra)
                .arg("--account")
                .arg(&account)
                .args(["accounts", "get"])
                .env_remove("KINEMA_API_KEY")
                .env_remove("KINEMA_TLS_CA")
                .output()
                .await
                .expect("running kinema");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let ca_args: &'static [&'static str] = Box::leak(Box::new(["--tls-ca", cert]));
    let (ok, text) = bounded("the CLI over TLS", cli(ca_args)).await;
    assert!(ok && text.contains(&account), "{text}");
    let (ok, text) = bounded("the CLI without the CA", cli(&[])).await;
    assert!(!ok, "the CLI trusted a self-signed certificate: {text}");

    // The console's port serves HTTPS with the same certificate.
    let console = server.console_url.clone().expect("the console's address");
    let console_port = console
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("a port in {console}"));
    assert!(console.starts_with("https://"), "{console}");
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let console = format!("https://localhost:{console_port}");
    let page = https
        .get(format!("{console}/"))
        .send()
        .await
        .expect("the console page over TLS");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let balance = https
        .post(format!("{console}/api/kinema.v1.BillingService/GetBalance"))
        .bearer_auth(&server.admin_key)
        .json(&serde_json::json!({ "accountId": account }))
        .send()
        .await
        .expect("a console call over TLS");
    assert_eq!(balance.status(), 200);
    let balance: serde_json::Value = balance.json().await.unwrap();
    assert_eq!(balance["available"], "1000", "{balance}");
    let untrusting = reqwest::Client::new()
        .get(format!("{console}/"))
        .send()
        .await;
    assert!(
        untrusting.is_err(),
        "the console's certificate was trusted without the CA"
    );

    // A worker node leases and finishes a job over TLS.
    let (_, worker) = worker_key(&admin, "tls node").await;
    let _node = Node::start(
        &dir,
        &url,
        &worker,
        "n",
        &["--cpu-workers", "1", "--tls-ca", cert],
    );
    let job = admin
        .create_job(job_request(&account, 32, 32, 3, 8, 2))
        .await;
    let (_, done) = admin.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_file_fails_the_start_with_its_path() {
    let dir = TestDir::new();
    let (cert, _) = self_signed(&dir);
    let bad_key = dir.path().join("not-a-key.pem");
    std::fs::write(&bad_key, "hello").unwrap();
    let out = tokio::process::Command::new(KINEMA)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.data_dir())
        .args(["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key"])
        .arg(&bad_key)
        .output()
        .await
        .expect("running kinema serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not-a-key.pem") && stderr.contains("PRIVATE KEY"),
        "{stderr}"
    );
}

/// The JSON log lines of a server's log file; every line must be one object.
fn json_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_traced_in_json_and_counted_by_method_and_code() {
    let metrics = free_loopback_addr();
    let args: &'static [&'static str] =
        Box::leak(Box::new(["--log-json", "--metrics-listen", metrics]));
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            extra_args: args,
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("traced").await;
    admin.grant(&account, 1_000).await;
    let job = admin
        .create_job(job_request(&account, 32, 32, 3, 8, 2))
        .await;
    admin.wait_terminal(&account, &job.id).await;
    let missing = admin
        .jobs()
        .get_job(pb::GetJobRequest {
            account_id: account.clone(),
            job_id: "job_missing".into(),
        })
        .await
        .expect_err("a job that does not exist");
    assert_eq!(missing.code(), Code::NotFound);

    // The job's queuing is logged inside CreateJob's span, which names the account,
    // the job and the key.
    let lines = json_lines(&server.log);
    let queued = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job queued")
        .unwrap_or_else(|| panic!("no `job queued` line in {lines:#?}"));
    let span = &queued["span"];
    assert_eq!(span["name"], "rpc", "{queued}");
    assert_eq!(span["method"], "kinema.v1.JobService/CreateJob", "{queued}");
    assert_eq!(span["account"], account.as_str(), "{queued}");
    assert_eq!(span["job"], job.id.as_str(), "{queued}");
    assert!(
        span["key"].as_str().is_some_and(|k| k.starts_with("key_")),
        "{queued}"
    );

    let text = scrape_metrics(metrics).await;
    let sample = |method: &str, code: &str| -> Option<f64> {
        text.lines()
            .find(|l| {
                l.starts_with("kinema_rpc_requests_total{")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        sample("kinema.v1.JobService/CreateJob", "Ok"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample("kinema.v1.JobService/GetJob", "NotFound"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "kinema_rpc_duration_seconds_bucket{method=\"kinema.v1.JobService/CreateJob\",le=\"0.1\"}"
        )),
        "no latency histogram for CreateJob in {text}"
    );
}
