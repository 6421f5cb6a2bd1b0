//! Where finished videos live: behind one trait, [`ArtifactStore`], a local directory
//! (the default) or an object store.

mod local;
mod open;
mod s3;
#[cfg(feature = "test-server")]
pub mod test_server;

use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncRead;

pub use local::{LocalArtifacts, StoredFile};
pub use open::{is_object_storage, open};
pub use s3::{S3Artifacts, S3Url, DEFAULT_PART_SIZE, ENDPOINT_VAR, MIN_PART_SIZE};

/// An artifact store the server, its workers and its sweeper share.
pub type Artifacts = Arc<dyn ArtifactStore>;

/// An artifact opened for download: its bytes from the offset asked for, and its
/// total size.
pub struct Download {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub total: u64,
}

/// Where artifacts live. Locations are the store's own keys (`<job id>/<name>`),
/// recorded in the database; a location written by one replica reads the same on
/// every replica sharing the store.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores a local file as `<job_id>/<name>`; returns its location, size and
    /// SHA-256. Durable when it returns.
    async fn put_file(
        &self,
        job_id: &str,
        name: &str,
        source: &Path,
    ) -> Result<StoredFile, ArtifactError>;

    /// Stores what `input` yields as `<job_id>/<name>`, streamed (never held whole in
    /// memory), computing its SHA-256 on the way.
    async fn put_stream(
        &self,
        job_id: &str,
        name: &str,
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<StoredFile, ArtifactError>;

    /// Opens an artifact from byte `offset` (clamped to its size).
    async fn read_from(&self, location: &str, offset: u64) -> Result<Download, ArtifactError>;

    /// Removes one artifact; an absent one is not an error.
    async fn delete(&self, location: &str) -> Result<(), ArtifactError>;

    /// Removes every artifact of a job; absent ones are not an error.
    async fn delete_job(&self, job_id: &str) -> Result<(), ArtifactError>;

    /// Where the store is, for logs (no secrets).
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {0} not found")]
    NotFound(String),
    #[error("artifact location {0:?} is not valid")]
    BadLocation(String),
    #[error("artifact I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The directory an artifact was renamed into could not be synced: the file may
    /// not survive a crash, so the store is not reported done.
    #[error("syncing artifact directory {path}: {source}")]
    DirSync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to the object store failed (the message names the key, never the
    /// credentials).
    #[error("object storage: could not {operation} {location}: {source}")]
    ObjectStore {
        operation: &'static str,
        location: String,
        #[source]
        source: object_store::Error,
    },
    /// An artifact store's URL or settings that cannot work.
    #[error("artifact store {spec}: {reason}")]
    InvalidUrl { spec: String, reason: String },
}
