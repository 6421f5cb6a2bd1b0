//! An in-process server over loopback, for `kinema generate` without `--server`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kinema_server::{RunningServer, ServerConfig};

pub async fn start(
    data_dir: &Path,
    models_file: Option<PathBuf>,
) -> anyhow::Result<(RunningServer, String)> {
    let mut config = ServerConfig::new(data_dir.to_path_buf(), "127.0.0.1:0".parse()?);
    config.models_file = models_file;
    // A one-shot local server: a short drain is enough.
    config.drain_grace = Duration::from_secs(2);
    let server = kinema_server::start(config)
        .await
        .with_context(|| format!("starting the embedded server in {}", data_dir.display()))?;
    let key = std::fs::read_to_string(&server.admin_key_file)
        .with_context(|| format!("reading the admin key {}", server.admin_key_file.display()))?;
    Ok((server, key.trim().to_string()))
}
