//! Where finished videos live. Today a local directory; object storage joins it
//! behind the same calls.

mod local;

pub use local::{LocalArtifacts, StoredFile};

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
}
