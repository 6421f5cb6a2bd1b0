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
}
