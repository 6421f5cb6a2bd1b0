//! The server under load: a `kinema serve` this command starts on a temporary data dir
//! (extra flags passed through), or one that is already running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the committed tiny random Wan 2.1 lives in this source tree.
pub const WAN_TINY_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/wan/fixtures/tiny/model"
);

/// The model id the embedded server serves the tiny Wan under.
pub const WAN_TINY_ID: &str = "wan-tiny";

/// A `kinema serve` child on a loopback port. Stop it with [`EmbeddedServer::stop`];
/// dropping it kills the process.
pub struct EmbeddedServer {
    child: Child,
    pub url: String,
    pub admin_key: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmbeddedServer {
    /// Starts `kinema serve` (this executable) with `extra` flags appended. When
    /// `wan_tiny` is a model folder, the data dir's models.toml serves it as
    /// `wan-tiny` with small defaults.
    pub async fn start(extra: &[String], wan_tiny: Option<&Path>) -> anyhow::Result<Self> {
        Self::start_exe(None, extra, wan_tiny).await
    }

    /// [`EmbeddedServer::start`] running `exe` (another kinema build, to compare
    /// against) instead of this executable.
    pub async fn start_exe(
        exe: Option<&Path>,
        extra: &[String],
        wan_tiny: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kinema-bench-")
            .tempdir()
            .context("temporary directory")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        if let Some(model) = wan_tiny {
            std::fs::write(data_dir.join("models.toml"), wan_tiny_models_file(model))
                .context("writing models.toml")?;
        }
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).context("creating the server log")?;
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            None => std::env::current_exe().context("locating the kinema executable")?,
        };
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .env_remove("KINEMA_DATA_DIR")
            .env_remove("KINEMA_LISTEN")
            .env_remove("KINEMA_DATABASE_URL")
            .env_remove("KINEMA_MODELS")
            .env_remove("KINEMA_MODELS_FILE")
            .kill_on_drop(true)
            .spawn()
            .context("starting kinema serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut key_file = None;
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(path) = line.strip_prefix("admin key file: ") {
                    key_file = Some(PathBuf::from(path.trim()));
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok::<_, std::io::Error>(Some(addr.trim().to_string()));
                }
            }
            Ok(None)
        };
        let addr = match tokio::time::timeout(Duration::from_secs(120), read).await {
            Ok(Ok(Some(addr))) => addr,
            outcome => {
                let _ = child.kill().await;
                let why = match outcome {
                    Err(_) => "did not start within 120 s".to_string(),
                    Ok(Err(e)) => format!("reading its output failed: {e}"),
                    Ok(Ok(_)) => "exited".to_string(),
                };
                bail!(
                    "the embedded kinema serve {why}; its log:\n{}",
                    tail(&log, 40)
                );
            }
        };
        // Nothing more is expected on stdout, but a full pipe must never block it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let key_file = key_file.context("the server did not name its admin key file")?;
        let admin_key = std::fs::read_to_string(&key_file)
            .with_context(|| format!("reading {}", key_file.display()))?
            .trim()
            .to_string();
        Ok(EmbeddedServer {
            child,
            url: format!("http://{addr}"),
            admin_key,
            log,
            _dir: dir,
        })
    }

    /// SIGTERM (graceful drain), then SIGKILL if it has not exited within 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "the embedded server exited with {status}; its log:\n{}",
                        tail(&self.log, 40)
                    );
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the embedded server did not stop within 30 s of SIGTERM");
            }
        }
        Ok(())
    }
}

fn wan_tiny_models_file(model: &Path) -> String {
    // The same small shape the end-to-end Wan test serves (a few hundred ms a job).
    format!(
        r#"[[model]]
id = "{WAN_TINY_ID}"
source = "{}"
description = "tiny random Wan 2.1 (test fixture)"
[model.defaults]
width = 48
height = 32
frames = 5
fps = 8
steps = 3
guidance = 5.0
[model.limits]
max_width = 128
max_height = 128
max_frames = 17
max_steps = 10
[model.price]
default_steps = 3
tiers = [{{ tier = "tiny", max_side = 128, credits_per_second = 4 }}]
"#,
        model.display()
    )
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
