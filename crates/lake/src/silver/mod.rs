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
mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{
    Exchange, HourlyCandle, SharedClock, Symbol, date_of, day_start, hour_start,
};
use cryptolake_sources::Record;
use futures::StreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::bronze::{decode, parse_payload};
use crate::lease::Lease;
use crate::paths::{self, BronzeKey};
use crate::quality::{Action, QualityRules};
use crate::{
    Error, Lake, Result, hourly_from_batch, hourly_to_batch, read_parquet, state, write_parquet,
};
use aggregate::{Minute, confirmed_empty, dedup_latest, hourly};

/// A bronze object's window `[start, end)` and fetch time.
type Fetch = (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

/// Sort order of every partition: exchange, symbol, open_time.
pub const SORTED_BY: [usize; 3] = [0, 1, 4];

/// An exchange and one of its symbols.
pub type Pair = (Exchange, Symbol);

/// How far back each build re-reads the manifest by default: an entry is written just before
/// its object, and a writer that started before the last build may finish after it.
pub const MANIFEST_OVERLAP_MINUTES: i64 = 10;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SilverState {
    /// Written by builds before the manifest: bronze keys whose content is in silver. A build
    /// with no watermark lists all of bronze once and then keeps only the watermark.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    processed: BTreeSet<String>,
    /// Every manifest entry written before this instant has been dealt with.
    #[serde(default)]
    watermark: Option<DateTime<Utc>>,
    /// Entries at or after the watermark already dealt with.
    #[serde(default)]
    recent: BTreeSet<String>,
    /// Bronze partitions holding an object whose window runs past the partition's date. No
    /// writer of this project makes one (windows are split at midnight), but a build that
    /// recomputes date D must read such an object from partition D-1, so it lists D-1 only
    /// for the partitions named here. `None` (state from an older build): D-1 is always listed.
    #[serde(default)]
    spilling: Option<BTreeSet<String>>,
    /// The version (e-tag) of every silver partition, as this build left it: what gold's plan
    /// compares with, instead of listing the table. `None` (state from an older build): the
    /// next build lists the table once to fill it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitions: Option<BTreeMap<NaiveDate, String>>,
}

/// The silver partitions and their versions as the last silver build recorded them; `None`
/// when its state does not record them (no build yet, or one from an older version).
pub async fn partition_versions(lake: &Lake) -> Result<Option<BTreeMap<NaiveDate, String>>> {
    Ok(state::read::<SilverState>(lake, &paths::silver_state())
        .await?
        .and_then(|s| s.partitions))
}

/// The silver partitions and their versions, from a listing of the table.
pub async fn list_partition_versions(lake: &Lake) -> Result<BTreeMap<NaiveDate, String>> {
    let table = paths::silver_table();
    Ok(lake
        .list(&table)
        .await?
        .iter()
        .filter_map(|meta| {
            paths::partition_file_date(&table, &meta.location).map(|d| (d, state::version(meta)))
        })
        .collect())
}

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
    pub partitions_written: usize,
    pub partitions_unchanged: usize,
    pub partitions_deleted: usize,
    /// Dates whose partition changed.
    pub changed_dates: Vec<NaiveDate>,
    /// Dates that new bronze touched, changed or not.
    pub affected_dates: Vec<NaiveDate>,
    /// The (date, exchange, symbol) groups recomputed, and the bronze keys listed for them:
    /// what the gap report needs to follow without listing bronze again.
    #[serde(skip)]
    pub touched: BTreeMap<NaiveDate, BTreeSet<Pair>>,
    #[serde(skip)]
    pub listed: std::sync::Arc<HashMap<Pair, Vec<BronzeKey>>>,
}

/// What one bronze object yielded.
struct Parsed {
    key: BronzeKey,
    path: String,
    minutes: Vec<Minute>,
    open_skipped: usize,
    outside_window: usize,
    dropped: usize,
    /// A record broke a rule whose action is `fail`.
    failure: Option<Error>,
    quarantine: Option<QuarantineDoc>,
}

#[derive(Debug, Serialize)]
struct QuarantineDoc {
    bronze_key: String,
    /// Set when the whole object could not be used.
    object_error: Option<String>,
    records: Vec<QuarantinedRecord>,
}

#[derive(Debug, Serialize)]
struct QuarantinedRecord {
    index: usize,
    reason: String,
    raw: String,
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

    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
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
            next_state: SilverState {
                processed: BTreeSet::new(),
                watermark: Some(previous.watermark.map_or(watermark, |w| w.max(watermark))),
                recent: BTreeSet::new(),
                spilling: previous.spilling.clone(),
                partitions: previous.partitions.clone(),
            },
            state_changed: false,
        };
        match previous.watermark {
            // First build (or a rebuild, or a lake from before the manifest): list everything.
            None => plan::full(lake, plan, &previous, watermark, started).await,
            Some(since) => {
                plan::incremental(lake, plan, &previous, (since, watermark), started).await
            }
        }
    }

    /// Executes a plan. With a lease, checks it is still held before committing state.
    pub async fn execute(
        &self,
        lake: &Lake,
        mut plan: SilverPlan,
        lease: Option<&Lease>,
    ) -> Result<SilverMetrics> {
        let swept = lake.sweep_staging()?;
        if swept > 0 {
            tracing::warn!(
                files = swept,
                "removed staged files left by an interrupted write"
            );
        }
        // The partitions' versions as this build leaves them (see `SilverState::partitions`).
        let mut versions = match (&plan.next_state.partitions, plan.rebuild) {
            (_, true) => BTreeMap::new(),
            (Some(v), false) => v.clone(),
            (None, false) => list_partition_versions(lake).await?,
        };
        let mut metrics = SilverMetrics {
            new_objects: plan.new_objects.len(),
            affected_dates: plan.affected.keys().copied().collect(),
            ..Default::default()
        };
        let mut by_pair: HashMap<Pair, Vec<BronzeKey>> = HashMap::new();
        for k in &plan.new_objects {
            by_pair
                .entry((k.source, k.symbol.clone()))
                .or_default()
                .push(k.clone());
        }
        let new_keys = std::sync::Arc::new(by_pair);
        let mut quarantined: HashSet<String> = HashSet::new();
        let (affected, index) = (&plan.affected, &plan.index);
        // Each date is read, parsed and aggregated by its own task while the dates before it
        // are written, so parsing never waits for the single writer.
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
                rules: self.rules.clone(),
                new_keys: new_keys.clone(),
                concurrency: self.concurrency,
                rebuild: plan.rebuild,
            };
            crate::in_task(format!("silver build for {date}"), job.run())
        });
        let mut prepared = futures::stream::iter(jobs).buffered(DATES_IN_FLIGHT);
        while let Some(done) = prepared.next().await {
            let done = done?;
            metrics.absorb(&done.counts);
            for (path, doc) in done.quarantine {
                if !quarantined.insert(path.clone()) {
                    continue;
                }
                metrics.quarantined_objects += 1;
                metrics.rejected_records += doc.records.len();
                let body = serde_json::to_vec_pretty(&doc).expect("quarantine doc serialises");
                lake.put(
                    &paths::quarantine_for(&Path::from(path.as_str())),
                    Bytes::from(body),
                )
                .await?;
            }
            let (date, key, merged) = (
                done.date,
                paths::silver_partition_file(done.date),
                done.merged,
            );
            if done.unchanged {
                metrics.partitions_unchanged += 1;
                if let Some(v) = done.existing_version {
                    versions.insert(date, v);
                }
                continue;
            }
            if merged.is_empty() {
                lake.delete(&key).await?;
                versions.remove(&date);
                metrics.partitions_deleted += 1;
            } else {
                write_parquet(lake, &key, &hourly_to_batch(&merged)?, &SORTED_BY).await?;
                let meta = lake.head(&key).await?.ok_or_else(|| {
                    Error::Invalid(format!("{key} is missing right after it was written"))
                })?;
                versions.insert(date, state::version(&meta));
                metrics.partitions_written += 1;
                metrics.hours_written += merged.len();
            }
            metrics.changed_dates.push(date);
            info!(%date, rows = merged.len(), "silver partition written");
        }
        drop(prepared);
        if plan.rebuild {
            // Partitions no bronze produces any more are not part of the rebuilt table.
            for meta in lake.list(&paths::silver_table()).await? {
                if let Some(d) = paths::partition_file_date(&paths::silver_table(), &meta.location)
                    && !plan.affected.contains_key(&d)
                {
                    lake.delete(&meta.location).await?;
                    metrics.partitions_deleted += 1;
                    metrics.changed_dates.push(d);
                }
            }
            metrics.changed_dates.sort();
        }
        if let Some(lease) = lease {
            lease.check().await?;
        }
        let versions_changed = plan.next_state.partitions.as_ref() != Some(&versions);
        plan.next_state.partitions = Some(versions);
        // State moves only after the partitions it describes are durable.
        if plan.state_changed || plan.rebuild || versions_changed {
            state::write(lake, &paths::silver_state(), &plan.next_state).await?;
        }
        metrics.touched = plan.affected;
        metrics.listed = std::sync::Arc::new(plan.index);
        Ok(metrics)
    }
}

/// The manifest entries written at or after `since`: the hour folders from `since`'s hour to
/// the day after `now` (a writer's clock may run ahead), within the first only the names
/// after it. Each day is looked at one level deep, so only hour folders that exist are listed.
async fn manifest_since(
    lake: &Lake,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Path>> {
    let first_hour = hour_start(since);
    let mut out = Vec::new();
    let mut hours = Vec::new();
    let mut day = since.date_naive();
    let last = (now + Duration::days(1)).date_naive();
    while day <= last {
        let (entries, folders) = lake.list_level(&paths::manifest_day(day)).await?;
        // Entries directly in a day folder come from lakes written before hour folders.
        out.extend(
            entries
                .into_iter()
                .map(|e| e.location)
                .filter(|k| paths::parse_manifest_entry(k).is_none_or(|(_, at, _)| at >= since)),
        );
        hours.extend(folders.into_iter().filter_map(|f| {
            let h = paths::manifest_hour_of(&f)?;
            (h >= first_hour).then_some((h, f))
        }));
        day = day.succ_opt().expect("date in range");
    }
    let offset = paths::manifest_offset(since);
    // Within the first hour, only the names from the watermark on.
    let listings = lake
        .list_keys_many(
            hours
                .iter()
                .map(|(h, f)| (f.clone(), (*h == first_hour).then(|| offset.clone())))
                .collect(),
        )
        .await?;
    out.extend(listings.into_iter().flatten());
    Ok(out)
}

/// How many dates are read and aggregated ahead of the one being written.
const DATES_IN_FLIGHT: usize = 3;

/// The counters one date contributes to [`SilverMetrics`].
#[derive(Debug, Default)]
struct DateCounts {
    objects_read: usize,
    candles_read: usize,
    duplicates_dropped: usize,
    conflicting_duplicates: usize,
    open_candles_skipped: usize,
    outside_window_skipped: usize,
    dropped_records: usize,
}

impl SilverMetrics {
    fn absorb(&mut self, c: &DateCounts) {
        self.objects_read += c.objects_read;
        self.candles_read += c.candles_read;
        self.duplicates_dropped += c.duplicates_dropped;
        self.conflicting_duplicates += c.conflicting_duplicates;
        self.open_candles_skipped += c.open_candles_skipped;
        self.outside_window_skipped += c.outside_window_skipped;
        self.dropped_records += c.dropped_records;
    }
}

/// A request window, `[start, end)`.
type Window = (DateTime<Utc>, DateTime<Utc>);

/// Recomputes one date's partition: for each touched group, the hours new bronze can change,
/// from every bronze object overlapping them; merged with the rest of the date's rows.
struct DateJob {
    lake: Lake,
    date: NaiveDate,
    pairs: BTreeSet<Pair>,
    /// Every bronze object of the touched groups that overlaps the date.
    keys: Vec<BronzeKey>,
    rules: QualityRules,
    /// The new objects, by group.
    new_keys: std::sync::Arc<HashMap<Pair, Vec<BronzeKey>>>,
    concurrency: usize,
    rebuild: bool,
}

/// A date's new partition content, ready to write.
struct DatePrepared {
    date: NaiveDate,
    counts: DateCounts,
    /// Quarantine documents of new objects, by bronze key.
    quarantine: Vec<(String, QuarantineDoc)>,
    merged: Vec<HourlyCandle>,
    /// The partition already holds exactly `merged`.
    unchanged: bool,
    /// The version of the partition as it was read.
    existing_version: Option<String>,
}

impl DateJob {
    async fn run(self) -> Result<DatePrepared> {
        let key = paths::silver_partition_file(self.date);
        // The new objects are read whatever the partition holds, so they are read while it
        // is; the older ones only where the hours to recompute need them.
        // The job's keys come grouped by exchange and symbol: one lookup per group.
        let mut fresh = Vec::new();
        let mut older: Vec<&BronzeKey> = Vec::new();
        for group in self.keys.chunk_by(same_group) {
            let new = self
                .new_keys
                .get(&(group[0].source, group[0].symbol.clone()));
            for k in group {
                match new.is_some_and(|n| n.contains(k)) {
                    true => fresh.push(k.clone()),
                    false => older.push(k),
                }
            }
        }
        let read_existing = async {
            let mut rows = Vec::new();
            let version = self.lake.head(&key).await?.map(|m| state::version(&m));
            if version.is_some() {
                for b in read_parquet(&self.lake, &key).await? {
                    rows.extend(hourly_from_batch(&b, key.as_ref())?);
                }
            }
            Ok::<_, Error>((version, rows))
        };
        let (existing, parsed) = futures::join!(read_existing, self.read_objects(fresh));
        let (existing_version, existing) = existing?;
        let mut parsed = parsed?;
        let ranges = self.ranges(&existing);
        // An hour is final once some request asked for it in full after it closed: that
        // depends on every object of the group, read or not.
        let mut asked: HashMap<Pair, DateTime<Utc>> = HashMap::new();
        for group in self.keys.chunk_by(same_group) {
            let end = group
                .iter()
                .map(|k| k.window_end)
                .max()
                .expect("a group is never empty");
            let t = asked
                .entry((group[0].source, group[0].symbol.clone()))
                .or_insert(end);
            *t = (*t).max(end);
        }
        let mut wanted = Vec::new();
        for group in older.chunk_by(|a, b| same_group(a, b)) {
            if let Some((lo, hi)) = ranges.get(&(group[0].source, group[0].symbol.clone())) {
                wanted.extend(
                    group
                        .iter()
                        .filter(|k| k.window_start < *hi && k.window_end > *lo)
                        .map(|k| (*k).clone()),
                );
            }
        }
        let older = wanted;
        parsed.extend(self.read_objects(older).await?);
        let date = self.date;
        let mut prepared =
            tokio::task::spawn_blocking(move || self.assemble(parsed, existing, &ranges, &asked))
                .await
                .map_err(|e| Error::Invalid(format!("silver build for {date}: {e}")))??;
        prepared.existing_version = existing_version;
        Ok(prepared)
    }

    /// Fetches and parses bronze objects, a few at a time.
    async fn read_objects(&self, keys: Vec<BronzeKey>) -> Result<Vec<Parsed>> {
        let parsed: Vec<Result<Parsed>> = futures::stream::iter(keys)
            .map(|k| read_object(self.lake.clone(), k, self.rules.clone()))
            .buffered(self.concurrency)
            .collect()
            .await;
        parsed.into_iter().collect()
    }

    /// The hours of each touched group to recompute, `[lo, hi)` within the date. New bronze
    /// changes only the hours its windows cover, and the hours silver does not hold yet that a
    /// later request may have made final; the other hours keep their rows. A rebuild, and a
    /// group with no row yet, recompute the whole date.
    fn ranges(&self, existing: &[HourlyCandle]) -> HashMap<Pair, Window> {
        let (start, end) = (
            day_start(self.date),
            day_start(self.date) + Duration::days(1),
        );
        // Partitions are sorted by exchange and symbol: one entry per group.
        let mut held: HashMap<Pair, HashSet<DateTime<Utc>>> = HashMap::new();
        for group in existing.chunk_by(same_rows_group) {
            held.entry((group[0].exchange, group[0].symbol.clone()))
                .or_default()
                .extend(group.iter().map(|r| r.open_time));
        }
        let hour = Duration::hours(1);
        self.pairs
            .iter()
            .map(|pair| {
                let windows: Vec<Window> = self
                    .new_keys
                    .get(pair)
                    .into_iter()
                    .flatten()
                    .filter(|k| overlaps(k, self.date))
                    .map(|k| (k.window_start, k.window_end))
                    .collect();
                let windows = Some(&windows).filter(|w| !w.is_empty());
                let (Some(windows), Some(held), false) = (windows, held.get(pair), self.rebuild)
                else {
                    return (pair.clone(), (start, end));
                };
                let lo = windows
                    .iter()
                    .map(|w| w.0)
                    .min()
                    .unwrap_or(start)
                    .max(start);
                let hi = windows.iter().map(|w| w.1).max().unwrap_or(end).min(end);
                let mut lo = hour_start(lo);
                let hi = if hour_start(hi) == hi {
                    hi
                } else {
                    hour_start(hi) + hour
                };
                let mut h = start;
                while h < lo {
                    if !held.contains(&h) {
                        lo = h;
                        break;
                    }
                    h += hour;
                }
                (pair.clone(), (lo, hi))
            })
            .collect()
    }

    /// The CPU part, on the blocking pool: group, deduplicate, aggregate, merge.
    fn assemble(
        self,
        mut parsed: Vec<Parsed>,
        existing: Vec<HourlyCandle>,
        ranges: &HashMap<Pair, Window>,
        asked: &HashMap<Pair, DateTime<Utc>>,
    ) -> Result<DatePrepared> {
        let date = self.date;
        let mut counts = DateCounts::default();
        let mut quarantine = Vec::new();
        for p in &mut parsed {
            counts.objects_read += 1;
            let new = self.new_keys.get(&(p.key.source, p.key.symbol.clone()));
            if new.is_some_and(|n| n.contains(&p.key)) {
                if let Some(e) = p.failure.take() {
                    return Err(e);
                }
                counts.dropped_records += p.dropped;
                if let Some(doc) = p.quarantine.take() {
                    quarantine.push((p.path.clone(), doc));
                }
            }
            counts.open_candles_skipped += p.open_skipped;
            counts.outside_window_skipped += p.outside_window;
        }
        // Minutes stay where parsing put them; grouping and sorting move references.
        let mut by_pair: BTreeMap<Pair, Vec<&Minute>> = BTreeMap::new();
        for p in &parsed {
            by_pair
                .entry((p.key.source, p.key.symbol.clone()))
                .or_default()
                .extend(
                    p.minutes
                        .iter()
                        .filter(|m| date_of(m.candle.open_time) == date),
                );
        }
        // What each group's objects asked for, and when: a missing minute asked for by two
        // fetches after it closed is confirmed empty.
        let mut fetches: HashMap<Pair, Vec<Fetch>> = HashMap::new();
        for group in self.keys.chunk_by(same_group) {
            fetches
                .entry((group[0].source, group[0].symbol.clone()))
                .or_default()
                .extend(
                    group
                        .iter()
                        .map(|k| (k.window_start, k.window_end, k.fetched_at)),
                );
        }
        let mut fresh: Vec<HourlyCandle> = Vec::new();
        for (pair, minutes) in by_pair {
            counts.candles_read += minutes.len();
            let (minutes, dropped) = dedup_latest(minutes);
            counts.duplicates_dropped += dropped.total;
            counts.conflicting_duplicates += dropped.conflicting;
            let asked_until = asked.get(&pair).copied();
            let (lo, hi) = ranges[&pair];
            let mut hours = hourly(&minutes, |h| {
                h >= lo && h < hi && asked_until.is_some_and(|t| t >= h + Duration::hours(1))
            });
            if let Some(f) = fetches.get(&pair) {
                for h in hours.iter_mut().filter(|h| h.minutes_present < 60) {
                    h.empty_mask = confirmed_empty(h.open_time, h.minute_mask, f);
                }
            }
            fresh.extend(hours);
        }
        let mut merged: Vec<HourlyCandle> = if self.rebuild {
            Vec::new()
        } else {
            let mut kept = Vec::with_capacity(existing.len());
            for group in existing.chunk_by(same_rows_group) {
                match ranges.get(&(group[0].exchange, group[0].symbol.clone())) {
                    Some((lo, hi)) => kept.extend(
                        group
                            .iter()
                            .filter(|r| r.open_time < *lo || r.open_time >= *hi)
                            .cloned(),
                    ),
                    None => kept.extend_from_slice(group),
                }
            }
            kept
        };
        merged.extend(fresh);
        merged.sort_by(|a, b| {
            (a.exchange, &a.symbol, a.open_time).cmp(&(b.exchange, &b.symbol, b.open_time))
        });
        let unchanged = merged == existing;
        Ok(DatePrepared {
            date,
            counts,
            quarantine,
            merged,
            unchanged,
            existing_version: None,
        })
    }
}

/// Fetches a bronze object, then parses it on the blocking pool: parsing is the CPU-bound
/// part, so objects parse in parallel on every core while others download.
async fn read_object(lake: Lake, key: BronzeKey, rules: QualityRules) -> Result<Parsed> {
    let path = key.path();
    let bytes = lake.get(&path).await?;
    tokio::task::spawn_blocking(move || parse_object(&key, &bytes, &rules))
        .await
        .map_err(|e| Error::Invalid(format!("parsing bronze object {path}: {e}")))?
}

fn parse_object(key: &BronzeKey, bytes: &Bytes, rules: &QualityRules) -> Result<Parsed> {
    let path_text = key.path().to_string();
    let source_key: std::sync::Arc<str> = path_text.as_str().into();
    let mut out = Parsed {
        key: key.clone(),
        path: path_text.clone(),
        minutes: Vec::new(),
        open_skipped: 0,
        outside_window: 0,
        dropped: 0,
        failure: None,
        quarantine: None,
    };
    let whole_object_error = |reason: String| QuarantineDoc {
        bronze_key: path_text.clone(),
        object_error: Some(reason),
        records: Vec::new(),
    };
    let (envelope, payload) = match decode(&path_text, bytes) {
        Ok(v) => v,
        Err(e) => {
            out.quarantine = Some(whole_object_error(e.to_string()));
            return Ok(out);
        }
    };
    if envelope.source != key.source || envelope.symbol != key.symbol {
        out.quarantine = Some(whole_object_error(format!(
            "envelope says {} {} but the key says {} {}",
            envelope.source, envelope.symbol, key.source, key.symbol
        )));
        return Ok(out);
    }
    let records = match parse_payload(&envelope, &payload) {
        Ok(r) => r,
        Err(reason) => {
            out.quarantine = Some(whole_object_error(reason));
            return Ok(out);
        }
    };
    let mut rejected = Vec::new();
    for record in records {
        match record {
            Record::Candle { candle, close_time } => {
                if candle.open_time < envelope.window_start
                    || candle.open_time >= envelope.window_end
                {
                    out.outside_window += 1;
                } else if close_time > envelope.fetched_at {
                    // Still open when fetched: not final, never counted.
                    out.open_skipped += 1;
                } else {
                    out.minutes.push(Minute {
                        candle,
                        fetched_at: envelope.fetched_at,
                        source_key: source_key.clone(),
                    });
                }
            }
            Record::Rejected {
                index,
                raw,
                rule,
                reason,
            } => match rule.map(|r| (r, rules.record_action(r))) {
                Some((_, Action::Drop)) => out.dropped += 1,
                Some((r, Action::Fail)) => {
                    if out.failure.is_none() {
                        out.failure = Some(Error::QualityFailed {
                            rule: r.as_str().to_string(),
                            key: path_text.clone(),
                            index,
                            reason: reason.clone(),
                        });
                    }
                    rejected.push(QuarantinedRecord { index, reason, raw });
                }
                // Quarantine, and malformed records whatever the rules say.
                _ => rejected.push(QuarantinedRecord { index, reason, raw }),
            },
        }
    }
    if !rejected.is_empty() {
        out.quarantine = Some(QuarantineDoc {
            bronze_key: path_text,
            object_error: None,
            records: rejected,
        });
    }
    Ok(out)
}
