//! Silver: bronze minutes to validated, deduplicated hourly candles (`silver/ohlcv_1h`).
//!
//! The build is incremental. Its plan finds the bronze objects written since the last build
//! from the bronze manifest (`_manifest/bronze/`, one entry per object, names ordered by write
//! time; `_state/silver/ohlcv_1h.json` keeps the watermark), so it never lists all of bronze;
//! only a first build, or `--rebuild`, lists everything. From the request windows in the new
//! objects' keys it works out which (date, exchange, symbol) groups they touch, and lists just
//! those bronze partitions. Execution recomputes exactly those groups
//! from *all* their bronze objects, merges them with the untouched rows of each date's partition,
//! and replaces the partition file whole. Because a group is always recomputed from all of its
//! bronze, an incremental build gives the same content as `--rebuild`.

pub mod aggregate;
mod build_state;
mod job;
mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{
    Exchange, HourlyCandle, MinuteCandle, SharedClock, Symbol, date_of, day_start, hour_start,
};
use cryptolake_sources::Record;
use futures::StreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::bronze::{decode, parse_payload};
use crate::lease::Lease;
use crate::parquet_io::write_row_groups;
use crate::paths::{self, BronzeKey};
use crate::quality::{Action, QualityRules};
use crate::{Error, Lake, Result, hourly_to_batch, state, write_parquet};
use aggregate::{Fetched, confirmed_empty, dedup_latest, hourly};
use build_state::SilverState;
pub(crate) use build_state::manifest_since;
pub use build_state::{
    list_partition_versions, list_versions, minute_partition_versions, partition_versions,
};
use job::{DateJob, MinuteGroups};

/// Sort order of every partition: exchange, symbol, open_time.
pub const SORTED_BY: [usize; 3] = [0, 1, 4];

/// The order of an `ohlcv_1m` file's rows: open time, exchange, symbol. A file holds an hour a
/// row group in hour order, so this order holds for the whole file, which is what an engine
/// that reads the first row group's sort order as the file's (DataFusion) assumes. Exchange
/// and symbol first would hold within each hour only.
pub const MINUTES_SORTED_BY: [usize; 3] = [2, 0, 1];

/// An exchange and one of its symbols.
pub type Pair = (Exchange, Symbol);

/// (date, exchange, symbol) groups, by date.
type Groups = BTreeMap<NaiveDate, BTreeSet<Pair>>;

/// How far back each build re-reads the manifest by default: an entry is written just before
/// its object, and a writer that started before the last build may finish after it.
pub const MANIFEST_OVERLAP_MINUTES: i64 = 10;

/// Whether two bronze keys belong to the same exchange and symbol.
fn same_group(a: &BronzeKey, b: &BronzeKey) -> bool {
    a.source == b.source && a.symbol == b.symbol
}

/// Whether two silver rows belong to the same exchange and symbol.
pub(crate) fn same_rows_group(a: &HourlyCandle, b: &HourlyCandle) -> bool {
    a.exchange == b.exchange && a.symbol == b.symbol
}

/// The partition of `key` when its window runs past the end of that partition's date.
fn spills(key: &BronzeKey) -> Option<String> {
    (key.window_end > day_start(key.date) + Duration::days(1)).then(|| {
        paths::bronze_partition(key.source, &key.dataset, &key.symbol, key.date).to_string()
    })
}

/// The silver build: `SilverBuild::new().with_rebuild(..)`, then `plan`, then `execute`.
#[derive(Debug, Clone)]
pub struct SilverBuild {
    rebuild: bool,
    manifest_overlap: Duration,
    concurrency: usize,
    dates_per_batch: usize,
    rules: QualityRules,
    /// Dates the build's start, from which the next build's manifest watermark follows.
    clock: SharedClock,
}

impl Default for SilverBuild {
    fn default() -> Self {
        Self::new()
    }
}

/// What a silver build will do.
#[derive(Debug)]
pub struct SilverPlan {
    pub rebuild: bool,
    /// Bronze objects not yet in silver.
    pub new_objects: Vec<BronzeKey>,
    /// The groups to recompute, by date.
    pub affected: BTreeMap<NaiveDate, BTreeSet<Pair>>,
    /// Every bronze object, by exchange and symbol.
    index: HashMap<Pair, Vec<BronzeKey>>,
    /// Keys not laid out as bronze objects (reported, left alone).
    pub foreign_keys: Vec<String>,
    /// Whether the plan listed all of bronze (first build, rebuild) or read the manifest.
    pub full_listing: bool,
    /// Dates whose partition is not as the last build left it (missing, replaced, damaged):
    /// recomputed whole from all their bronze, without reading the partition.
    pub repair: BTreeSet<NaiveDate>,
    /// For a first build or a rebuild: the bronze partitions, listed at execution a batch of
    /// dates at a time.
    streamed: Option<Streamed>,
    /// The state to commit once the partitions are durable.
    next_state: SilverState,
    state_changed: bool,
}

/// What a silver build did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SilverMetrics {
    pub new_objects: usize,
    pub objects_read: usize,
    pub candles_read: usize,
    pub duplicates_dropped: usize,
    /// Duplicates whose values differed from the copy kept (the exchange revised a candle).
    pub conflicting_duplicates: usize,
    pub open_candles_skipped: usize,
    /// Valid candles outside the window their request asked for (Coinbase sends some from
    /// before `start`, Kraken everything it still has): left out, the window that asked for
    /// them carries them.
    pub outside_window_skipped: usize,
    pub rejected_records: usize,
    /// Bad records left out without quarantine (rule action `drop`).
    pub dropped_records: usize,
    pub quarantined_objects: usize,
    pub hours_written: usize,
    /// Rows written to `ohlcv_1m` (the minutes of the partitions written).
    pub minutes_written: usize,
    pub partitions_written: usize,
    pub partitions_unchanged: usize,
    pub partitions_deleted: usize,
    /// Dates whose partition was missing or changed and was rebuilt from bronze.
    pub repaired_dates: Vec<NaiveDate>,
    /// Dates whose partition changed.
    pub changed_dates: Vec<NaiveDate>,
    /// Dates that new bronze touched, changed or not.
    pub affected_dates: Vec<NaiveDate>,
    /// The (date, exchange, symbol) groups recomputed.
    #[serde(skip)]
    pub touched: BTreeMap<NaiveDate, BTreeSet<Pair>>,
    /// The requests the build (with its gap report and checks) made to the store; set by
    /// whoever ran it.
    pub requests: crate::RequestCounts,
}

fn dates_of_window(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    if end <= start {
        return out;
    }
    let last = date_of(end - Duration::microseconds(1));
    let mut d = date_of(start);
    while d <= last {
        out.push(d);
        d = d.succ_opt().expect("date in range");
    }
    out
}

fn overlaps(key: &BronzeKey, date: NaiveDate) -> bool {
    let (s, e) = (day_start(date), day_start(date) + Duration::days(1));
    key.window_start < e && key.window_end > s
}

impl SilverBuild {
    pub fn new() -> SilverBuild {
        SilverBuild {
            rebuild: false,
            manifest_overlap: Duration::minutes(MANIFEST_OVERLAP_MINUTES),
            concurrency: 8,
            dates_per_batch: DATES_PER_BATCH,
            rules: QualityRules::default(),
            clock: cryptolake_model::system_clock(),
        }
    }

    /// The clock that dates the build (the system clock unless set).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The record rules (`ohlc`, `amounts`, `alignment`) decide what happens to a bad candle.
    pub fn with_rules(mut self, rules: QualityRules) -> Self {
        self.rules = rules;
        self
    }

    /// Recompute everything from bronze, ignoring what was processed before.
    pub fn with_rebuild(mut self, rebuild: bool) -> Self {
        self.rebuild = rebuild;
        self
    }

    /// How far back each build re-reads the manifest (at least zero).
    pub fn with_manifest_overlap(mut self, overlap: Duration) -> Self {
        self.manifest_overlap = overlap.max(Duration::zero());
        self
    }

    /// Bronze objects read at once for one date (8 unless set): on an object store each read
    /// waits on the network, and more in flight hide it (the pipeline asks for 64 there).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// At most how many dates a first build or a rebuild lists and builds at a time (32
    /// unless set; fewer when the dates hold more than `BATCH_OBJECTS` objects): its memory
    /// holds one batch's bronze keys.
    pub fn with_dates_per_batch(mut self, n: usize) -> Self {
        self.dates_per_batch = n.max(1);
        self
    }

    pub async fn plan(&self, lake: &Lake) -> Result<SilverPlan> {
        let started = self.clock.now();
        let previous = if self.rebuild {
            SilverState::default()
        } else {
            state::read::<SilverState>(lake, &paths::silver_state())
                .await?
                .unwrap_or_default()
        };
        let watermark = started - self.manifest_overlap;
        let plan = SilverPlan {
            rebuild: self.rebuild,
            new_objects: Vec::new(),
            affected: BTreeMap::new(),
            index: HashMap::new(),
            foreign_keys: Vec::new(),
            full_listing: false,
            repair: BTreeSet::new(),
            streamed: None,
            next_state: SilverState {
                processed: BTreeSet::new(),
                watermark: Some(previous.watermark.map_or(watermark, |w| w.max(watermark))),
                recent: BTreeSet::new(),
                spilling: previous.spilling.clone(),
                partitions: previous.partitions.clone(),
                minute_partitions: previous.minute_partitions.clone(),
            },
            state_changed: false,
        };
        match previous.watermark {
            // First build (or a rebuild, or a lake from before the manifest): list everything.
            None => plan::full(lake, plan, &previous, watermark, started).await,
            Some(since) => {
                // One listing of each table, while the manifest is read: a partition gone, or
                // not the version this build's predecessor wrote, is rebuilt from bronze; so
                // is a date with hours and no minutes (a lake from before the minute table).
                let (mut plan, hours, minutes) = futures::try_join!(
                    plan::incremental(lake, plan, &previous, (since, watermark), started),
                    list_partition_versions(lake),
                    list_versions(lake, paths::minute_table())
                )?;
                let changed = |recorded: &BTreeMap<NaiveDate, String>,
                               listed: &BTreeMap<NaiveDate, String>| {
                    recorded
                        .iter()
                        .filter(|(d, v)| listed.get(*d) != Some(*v))
                        .map(|(d, _)| *d)
                        .chain(
                            listed
                                .keys()
                                .filter(|d| !recorded.contains_key(*d))
                                .copied(),
                        )
                        .collect::<BTreeSet<NaiveDate>>()
                };
                let mut dates = BTreeSet::new();
                if let Some(recorded) = &previous.partitions {
                    dates.extend(changed(recorded, &hours));
                }
                let recorded_minutes = previous.minute_partitions.clone().unwrap_or_default();
                dates.extend(changed(&recorded_minutes, &minutes));
                dates.extend(hours.keys().filter(|d| !minutes.contains_key(*d)).copied());
                if !dates.is_empty() {
                    tracing::warn!(dates = ?dates, "silver partitions missing or changed since the last build; rebuilding them from bronze");
                    plan::repair(lake, &mut plan, dates).await?;
                }
                Ok(plan)
            }
        }
    }

    /// Executes a plan. With a lease, checks it is still held before committing state.
    pub async fn execute(
        &self,
        lake: &Lake,
        plan: SilverPlan,
        lease: Option<&Lease>,
    ) -> Result<SilverMetrics> {
        self.execute_with(lake, plan, lease, async |_| {}).await
    }

    /// Executes a plan, handing each batch of dates to `after_batch` once its partitions are
    /// written (the gap report follows silver this way, from the keys the batch listed).
    pub async fn execute_with(
        &self,
        lake: &Lake,
        mut plan: SilverPlan,
        lease: Option<&Lease>,
        mut after_batch: impl AsyncFnMut(Batch<'_>),
    ) -> Result<SilverMetrics> {
        let swept = lake.sweep_staging()?;
        if swept > 0 {
            tracing::warn!(
                files = swept,
                "removed staged files left by an interrupted write"
            );
        }
        // The partitions' versions as this build leaves them (see `SilverState::partitions`).
        let versions = match (&plan.next_state.partitions, plan.rebuild) {
            (_, true) => BTreeMap::new(),
            (Some(v), false) => v.clone(),
            (None, false) => list_partition_versions(lake).await?,
        };
        let minute_versions = match (&plan.next_state.minute_partitions, plan.rebuild) {
            (_, true) => BTreeMap::new(),
            (Some(v), false) => v.clone(),
            (None, false) => list_versions(lake, paths::minute_table()).await?,
        };
        let mut run = Run {
            lake,
            build: self,
            rebuild: plan.rebuild,
            repair: std::mem::take(&mut plan.repair),
            versions,
            minute_versions,
            metrics: SilverMetrics {
                new_objects: plan.new_objects.len(),
                ..Default::default()
            },
            quarantined: HashSet::new(),
        };
        run.metrics.repaired_dates = run.repair.iter().copied().collect();
        let touched = match plan.streamed.take() {
            None => {
                let mut new_keys: HashMap<Pair, HashSet<BronzeKey>> = HashMap::new();
                for k in std::mem::take(&mut plan.new_objects) {
                    new_keys
                        .entry((k.source, k.symbol.clone()))
                        .or_default()
                        .insert(k);
                }
                run.dates(&plan.affected, &plan.index, Arc::new(new_keys))
                    .await?;
                after_batch(Batch {
                    touched: &plan.affected,
                    listed: Arc::new(std::mem::take(&mut plan.index)),
                    complete_listing: false,
                })
                .await;
                std::mem::take(&mut plan.affected)
            }
            Some(streamed) => {
                let (touched, spilling) = run
                    .streamed(streamed, &mut plan.next_state.recent, &mut after_batch)
                    .await?;
                plan.next_state.spilling = Some(spilling);
                touched
            }
        };
        let Run {
            mut versions,
            mut minute_versions,
            mut metrics,
            ..
        } = run;
        metrics.affected_dates = touched.keys().copied().collect();
        if plan.rebuild {
            // Partitions no bronze produces any more are not part of the rebuilt table.
            for meta in lake.list(&paths::silver_table()).await? {
                if let Some(d) = paths::partition_file_date(&paths::silver_table(), &meta.location)
                    && !touched.contains_key(&d)
                {
                    lake.delete(&meta.location).await?;
                    versions.remove(&d);
                    metrics.partitions_deleted += 1;
                    metrics.changed_dates.push(d);
                }
            }
            for meta in lake.list(&paths::minute_table()).await? {
                if let Some(d) = paths::partition_file_date(&paths::minute_table(), &meta.location)
                    && !touched.contains_key(&d)
                {
                    lake.delete(&meta.location).await?;
                    minute_versions.remove(&d);
                }
            }
        }
        metrics.changed_dates.sort();
        if !plan.foreign_keys.is_empty() {
            warn!(count = plan.foreign_keys.len(), first = %plan.foreign_keys[0], "ignoring objects under bronze/ that are not bronze objects");
        }
        if let Some(lease) = lease {
            lease.check().await?;
        }
        let versions_changed = plan.next_state.partitions.as_ref() != Some(&versions)
            || plan.next_state.minute_partitions.as_ref() != Some(&minute_versions);
        plan.next_state.partitions = Some(versions);
        plan.next_state.minute_partitions = Some(minute_versions);
        // State moves only after the partitions it describes are durable.
        if plan.state_changed || plan.rebuild || versions_changed {
            state::write(lake, &paths::silver_state(), &plan.next_state).await?;
        }
        metrics.touched = touched;
        Ok(metrics)
    }
}

/// A batch of dates a build has written: the groups it recomputed and every bronze key it
/// listed for them.
pub struct Batch<'a> {
    pub touched: &'a BTreeMap<NaiveDate, BTreeSet<Pair>>,
    pub listed: Arc<HashMap<Pair, Vec<BronzeKey>>>,
    /// The build lists all of bronze, batch after batch in date order (a first build or a
    /// rebuild): what follows it may rely on seeing every object.
    pub complete_listing: bool,
}

/// A full listing made date range by date range: the bronze partitions the plan found.
#[derive(Debug)]
pub(super) struct Streamed {
    /// Each symbol folder of bronze, its exchange and symbol, and the dates it holds.
    folders: Vec<(Pair, Path, BTreeSet<NaiveDate>)>,
    /// Manifest entries in the overlap, by the bronze key they announce.
    overlap: HashMap<String, String>,
    /// Keys the state of a build from before the manifest records as processed.
    processed: BTreeSet<String>,
}

/// One execution's running state.
struct Run<'a> {
    lake: &'a Lake,
    build: &'a SilverBuild,
    rebuild: bool,
    repair: BTreeSet<NaiveDate>,
    versions: BTreeMap<NaiveDate, String>,
    minute_versions: BTreeMap<NaiveDate, String>,
    metrics: SilverMetrics,
    quarantined: HashSet<String>,
}

impl Run<'_> {
    /// Recomputes the groups of `affected` from the keys of `index`, and writes the dates.
    async fn dates(
        &mut self,
        affected: &BTreeMap<NaiveDate, BTreeSet<Pair>>,
        index: &HashMap<Pair, Vec<BronzeKey>>,
        new_keys: Arc<HashMap<Pair, HashSet<BronzeKey>>>,
    ) -> Result<()> {
        let lake = self.lake;
        let jobs = affected.iter().map(|(date, pairs)| {
            let keys: Vec<BronzeKey> = pairs
                .iter()
                .filter_map(|p| index.get(p))
                .flatten()
                .filter(|k| overlaps(k, *date))
                .cloned()
                .collect();
            let job = DateJob {
                lake: lake.clone(),
                date: *date,
                pairs: pairs.clone(),
                keys,
                rules: self.build.rules.clone(),
                new_keys: new_keys.clone(),
                concurrency: self.build.concurrency,
                rebuild: self.rebuild || self.repair.contains(date),
            };
            crate::in_task(format!("silver build for {date}"), job.run())
        });
        // Dates are read and aggregated ahead, and written concurrently, each as its own task:
        // on an object store every step waits on requests, and in-flight ones hide that.
        let in_flight = crate::dates_in_flight(lake, DATES_IN_FLIGHT);
        let mut prepared = futures::stream::iter(jobs).buffered(in_flight);
        let mut writes = futures::stream::FuturesUnordered::new();
        while let Some(done) = prepared.next().await {
            let done = done?;
            self.metrics.absorb(&done.counts);
            for (path, doc) in done.quarantine {
                if !self.quarantined.insert(path.clone()) {
                    continue;
                }
                self.metrics.quarantined_objects += 1;
                self.metrics.rejected_records += doc.records.len();
                let body = serde_json::to_vec_pretty(&doc).expect("quarantine doc serialises");
                lake.put(
                    &paths::quarantine_for(&Path::from(path.as_str())),
                    Bytes::from(body),
                )
                .await?;
            }
            if done.minutes_unchanged {
                match done.existing_minute_version {
                    Some(v) => self.minute_versions.insert(done.date, v),
                    None => self.minute_versions.remove(&done.date),
                };
            } else {
                writes.push(futures::future::Either::Left(crate::in_task(
                    format!("minute write for {}", done.date),
                    write_minutes(lake.clone(), done.date, done.minutes),
                )));
            }
            if done.unchanged {
                self.metrics.partitions_unchanged += 1;
                match done.existing_version {
                    Some(v) => self.versions.insert(done.date, v),
                    None => self.versions.remove(&done.date),
                };
            } else {
                writes.push(futures::future::Either::Right(crate::in_task(
                    format!("silver write for {}", done.date),
                    write_partition(lake.clone(), done.date, done.merged),
                )));
            }
            while writes.len() >= in_flight {
                if let Some(w) = writes.next().await {
                    let versions = (&mut self.versions, &mut self.minute_versions);
                    self.metrics.record(versions, w?);
                }
            }
        }
        drop(prepared);
        while let Some(w) = writes.next().await {
            let versions = (&mut self.versions, &mut self.minute_versions);
            self.metrics.record(versions, w?);
        }
        Ok(())
    }

    /// A full listing and build, a batch of dates at a time in date order (about
    /// `BATCH_OBJECTS` objects, at most `dates_per_batch` dates): each batch's partitions
    /// are listed (once each), built, written and handed to `after_batch`, so memory holds a
    /// few batches' keys, never all of bronze. The batches overlap: while one is built, the
    /// next is already being listed and the one before is in `after_batch` (the gap report),
    /// so no core waits at a batch's end. Keys whose windows reach into the next batch are
    /// carried over. The gap report of each batch covers, for every pair, each date from its
    /// last date before the batch (again, with that date's keys) to its last in the batch, so
    /// that days without bronze are reported as a full scan reports them. Returns the groups
    /// touched and the bronze partitions that spill over midnight.
    async fn streamed(
        &mut self,
        streamed: Streamed,
        recent: &mut BTreeSet<String>,
        after_batch: &mut impl AsyncFnMut(Batch<'_>),
    ) -> Result<(BTreeMap<NaiveDate, BTreeSet<Pair>>, BTreeSet<String>)> {
        let Streamed {
            folders,
            overlap,
            processed,
        } = streamed;
        let mut touched: BTreeMap<NaiveDate, BTreeSet<Pair>> = BTreeMap::new();
        let mut spilling = BTreeSet::new();
        let (Some(first), Some(last)) = (
            folders.iter().filter_map(|f| f.2.first()).min().copied(),
            folders.iter().filter_map(|f| f.2.last()).max().copied(),
        ) else {
            return Ok((touched, spilling));
        };
        let folders = Arc::new(folders);
        let per_batch = self.build.dates_per_batch;
        // Listed keys whose windows reach past their batch, and whether each is new.
        let mut carry: Vec<(BronzeKey, bool)> = Vec::new();
        // Each pair's last date in a batch so far, and the keys overlapping it.
        let mut last_seen: HashMap<Pair, (NaiveDate, Vec<BronzeKey>)> = HashMap::new();
        let mut foreign = 0usize;
        // The first batch is one date; each next one as many dates as hold about
        // `BATCH_OBJECTS` keys at the rate seen so far (up to `dates_per_batch`), so that a
        // lake of many small objects gets short batches and memory stays flat.
        let (mut seen_keys, mut seen_days) = (0usize, 0usize);
        let (mut start, mut end) = (first, first + Duration::days(1));
        let mut listing = Some(list_batch(self.lake, &folders, start, end));
        // The batch before, waiting for its gap report.
        let mut reported: Option<(Groups, HashMap<Pair, Vec<BronzeKey>>)> = None;
        while let Some(listed) = listing.take() {
            let listings = listed.await?;
            let mut index: HashMap<Pair, Vec<BronzeKey>> = HashMap::new();
            let mut new_keys: HashMap<Pair, HashSet<BronzeKey>> = HashMap::new();
            let mut affected: BTreeMap<NaiveDate, BTreeSet<Pair>> = BTreeMap::new();
            let mut found = std::mem::take(&mut carry);
            seen_keys += listings.iter().map(Vec::len).sum::<usize>();
            seen_days += (end - start).num_days() as usize;
            for location in listings.into_iter().flatten() {
                let Some(key) = BronzeKey::parse(&location) else {
                    foreign += 1;
                    continue;
                };
                if let Some(name) = overlap.get(location.as_ref()) {
                    recent.insert(name.clone());
                }
                spilling.extend(spills(&key));
                let new = !processed.contains(location.as_ref());
                self.metrics.new_objects += usize::from(new);
                found.push((key, new));
            }
            let batch_end = day_start(end);
            for (key, new) in found {
                let pair = (key.source, key.symbol.clone());
                if new {
                    for d in dates_of_window(key.window_start, key.window_end) {
                        if (start..end).contains(&d) {
                            affected.entry(d).or_default().insert(pair.clone());
                        }
                    }
                    new_keys
                        .entry(pair.clone())
                        .or_default()
                        .insert(key.clone());
                }
                if key.window_end > batch_end {
                    carry.push((key.clone(), new));
                }
                index.entry(pair).or_default().push(key);
            }
            // The next batch is listed while this one is built.
            let this_start = start;
            if end <= last || !carry.is_empty() {
                let days = (BATCH_OBJECTS * seen_days / seen_keys.max(1)).clamp(1, per_batch);
                (start, end) = (end, end + Duration::days(days as i64));
                listing = Some(list_batch(self.lake, &folders, start, end));
            }
            // And the batch before goes through `after_batch` meanwhile: its partitions are
            // written, and this batch writes only its own dates.
            let (built, ()) = futures::join!(
                self.dates(&affected, &index, Arc::new(new_keys)),
                report(&mut *after_batch, reported.take())
            );
            built?;
            let gaps_touched = gap_share(&affected, &mut index, &mut last_seen, this_start);
            reported = Some((gaps_touched, index));
            for (d, pairs) in affected {
                touched.entry(d).or_default().extend(pairs);
            }
        }
        report(after_batch, reported).await;
        if foreign > 0 {
            warn!(
                count = foreign,
                "ignoring objects in bronze partitions that are not bronze objects"
            );
        }
        Ok((touched, spilling))
    }
}

/// Hands a batch of a full listing, its gap report's share and its keys, to `after_batch`.
async fn report(
    after_batch: &mut impl AsyncFnMut(Batch<'_>),
    batch: Option<(Groups, HashMap<Pair, Vec<BronzeKey>>)>,
) {
    if let Some((touched, listed)) = batch {
        after_batch(Batch {
            touched: &touched,
            listed: Arc::new(listed),
            complete_listing: true,
        })
        .await;
    }
}

/// Starts listing the bronze keys of the dates `[start, end)`, as a task of its own. Local
/// disk walks each date directory; an object store lists each symbol folder from the
/// batch's first date to its end, a request per 1,000 keys.
fn list_batch(
    lake: &Lake,
    folders: &Arc<Vec<(Pair, Path, BTreeSet<NaiveDate>)>>,
    start: NaiveDate,
    end: NaiveDate,
) -> impl std::future::Future<Output = Result<Vec<Vec<Path>>>> + use<> {
    let (lake, folders) = (lake.clone(), folders.clone());
    crate::in_task(format!("bronze listing from {start}"), async move {
        if lake.is_local() {
            let prefixes: Vec<(Path, Option<Path>)> = folders
                .iter()
                .flat_map(|(_, dir, dates)| {
                    dates
                        .range(start..end)
                        .map(move |d| (dir.clone().join(format!("date={d}")), None))
                })
                .collect();
            lake.list_keys_many(prefixes).await
        } else {
            let ranges: Vec<(Path, Path, Path)> = folders
                .iter()
                .filter(|(_, _, dates)| dates.range(start..end).next().is_some())
                .map(|(_, dir, _)| {
                    // After every key of the day before (bronze file names start with a
                    // digit): a start that S3 and filer-backed stores (SeaweedFS) read alike.
                    let before = start.pred_opt().unwrap_or(start);
                    let after = Path::from(format!("{dir}/date={before}/~"));
                    (dir.clone(), after, Path::from(format!("{dir}/date={end}")))
                })
                .collect();
            lake.list_key_ranges(ranges).await
        }
    })
}

/// The gap report's share of a batch that starts at `start`: the groups it built, and each
/// pair's dates since its last batch (`last_seen`, updated here), with the keys of those
/// dates added to `index`.
fn gap_share(
    affected: &BTreeMap<NaiveDate, BTreeSet<Pair>>,
    index: &mut HashMap<Pair, Vec<BronzeKey>>,
    last_seen: &mut HashMap<Pair, (NaiveDate, Vec<BronzeKey>)>,
    start: NaiveDate,
) -> BTreeMap<NaiveDate, BTreeSet<Pair>> {
    let mut gaps_touched = affected.clone();
    let mut pairs_dates: HashMap<&Pair, (NaiveDate, NaiveDate)> = HashMap::new();
    for (d, pairs) in affected {
        for p in pairs {
            let e = pairs_dates.entry(p).or_insert((*d, *d));
            e.1 = e.1.max(*d);
        }
    }
    let mut next_seen = Vec::new();
    for (pair, (lo, hi)) in pairs_dates {
        // Every date from the pair's last date before this batch (or its first in it)
        // to its last in it: days without bronze in between are gaps too.
        let from = last_seen.get(pair).map_or(lo, |(before, _)| *before);
        for d in from.iter_days().take_while(|d| d <= &hi) {
            gaps_touched.entry(d).or_default().insert(pair.clone());
        }
        if let Some((_, keys)) = last_seen.get(pair) {
            // Those not carried into this batch (and so not listed in it already).
            let carried_from = day_start(start);
            index.entry(pair.clone()).or_default().extend(
                keys.iter()
                    .filter(|k| k.window_end <= carried_from)
                    .cloned(),
            );
        }
        let keys: Vec<BronzeKey> = index[pair]
            .iter()
            .filter(|k| overlaps(k, hi))
            .cloned()
            .collect();
        next_seen.push((pair.clone(), (hi, keys)));
    }
    last_seen.extend(next_seen);
    gaps_touched
}

/// At most how many dates a first build or a rebuild lists and builds at a time.
pub const DATES_PER_BATCH: usize = 32;

/// About how many bronze objects a batch of a first build or a rebuild holds, when its dates
/// hold more than `DATES_PER_BATCH` dates' worth.
pub const BATCH_OBJECTS: usize = 4096;

/// At least how many dates are read and aggregated ahead, and written at once.
const DATES_IN_FLIGHT: usize = 3;

/// A partition as written: its version, or `None` when it was deleted (no rows left).
struct Written {
    date: NaiveDate,
    version: Option<String>,
    rows: usize,
    /// Of `ohlcv_1m`, not `ohlcv_1h`.
    minutes: bool,
}

/// The versions a build leaves: of `ohlcv_1h`, and of `ohlcv_1m`.
type VersionsMut<'a> = (
    &'a mut BTreeMap<NaiveDate, String>,
    &'a mut BTreeMap<NaiveDate, String>,
);

impl SilverMetrics {
    fn record(&mut self, (versions, minute_versions): VersionsMut<'_>, w: Written) {
        if w.minutes {
            match w.version {
                Some(v) => minute_versions.insert(w.date, v),
                None => minute_versions.remove(&w.date),
            };
            self.minutes_written += w.rows;
            return;
        }
        match w.version {
            Some(v) => {
                versions.insert(w.date, v);
                self.partitions_written += 1;
                self.hours_written += w.rows;
            }
            None => {
                versions.remove(&w.date);
                self.partitions_deleted += 1;
            }
        }
        self.changed_dates.push(w.date);
        info!(date = %w.date, rows = w.rows, "silver partition written");
    }
}

/// Replaces a date's partition with `rows` (deletes it when there are none).
async fn write_partition(lake: Lake, date: NaiveDate, rows: Vec<HourlyCandle>) -> Result<Written> {
    let key = paths::silver_partition_file(date);
    if rows.is_empty() {
        lake.delete(&key).await?;
        return Ok(Written {
            date,
            version: None,
            rows: 0,
            minutes: false,
        });
    }
    let version = write_parquet(&lake, &key, &hourly_to_batch(&rows)?, &SORTED_BY).await?;
    Ok(Written {
        date,
        version: Some(version),
        rows: rows.len(),
        minutes: false,
    })
}

/// Replaces a date's `ohlcv_1m` partition with `minutes` (deletes it when there are none).
async fn write_minutes(lake: Lake, date: NaiveDate, minutes: MinuteGroups) -> Result<Written> {
    let key = paths::minute_partition_file(date);
    let version = match minutes.rows {
        0 => {
            lake.delete(&key).await?;
            None
        }
        _ => {
            let schema = cryptolake_model::schema::ohlcv_1m();
            let (source, groups) = (minutes.source, minutes.groups);
            Some(write_row_groups(&lake, &key, schema, &MINUTES_SORTED_BY, source, groups).await?)
        }
    };
    Ok(Written {
        date,
        version,
        rows: minutes.rows,
        minutes: true,
    })
}
