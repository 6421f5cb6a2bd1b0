use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{ArtifactError, ArtifactStore, Download};

/// Artifacts under one directory, addressed by a relative location
/// (`<job id>/<file name>`) that the database stores.
#[derive(Debug, Clone)]
pub struct LocalArtifacts {
    root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub location: String,
    pub bytes: u64,
    pub sha256: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a directory's entries (a rename into it, a new subdirectory) durable.
async fn sync_dir(dir: &Path) -> Result<(), ArtifactError> {
    let sync_err = |source| ArtifactError::DirSync {
        path: dir.display().to_string(),
        source,
    };
    let handle = tokio::fs::File::open(dir).await.map_err(sync_err)?;
    handle.sync_all().await.map_err(sync_err)
}

impl LocalArtifacts {
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, ArtifactError> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(io_err(&root))?;
        Ok(Self { root })
    }

    /// Copies `source` in as `<job_id>/<name>` (see [`LocalArtifacts::put_stream`]).
    pub async fn put_file(
        &self,
        job_id: &str,
        name: &str,
        source: &Path,
    ) -> Result<StoredFile, ArtifactError> {
        let mut input = tokio::fs::File::open(source)
            .await
            .map_err(io_err(source))?;
        self.put_stream(job_id, name, &mut input).await
    }

    /// Writes what `input` yields as `<job_id>/<name>`, durably (written to a
    /// temporary name, synced, renamed, then the directory synced so the new name
    /// survives a crash), and returns its size and SHA-256.
    pub async fn put_stream(
        &self,
        job_id: &str,
        name: &str,
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<StoredFile, ArtifactError> {
        let location = format!("{job_id}/{name}");
        let dest = self.resolve(&location)?;
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let new_dir = !tokio::fs::try_exists(&dir).await.map_err(io_err(&dir))?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        let partial = dir.join(format!(".{name}.partial"));
        let mut output = tokio::fs::File::create(&partial)
            .await
            .map_err(io_err(&partial))?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(|source| ArtifactError::Io {
                    path: format!("the upload of {location}"),
                    source,
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output
                .write_all(&buf[..n])
                .await
                .map_err(io_err(&partial))?;
            bytes += n as u64;
        }
        output.sync_all().await.map_err(io_err(&partial))?;
        drop(output);
        tokio::fs::rename(&partial, &dest)
            .await
            .map_err(io_err(&dest))?;
        // The rename lives in the directory: without this, a crash right after a
        // successful store could lose the file's name (and a new job directory's own).
        sync_dir(&dir).await?;
        if new_dir && dir != self.root {
            sync_dir(&self.root).await?;
        }
        Ok(StoredFile {
            location,
            bytes,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Opens an artifact positioned at `offset`, with its total size.
    pub async fn read_from(
        &self,
        location: &str,
        offset: u64,
    ) -> Result<(tokio::fs::File, u64), ArtifactError> {
        let path = self.resolve(location)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArtifactError::NotFound(location.to_string()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let size = file.metadata().await.map_err(io_err(&path))?.len();
        file.seek(SeekFrom::Start(offset.min(size)))
            .await
            .map_err(io_err(&path))?;
        Ok((file, size))
    }

    /// Removes one artifact; an absent file is not an error.
    pub async fn delete(&self, location: &str) -> Result<(), ArtifactError> {
        let path = self.resolve(location)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes every artifact of a job; absent files are not an error.
    pub async fn delete_job(&self, job_id: &str) -> Result<(), ArtifactError> {
        let dir = self.resolve(job_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// Locations come from our own database, but are checked anyway: only plain
    /// relative names below the root.
    fn resolve(&self, location: &str) -> Result<PathBuf, ArtifactError> {
        let rel = Path::new(location);
        let plain =
            !location.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(ArtifactError::BadLocation(location.to_string()));
        }
        Ok(self.root.join(rel))
    }
}

#[async_trait::async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put_file(
        &self,
        job_id: &str,
        name: &str,
        source: &Path,
    ) -> Result<StoredFile, ArtifactError> {
        LocalArtifacts::put_file(self, job_id, name, source).await
    }

    async fn put_stream(
        &self,
        job_id: &str,
        name: &str,
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<StoredFile, ArtifactError> {
        LocalArtifacts::put_stream(self, job_id, name, input).await
    }

    async fn read_from(&self, location: &str, offset: u64) -> Result<Download, ArtifactError> {
        let (file, total) = LocalArtifacts::read_from(self, location, offset).await?;
        Ok(Download {
            reader: Box::new(file),
            total,
        })
    }

    async fn delete(&self, location: &str) -> Result<(), ArtifactError> {
        LocalArtifacts::delete(self, location).await
    }

    async fn delete_job(&self, job_id: &str) -> Result<(), ArtifactError> {
        LocalArtifacts::delete_job(self, job_id).await
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_reads_from_offset_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.bin");
        tokio::fs::write(&src, b"hello artifacts").await.unwrap();
        let store = LocalArtifacts::open(dir.path().join("store"))
            .await
            .unwrap();
        let stored = store.put_file("job_1", "video.mp4", &src).await.unwrap();
        assert_eq!(stored.location, "job_1/video.mp4");
        assert_eq!(stored.bytes, 15);
        assert_eq!(
            stored.sha256,
            hex::encode(Sha256::digest(b"hello artifacts"))
        );
        let (mut f, size) = store.read_from(&stored.location, 6).await.unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).await.unwrap();
        assert_eq!((size, rest.as_str()), (15, "artifacts"));
        store.delete_job("job_1").await.unwrap();
        assert!(matches!(
            store.read_from(&stored.location, 0).await,
            Err(ArtifactError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_stored_file_is_in_place_with_no_partial_left() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.bin");
        tokio::fs::write(&src, b"poster bytes").await.unwrap();
        let root = dir.path().join("store");
        let store = LocalArtifacts::open(&root).await.unwrap();
        // Twice into the same job directory: the second finds it there already.
        for name in ["video.mp4", "poster.png"] {
            store.put_file("job_2", name, &src).await.unwrap();
        }
        let mut names = Vec::new();
        let mut entries = tokio::fs::read_dir(root.join("job_2")).await.unwrap();
        while let Some(e) = entries.next_entry().await.unwrap() {
            names.push(e.file_name().into_string().unwrap());
        }
        names.sort();
        assert_eq!(names, ["poster.png", "video.mp4"]);
        let stored = tokio::fs::read(root.join("job_2/video.mp4")).await.unwrap();
        assert_eq!(stored, b"poster bytes");
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_synced_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        match sync_dir(&missing).await {
            Err(ArtifactError::DirSync { path, source }) => {
                assert_eq!(path, missing.display().to_string());
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected DirSync, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_locations_that_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifacts::open(dir.path()).await.unwrap();
        for bad in ["../x", "/etc/passwd", "", "a/../../b"] {
            assert!(matches!(
                store.read_from(bad, 0).await,
                Err(ArtifactError::BadLocation(_))
            ));
        }
    }
}
