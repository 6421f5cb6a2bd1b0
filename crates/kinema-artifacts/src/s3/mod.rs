//! Artifacts in S3-compatible object storage (AWS S3, MinIO, RustFS, s3s, …), so every
//! replica reads the videos any replica made.

mod config;
mod upload;

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

pub(crate) use config::redact;
pub use config::{S3Url, ENDPOINT_VAR};

use crate::{ArtifactError, ArtifactStore, Download, StoredFile};
use upload::store_error;

/// S3 parts are at least 5 MiB (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The multipart part size unless set: a file up to this size is one PUT.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// Artifacts as objects `<prefix>/<job id>/<name>` in one bucket. Locations (what the
/// database records) are `<job id>/<name>`, relative to the prefix, so they read the
/// same on every replica configured with the same URL.
#[derive(Clone)]
pub struct S3Artifacts {
    store: Arc<dyn ObjectStore>,
    /// Empty: the bucket's root.
    prefix: String,
    part_size: usize,
    description: String,
}

/// Only the description: the client's own `Debug` shows its whole configuration.
impl std::fmt::Debug for S3Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Artifacts")
            .field("store", &self.description)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3Artifacts {
    /// `s3://bucket[/prefix]`, the client configured from this process's environment
    /// (see [`S3Artifacts::from_vars`]).
    pub fn from_env(spec: &str) -> Result<Self, ArtifactError> {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::from_vars(spec, vars)
    }

    /// `s3://bucket[/prefix]`, the client configured from `vars` (name, value): every
    /// `AWS_*` variable object_store's S3 client knows (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (else
    /// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, web identity and container credentials,
    /// …), then `AWS_ENDPOINT_URL_S3`, then `KINEMA_S3_ENDPOINT`. Requests are
    /// path-style (`<endpoint>/<bucket>/<key>`) unless
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub fn from_vars(
        spec: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ArtifactError> {
        let url = S3Url::parse(spec)?;
        let builder = config::builder_from_vars(&url, vars)?;
        let target = config::describe_target(&builder);
        let store = builder
            .build()
            .map_err(|source| ArtifactError::ObjectStore {
                operation: "configure the client for",
                location: format!("s3://{}", url.bucket),
                source,
            })?;
        let description = match url.prefix.as_str() {
            "" => format!("S3 bucket {} at {target}", url.bucket),
            prefix => format!("S3 bucket {} prefix {prefix}/ at {target}", url.bucket),
        };
        Self::over(Arc::new(store), &url.prefix, description)
    }

    /// Artifacts under `prefix` in any object store (tests wrap the S3 client).
    pub fn over(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        description: impl Into<String>,
    ) -> Result<Self, ArtifactError> {
        let prefix = prefix.trim_matches('/');
        if !(prefix.is_empty() || prefix.split('/').all(config::plain_segment)) {
            return Err(ArtifactError::BadLocation(prefix.to_string()));
        }
        Ok(Self {
            store,
            prefix: prefix.to_string(),
            part_size: DEFAULT_PART_SIZE,
            description: description.into(),
        })
    }

    /// Uploads larger than `bytes` go in parts of `bytes` (at least [`MIN_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// One listing under the prefix: fails now, not on the first job, when the
    /// endpoint, the credentials or the bucket are wrong.
    pub async fn check(&self) -> Result<(), ArtifactError> {
        let prefix = self.key("")?;
        let listed = match prefix.as_ref() {
            "" => self.store.list_with_delimiter(None).await,
            _ => self.store.list_with_delimiter(Some(&prefix)).await,
        };
        listed.map(|_| ()).map_err(store_error("list", &prefix))
    }

    /// The object key of a location (`<prefix>/<location>`); an empty location is the
    /// prefix itself.
    fn key(&self, location: &str) -> Result<Path, ArtifactError> {
        if !(location.is_empty() || location.split('/').all(config::plain_segment)) {
            return Err(ArtifactError::BadLocation(location.to_string()));
        }
        let key = match (self.prefix.as_str(), location) {
            (prefix, "") => prefix.to_string(),
            ("", location) => location.to_string(),
            (prefix, location) => format!("{prefix}/{location}"),
        };
        Path::parse(&key).map_err(|_| ArtifactError::BadLocation(location.to_string()))
    }

    /// Deletes one object; an absent one is not an error. object_store deletes
    /// through DeleteObjects, and servers answer that for an absent key in ways it
    /// does not all read (s3s-fs: an empty `DeleteResult`), so a failed delete
    /// counts as done when the object is gone.
    async fn delete_key(&self, key: &Path) -> Result<(), ArtifactError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => match self.size(key).await {
                Ok(None) => Ok(()),
                _ => Err(store_error("delete", key)(e)),
            },
        }
    }

    /// The object's size, or None when there is none.
    async fn size(&self, key: &Path) -> Result<Option<u64>, ArtifactError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("head", key)(e)),
        }
    }
}

#[async_trait::async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put_file(
        &self,
        job_id: &str,
        name: &str,
        source: &FsPath,
    ) -> Result<StoredFile, ArtifactError> {
        let mut input =
            tokio::fs::File::open(source)
                .await
                .map_err(|source_err| ArtifactError::Io {
                    path: source.display().to_string(),
                    source: source_err,
                })?;
        self.put_stream(job_id, name, &mut input).await
    }

    async fn put_stream(
        &self,
        job_id: &str,
        name: &str,
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<StoredFile, ArtifactError> {
        let location = format!("{job_id}/{name}");
        if job_id.contains('/') || name.contains('/') {
            return Err(ArtifactError::BadLocation(location));
        }
        let key = self.key(&location)?;
        let uploaded = upload::upload(&self.store, &key, input, self.part_size).await?;
        Ok(StoredFile {
            location,
            bytes: uploaded.bytes,
            sha256: uploaded.sha256,
        })
    }

    async fn read_from(&self, location: &str, offset: u64) -> Result<Download, ArtifactError> {
        if location.is_empty() {
            return Err(ArtifactError::BadLocation(String::new()));
        }
        let key = self.key(location)?;
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&key, options).await {
            Ok(got) => {
                let total = got.meta.size;
                let stream = got.into_stream().map_err(std::io::Error::other);
                Ok(Download {
                    reader: Box::new(StreamReader::new(stream)),
                    total,
                })
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(ArtifactError::NotFound(location.to_string()))
            }
            // S3 refuses a range that starts at or past the end (416); the offset is
            // clamped to the size instead, as on a local disk.
            Err(e) if offset > 0 => match self.size(&key).await? {
                None => Err(ArtifactError::NotFound(location.to_string())),
                Some(total) if offset >= total => Ok(Download {
                    reader: Box::new(tokio::io::empty()),
                    total,
                }),
                Some(_) => Err(store_error("get", &key)(e)),
            },
            Err(e) => Err(store_error("get", &key)(e)),
        }
    }

    async fn delete(&self, location: &str) -> Result<(), ArtifactError> {
        if location.is_empty() {
            return Err(ArtifactError::BadLocation(String::new()));
        }
        let key = self.key(location)?;
        self.delete_key(&key).await
    }

    async fn delete_job(&self, job_id: &str) -> Result<(), ArtifactError> {
        if job_id.is_empty() || job_id.contains('/') {
            return Err(ArtifactError::BadLocation(job_id.to_string()));
        }
        let prefix = self.key(job_id)?;
        // Listing is by whole segments: `<job id>/…`, never another job whose id
        // starts the same way.
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_error("list", &prefix))?;
        for object in objects {
            self.delete_key(&object.location).await?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
