//! The funding build: bronze funding pages to `crypto_analytics.funding_rates` and
//! `crypto_ops.funding_gaps`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{Exchange, SharedClock, Symbol, date_of, schema};
use cryptolake_sources::{FundingRecord, parse_funding_page};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::series::{self, Runs};
use super::{FundingRow, SORTED_BY, funding_from_batch, funding_to_batch};
use crate::bronze::{self, FUNDING_RATE};
use crate::columns::Builder;
use crate::gaps::GapStatus;
use crate::lease::Lease;
use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result, read_parquet, state, write_parquet};

/// Bronze objects read at once.
const READS_AT_ONCE: usize = 16;

type Pair = (Exchange, Symbol);

/// An object's funding rows and how many records it rejected; `None` for an object gone.
type ObjectRows = Option<(BronzeKey, Vec<FundingRow>, usize)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FundingState {
    /// Every manifest entry written before this instant has been dealt with.
    watermark: Option<DateTime<Utc>>,
    /// Entries at or after the watermark already dealt with.
    #[serde(default)]
    recent: BTreeSet<String>,
    /// Per `exchange/symbol`: its slots and its missing slots.
    #[serde(default)]
    groups: BTreeMap<String, GroupState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GroupState {
    runs: Runs,
    #[serde(default)]
    gaps: Vec<GapRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GapRecord {
    after: i64,
    before: i64,
    status: String,
    fetches: i32,
    detected_at: DateTime<Utc>,
}

fn group_name((exchange, symbol): &Pair) -> String {
    format!("{exchange}/{symbol}")
}

fn parse_group(name: &str) -> Option<Pair> {
    let (e, s) = name.split_once('/')?;
    Some((e.parse().ok()?, Symbol::parse(s).ok()?))
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// What a funding build did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FundingMetrics {
    /// Bronze objects read.
    pub objects: usize,
    /// Funding events read (copies included).
    pub rows: usize,
    /// Records rejected (quarantined with their reason).
    pub rejected: usize,
    /// Dates of `funding_rates` written or removed.
    pub changed_dates: Vec<NaiveDate>,
    /// Missing stretches now recorded, over every symbol.
    pub gaps: usize,
}

/// A build over one bronze dataset that reads the objects the bronze manifest announces since
/// its watermark (all of them on a first build or a rebuild): funding ([`FundingBuild`]) and
/// mark prices ([`crate::mark::MarkBuild`]).
pub struct ManifestBuild<T> {
    pub(crate) rebuild: bool,
    overlap: Duration,
    pub(crate) clock: SharedClock,
    table: std::marker::PhantomData<T>,
}

impl<T> Clone for ManifestBuild<T> {
    fn clone(&self) -> Self {
        ManifestBuild {
            rebuild: self.rebuild,
            overlap: self.overlap,
            clock: self.clock.clone(),
            table: std::marker::PhantomData,
        }
    }
}

impl<T> Default for ManifestBuild<T> {
    fn default() -> Self {
        ManifestBuild::new()
    }
}

/// The funding table's build: [`FundingBuild::run`].
pub struct Funding;
pub type FundingBuild = ManifestBuild<Funding>;

impl<T> ManifestBuild<T> {
    pub fn new() -> ManifestBuild<T> {
        ManifestBuild {
            rebuild: false,
            overlap: Duration::minutes(crate::silver::MANIFEST_OVERLAP_MINUTES),
            clock: cryptolake_model::system_clock(),
            table: std::marker::PhantomData,
        }
    }

    /// Build from all of bronze, replacing what the tables hold.
    pub fn with_rebuild(mut self, rebuild: bool) -> Self {
        self.rebuild = rebuild;
        self
    }

    /// Whether an incremental build's error is an unreadable partition of `table` (damaged,
    /// or replaced by something that is not its Parquet) that a rebuild from bronze, which
    /// reads no partition, repairs. Says so in the log.
    pub(crate) fn repairs(&self, e: &Error, table: &object_store::path::Path) -> bool {
        let key = match e {
            Error::Parquet { key, .. } | Error::Data { key, .. } => key,
            _ => return false,
        };
        let damaged = !self.rebuild && key.starts_with(&format!("{table}/"));
        if damaged {
            warn!(key, error = %e, "an unreadable partition: rebuilding the table from bronze");
        }
        damaged
    }

    /// How far behind its start a build looks at the manifest again, for writers in flight.
    pub fn with_manifest_overlap(mut self, overlap: Duration) -> Self {
        self.overlap = overlap.max(Duration::zero());
        self
    }

    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The objects of `dataset` to read, given the previous build's watermark and the entries
    /// of its overlap it dealt with (`None`: a first build or a rebuild, which lists them
    /// all), and the watermark and overlap entries to remember.
    pub(crate) async fn objects(
        &self,
        lake: &Lake,
        dataset: &str,
        previous: (Option<DateTime<Utc>>, &BTreeSet<String>),
        started: DateTime<Utc>,
    ) -> Result<(Vec<BronzeKey>, Option<DateTime<Utc>>, BTreeSet<String>)> {
        let watermark = started - self.overlap;
        let next = Some(previous.0.map_or(watermark, |w| w.max(watermark)));
        let mut recent = BTreeSet::new();
        let keys = match previous.0.filter(|_| !self.rebuild) {
            None => all_keys(lake, dataset, watermark, started, &mut recent).await?,
            Some(since) => {
                new_keys(
                    lake,
                    dataset,
                    (since, watermark),
                    started,
                    previous.1,
                    &mut recent,
                )
                .await?
            }
        };
        Ok((keys, next, recent))
    }
}

impl ManifestBuild<Funding> {
    pub async fn run(&self, lake: &Lake, lease: Option<&Lease>) -> Result<FundingMetrics> {
        match self.build(lake, lease).await {
            Err(e) if self.repairs(&e, &paths::silver_funding_table()) => {
                self.clone().with_rebuild(true).build(lake, lease).await
            }
            r => r,
        }
    }

    async fn build(&self, lake: &Lake, lease: Option<&Lease>) -> Result<FundingMetrics> {
        let started = self.clock.now();
        let previous = match self.rebuild {
            true => FundingState::default(),
            false => state::read::<FundingState>(lake, &paths::funding_state())
                .await?
                .unwrap_or_default(),
        };
        let (keys, watermark, recent) = self
            .objects(
                lake,
                FUNDING_RATE,
                (previous.watermark, &previous.recent),
                started,
            )
            .await?;
        let mut next = FundingState {
            watermark,
            recent,
            groups: previous.groups.clone(),
        };
        let mut m = FundingMetrics::default();
        // Every object's rows, by pair.
        let reads: Vec<Result<ObjectRows>> =
            futures::stream::iter(keys.iter().map(|k| read_object(lake, k)))
                .buffer_unordered(READS_AT_ONCE)
                .collect()
                .await;
        let mut fresh: BTreeMap<Pair, Vec<FundingRow>> = BTreeMap::new();
        for r in reads {
            let Some((key, rows, rejected)) = r? else {
                continue;
            };
            m.objects += 1;
            m.rows += rows.len();
            m.rejected += rejected;
            fresh
                .entry((key.source, key.symbol.clone()))
                .or_default()
                .extend(rows);
        }
        // Which dates each pair's new rows or changed intervals reach, and the new intervals.
        let mut dates: BTreeMap<NaiveDate, BTreeSet<Pair>> = BTreeMap::new();
        let mut intervals: BTreeMap<Pair, BTreeMap<i64, Option<f64>>> = BTreeMap::new();
        let mut derived_gaps: BTreeMap<Pair, Vec<(i64, i64)>> = BTreeMap::new();
        for (pair, rows) in &fresh {
            let name = group_name(pair);
            let old_slots = previous
                .groups
                .get(&name)
                .map(|g| g.runs.slots())
                .unwrap_or_default();
            let mut slots = old_slots.clone();
            slots.extend(rows.iter().map(|r| r.slot.timestamp()));
            let old = series::derive(&old_slots).intervals;
            let old: BTreeMap<i64, Option<f64>> = old.into_iter().collect();
            let new = series::derive(&slots);
            for r in rows {
                dates
                    .entry(date_of(r.slot))
                    .or_default()
                    .insert(pair.clone());
            }
            for (s, iv) in &new.intervals {
                if old.get(s) != Some(iv) {
                    dates
                        .entry(date_of(at(*s)))
                        .or_default()
                        .insert(pair.clone());
                }
            }
            intervals.insert(pair.clone(), new.intervals.into_iter().collect());
            derived_gaps.insert(pair.clone(), new.gaps);
            next.groups.entry(name).or_default().runs = Runs::from_slots(&slots);
        }
        // Each date: its other pairs' rows as they are, the touched pairs' rows merged.
        let mut written: BTreeSet<NaiveDate> = BTreeSet::new();
        for (date, pairs) in &dates {
            let key = paths::partition_file(&paths::silver_funding_table(), *date);
            let mut rows: Vec<FundingRow> = match self.rebuild {
                true => Vec::new(),
                false => read_rows(lake, &key).await?,
            };
            for pair in pairs {
                rows.extend(
                    fresh[pair]
                        .iter()
                        .filter(|r| date_of(r.slot) == *date)
                        .cloned(),
                );
            }
            let mut rows = latest_per_slot(rows);
            for r in &mut rows {
                let pair = (r.exchange, r.symbol.clone());
                if let Some(iv) = intervals
                    .get(&pair)
                    .and_then(|m| m.get(&r.slot.timestamp()))
                {
                    r.interval_hours = *iv;
                }
            }
            if let Some(l) = lease {
                l.check().await?;
            }
            write_parquet(lake, &key, &funding_to_batch(&rows)?, &SORTED_BY).await?;
            written.insert(*date);
        }
        // The gap report of every touched pair.
        let now = self.clock.now();
        for (pair, gaps) in derived_gaps {
            let name = group_name(&pair);
            let before: Vec<GapRecord> = previous
                .groups
                .get(&name)
                .map(|g| g.gaps.clone())
                .unwrap_or_default();
            let fetched = match gaps.is_empty() {
                true => Vec::new(),
                false => lake
                    .list_keys(&paths::bronze_symbol(pair.0, FUNDING_RATE, &pair.1))
                    .await?
                    .iter()
                    .filter_map(BronzeKey::parse)
                    .collect(),
            };
            let records = gaps
                .into_iter()
                .map(|(after, before_slot)| {
                    let fetches = fetched
                        .iter()
                        .filter(|k| {
                            k.window_start.timestamp() <= after + 1
                                && k.window_end.timestamp() >= before_slot
                                && k.fetched_at.timestamp() >= before_slot
                        })
                        .count() as i32;
                    let status = match fetches {
                        0 => GapStatus::Missing,
                        1 => GapStatus::Unconfirmed,
                        _ => GapStatus::Confirmed,
                    };
                    let detected_at = before
                        .iter()
                        .find(|g| g.after == after && g.before == before_slot)
                        .map_or(now, |g| g.detected_at);
                    GapRecord {
                        after,
                        before: before_slot,
                        status: status.as_str().to_string(),
                        fetches,
                        detected_at,
                    }
                })
                .collect();
            next.groups.entry(name).or_default().gaps = records;
        }
        m.gaps = next.groups.values().map(|g| g.gaps.len()).sum();
        let gap_dates = gap_dates(&previous, &next, self.rebuild);
        for date in &gap_dates {
            write_gaps(lake, &next, *date, lease).await?;
        }
        if self.rebuild {
            // What the tables held that this build did not write is gone from bronze.
            for (table, keep) in [
                (paths::silver_funding_table(), written.clone()),
                (paths::funding_gaps_table(), gap_dates.clone()),
            ] {
                for key in lake.list_keys(&table).await? {
                    if let Some(d) = paths::partition_file_date(&table, &key)
                        && !keep.contains(&d)
                    {
                        if table == paths::silver_funding_table() {
                            written.insert(d);
                        }
                        lake.delete(&key).await?;
                    }
                }
            }
        }
        if let Some(l) = lease {
            l.check().await?;
        }
        state::write(lake, &paths::funding_state(), &next).await?;
        m.changed_dates = written.into_iter().collect();
        info!(
            objects = m.objects,
            rows = m.rows,
            rejected = m.rejected,
            dates = m.changed_dates.len(),
            gaps = m.gaps,
            "funding built"
        );
        Ok(m)
    }
}

/// Every object of `dataset` of the perpetual markets in bronze (a first build or a rebuild);
/// the manifest entries in the overlap whose objects were seen count as dealt with.
async fn all_keys(
    lake: &Lake,
    dataset: &str,
    watermark: DateTime<Utc>,
    started: DateTime<Utc>,
    next_recent: &mut BTreeSet<String>,
) -> Result<Vec<BronzeKey>> {
    let mut keys = Vec::new();
    for exchange in Exchange::ALL.into_iter().filter(|e| e.is_perpetual()) {
        let prefix = object_store::path::Path::from(format!(
            "{}/source={exchange}/dataset={dataset}",
            paths::BRONZE
        ));
        keys.extend(
            lake.list_keys(&prefix)
                .await?
                .iter()
                .filter_map(BronzeKey::parse),
        );
    }
    let seen: BTreeSet<String> = keys.iter().map(|k| k.path().to_string()).collect();
    for e in crate::silver::manifest_since(lake, watermark, started).await? {
        if let Some((name, written_at, key)) = paths::parse_manifest_entry(&e)
            && written_at >= watermark
            && seen.contains(key.path().as_ref())
        {
            next_recent.insert(name);
        }
    }
    Ok(keys)
}

/// The objects of `dataset` the manifest announces since `since` that are not dealt with yet
/// (`previous`: the entries in the overlap already dealt with; those still in it go to
/// `next`).
async fn new_keys(
    lake: &Lake,
    dataset: &str,
    (since, watermark): (DateTime<Utc>, DateTime<Utc>),
    started: DateTime<Utc>,
    previous: &BTreeSet<String>,
    next: &mut BTreeSet<String>,
) -> Result<Vec<BronzeKey>> {
    let mut keys = Vec::new();
    for e in crate::silver::manifest_since(lake, since, started).await? {
        let Some((name, written_at, key)) = paths::parse_manifest_entry(&e) else {
            continue;
        };
        if key.dataset != dataset {
            continue;
        }
        if previous.contains(&name) {
            if written_at >= watermark {
                next.insert(name);
            }
            continue;
        }
        if lake.head(&key.path()).await?.is_some() {
            if written_at >= watermark {
                next.insert(name);
            }
            keys.push(key);
        } else if written_at < watermark {
            warn!(entry = %name, "bronze manifest entry without its object; ignoring it");
        }
    }
    Ok(keys)
}

/// One bronze object's funding rows and how many records it rejected (those go to
/// quarantine with their reasons); `None` for an object gone since it was listed.
async fn read_object(lake: &Lake, key: &BronzeKey) -> Result<ObjectRows> {
    let path = key.path();
    let Some((envelope, payload)) = bronze::read_decoded(lake, &path).await? else {
        return Ok(None);
    };
    let records = match parse_funding_page(envelope.source, &payload, &envelope.symbol) {
        Ok(r) => r,
        Err(reason) => {
            quarantine(lake, &path, vec![serde_json::json!({ "reason": reason })]).await?;
            return Ok(Some((key.clone(), Vec::new(), 1)));
        }
    };
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    for r in records {
        match r {
            FundingRecord::Rate(f) => rows.push(FundingRow {
                exchange: f.exchange,
                symbol: f.symbol,
                slot: f.slot,
                funding_time: f.funding_time,
                rate: f.rate,
                interval_hours: None,
                mark_price: f.mark_price,
                fetched_at: envelope.fetched_at,
            }),
            FundingRecord::Rejected { index, raw, reason } => rejected
                .push(serde_json::json!({ "index": index, "record": raw, "reason": reason })),
        }
    }
    // Only what the request asked for: a venue's answer outside its window is not trusted
    // to be complete there.
    rows.retain(|r| {
        r.funding_time >= envelope.window_start && r.funding_time < envelope.window_end
    });
    let n = rejected.len();
    if n > 0 {
        warn!(key = %path, rejected = n, "funding records rejected; see quarantine");
        quarantine(lake, &path, rejected).await?;
    }
    Ok(Some((key.clone(), rows, n)))
}

async fn quarantine(
    lake: &Lake,
    bronze: &object_store::path::Path,
    rejected: Vec<serde_json::Value>,
) -> Result<()> {
    bronze::quarantine(
        lake,
        &paths::quarantine_funding_for(bronze),
        bronze,
        rejected,
    )
    .await
}

async fn read_rows(lake: &Lake, key: &object_store::path::Path) -> Result<Vec<FundingRow>> {
    if lake.head(key).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    for b in read_parquet(lake, key).await? {
        rows.extend(funding_from_batch(&b, key.as_ref())?);
    }
    Ok(rows)
}

/// One row per exchange, symbol and slot: the copy [`FundingRow::rank`] puts last, sorted.
fn latest_per_slot(rows: Vec<FundingRow>) -> Vec<FundingRow> {
    let mut best: BTreeMap<(Exchange, Symbol, DateTime<Utc>), FundingRow> = BTreeMap::new();
    for r in rows {
        let k = (r.exchange, r.symbol.clone(), r.slot);
        match best.get(&k) {
            Some(b) if b.rank() >= r.rank() => {}
            _ => {
                best.insert(k, r);
            }
        }
    }
    best.into_values().collect()
}

/// The dates of `crypto_ops.funding_gaps` whose rows differ between two states (every date
/// with a gap on a rebuild).
fn gap_dates(previous: &FundingState, next: &FundingState, rebuild: bool) -> BTreeSet<NaiveDate> {
    let by_date = |s: &FundingState| -> BTreeMap<NaiveDate, Vec<(String, GapRecord)>> {
        let mut out: BTreeMap<NaiveDate, Vec<(String, GapRecord)>> = BTreeMap::new();
        for (name, g) in &s.groups {
            for r in &g.gaps {
                out.entry(date_of(at(r.after)))
                    .or_default()
                    .push((name.clone(), r.clone()));
            }
        }
        out
    };
    let (old, new) = (by_date(previous), by_date(next));
    if rebuild {
        return new.keys().copied().collect();
    }
    old.keys()
        .chain(new.keys())
        .filter(|d| old.get(d) != new.get(d))
        .copied()
        .collect()
}

/// Rewrites (or removes) the `funding_gaps` partition of `date` from the state.
async fn write_gaps(
    lake: &Lake,
    state: &FundingState,
    date: NaiveDate,
    lease: Option<&Lease>,
) -> Result<()> {
    let key = paths::partition_file(&paths::funding_gaps_table(), date);
    let mut rows: Vec<(Pair, &GapRecord)> = Vec::new();
    for (name, g) in &state.groups {
        let Some(pair) = parse_group(name) else {
            continue;
        };
        rows.extend(
            g.gaps
                .iter()
                .filter(|r| date_of(at(r.after)) == date)
                .map(|r| (pair.clone(), r)),
        );
    }
    rows.sort_by(|a, b| (&a.0, a.1.after).cmp(&(&b.0, b.1.after)));
    if let Some(l) = lease {
        l.check().await?;
    }
    if rows.is_empty() {
        return lake.delete(&key).await;
    }
    let batch = Builder::new(&rows)
        .text(|r| r.0.0.as_str())
        .text(|r| r.0.1.as_str())
        .time(|r| at(r.1.after))
        .time(|r| at(r.1.before))
        .text(|r| r.1.status.as_str())
        .int32(|r| r.1.fetches)
        .time(|r| r.1.detected_at)
        .finish(schema::funding_gaps())?;
    write_parquet(lake, &key, &batch, &[0, 1, 2]).await?;
    Ok(())
}

/// The missing funding stretches recorded, by pair, for the gap refetch and reports:
/// `(exchange, symbol, after, before, status, fetches)`.
pub async fn recorded_gaps(
    lake: &Lake,
) -> Result<
    Vec<(
        Exchange,
        Symbol,
        DateTime<Utc>,
        DateTime<Utc>,
        GapStatus,
        i32,
    )>,
> {
    let state = state::read::<FundingState>(lake, &paths::funding_state())
        .await?
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, g) in &state.groups {
        let Some((e, s)) = parse_group(name) else {
            continue;
        };
        for r in &g.gaps {
            let status = GapStatus::parse(&r.status).unwrap_or(GapStatus::Missing);
            out.push((e, s.clone(), at(r.after), at(r.before), status, r.fetches));
        }
    }
    Ok(out)
}
