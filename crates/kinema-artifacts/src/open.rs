//! Choosing the artifact store from `--artifacts`.

use std::path::Path;
use std::sync::Arc;

use crate::s3::S3Artifacts;
use crate::{ArtifactError, Artifacts, LocalArtifacts};

/// Whether `spec` names object storage (shared by every replica configured alike)
/// rather than a local directory.
pub fn is_object_storage(spec: &str) -> bool {
    spec.trim().starts_with("s3://")
}

/// Opens the artifact store `spec` names: `s3://bucket[/prefix]` for S3-compatible
/// object storage (its client configured from the environment:
/// [`S3Artifacts::from_vars`]), checked with one listing; empty for the directory
/// `default_dir`; any other path for that directory. Other `scheme://` URLs are
/// refused rather than taken for directory names.
pub async fn open(spec: &str, default_dir: &Path) -> Result<Artifacts, ArtifactError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(Arc::new(LocalArtifacts::open(default_dir).await?));
    }
    if is_object_storage(spec) {
        let store = S3Artifacts::from_env(spec)?;
        store.check().await?;
        return Ok(Arc::new(store));
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        return Err(ArtifactError::InvalidUrl {
            spec: crate::s3::redact(spec),
            reason: format!(
                "{scheme}:// is not a supported store: s3://bucket[/prefix] for object storage, or a directory"
            ),
        });
    }
    Ok(Arc::new(LocalArtifacts::open(spec).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_is_the_default_directory_and_a_path_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("artifacts");
        let store = open("", &default).await.unwrap();
        assert_eq!(
            store.describe(),
            format!("local directory {}", default.display())
        );
        assert!(default.is_dir());
        let other = dir.path().join("elsewhere");
        let store = open(other.to_str().unwrap(), &default).await.unwrap();
        assert_eq!(
            store.describe(),
            format!("local directory {}", other.display())
        );
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for spec in ["gs://videos", "https://u:secret@host/videos"] {
            let err = match open(spec, dir.path()).await {
                Err(e) => e,
                Ok(store) => panic!("{spec} opened as {}", store.describe()),
            };
            assert!(matches!(err, ArtifactError::InvalidUrl { .. }), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        assert!(is_object_storage(" s3://videos/p"));
        assert!(!is_object_storage("/var/lib/kinema/artifacts"));
    }
}
