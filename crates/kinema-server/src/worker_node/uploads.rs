//! [`ArtifactStore`] for a worker node: a finished job's files go to the control plane
//! through `UploadArtifact`, streamed in chunks as they are read (never whole in
//! memory), and the control plane writes them to its artifact store once. A node keeps
//! no artifacts: files of an attempt that did not succeed are discarded by the control
//! plane when the attempt's end is written, so deleting here has nothing to do.

use std::path::Path;

use kinema_artifacts::{ArtifactError, ArtifactStore, Download, StoredFile};
use kinema_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::channel::WorkerClient;
use super::control::Leases;

/// Bytes per upload message (gRPC's default message limit is 4 MiB).
const CHUNK: usize = 1 << 20;

pub struct RemoteArtifacts {
    client: WorkerClient,
    leases: Leases,
}

impl RemoteArtifacts {
    pub fn new(client: WorkerClient, leases: Leases) -> Self {
        Self { client, leases }
    }

    fn owner_of(&self, job_id: &str) -> Result<String, ArtifactError> {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
            .cloned()
            .ok_or_else(|| ArtifactError::NotFound(format!("{job_id} (not leased here)")))
    }
}

fn upload_error(location: &str, status: tonic::Status) -> ArtifactError {
    ArtifactError::Io {
        path: location.to_string(),
        source: std::io::Error::other(format!(
            "upload to the control plane: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

#[async_trait::async_trait]
impl ArtifactStore for RemoteArtifacts {
    async fn put_file(
        &self,
        job_id: &str,
        name: &str,
        source: &Path,
    ) -> Result<StoredFile, ArtifactError> {
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|e| ArtifactError::Io {
                path: source.display().to_string(),
                source: e,
            })?;
        self.put_stream(job_id, name, &mut file).await
    }

    async fn put_stream(
        &self,
        job_id: &str,
        name: &str,
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<StoredFile, ArtifactError> {
        let location = format!("{job_id}/{name}");
        let header = pb::UploadArtifactRequest {
            part: Some(pb::upload_artifact_request::Part::Header(
                pb::ArtifactUpload {
                    owner: self.owner_of(job_id)?,
                    job_id: job_id.to_string(),
                    name: name.to_string(),
                },
            )),
        };
        // Two chunks in flight at most: reading waits for the network.
        let (tx, rx) = mpsc::channel(2);
        let _ = tx.send(header).await;
        let mut client = self.client.clone();
        let call =
            tokio::spawn(async move { client.upload_artifact(ReceiverStream::new(rx)).await });
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).await.map_err(|e| ArtifactError::Io {
                path: location.clone(),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            let chunk = pb::UploadArtifactRequest {
                part: Some(pb::upload_artifact_request::Part::Data(buf[..n].to_vec())),
            };
            if tx.send(chunk).await.is_err() {
                // The call ended early: its answer says why.
                break;
            }
        }
        drop(tx);
        let answer = call
            .await
            .map_err(|e| ArtifactError::Io {
                path: location.clone(),
                source: std::io::Error::other(format!("upload task: {e}")),
            })?
            .map_err(|status| upload_error(&location, status))?
            .into_inner();
        Ok(StoredFile {
            location: answer.location,
            bytes: answer.bytes,
            sha256: answer.sha256,
        })
    }

    async fn read_from(&self, location: &str, _offset: u64) -> Result<Download, ArtifactError> {
        Err(ArtifactError::NotFound(format!(
            "{location}: a worker node reads no artifacts"
        )))
    }

    async fn delete(&self, _location: &str) -> Result<(), ArtifactError> {
        Ok(())
    }

    async fn delete_job(&self, _job_id: &str) -> Result<(), ArtifactError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "uploads to the control plane".into()
    }
}
