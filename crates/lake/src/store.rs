//! The lake URL and its object store.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
};

mod uncached;

use crate::requests::{Counters, Metered, RequestCounts, SimulatedLatency, pages};
use crate::{Error, Result};

/// Listings of a remote lake made at once.
const LISTINGS_IN_FLIGHT: usize = 16;

/// Ranged listings (one per symbol folder and batch of a first build) made at once: a batch
/// waits on all of them.
const RANGED_LISTINGS_IN_FLIGHT: usize = 64;

/// A lake: an object store rooted at the lake URL.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// The URL of the lake root as engines address it (`file:///abs/path`,
    /// `s3://bucket/prefix`), no trailing slash.
    root_url: String,
    /// For S3: the bucket's URL and an unprefixed store, for a query engine to register.
    bucket_store: Option<(String, Arc<dyn ObjectStore>)>,
    /// For a local lake: its directory.
    local_root: Option<std::path::PathBuf>,
    /// The requests made through `store` (and `bucket_store`), by class.
    requests: Arc<Counters>,
    /// Every request waits on a network: an object store, or a simulated latency.
    remote: bool,
}

/// Settings of a lake beyond its URL. Credentials are not among them: they come from the
/// standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// web identity, ECS and EC2 instance credentials).
#[derive(Debug, Clone, Default)]
pub struct LakeOptions {
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`) instead of AWS.
    pub s3_endpoint: Option<String>,
    /// The AWS region; otherwise `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
    pub s3_region: Option<String>,
    /// A wait added before every request, to measure a build at a distant store's latency.
    pub simulated_latency: Option<SimulatedLatency>,
}

/// Where a lake lives, parsed once: a local directory, or a bucket and prefix on S3.
///
/// Written as `file://PATH` (a relative `PATH` is relative to the working directory), a plain
/// directory path, or `s3://bucket/prefix`. Credentials never belong in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for LakeLocation {
    type Err = Error;

    fn from_str(url: &str) -> Result<LakeLocation> {
        let invalid = |reason: String| Error::LakeUrl {
            url: cryptolake_model::redact(url),
            reason,
        };
        if url.trim().is_empty() {
            return Err(invalid("empty".into()));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            // `s3://KEY:SECRET@bucket/...` (a secret may hold `/`).
            if rest.rfind('@').is_some_and(|at| rest[..at].contains(':')) {
                return Err(invalid(
                    "credentials do not belong in the lake URL: AWS credentials come from the standard chain (environment, profile, instance role)".into(),
                ));
            }
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return Err(invalid(format!(
                    "bucket {bucket:?} is not a valid S3 bucket name"
                )));
            }
            if prefix.split('/').any(|p| p == ".." || p == ".") {
                return Err(invalid(
                    "the prefix may not contain . or .. segments".into(),
                ));
            }
            return Ok(LakeLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        let path = if let Some(rest) = url.strip_prefix("file://") {
            rest
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(invalid(format!(
                "unsupported scheme {scheme:?}; use file://, s3:// or a plain directory path"
            )));
        } else {
            url
        };
        if path.is_empty() {
            return Err(invalid("names no directory".into()));
        }
        Ok(LakeLocation::Local(path.into()))
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeLocation::Local(path) => write!(f, "file://{}", path.display()),
            LakeLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            LakeLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Lake {
    /// Opens the lake at `url`: `file:///abs`, `file://./rel`, a bare path, or `s3://bucket/prefix`.
    pub fn open(url: &str) -> Result<Lake> {
        Lake::open_at(&url.parse()?, &LakeOptions::default())
    }

    /// Opens the lake at `location`, creating a local directory that does not exist yet.
    pub fn open_at(location: &LakeLocation, options: &LakeOptions) -> Result<Lake> {
        match location {
            LakeLocation::S3 { bucket, prefix } => Lake::open_s3(bucket, prefix, options),
            LakeLocation::Local(path) => Lake::open_local(path, true, options),
        }
    }

    /// Opens a lake that must already exist: a local directory is never created (nor written
    /// to), so a read-only command with a mistyped `--lake` leaves nothing behind.
    pub fn open_existing(location: &LakeLocation, options: &LakeOptions) -> Result<Lake> {
        match location {
            LakeLocation::S3 { bucket, prefix } => Lake::open_s3(bucket, prefix, options),
            LakeLocation::Local(path) => Lake::open_local(path, false, options),
        }
    }

    fn open_s3(bucket: &str, prefix: &str, options: &LakeOptions) -> Result<Lake> {
        // The S3 client's TLS takes the process's default crypto provider, which rustls can
        // choose by itself only while one provider is compiled in; a build that also has the
        // AWS SDK's (`--features glue`) has two. Ring, whatever else is there; a provider
        // installed earlier stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |reason: String| Error::LakeUrl {
            url: format!("s3://{bucket}/{prefix}"),
            reason,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 4,
                retry_timeout: std::time::Duration::from_secs(30),
            });
        if let Some(endpoint) = &options.s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &options.s3_region {
            builder = builder.with_region(region);
        }
        let requests = Arc::new(Counters::default());
        let s3: Arc<dyn ObjectStore> = Arc::new(Metered::new(
            Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?),
            requests.clone(),
            options.simulated_latency.unwrap_or_default(),
        ));
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            s3.clone()
        } else {
            Arc::new(PrefixStore::new(s3.clone(), prefix))
        };
        let root_url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Ok(Lake {
            store,
            root_url,
            bucket_store: Some((format!("s3://{bucket}"), s3)),
            local_root: None,
            requests,
            remote: true,
        })
    }

    fn open_local(path: &std::path::Path, create: bool, options: &LakeOptions) -> Result<Lake> {
        let invalid = |reason: &str| Error::LakeUrl {
            url: format!("file://{}", path.display()),
            reason: reason.to_string(),
        };
        if !create && !path.is_dir() {
            return Err(invalid(&format!(
                "no lake at {}: the directory does not exist (commands that write, such as ingest or demo, create it)",
                path.display()
            )));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| invalid(&format!("cannot create directory {}: {e}", path.display())))?;
        let abs = std::fs::canonicalize(path)
            .map_err(|e| invalid(&format!("cannot resolve {}: {e}", path.display())))?;
        if create {
            let probe = abs.join(".cryptolake-write-probe");
            std::fs::write(&probe, b"").map_err(|e| {
                invalid(&format!("directory {} is not writable: {e}", abs.display()))
            })?;
            let _ = std::fs::remove_file(&probe);
        }
        let store = LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| invalid(&e.to_string()))?
            .with_automatic_cleanup(true);
        let root_url = format!("file://{}", abs.display())
            .trim_end_matches('/')
            .to_string();
        let requests = Arc::new(Counters::default());
        Ok(Lake {
            store: Arc::new(Metered::new(
                Arc::new(store),
                requests.clone(),
                options.simulated_latency.unwrap_or_default(),
            )),
            root_url,
            bucket_store: None,
            local_root: Some(abs),
            requests,
            remote: options.simulated_latency.is_some(),
        })
    }

    /// Checks the store answers a listing: one clear error for an unreachable store, a missing
    /// bucket or refused credentials.
    pub async fn probe(&self) -> Result<()> {
        match self
            .store
            .list_with_delimiter(Some(&Path::from("_state")))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::LakeUrl {
                url: self.root_url.clone(),
                reason: format!("the store refused a listing: {}", root_cause(&e)),
            }),
        }
    }

    /// Whether each request waits on a network (an object store, or a local lake with a
    /// simulated latency): then many requests in flight hide the wait.
    pub fn waits_on_requests(&self) -> bool {
        self.remote
    }

    /// Whether a PUT is itself atomic and invisible until complete (S3), or a write must be
    /// staged and renamed into place (local disk).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The root folder, when objects are read and written as files directly: a local lake
    /// that does not simulate a remote store's latency.
    pub(crate) fn direct_root(&self) -> Option<&std::path::PathBuf> {
        self.local_root.as_ref().filter(|_| !self.remote)
    }

    /// Writes `key` whole so that no reader ever sees part of it: `write` fills the object at
    /// the key it is given; on local disk that is a staging key renamed over `key` afterwards.
    pub async fn write_whole<F, Fut>(&self, key: &Path, write: F) -> Result<()>
    where
        F: FnOnce(Path) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if !self.is_local() {
            return write(key.clone()).await;
        }
        let staged = crate::paths::staging_file(key);
        write(staged.clone()).await?;
        self.store
            .rename(&staged, key)
            .await
            .map_err(|e| Error::store(key, e))
    }

    /// Removes what crashed writers left in the staging area. Call only while holding the lease
    /// of the writers that stage (silver and gold).
    pub fn sweep_staging(&self) -> Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let dir = root.join(crate::paths::STAGING);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// For a remote lake: the store a query engine must register, and the URL it serves.
    pub fn bucket_store(&self) -> Option<(&str, &Arc<dyn ObjectStore>)> {
        self.bucket_store.as_ref().map(|(u, s)| (u.as_str(), s))
    }

    /// The requests made to the store so far (by this process), by class: the difference of
    /// two readings is what the work between them cost.
    pub fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn root_url(&self) -> &str {
        &self.root_url
    }

    /// The URL of a key or prefix inside the lake, as a query engine addresses it.
    pub fn url_of(&self, prefix: &Path) -> String {
        format!("{}/{}", self.root_url, prefix)
    }

    pub async fn get(&self, key: &Path) -> Result<Bytes> {
        let r = self
            .store
            .get(key)
            .await
            .map_err(|e| Error::store(key, e))?;
        r.bytes().await.map_err(|e| Error::store(key, e))
    }

    /// Reads `key` and hands its bytes to `then` (CPU work: parsing) on the blocking pool. On
    /// local disk the read and `then` share one blocking task, so each object costs one thread
    /// hand-off rather than one for opening, one for reading and one for `then`; elsewhere
    /// the GET is awaited first. Counted as one GET either way.
    pub async fn get_with<T, F>(&self, key: &Path, then: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Bytes) -> Result<T> + Send + 'static,
    {
        let failed = |e| Error::Invalid(format!("reading {key}: {e}"));
        match self.direct_root() {
            Some(root) => {
                let (root, key, requests) = (root.clone(), key.clone(), self.requests.clone());
                tokio::task::spawn_blocking(move || then(read_direct(&root, &requests, &key)?))
                    .await
                    .map_err(failed)?
            }
            None => {
                let bytes = self.get(key).await?;
                tokio::task::spawn_blocking(move || then(bytes))
                    .await
                    .map_err(failed)?
            }
        }
    }

    /// Reads the object of each item (its key given by `key`) and hands its bytes to `then`;
    /// the results come in the items' order, or the first error in that order. On local disk
    /// the items are split into a few runs, one blocking task each, which reads and hands over
    /// its items in turn: a date's hundreds of objects cost a few thread hand-offs instead of
    /// one each, and the runs still use every core. Elsewhere each item is a
    /// [`Lake::get_with`], `concurrency` at a time. Each object counts as one GET.
    pub async fn get_all_with<I, T, F>(
        &self,
        items: Vec<I>,
        concurrency: usize,
        key: impl Fn(&I) -> Path,
        then: F,
    ) -> Result<Vec<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I, Bytes) -> Result<T> + Send + Sync + 'static,
    {
        let then = Arc::new(then);
        let Some(root) = self.direct_root() else {
            return futures::stream::iter(items)
                .map(|item| {
                    let (path, then) = (key(&item), then.clone());
                    async move { self.get_with(&path, move |bytes| then(item, bytes)).await }
                })
                .buffered(concurrency.max(1))
                .try_collect()
                .await;
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per_run = items.len().div_ceil(2 * cores).max(1);
        let total = items.len();
        let mut items = items.into_iter().peekable();
        let mut runs = Vec::new();
        while items.peek().is_some() {
            let run: Vec<(Path, I)> = items.by_ref().take(per_run).map(|i| (key(&i), i)).collect();
            let (root, requests, then) = (root.clone(), self.requests.clone(), then.clone());
            runs.push(tokio::task::spawn_blocking(move || {
                run.into_iter()
                    .map(|(path, item)| then(item, read_direct(&root, &requests, &path)?))
                    .collect::<Result<Vec<T>>>()
            }));
        }
        let mut out = Vec::with_capacity(total);
        for run in runs {
            let done = run
                .await
                .map_err(|e| Error::Invalid(format!("reading objects: {e}")))?;
            out.extend(done?);
        }
        Ok(out)
    }

    /// Opens the file of `key` on a lake with a [`Lake::direct_root`] and hands it to `then`
    /// on the blocking pool (one hand-off for both), with what a listing says of it: `Ok(None)`
    /// when it does not exist, `Err` on other lakes. Counted as one GET; what is read of the
    /// file is `then`'s.
    pub(crate) async fn open_with<T, F>(
        &self,
        key: &Path,
        then: F,
    ) -> Result<Option<(T, ObjectMeta)>>
    where
        T: Send + 'static,
        F: FnOnce(std::fs::File) -> T + Send + 'static,
    {
        let Some(root) = self.direct_root() else {
            return Err(Error::Invalid(format!("{key}: not a local file")));
        };
        let (path, requests, key) = (root.join(key.as_ref()), self.requests.clone(), key.clone());
        let failed = |e| Error::Invalid(format!("reading {key}: {e}"));
        let opened = tokio::task::spawn_blocking({
            let key = key.clone();
            move || {
                requests.add_gets(1);
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(read_failed(&key, e)),
                };
                let meta = file.metadata().map_err(|e| read_failed(&key, e))?;
                Ok(Some((then(file), object_meta(key.to_string(), &meta))))
            }
        });
        opened.await.map_err(failed)?
    }

    /// Writes `key` whole, on a local lake, as the first `head` bytes of the open file `from`
    /// followed by `tail`, and returns its version. The head is copied file to file (inside the
    /// kernel where the system can), never through memory; the file is staged and renamed into
    /// place like every local write. Counted as one PUT.
    pub(crate) async fn put_spliced(
        &self,
        key: &Path,
        from: Arc<std::fs::File>,
        head: u64,
        tail: Bytes,
    ) -> Result<String> {
        self.put_file(key, move |path| {
            use std::io::{Read, Seek, Write};
            let mut out = std::fs::File::create(path)?;
            let mut from = from.as_ref();
            from.seek(std::io::SeekFrom::Start(0))?;
            let copied = std::io::copy(&mut from.take(head), &mut out)?;
            if copied != head {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file to copy from ended after {copied} of {head} bytes"),
                ));
            }
            out.write_all(&tail)?;
            Ok(out)
        })
        .await
    }

    /// Writes `bytes` whole as `key` on a local lake, past the page cache where the system
    /// allows it, and returns its version. For large files the run writing them does not read
    /// again: the system then does not copy every byte into its cache first, which costs as
    /// much CPU as encoding them. Staged and renamed into place like every local write.
    /// Counted as one PUT.
    pub(crate) async fn put_uncached(&self, key: &Path, bytes: Bytes) -> Result<String> {
        self.put_file(key, move |path| uncached::write(path, &bytes))
            .await
    }

    /// Stages a file that `write` creates at the path it is given, renames it over `key`
    /// and returns its version. Local lakes only; one PUT.
    async fn put_file<F>(&self, key: &Path, write: F) -> Result<String>
    where
        F: FnOnce(&std::path::Path) -> std::io::Result<std::fs::File> + Send + 'static,
    {
        let Some(root) = self.direct_root().cloned() else {
            return Err(Error::Invalid(format!("{key}: not a local file")));
        };
        let mut version = None;
        self.write_whole(key, |staged| {
            let version = &mut version;
            async move {
                let written = staged.clone();
                let v = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                    let path = root.join(staged.as_ref());
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    // A failed write leaves nothing staged: on a full disk, a partial file
                    // of a gigabyte would keep it full until the next sweep.
                    let meta = write(&path).and_then(|f| f.metadata()).inspect_err(|_| {
                        let _ = std::fs::remove_file(&path);
                    })?;
                    Ok(object_meta(staged.to_string(), &meta)
                        .e_tag
                        .unwrap_or_default())
                })
                .await
                .map_err(|e| Error::Invalid(format!("writing {written}: {e}")))?
                .map_err(|e| Error::Invalid(format!("writing {written}: {e}")))?;
                *version = Some(v);
                Ok(())
            }
        })
        .await?;
        self.requests.add_puts(1);
        version.ok_or_else(|| Error::Invalid(format!("{key}: written without a version")))
    }

    /// `None` when the key does not exist.
    pub async fn get_opt(&self, key: &Path) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    /// Deletes every object under `prefix`, many at once; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys = self.list_keys(&Path::from(prefix)).await?;
        let results: Vec<Result<()>> = futures::stream::iter(&keys)
            .map(|k| self.delete(k))
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(keys.len())
    }

    /// The object and its version (as [`crate::state::version`] gives it) in one request;
    /// `None` when the key does not exist.
    pub async fn get_versioned(&self, key: &Path) -> Result<Option<(Bytes, String)>> {
        match self.store.get(key).await {
            Ok(r) => {
                let version = crate::state::version(&r.meta);
                Ok(Some((
                    r.bytes().await.map_err(|e| Error::store(key, e))?,
                    version,
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    /// Writes a whole object atomically (a reader sees the old or the new object, never a part).
    pub async fn put(&self, key: &Path, bytes: Bytes) -> Result<()> {
        self.put_versioned(key, bytes).await.map(|_| ())
    }

    /// Writes `key` and returns the version the store gave it (its e-tag), when it gave one.
    pub async fn put_versioned(&self, key: &Path, bytes: Bytes) -> Result<Option<String>> {
        let r = self
            .store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::store(key, e))?;
        Ok(r.e_tag)
    }

    /// Creates an object only if the key is free. `Ok(false)` if it already exists.
    pub async fn put_new(&self, key: &Path, bytes: Bytes) -> Result<bool> {
        match self
            .store
            .put_opts(key, PutPayload::from(bytes), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    pub async fn delete(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    pub async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    /// The objects under `prefix` whose keys sort after `offset`, sorted by key.
    pub async fn list_after(&self, prefix: &Path, offset: &Path) -> Result<Vec<ObjectMeta>> {
        let mut all: Vec<ObjectMeta> = self
            .store
            .list_with_offset(Some(prefix), offset)
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix, e))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// One level under `prefix`: the objects directly in it and its sub-folders, each sorted.
    /// A prefix that does not exist has neither.
    pub async fn list_level(&self, prefix: &Path) -> Result<(Vec<ObjectMeta>, Vec<Path>)> {
        match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(mut r) => {
                r.objects.sort_by(|a, b| a.location.cmp(&b.location));
                r.common_prefixes.sort();
                Ok((r.objects, r.common_prefixes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(Error::store(prefix, e)),
        }
    }

    /// The keys under `prefix`, sorted, without their metadata: what a listing that needs only
    /// names should use. A local lake reads the directories without a stat per file (a folder
    /// of a backfill's manifest entries holds a hundred thousand); a remote one lists.
    pub async fn list_keys(&self, prefix: &Path) -> Result<Vec<Path>> {
        let mut all = self.list_keys_many(vec![(prefix.clone(), None)]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// [`Lake::list_keys`] of several prefixes, in their order, each with the keys sorting
    /// before its optional offset left out: on a local lake in one pass on one blocking thread
    /// (hundreds of small directories cost more in thread hand-offs than in reading), on a
    /// remote one as concurrent listings.
    pub async fn list_keys_many(
        &self,
        prefixes: Vec<(Path, Option<Path>)>,
    ) -> Result<Vec<Vec<Path>>> {
        let Some(root) = self.local_root.clone() else {
            let listings: Vec<Result<Vec<ObjectMeta>>> = futures::stream::iter(prefixes)
                .map(|(p, after)| async move {
                    match after {
                        Some(a) => self.list_after(&p, &a).await,
                        None => self.list(&p).await,
                    }
                })
                .buffered(LISTINGS_IN_FLIGHT)
                .collect()
                .await;
            return listings
                .into_iter()
                .map(|l| Ok(l?.into_iter().map(|m| m.location).collect()))
                .collect();
        };
        // Many prefixes are shared out to a few blocking threads, each walking a run of them.
        let threads = (prefixes.len() / LOCAL_PREFIXES_PER_THREAD).clamp(1, LOCAL_LIST_THREADS);
        let per_thread = prefixes.len().div_ceil(threads).max(1);
        let mut walks = Vec::new();
        let mut prefixes = prefixes.into_iter().peekable();
        while prefixes.peek().is_some() {
            let run: Vec<(Path, Option<Path>)> = prefixes.by_ref().take(per_thread).collect();
            let root = root.clone();
            walks.push(tokio::task::spawn_blocking(move || {
                run.iter()
                    .map(|(p, after)| walk_keys(&root, p, after.as_ref().map(|a| a.as_ref())))
                    .collect::<Result<Vec<_>>>()
            }));
        }
        let mut out: Vec<Vec<Path>> = Vec::new();
        for walk in walks {
            out.extend(
                walk.await
                    .map_err(|e| Error::Invalid(format!("listing the lake: {e}")))??,
            );
        }
        // Counted as the listings S3 would answer: a page of up to 1,000 keys per prefix.
        self.requests
            .add_lists(out.iter().map(|keys| pages(keys.len())).sum());
        Ok(out)
    }

    /// The keys under each prefix from just after `after` up to (not including) `before`, in
    /// key order: on an object store one listing per prefix that starts at `after` and stops
    /// at `before` (a request per 1,000 keys), so a range of a folder costs what it holds,
    /// not what the folder holds. Only for stores that list in key order (S3 does).
    pub async fn list_key_ranges(&self, ranges: Vec<(Path, Path, Path)>) -> Result<Vec<Vec<Path>>> {
        let listings: Vec<Result<Vec<Path>>> = futures::stream::iter(ranges)
            .map(|(prefix, after, before)| async move {
                let mut keys = Vec::new();
                let mut listing = self.store.list_with_offset(Some(&prefix), &after);
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|e| Error::store(&prefix, e))?;
                    if meta.location.as_ref() >= before.as_ref() {
                        break;
                    }
                    keys.push(meta.location);
                }
                Ok(keys)
            })
            .buffered(RANGED_LISTINGS_IN_FLIGHT)
            .collect()
            .await;
        listings.into_iter().collect()
    }

    /// Every object under `prefix`, sorted by key. A local lake walks its directories on a
    /// blocking thread (the store's listing converts each path through a URL, which costs
    /// more than the stat); counted as the pages S3 would answer.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        if let Some(root) = self.direct_root() {
            let (root, key) = (root.clone(), prefix.clone());
            let all = tokio::task::spawn_blocking(move || walk_objects(&root, &key))
                .await
                .map_err(|e| Error::Invalid(format!("listing the lake: {e}")))??;
            self.requests.add_lists(pages(all.len()));
            return Ok(all);
        }
        let mut all: Vec<ObjectMeta> = self
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix, e))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// The objects named `file` one folder below `table` (a table's partition files, one per
    /// folder), with what [`Lake::list`] says of them. On local disk the table's folder is
    /// read and each partition's file looked up by name, one system call a partition where
    /// reading every partition's folder took six; elsewhere the table is listed.
    pub async fn list_partition_files(&self, table: &Path, file: &str) -> Result<Vec<ObjectMeta>> {
        let in_partition = |meta: &ObjectMeta| {
            let rest: Vec<_> = meta
                .location
                .prefix_match(table)
                .into_iter()
                .flatten()
                .collect();
            matches!(rest.as_slice(), [_, name] if name.as_ref() == file)
        };
        let Some(root) = self.direct_root() else {
            let mut all = self.list(table).await?;
            all.retain(in_partition);
            return Ok(all);
        };
        let (root, table, file) = (root.clone(), table.clone(), file.to_string());
        let all = tokio::task::spawn_blocking(move || {
            let mut folders = Vec::new();
            walk(&root, &table, false, &mut folders, |_, _| Ok(()))?;
            let mut out = Vec::with_capacity(folders.len());
            for folder in folders {
                let key = format!("{folder}/{file}");
                let path = root.join(&key);
                // As the listing: a link is followed, and one that leads nowhere (or to
                // itself) is left out.
                let link = || std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => out.push(object_meta(key, &meta)),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) if link() => {}
                    Err(e) => {
                        return Err(Error::Invalid(format!("listing {}: {e}", path.display())));
                    }
                }
            }
            out.sort_by(|a, b| a.location.cmp(&b.location));
            Ok(out)
        })
        .await
        .map_err(|e| Error::Invalid(format!("listing the lake: {e}")))??;
        self.requests.add_lists(pages(all.len()));
        Ok(all)
    }
}

/// How many blocking threads list a local lake's prefixes at once, and the fewest prefixes
/// worth a thread of their own.
const LOCAL_LIST_THREADS: usize = 4;
const LOCAL_PREFIXES_PER_THREAD: usize = 32;

/// The key of a file relative to the lake root. The store keeps a key's parts as file names
/// exactly as they are (already encoded), so a name is taken as it is; [`Path::from`] (which
/// would encode it a second time) only for a name no key has, such as one with a control
/// character.
fn key_of(relative: String) -> Path {
    Path::parse(&relative).unwrap_or_else(|_| Path::from(relative))
}

/// The keys under `prefix` in a local lake rooted at `root`, sorted, reading directories only.
/// The whole file of `key` under `root`, read directly and counted as one GET.
fn read_direct(root: &std::path::Path, requests: &Counters, key: &Path) -> Result<Bytes> {
    requests.add_gets(1);
    let bytes = std::fs::read(root.join(key.as_ref())).map_err(|e| read_failed(key, e))?;
    Ok(Bytes::from(bytes))
}

/// A failed direct read of a local lake's file, as the store would report it.
fn read_failed(key: &Path, e: std::io::Error) -> Error {
    let source = match e.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: key.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
    };
    Error::store(key, source)
}

fn walk_keys(root: &std::path::Path, prefix: &Path, after: Option<&str>) -> Result<Vec<Path>> {
    let mut out = Vec::new();
    walk(root, prefix, true, &mut Vec::new(), |key, _| {
        if after.is_none_or(|a| key.as_str() > a) {
            out.push(key_of(key));
        }
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// The objects under `prefix` in a local lake rooted at `root`, sorted, each with the
/// metadata the store's own listing gives it (the same e-tag, so a version recorded from a
/// write or a listing compares equal): a stat per file, and none of the store's path
/// conversions.
fn walk_objects(root: &std::path::Path, prefix: &Path) -> Result<Vec<ObjectMeta>> {
    // A table's date folders are shared out to a few threads: a folder costs a few system
    // calls, and a table holds one per day of history.
    let (mut out, folders) = stat_files(root, prefix, false)?;
    let threads = (folders.len() / LOCAL_PREFIXES_PER_THREAD).clamp(1, LOCAL_LIST_THREADS);
    if threads == 1 {
        for f in &folders {
            out.extend(stat_files(root, f, true)?.0);
        }
    } else {
        let per_thread = folders.len().div_ceil(threads);
        let runs: Vec<Result<Vec<ObjectMeta>>> = std::thread::scope(|scope| {
            let walks: Vec<_> = folders
                .chunks(per_thread)
                .map(|run| {
                    scope.spawn(move || {
                        let mut found = Vec::new();
                        for f in run {
                            found.extend(stat_files(root, f, true)?.0);
                        }
                        Ok(found)
                    })
                })
                .collect();
            walks
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(Error::Invalid("listing the lake: a thread panicked".into()))
                    })
                })
                .collect()
        });
        for run in runs {
            out.extend(run?);
        }
    }
    out.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(out)
}

/// The files under `prefix` with their metadata: all of them (`deep`), or those directly in
/// it, with its folders.
fn stat_files(
    root: &std::path::Path,
    prefix: &Path,
    deep: bool,
) -> Result<(Vec<ObjectMeta>, Vec<Path>)> {
    let (mut out, mut folders) = (Vec::new(), Vec::new());
    walk(root, prefix, deep, &mut folders, |key, entry| {
        // Stat by the folder's handle, not by the whole path again from the root (which was
        // most of a listing's time); a link is followed, as the store follows it.
        let meta = match entry.file_type().map(|t| t.is_symlink()) {
            Ok(false) => entry.metadata(),
            _ => std::fs::metadata(entry.path()),
        };
        let meta = match meta {
            Ok(m) => m,
            // Gone between the directory read and the stat: not listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                let file = entry.path();
                return Err(Error::Invalid(format!("listing {}: {e}", file.display())));
            }
        };
        out.push(object_meta(key, &meta));
        Ok(())
    })?;
    Ok((out, folders))
}

/// What the store's listing says of the local file at `key`: its size, modification time and
/// the store's e-tag (inode, modification time in microseconds, size).
fn object_meta(key: String, meta: &std::fs::Metadata) -> ObjectMeta {
    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    let micros = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    ObjectMeta {
        location: key_of(key),
        last_modified: modified.into(),
        size: meta.len(),
        e_tag: Some(format!("{inode:x}-{micros:x}-{:x}", meta.len())),
        version: None,
    }
}

/// Walks the files under `prefix` in a local lake rooted at `root`, reading directories only,
/// handing each file's key and directory entry to `found`: all of them (`deep`), or only those directly
/// in `prefix`, its folders then going to `folders`.
fn walk(
    root: &std::path::Path,
    prefix: &Path,
    deep: bool,
    folders: &mut Vec<Path>,
    mut found: impl FnMut(String, &std::fs::DirEntry) -> Result<()>,
) -> Result<()> {
    let failed = |d: &std::path::Path, e: std::io::Error| {
        Error::Invalid(format!("listing {}: {e}", d.display()))
    };
    let mut pending = vec![(root.join(prefix.as_ref()), prefix.as_ref().to_string())];
    while let Some((d, key)) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(r) => r,
            // Nothing there, or a file where a folder would be: nothing under it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(failed(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| failed(&d, e))?;
            let name = entry.file_name();
            // Names that are not keys: the store's in-progress writes (`#`), anything not
            // UTF-8.
            let Some(name) = name.to_str().filter(|n| !n.contains('#')) else {
                continue;
            };
            let child = if key.is_empty() {
                name.to_string()
            } else {
                format!("{key}/{name}")
            };
            let (is_dir, is_file) = match entry.file_type() {
                // A link is followed, as the store's listing follows it; a broken one is
                // left out.
                Ok(kind) if kind.is_symlink() => match std::fs::metadata(entry.path()) {
                    Ok(m) => (m.is_dir(), m.is_file()),
                    Err(_) => continue,
                },
                Ok(kind) => (kind.is_dir(), kind.is_file()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(&d, e)),
            };
            if is_dir && deep {
                pending.push((entry.path(), child));
            } else if is_dir {
                folders.push(key_of(child));
            } else if is_file {
                found(child, &entry)?;
            }
        }
    }
    Ok(())
}

/// The innermost message of an error chain, on one line: object_store nests the same message
/// several times over.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_other_schemes_and_names_them() {
        let err = Lake::open("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("ftp"), "{err}");
    }

    /// The object store's own listing of `prefix`, sorted by key: what the local walk must
    /// equal.
    async fn store_listing(lake: &Lake, prefix: &str) -> Vec<ObjectMeta> {
        let mut all: Vec<ObjectMeta> = lake
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        all.sort_by(|a, b| a.location.cmp(&b.location));
        all
    }

    #[tokio::test]
    async fn list_keys_names_what_list_lists() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        for k in [
            "a/date=2024-01-01/x_1+y=2.bronze",
            "a/date=2024-01-02/z.json",
            "a/b/c/d.parquet",
            "a/odd name%/{k}[1].json",
            "ab/not-under-a",
        ] {
            lake.put(&Path::from(k), Bytes::from_static(b"1"))
                .await
                .unwrap();
        }
        // A write in progress by the store: not a key.
        std::fs::write(dir.path().join("a/b/c/d.parquet#1"), b"").unwrap();
        let listed: Vec<Path> = lake
            .list(&Path::from("a"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location)
            .collect();
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(lake.list_keys(&Path::from("a")).await.unwrap(), listed);
        // The local walk lists what the store's own listing lists, metadata and e-tags
        // included: versions recorded from either compare equal.
        let by_store = store_listing(&lake, "a").await;
        assert_eq!(lake.list(&Path::from("a")).await.unwrap(), by_store);
        assert!(lake.list(&Path::from("nope")).await.unwrap().is_empty());
        assert!(
            lake.list_keys(&Path::from("nope"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_table_of_many_dates_lists_as_the_store_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        // Enough date folders to be shared out to threads, one empty, one nested deeper, and
        // a file at the table's top.
        let first = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        for (i, d) in first.iter_days().take(150).enumerate() {
            let body = Bytes::from(vec![b'x'; i]);
            lake.put(&Path::from(format!("t/date={d}/part-00000.parquet")), body)
                .await
                .unwrap();
        }
        lake.put(&Path::from("t/date=x/deeper/y.parquet"), Bytes::new())
            .await
            .unwrap();
        lake.put(&Path::from("t/top.json"), Bytes::new())
            .await
            .unwrap();
        std::fs::create_dir_all(dir.path().join("t/date=empty")).unwrap();
        // Links are followed, as the store follows them; a broken one is left out.
        lake.put(
            &Path::from("elsewhere/date=z/part-00000.parquet"),
            Bytes::new(),
        )
        .await
        .unwrap();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(dir.path().join(target), dir.path().join(name)).unwrap()
        };
        link("elsewhere/date=z", "t/date=linked");
        link("t/top.json", "t/date=x/also.json");
        link("nowhere", "t/date=x/broken.json");
        let by_store = store_listing(&lake, "t").await;
        assert_eq!(by_store.len(), 154);
        assert_eq!(lake.list(&Path::from("t")).await.unwrap(), by_store);
        // The partition files alone, each looked up by name in its folder: the same as the
        // store's listing keeps of them (the linked folder's file included), and a folder
        // whose partition "file" is a folder has none.
        std::fs::create_dir_all(dir.path().join("t/date=dir/part-00000.parquet")).unwrap();
        std::fs::create_dir_all(dir.path().join("t/date=loop")).unwrap();
        link(
            "t/date=loop/part-00000.parquet",
            "t/date=loop/part-00000.parquet",
        );
        assert_eq!(lake.list(&Path::from("t")).await.unwrap().len(), 154);
        let parts: Vec<ObjectMeta> = by_store
            .iter()
            .filter(|m| m.location.filename() == Some("part-00000.parquet"))
            .cloned()
            .collect();
        assert_eq!(parts.len(), 151);
        let t = Path::from("t");
        assert_eq!(
            lake.list_partition_files(&t, "part-00000.parquet")
                .await
                .unwrap(),
            parts
        );
        // A file where a folder is asked for lists nothing.
        assert!(
            lake.list(&Path::from("t/top.json"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn list_keys_many_answers_each_prefix_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        for i in 0..150 {
            for f in 0..(i % 3) {
                lake.put(&Path::from(format!("p/{i:03}/{f}.x")), Bytes::new())
                    .await
                    .unwrap();
            }
        }
        // More prefixes than one thread takes, in an order of their own, some empty, one
        // with an offset.
        let prefixes: Vec<(Path, Option<Path>)> = (0..150)
            .rev()
            .map(|i| {
                let p = Path::from(format!("p/{i:03}"));
                let after = (i == 8).then(|| Path::from("p/008/0.x"));
                (p, after)
            })
            .collect();
        let many = lake.list_keys_many(prefixes.clone()).await.unwrap();
        assert_eq!(many.len(), 150);
        for ((p, after), got) in prefixes.iter().zip(&many) {
            let want: Vec<Path> = lake
                .list(p)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.location)
                .filter(|k| after.as_ref().is_none_or(|a| k.as_ref() > a.as_ref()))
                .collect();
            assert_eq!(got, &want, "{p}");
        }
        assert_eq!(many[149 - 8], vec![Path::from("p/008/1.x")]);
    }

    #[tokio::test]
    async fn put_new_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let key = Path::from("a/b.json");
        assert!(lake.put_new(&key, Bytes::from_static(b"1")).await.unwrap());
        assert!(!lake.put_new(&key, Bytes::from_static(b"2")).await.unwrap());
        assert_eq!(lake.get(&key).await.unwrap(), Bytes::from_static(b"1"));
        assert!(lake.root_url().starts_with("file:///"));
    }

    fn assert_missing(err: &Error, missing: &str) {
        assert!(
            matches!(err, Error::Store { key, source: object_store::Error::NotFound { .. } } if key == missing),
            "{err:?}"
        );
    }

    /// A file written past the page cache reads back byte for byte at every length around
    /// the alignment and the chunk, replaces a longer file exactly, has the version a listing
    /// gives it, and leaves nothing staged; on disk and on tmpfs alike. On Linux, at least one
    /// of the two takes direct writes: the path the build takes is the one tested.
    #[tokio::test]
    async fn put_uncached_writes_exactly_the_bytes_given() {
        let chunk = uncached::CHUNK;
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if std::path::Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        let direct: Vec<bool> = dirs
            .iter()
            .map(|d| uncached::direct::write(&d.path().join("probe"), &[1; 5000]).is_ok())
            .collect();
        assert!(
            !cfg!(target_os = "linux") || direct.contains(&true),
            "no direct write took: {direct:?}"
        );
        for dir in &dirs {
            let _ = std::fs::remove_file(dir.path().join("probe"));
            let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
            let key = Path::from("silver/t/date=2024-01-01/part-00000.parquet");
            for len in [
                chunk + 4097,
                0,
                1,
                4095,
                4096,
                4097,
                chunk - 1,
                chunk,
                2 * chunk + 5,
            ] {
                let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (len as u8)).collect();
                let before = lake.requests();
                let version = lake
                    .put_uncached(&key, Bytes::from(bytes.clone()))
                    .await
                    .unwrap();
                assert_eq!(lake.requests().since(before).put, 1, "{len}");
                let read = lake.get(&key).await.unwrap();
                assert_eq!(read.len(), len, "{}", dir.path().display());
                assert!(
                    read == bytes,
                    "{len} bytes differ in {}",
                    dir.path().display()
                );
                let meta = lake.head(&key).await.unwrap().unwrap();
                assert_eq!(version, crate::state::version(&meta), "{len}");
            }
            let staging = dir.path().join("_staging");
            let left = std::fs::read_dir(&staging).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .count()
            });
            assert_eq!(left, 0, "files left in {}", staging.display());
        }
    }

    /// One folder as two lakes: read from disk directly, and through the store (a lake with
    /// simulated latency never takes the direct path).
    fn direct_and_waiting(dir: &tempfile::TempDir) -> (Lake, Lake) {
        let url = dir.path().to_str().unwrap();
        let waiting = Lake::open_at(
            &url.parse().unwrap(),
            &LakeOptions {
                simulated_latency: Some("get=1ms".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        (Lake::open(url).unwrap(), waiting)
    }

    #[tokio::test]
    async fn get_with_reads_what_get_reads_and_counts_one_get() {
        let dir = tempfile::tempdir().unwrap();
        let (direct, waiting) = direct_and_waiting(&dir);
        // The direct file read and the store's read agree, escaped names included.
        let keys = [
            "a/date=2024-01-01/x_1+y=2.bronze",
            "a/odd name%/{k}[1].json",
        ];
        for (i, k) in keys.iter().enumerate() {
            direct
                .put(&Path::from(*k), Bytes::from(vec![i as u8; 3 + i]))
                .await
                .unwrap();
        }
        for lake in [&direct, &waiting] {
            for k in keys {
                let key = Path::from(k);
                let before = lake.requests();
                let len = lake.get_with(&key, |b| Ok(b.len())).await.unwrap();
                assert_eq!(len, lake.get(&key).await.unwrap().len(), "{k}");
                assert_eq!(lake.requests().since(before).get, 2, "{k}");
            }
            let err = lake
                .get_with(&Path::from("a/missing.json"), |b| Ok(b.len()))
                .await
                .unwrap_err();
            assert_missing(&err, "a/missing.json");
            // What `then` says is what the caller gets.
            let err = lake
                .get_with(&Path::from(keys[0]), |_| {
                    Err::<(), _>(Error::Invalid("bad payload".into()))
                })
                .await
                .unwrap_err();
            assert!(err.to_string().contains("bad payload"), "{err}");
        }
    }

    #[tokio::test]
    async fn get_all_with_reads_every_item_in_order_and_stops_at_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let (direct, waiting) = direct_and_waiting(&dir);
        // More items than runs, and sizes that tell them apart; escaped names included.
        let keys: Vec<String> = (0..23)
            .map(|i| format!("a/odd name%/{i}_x+y.bronze"))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            direct
                .put(&Path::from(k.as_str()), Bytes::from(vec![i as u8; 1 + i]))
                .await
                .unwrap();
        }
        let items: Vec<(usize, String)> = keys.iter().cloned().enumerate().collect();
        let path = |item: &(usize, String)| Path::from(item.1.as_str());
        for lake in [&direct, &waiting] {
            let before = lake.requests();
            let read = lake
                .get_all_with(items.clone(), 4, path, |(i, _), b| Ok((i, b.len(), b[0])))
                .await
                .unwrap();
            let expected: Vec<(usize, usize, u8)> = (0..23).map(|i| (i, 1 + i, i as u8)).collect();
            assert_eq!(read, expected);
            assert_eq!(lake.requests().since(before).get, 23);
            assert!(
                lake.get_all_with(Vec::<(usize, String)>::new(), 4, path, |_, _| Ok(()))
                    .await
                    .unwrap()
                    .is_empty()
            );
            // A missing object and a failing `then`: the first in the items' order is reported.
            let mut broken = items.clone();
            broken[17].1 = "a/missing.json".into();
            let err = lake
                .get_all_with(broken, 4, path, |(i, _), _| match i {
                    20 => Err(Error::Invalid("bad payload 20".into())),
                    _ => Ok(()),
                })
                .await
                .unwrap_err();
            assert_missing(&err, "a/missing.json");
            let err = lake
                .get_all_with(items.clone(), 4, path, |(i, _), _| match i {
                    3 | 20 => Err(Error::Invalid(format!("bad payload {i}"))),
                    _ => Ok(()),
                })
                .await
                .unwrap_err();
            assert!(err.to_string().contains("bad payload 3"), "{err}");
        }
    }
}
