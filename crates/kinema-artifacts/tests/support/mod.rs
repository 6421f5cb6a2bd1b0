//! An object store wrapper that records what the artifact store asks of the real S3
//! client underneath (multipart uploads, parts, aborts), and can make one part fail.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

#[derive(Debug, Default)]
pub struct Record {
    pub puts: AtomicUsize,
    pub multipart_uploads: AtomicUsize,
    /// Sizes of the parts sent, in order.
    pub parts: Mutex<Vec<usize>>,
    pub completed: AtomicUsize,
    pub aborted: AtomicUsize,
    /// Make the part with this number (1-based, over the whole run) fail; 0: none.
    pub fail_part: AtomicUsize,
}

#[derive(Debug)]
pub struct Recording {
    inner: Arc<dyn ObjectStore>,
    pub record: Arc<Record>,
}

impl Recording {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            record: Arc::default(),
        }
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.record.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.record.multipart_uploads.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RecordingUpload {
            inner,
            record: self.record.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct RecordingUpload {
    inner: Box<dyn MultipartUpload>,
    record: Arc<Record>,
}

#[async_trait::async_trait]
impl MultipartUpload for RecordingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let number = {
            let mut parts = self.record.parts.lock().unwrap();
            parts.push(data.content_length());
            parts.len()
        };
        if number == self.record.fail_part.load(Ordering::SeqCst) {
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "recording",
                    source: format!("part {number} failed on purpose").into(),
                })
            });
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.record.completed.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.record.aborted.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}
