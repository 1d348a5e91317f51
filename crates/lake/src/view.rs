//! The lake as SQL sees it: a read-only object store over the lake's own, whose listings hold
//! only what the lake's layout allows. A folder `date=notadate/` is not listed (it would break
//! every query's partition cast), and nothing can be written through it.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::paths;

/// A read-only view of `inner` that lists only keys laid out as the lake lays them out.
#[derive(Debug)]
pub struct LakeView {
    inner: Arc<dyn ObjectStore>,
}

impl LakeView {
    pub fn new(inner: Arc<dyn ObjectStore>) -> LakeView {
        LakeView { inner }
    }
}

impl fmt::Display for LakeView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeView({})", self.inner)
    }
}

fn read_only(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what}: SQL reads the lake and never writes it").into(),
    }
}

#[async_trait]
impl ObjectStore for LakeView {
    async fn put_opts(&self, location: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(read_only(&format!("put {location}")))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only(&format!("put {location}")))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations
            .map(|l| l.and_then(|p| Err(read_only(&format!("delete {p}")))))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list(prefix)
            .filter(|m| {
                futures::future::ready(m.as_ref().map_or(true, |m| paths::in_layout(&m.location)))
            })
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .filter(|m| {
                futures::future::ready(m.as_ref().map_or(true, |m| paths::in_layout(&m.location)))
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.common_prefixes.retain(paths::in_layout);
        r.objects.retain(|m| paths::in_layout(&m.location));
        Ok(r)
    }

    async fn copy_opts(&self, _: &Path, to: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only(&format!("copy to {to}")))
    }
}
