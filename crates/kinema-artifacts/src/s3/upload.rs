//! Streaming an upload into an object store with bounded memory, hashing on the way.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use crate::ArtifactError;

/// Parts uploading while the next one is read: memory stays within
/// `(PARTS_IN_FLIGHT + 1) * part_size` per upload.
const PARTS_IN_FLIGHT: usize = 2;

/// What an upload wrote.
pub(crate) struct Uploaded {
    pub bytes: u64,
    pub sha256: String,
}

/// Writes what `input` yields to `key`: one PUT when it all fits in one part, else a
/// multipart upload of `part_size` parts. A failed multipart upload is aborted, so no
/// object appears and the server drops the parts it holds.
pub(crate) async fn upload(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    input: &mut (dyn AsyncRead + Send + Unpin),
    part_size: usize,
) -> Result<Uploaded, ArtifactError> {
    let mut reader = PartReader {
        input,
        part_size,
        hasher: Sha256::new(),
        bytes: 0,
        key,
    };
    let first = reader.next_part().await?;
    if first.len() < part_size {
        store
            .put(key, PutPayload::from(first))
            .await
            .map_err(store_error("put", key))?;
        return Ok(reader.finish());
    }
    let mut multipart = store
        .put_multipart(key)
        .await
        .map_err(store_error("start the multipart upload of", key))?;
    let mut in_flight = JoinSet::new();
    let sent = send_parts(&mut reader, first, multipart.as_mut(), &mut in_flight).await;
    match sent {
        Ok(()) => Ok(reader.finish()),
        Err(e) => {
            in_flight.shutdown().await;
            if let Err(abort) = multipart.abort().await {
                tracing::warn!(key = %key, error = %abort, "could not abort a failed multipart upload; the bucket may keep its parts until a lifecycle rule removes them");
            }
            Err(e)
        }
    }
}

/// Uploads `first` and every further part, then completes the upload.
async fn send_parts(
    reader: &mut PartReader<'_>,
    first: Bytes,
    multipart: &mut dyn MultipartUpload,
    in_flight: &mut JoinSet<object_store::Result<()>>,
) -> Result<(), ArtifactError> {
    let key = reader.key;
    let mut part = first;
    while !part.is_empty() {
        while in_flight.len() >= PARTS_IN_FLIGHT {
            joined(in_flight.join_next().await, key)?;
        }
        in_flight.spawn(multipart.put_part(PutPayload::from(part)));
        part = reader.next_part().await?;
    }
    while let Some(result) = in_flight.join_next().await {
        joined(Some(result), key)?;
    }
    multipart
        .complete()
        .await
        .map_err(store_error("complete the multipart upload of", key))?;
    Ok(())
}

fn joined(
    result: Option<Result<object_store::Result<()>, tokio::task::JoinError>>,
    key: &Path,
) -> Result<(), ArtifactError> {
    match result {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(store_error("upload a part of", key)(e)),
        Some(Err(join)) => Err(store_error("upload a part of", key)(join.into())),
    }
}

/// Reads `input` a part at a time, hashing and counting it.
struct PartReader<'a> {
    input: &'a mut (dyn AsyncRead + Send + Unpin),
    part_size: usize,
    hasher: Sha256,
    bytes: u64,
    key: &'a Path,
}

impl PartReader<'_> {
    /// The next `part_size` bytes, fewer only at the end (empty once it is reached).
    async fn next_part(&mut self) -> Result<Bytes, ArtifactError> {
        let mut buf = vec![0u8; self.part_size];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .input
                .read(&mut buf[filled..])
                .await
                .map_err(|source| ArtifactError::Io {
                    path: format!("the upload of {}", self.key),
                    source,
                })?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[filled..filled + n]);
            filled += n;
        }
        buf.truncate(filled);
        self.bytes += filled as u64;
        Ok(Bytes::from(buf))
    }

    fn finish(self) -> Uploaded {
        Uploaded {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

pub(crate) fn store_error(
    operation: &'static str,
    key: &Path,
) -> impl FnOnce(object_store::Error) -> ArtifactError {
    let location = key.to_string();
    move |source| ArtifactError::ObjectStore {
        operation,
        location,
        source,
    }
}
