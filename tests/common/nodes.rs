//! Remote worker nodes for the end-to-end tests: `kinema worker` processes that lease
//! from a control plane over `WorkerService` with a worker key.

use std::path::PathBuf;
use std::process::Stdio;

use kinema_proto::v1 as pb;
use tokio::process::{Child, Command};

use super::{bounded, Client, TestDir, KINEMA, TIMEOUT};

/// A running `kinema worker`. Dropping it kills the process.
pub struct Node {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Node {
    /// Starts `kinema worker --server URL --token-file F --node NAME` with `args`.
    pub fn start(dir: &TestDir, server_url: &str, key: &str, name: &str, args: &[&str]) -> Node {
        let token_file = dir.path().join(format!("{name}.key"));
        std::fs::write(&token_file, key).expect("writing the worker key");
        let log = dir.path().join(format!("worker-{name}.log"));
        let child = Command::new(KINEMA)
            .arg("--server")
            .arg(server_url)
            .arg("worker")
            .arg("--token-file")
            .arg(&token_file)
            .arg("--node")
            .arg(name)
            .arg("--scratch-dir")
            .arg(dir.path().join(format!("scratch-{name}")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KINEMA_API_KEY")
            .kill_on_drop(true)
            .spawn()
            .expect("spawning kinema worker");
        Node {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    /// SIGKILL: the node dies mid-job.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("node is running");
        child.start_kill().expect("SIGKILL");
        bounded("node exit after SIGKILL", child.wait())
            .await
            .expect("waiting for the node");
    }

    /// SIGTERM: drain and stop. Waits for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let pid = child.id().expect("node pid");
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        bounded("node exit after SIGTERM", child.wait())
            .await
            .expect("waiting for the node")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "----- worker node {} (last {} lines) -----",
                self.name,
                tail.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// A new worker key's secret, made by the admin.
pub async fn worker_key(admin: &Client, name: &str) -> (String, String) {
    let r = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::KeyRole::Worker as i32,
            account_id: String::new(),
            name: name.into(),
        })
        .await
        .expect("creating a worker key")
        .into_inner();
    (r.key.expect("key").id, r.secret)
}

/// Waits until ListWorkers shows `n` remote devices (owners with a '/'); returns them.
pub async fn remote_devices(admin: &Client, n: usize) -> Vec<pb::Worker> {
    let wait = async {
        loop {
            let workers = admin
                .admin()
                .list_workers(pb::ListWorkersRequest {})
                .await
                .expect("ListWorkers")
                .into_inner()
                .workers;
            let remote: Vec<pb::Worker> = workers
                .into_iter()
                .filter(|w| w.owner.contains('/'))
                .collect();
            if remote.len() >= n {
                return remote;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("{n} remote worker devices did not appear"))
}
