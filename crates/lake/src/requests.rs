//! Request accounting, and simulated latency: every lake's store is wrapped in [`Metered`],
//! which counts the requests the lake makes by the classes S3 bills (GET, HEAD, PUT, LIST,
//! DELETE) and, when asked, waits before each one as a distant store would.
//!
//! A request is counted as S3 would see it: a ranged read is a GET (reads of nearby ranges
//! are merged first, as the S3 client merges them); a listing is one LIST per page of up to
//! 1,000 entries; a multipart upload is a PUT to start it, one per part and one to complete
//! it; a copy is a PUT. Local disk makes the same calls, so its counts are what the same build
//! sends to S3. The one call only local disk makes, the rename that moves a staged write into
//! place, is neither counted nor delayed: on S3 the PUT itself is atomic.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, OBJECT_STORE_COALESCE_DEFAULT,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result, UploadPart, coalesce_ranges,
};
use serde::Serialize;

/// Entries per page of an S3 listing.
const LIST_PAGE: usize = 1000;

/// The requests an S3 listing of `n` entries takes (an empty one is still one).
pub(crate) fn pages(n: usize) -> u64 {
    n.div_ceil(LIST_PAGE).max(1) as u64
}

/// Requests made to a lake's store, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub list: u64,
    pub delete: u64,
}

impl RequestCounts {
    /// The requests made since `earlier` was taken.
    pub fn since(self, earlier: RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get.saturating_sub(earlier.get),
            head: self.head.saturating_sub(earlier.head),
            put: self.put.saturating_sub(earlier.put),
            list: self.list.saturating_sub(earlier.list),
            delete: self.delete.saturating_sub(earlier.delete),
        }
    }

    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.list + self.delete
    }
}

impl std::ops::Add for RequestCounts {
    type Output = RequestCounts;

    fn add(self, o: RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get + o.get,
            head: self.head + o.head,
            put: self.put + o.put,
            list: self.list + o.list,
            delete: self.delete + o.delete,
        }
    }
}

impl fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} GET, {} HEAD, {} PUT, {} LIST, {} DELETE",
            self.get, self.head, self.put, self.list, self.delete
        )
    }
}

/// A wait before each request, by class, to measure a build at a distant store's latency
/// on a local lake (`get=20ms,list=20ms,put=30ms`). HEAD waits as GET does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulatedLatency {
    pub get: Duration,
    pub put: Duration,
    pub list: Duration,
    pub delete: Duration,
}

impl FromStr for SimulatedLatency {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<SimulatedLatency, String> {
        let mut out = SimulatedLatency::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (class, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not CLASS=DURATION (get=20ms)"))?;
            let ms = value
                .trim()
                .strip_suffix("ms")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|n| *n <= 60_000)
                .ok_or_else(|| {
                    format!("{value:?} is not a whole number of milliseconds up to 60000ms (20ms)")
                })?;
            let slot = match class.trim() {
                "get" => &mut out.get,
                "put" => &mut out.put,
                "list" => &mut out.list,
                "delete" => &mut out.delete,
                other => {
                    return Err(format!(
                        "unknown request class {other:?}; use get, put, list or delete"
                    ));
                }
            };
            *slot = Duration::from_millis(ms);
        }
        Ok(out)
    }
}

impl fmt::Display for SimulatedLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "get={}ms,put={}ms,list={}ms,delete={}ms",
            self.get.as_millis(),
            self.put.as_millis(),
            self.list.as_millis(),
            self.delete.as_millis()
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

impl Counters {
    /// Listings made without the store (a local lake's directory walks), as S3 pages.
    pub(crate) fn add_lists(&self, n: u64) {
        self.list.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads made without the store (a local lake's direct file reads), as GETs.
    pub(crate) fn add_gets(&self, n: u64) {
        self.get.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes made without the store (a local lake's spliced files), as PUTs.
    pub(crate) fn add_puts(&self, n: u64) {
        self.put.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

/// One request of a class: counted, then the class's wait.
async fn request(counter: &AtomicU64, wait: Duration) {
    counter.fetch_add(1, Ordering::Relaxed);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// A store whose requests are counted (and delayed, when asked).
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
    latency: SimulatedLatency,
}

impl Metered {
    pub(crate) fn new(
        inner: Arc<dyn ObjectStore>,
        counters: Arc<Counters>,
        latency: SimulatedLatency,
    ) -> Metered {
        Metered {
            inner,
            counters,
            latency,
        }
    }

    /// A listing's entries, one LIST (and wait) per page.
    fn paged(
        &self,
        list: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (counters, wait) = (self.counters.clone(), self.latency.list);
        let first = counters.clone();
        futures::stream::once(async move {
            request(&first.list, wait).await;
            list
        })
        .flatten()
        .enumerate()
        .then(move |(i, item)| {
            let counters = counters.clone();
            async move {
                if i > 0 && i % LIST_PAGE == 0 {
                    request(&counters.list, wait).await;
                }
                item
            }
        })
        .boxed()
    }
}

impl fmt::Display for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// A multipart upload whose parts and completion are counted as PUTs.
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<Counters>,
    wait: Duration,
    wait_delete: Duration,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (counters, wait) = (self.counters.clone(), self.wait);
        let part = self.inner.put_part(data);
        async move {
            request(&counters.put, wait).await;
            part.await
        }
        .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        request(&self.counters.put, self.wait).await;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        // AbortMultipartUpload is a DELETE request.
        request(&self.counters.delete, self.wait_delete).await;
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        request(&self.counters.put, self.latency.put).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        request(&self.counters.put, self.latency.put).await;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            counters: self.counters.clone(),
            wait: self.latency.put,
            wait_delete: self.latency.delete,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let counter = match options.head {
            true => &self.counters.head,
            false => &self.counters.get,
        };
        request(counter, self.latency.get).await;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // Nearby ranges merged into one GET each, as the S3 client does.
        coalesce_ranges(
            ranges,
            |range| self.get_range(location, range),
            OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (counters, wait) = (self.counters.clone(), self.latency.delete);
        let counted = locations
            .then(move |l| {
                let counters = counters.clone();
                async move {
                    if l.is_ok() {
                        request(&counters.delete, wait).await;
                    }
                    l
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.paged(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.paged(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        request(&self.counters.list, self.latency.list).await;
        let r = self.inner.list_with_delimiter(prefix).await?;
        for _ in 1..pages(r.objects.len() + r.common_prefixes.len()) {
            request(&self.counters.list, self.latency.list).await;
        }
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        request(&self.counters.put, self.latency.put).await;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn metered(latency: SimulatedLatency) -> (Metered, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let store = Metered::new(Arc::new(InMemory::new()), counters.clone(), latency);
        (store, counters)
    }

    #[tokio::test]
    async fn requests_are_counted_by_class_and_listings_by_page() {
        let (store, counters) = metered(SimulatedLatency::default());
        for i in 0..2500 {
            store
                .put(
                    &Path::from(format!("a/{i:05}")),
                    PutPayload::from_static(b"x"),
                )
                .await
                .unwrap();
        }
        store.get(&Path::from("a/00001")).await.unwrap();
        store.head(&Path::from("a/00002")).await.unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 2500);
        // An empty listing is still one request.
        let none: Vec<_> = store.list(Some(&Path::from("b"))).collect().await;
        assert!(none.is_empty());
        store.delete(&Path::from("a/00003")).await.unwrap();
        assert_eq!(
            counters.snapshot(),
            RequestCounts {
                get: 1,
                head: 1,
                put: 2500,
                list: 3 + 1,
                delete: 1,
            }
        );
        let before = counters.snapshot();
        store
            .list_with_delimiter(Some(&Path::from("a")))
            .await
            .unwrap();
        assert_eq!(
            counters.snapshot().since(before),
            RequestCounts {
                list: 3,
                ..RequestCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn nearby_ranges_are_one_get() {
        let (store, counters) = metered(SimulatedLatency::default());
        let key = Path::from("f");
        store
            .put(&key, PutPayload::from(vec![7u8; 4 << 20]))
            .await
            .unwrap();
        let got = store
            .get_ranges(&key, &[0..10, 20..30, (3 << 20)..(3 << 20) + 5])
            .await
            .unwrap();
        assert_eq!(got.iter().map(|b| b.len()).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(counters.snapshot().get, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_waits_its_class_latency() {
        let latency: SimulatedLatency = "get=20ms,list=20ms,put=30ms".parse().unwrap();
        let (store, _) = metered(latency);
        let t = tokio::time::Instant::now();
        store
            .put(&Path::from("k"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(30));
        store.get(&Path::from("k")).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(50));
        let _: Vec<_> = store.list(None).collect().await;
        assert_eq!(t.elapsed(), Duration::from_millis(70));
    }

    #[test]
    fn latency_text_is_checked() {
        let l: SimulatedLatency = "get=20ms, list=20ms,put=30ms".parse().unwrap();
        assert_eq!(l.get, Duration::from_millis(20));
        assert_eq!(l.put, Duration::from_millis(30));
        assert_eq!(l.delete, Duration::ZERO);
        assert_eq!(l.to_string().parse::<SimulatedLatency>().unwrap(), l);
        for bad in ["get=20", "get", "post=1ms", "get=-1ms", "get=99999ms"] {
            assert!(bad.parse::<SimulatedLatency>().is_err(), "{bad}");
        }
    }
}
