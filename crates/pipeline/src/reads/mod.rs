//! The read model: the one place that knows how the lake's tables are read for the dashboard,
//! the HTTP API, `/metrics`, and the CLI's reports. Front ends ask it typed questions
//! ([`ReadModel::candles`], [`ReadModel::overview`], [`ReadModel::runs`], ...) and get typed rows,
//! or Arrow batches of them.
//!
//! It answers from memory:
//! - a [`Snapshot`] names the version of every silver, gold and gap partition; every answer
//!   is computed from one snapshot, and a partition read for it must have the version the
//!   snapshot names (else the snapshot is renewed and the answer computed again), so no
//!   answer mixes two versions of the lake;
//! - decoded partitions are kept in a cache bounded in bytes ([`cache`]), keyed by table, date
//!   and version, so an unchanged partition is read once;
//! - what is derived from all partitions (symbols, the overview's figures, freshness) is kept
//!   per partition version and merged per snapshot, so a new hour re-reads one partition;
//! - the run history and the quality results are read incrementally: their files are never
//!   rewritten, so only files not seen before are read.
//!
//! It learns of changes in two ways. Steps of the same process mark it stale
//! ([`ReadModel::changed`], which the pipeline calls as each step finishes). Writers elsewhere
//! (a cron `cryptolake run`, the Lambda functions) rewrite `_state/changed.json` after every
//! step; the read model looks at that one object's version at most once per
//! [`CHECK_INTERVAL`].

mod answer;
mod bars;
mod cache;
mod rows;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_lake::quality::CurrentState;
use cryptolake_lake::{Lake, paths};
use cryptolake_model::{DailyCandle, Exchange, HourlyCandle, MinuteCandle, SharedClock, Symbol};
use futures::StreamExt;
use object_store::path::Path;
use tracing::{debug, warn};

pub use answer::{Encoded, Encoding, encode, entity_tag};
pub use bars::{Interval, Source};
pub use cache::{CacheStats, Table};
pub use cryptolake_lake::gaps::{Gap, GapStatus};
pub use cryptolake_lake::ops::RunRecord;
pub use cryptolake_lake::quality::{RecordedResult, Rule, Status};
pub use rows::{
    CandleRow, Candles, Overview, OverviewRow, SymbolRow, funding_batch, gap_report_batch,
    gaps_batch, mark_batch, quality_batch, runs_batch, symbols_batch,
};

use crate::events::Freshness;
use crate::{Error, Result};
use cache::{Cache, Key, Weigh};

/// The part of the read cache that holds decoded partitions; the rest holds encoded answers.
fn partition_bytes(cache_bytes: u64) -> usize {
    usize::try_from(cache_bytes - cache_bytes / 8).unwrap_or(usize::MAX)
}

fn answer_bytes(cache_bytes: u64) -> usize {
    usize::try_from(cache_bytes / 8).unwrap_or(usize::MAX)
}

/// How often, at most, the read model asks the store whether another process changed the lake.
pub const CHECK_INTERVAL: StdDuration = StdDuration::from_secs(1);

/// How many times an answer is computed again when the lake changes under it.
const ATTEMPTS: usize = 4;

/// The most days of funding one answer reads.
pub const MAX_FUNDING_DAYS: i64 = 3_660;

/// The most days of mark price minutes one answer reads.
pub const MAX_MARK_DAYS: i64 = 93;

/// A bar of a perpetual's mark price, from the minutes the lake holds of it.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkBar {
    pub time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub minutes_present: i32,
}

/// Partitions read at once for one answer.
const READS_AT_ONCE: usize = 16;

/// The most recent quality results kept of each status, newest first.
const RECENT_RESULTS: usize = 10_000;

/// A partition as held: its rows typed for the read model's answers, and as Arrow batches
/// for SQL (in the table's SQL schema, see [`cryptolake_query::memory`]).
struct Part {
    rows: Decoded,
    arrow: Vec<arrow::array::RecordBatch>,
}

impl std::ops::Deref for Part {
    type Target = Decoded;
    fn deref(&self) -> &Decoded {
        &self.rows
    }
}

impl Weigh for Part {
    fn bytes(&self) -> usize {
        self.rows.bytes()
            + self
                .arrow
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>()
    }
}

/// A partition's rows, grouped by exchange and symbol.
enum Decoded {
    Hours(Grouped<HourlyCandle>),
    Minutes(Grouped<MinuteCandle>),
    Days(Grouped<DailyCandle>),
    Gaps(Grouped<Gap>),
}

struct Grouped<T> {
    rows: Vec<T>,
    index: HashMap<(Exchange, Symbol), std::ops::Range<usize>>,
}

impl<T> Grouped<T> {
    /// `rows` sorted by exchange, symbol and `then`, and indexed by exchange and symbol.
    fn new<K: Ord>(
        mut rows: Vec<T>,
        pair: impl Fn(&T) -> (Exchange, &Symbol),
        then: impl Fn(&T) -> K,
    ) -> Self {
        rows.sort_by(|a, b| {
            let (ea, sa) = pair(a);
            let (eb, sb) = pair(b);
            (ea, sa, then(a)).cmp(&(eb, sb, then(b)))
        });
        let mut index = HashMap::new();
        let mut start = 0;
        for i in 1..=rows.len() {
            if i == rows.len() || pair(&rows[i]) != pair(&rows[start]) {
                let (e, s) = pair(&rows[start]);
                index.insert((e, s.clone()), start..i);
                start = i;
            }
        }
        Grouped { rows, index }
    }

    fn of(&self, exchange: Exchange, symbol: &Symbol) -> &[T] {
        match self.index.get(&(exchange, symbol.clone())) {
            Some(r) => &self.rows[r.clone()],
            None => &[],
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&(Exchange, Symbol), &[T])> {
        self.index.iter().map(|(k, r)| (k, &self.rows[r.clone()]))
    }
}

impl Weigh for Decoded {
    fn bytes(&self) -> usize {
        // The rows, their shared symbol text counted once per group, and the index.
        fn grouped<T>(g: &Grouped<T>) -> usize {
            g.rows.capacity() * std::mem::size_of::<T>() + g.index.len() * 96
        }
        match self {
            Decoded::Hours(g) => grouped(g),
            Decoded::Minutes(g) => grouped(g),
            Decoded::Days(g) => grouped(g),
            Decoded::Gaps(g) => grouped(g),
        }
    }
}

/// What one partition adds to the per-pair figures.
#[derive(Debug, Clone, Default)]
struct PairPart {
    first_hour: Option<DateTime<Utc>>,
    last_hour: Option<DateTime<Utc>>,
    hours: i64,
    newest_complete: Option<DateTime<Utc>>,
    days: i64,
    days_complete: i64,
    /// Gap minutes by status: missing, unconfirmed, confirmed, unservable.
    gap_minutes: [i64; 4],
}

impl PairPart {
    fn merge(&mut self, o: &PairPart) {
        self.first_hour = match (self.first_hour, o.first_hour) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_hour = self.last_hour.max(o.last_hour);
        self.newest_complete = self.newest_complete.max(o.newest_complete);
        self.hours += o.hours;
        self.days += o.days;
        self.days_complete += o.days_complete;
        for (a, b) in self.gap_minutes.iter_mut().zip(o.gap_minutes) {
            *a += b;
        }
    }
}

fn gap_slot(s: GapStatus) -> usize {
    match s {
        GapStatus::Missing => 0,
        GapStatus::Unconfirmed => 1,
        GapStatus::Confirmed => 2,
        GapStatus::Unservable => 3,
    }
}

type PartSummary = Vec<((Exchange, Symbol), PairPart)>;

fn summarize(d: &Decoded) -> PartSummary {
    let mut out: PartSummary = Vec::new();
    match d {
        Decoded::Hours(g) => {
            for (pair, hours) in g.pairs() {
                let part = PairPart {
                    first_hour: hours.first().map(|h| h.open_time),
                    last_hour: hours.last().map(|h| h.open_time),
                    hours: hours.len() as i64,
                    newest_complete: hours
                        .iter()
                        .rev()
                        .find(|h| h.is_complete())
                        .map(|h| h.open_time),
                    ..PairPart::default()
                };
                out.push((pair.clone(), part));
            }
        }
        // The minutes add nothing the hours do not say.
        Decoded::Minutes(_) => {}
        Decoded::Days(g) => {
            for (pair, days) in g.pairs() {
                let part = PairPart {
                    days: days.len() as i64,
                    days_complete: days.iter().filter(|d| d.is_complete).count() as i64,
                    ..PairPart::default()
                };
                out.push((pair.clone(), part));
            }
        }
        Decoded::Gaps(g) => {
            for (pair, gaps) in g.pairs() {
                let mut part = PairPart::default();
                for gap in gaps {
                    part.gap_minutes[gap_slot(gap.status)] += gap.minutes();
                }
                out.push((pair.clone(), part));
            }
        }
    }
    out
}

/// The run history and quality results as of one snapshot.
#[derive(Default, Clone)]
struct OpsView {
    /// Newest first.
    runs: Arc<Vec<RunRecord>>,
    /// Open violations: the current state of every rule and subject.
    open: Arc<Vec<RecordedResult>>,
    /// The most recent results of each status, newest first.
    recent: Arc<Vec<RecordedResult>>,
}

/// What has been read of the run history and quality results so far.
#[derive(Default)]
struct OpsLog {
    seen: HashSet<Path>,
    /// Files read so far: the order of each one's evaluation among them.
    files: u64,
    runs: Vec<RunRecord>,
    state: CurrentState,
    recent: Vec<RecordedResult>,
    /// What the last read made of it, kept while no new file arrives.
    view: Option<OpsView>,
}

/// The lake as one answer sees it.
pub struct Snapshot {
    id: u64,
    marker: Option<String>,
    silver: Arc<BTreeMap<NaiveDate, String>>,
    minutes: Arc<BTreeMap<NaiveDate, String>>,
    gold: Arc<BTreeMap<NaiveDate, String>>,
    /// The gap report's partitions, the run history and the quality results: read when an
    /// answer first needs them, so that candles never wait for them.
    extra: tokio::sync::OnceCell<Arc<Extra>>,
    pairs: tokio::sync::OnceCell<Arc<BTreeMap<(Exchange, Symbol), PairPart>>>,
}

/// The part of a snapshot read on first use.
struct Extra {
    gaps: Arc<BTreeMap<NaiveDate, String>>,
    ops: OpsView,
}

impl Snapshot {
    /// A number that changes whenever the lake this answers from does.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Computes an answer (an async block over the snapshot `$s` that yields
/// `Result<Attempt<T>>`) from the current snapshot, and again from a renewed one when the
/// lake changed under it.
macro_rules! on_snapshot {
    ($model:expr, $s:ident => $answer:expr) => {{
        let mut answered = None;
        for _ in 0..ATTEMPTS {
            let current = $model.snapshot().await?;
            let $s: &Snapshot = &current;
            match attempt($answer).await? {
                Attempt::Done(v) => {
                    answered = Some(v);
                    break;
                }
                Attempt::Stale => $model.stale(),
            }
        }
        answered.ok_or_else(|| {
            Error::Invalid("the lake kept changing while it was read; try again".into())
        })
    }};
}

/// Gives an answer's async block its type.
fn attempt<T, F: Future<Output = Result<Attempt<T>>>>(f: F) -> F {
    f
}

/// A partition read for an answer, with its date.
type Loaded = (NaiveDate, Arc<Part>);

/// An answer could not be computed from its snapshot: the lake changed under it.
enum Attempt<T> {
    Done(T),
    Stale,
}

/// Filters of [`ReadModel::gaps`].
#[derive(Debug, Clone, Default)]
pub struct GapFilter {
    pub exchange: Option<Exchange>,
    pub symbol: Option<Symbol>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub limit: Option<usize>,
}

/// Filters of [`ReadModel::quality`].
#[derive(Debug, Clone, Default)]
pub struct QualityFilter {
    pub status: Option<Status>,
    /// Only the violations still open (the current state), not the history.
    pub open_only: bool,
    pub limit: usize,
}

pub struct ReadModel {
    lake: Lake,
    clock: SharedClock,
    /// How old a pair's newest complete hour may be before it is stale, in minutes.
    max_age_minutes: i64,
    cache: Cache<Key, Part>,
    /// Encoded answers of hot questions, by the snapshot they were computed from.
    answers: Cache<(u64, String), Encoded>,
    summaries: Mutex<HashMap<Key, Arc<PartSummary>>>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    checked: Mutex<Option<Instant>>,
    dirty: AtomicBool,
    /// The next snapshot lists the tables rather than trusting the versions the builds'
    /// states record: a partition was found in a version the snapshot did not name.
    list_next: AtomicBool,
    /// A [`ReadModel::watch`] task looks for changes, so answers never do.
    watched: AtomicBool,
    refresh: tokio::sync::Mutex<()>,
    ops_log: tokio::sync::Mutex<OpsLog>,
    next_id: AtomicU64,
}

impl ReadModel {
    pub(crate) fn new(
        lake: Lake,
        clock: SharedClock,
        cache_bytes: u64,
        max_age_minutes: i64,
    ) -> ReadModel {
        ReadModel {
            lake,
            clock,
            max_age_minutes,
            cache: Cache::new(partition_bytes(cache_bytes)),
            answers: Cache::new(answer_bytes(cache_bytes)),
            summaries: Mutex::new(HashMap::new()),
            snapshot: RwLock::new(None),
            checked: Mutex::new(None),
            dirty: AtomicBool::new(true),
            list_next: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            refresh: tokio::sync::Mutex::new(()),
            ops_log: tokio::sync::Mutex::new(OpsLog::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The lake changed (a step of this process finished): the next answer renews its snapshot.
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// A partition was not in the version the snapshot named: the next snapshot lists.
    fn stale(&self) {
        self.list_next.store(true, Ordering::SeqCst);
        self.changed();
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The snapshot answers are computed from now: renewed when a step of this process
    /// changed the lake, or when the change marker's version moved (looked at no more than
    /// once per [`CHECK_INTERVAL`]).
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        if let Some(s) = self.fresh_enough() {
            return Ok(s);
        }
        self.check().await
    }

    /// Keeps the snapshot current in the background: looks at the change marker once per
    /// [`CHECK_INTERVAL`], so that no request waits on the store to learn whether another
    /// process changed the lake. Runs until the future is dropped.
    pub async fn watch(&self) {
        self.watched.store(true, Ordering::SeqCst);
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.check().await {
                debug!(error = %e, "read model: the change check failed; next try in a second");
            }
        }
    }

    /// Renews the snapshot if the lake changed.
    async fn check(&self) -> Result<Arc<Snapshot>> {
        let _one_at_a_time = self.refresh.lock().await;
        // Another reader may have renewed it while this one waited.
        if let Some(s) = self
            .fresh_enough()
            .filter(|_| !self.watched.load(Ordering::SeqCst))
        {
            return Ok(s);
        }
        let current = self.current();
        let dirty = self.dirty.swap(false, Ordering::SeqCst);
        let marker = self.marker().await?;
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if let Some(s) = current
            && !dirty
            && s.marker == marker
        {
            return Ok(s);
        }
        let s = Arc::new(self.load(marker).await.inspect_err(|_| self.changed())?);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        // Answers of older snapshots are never asked for again.
        self.answers.retain(|(id, _)| *id == s.id());
        Ok(s)
    }

    fn fresh_enough(&self) -> Option<Arc<Snapshot>> {
        if self.dirty.load(Ordering::SeqCst) {
            return None;
        }
        if self.watched.load(Ordering::SeqCst) {
            return self.current();
        }
        let checked = *self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked
            .filter(|t| t.elapsed() < CHECK_INTERVAL)
            .and_then(|_| self.current())
    }

    async fn marker(&self) -> Result<Option<String>> {
        Ok(self
            .lake
            .head(&paths::change_marker())
            .await?
            .map(|m| cryptolake_lake::state::version(&m)))
    }

    /// The versions of the silver and gold partitions: as the builds' states record them (one
    /// small read each), or from listings of the tables when a state does not say or a
    /// partition was found in another version than its state named.
    async fn load(&self, marker: Option<String>) -> Result<Snapshot> {
        let started = Instant::now();
        let list = self.list_next.swap(false, Ordering::SeqCst);
        let recorded_or_listed = |recorded: Option<BTreeMap<NaiveDate, String>>, table: Path| async move {
            match recorded {
                Some(v) if !list => Ok(v),
                _ => self.versions_listed(table).await,
            }
        };
        let silver = async {
            let recorded = match list {
                false => cryptolake_lake::silver::partition_versions(&self.lake).await?,
                true => None,
            };
            recorded_or_listed(recorded, paths::silver_table()).await
        };
        let minutes = async {
            let recorded = match list {
                false => cryptolake_lake::silver::minute_partition_versions(&self.lake).await?,
                true => None,
            };
            recorded_or_listed(recorded, paths::minute_table()).await
        };
        let gold = async {
            let recorded = match list {
                false => cryptolake_lake::gold::partition_versions(&self.lake).await?,
                true => None,
            };
            recorded_or_listed(recorded, paths::gold_table()).await
        };
        let (silver, minutes, gold) = futures::try_join!(silver, minutes, gold)?;
        for (table, current) in [
            (Table::Silver, &silver),
            (Table::Minutes, &minutes),
            (Table::Gold, &gold),
        ] {
            self.forget_other_versions(table, current);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        debug!(
            snapshot = id,
            silver = silver.len(),
            gold = gold.len(),
            listed = list,
            ms = started.elapsed().as_millis() as u64,
            "read model: new snapshot"
        );
        Ok(Snapshot {
            id,
            marker,
            silver: Arc::new(silver),
            minutes: Arc::new(minutes),
            gold: Arc::new(gold),
            extra: tokio::sync::OnceCell::new(),
            pairs: tokio::sync::OnceCell::new(),
        })
    }

    /// The partitions of `table` and their versions, from a listing.
    async fn versions_listed(&self, table: Path) -> Result<BTreeMap<NaiveDate, String>> {
        Ok(self
            .lake
            .list(&table)
            .await?
            .iter()
            .filter_map(|m| {
                paths::partition_file_date(&table, &m.location)
                    .map(|d| (d, cryptolake_lake::state::version(m)))
            })
            .collect())
    }

    /// Drops what is held of `table` in versions other than `current`'s.
    fn forget_other_versions(&self, table: Table, current: &BTreeMap<NaiveDate, String>) {
        let keep = |(t, d, v): &Key| *t != table || current.get(d) == Some(v);
        self.cache.retain(keep);
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// The gap report's partitions, the run history and the quality results of `s`, read on
    /// first use.
    async fn extra(&self, s: &Snapshot) -> Result<Arc<Extra>> {
        s.extra
            .get_or_try_init(|| async {
                let gaps = self.versions_listed(paths::gaps_table()).await?;
                self.forget_other_versions(Table::Gaps, &gaps);
                let mut log = self.ops_log.lock().await;
                let ops = self.read_ops(&mut log).await?;
                Ok::<_, Error>(Arc::new(Extra {
                    gaps: Arc::new(gaps),
                    ops,
                }))
            })
            .await
            .cloned()
    }

    /// The versions `s` names for `table`.
    async fn versions(
        &self,
        s: &Snapshot,
        table: Table,
    ) -> Result<Arc<BTreeMap<NaiveDate, String>>> {
        Ok(match table {
            Table::Silver => s.silver.clone(),
            Table::Minutes => s.minutes.clone(),
            Table::Gold => s.gold.clone(),
            Table::Gaps => self.extra(s).await?.gaps.clone(),
        })
    }

    /// Reads the run history and quality result files not read before (they are never
    /// rewritten), and folds them into the log.
    async fn read_ops(&self, log: &mut OpsLog) -> Result<OpsView> {
        let runs_table = Path::from(paths::OPS_RUNS);
        let quality_table = Path::from(paths::OPS_QUALITY_RESULTS);
        let (runs, quality) =
            futures::try_join!(self.lake.list(&runs_table), self.lake.list(&quality_table))?;
        let new = |metas: Vec<object_store::ObjectMeta>, is_run: bool| {
            metas
                .into_iter()
                .filter(|m| !log.seen.contains(&m.location))
                .map(move |m| (m, is_run))
                .collect::<Vec<_>>()
        };
        let mut fresh = new(runs, true);
        let new_quality = new(quality, false);
        let (changed_runs, changed_quality) = (!fresh.is_empty(), !new_quality.is_empty());
        fresh.extend(new_quality);
        // In the order they were written, so that of two evaluations at one instant the later
        // written is the later one.
        fresh.sort_by(|(a, _), (b, _)| {
            (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location))
        });
        let decoded = futures::stream::iter(fresh)
            .map(|(meta, is_run)| async move {
                let read = self.lake.get_opt(&meta.location).await;
                (meta.location, is_run, read)
            })
            .buffered(READS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        for (key, is_run, read) in decoded {
            let bytes = match read {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => return Err(e.into()),
            };
            // A damaged file is left out and said so; it is not read again until it changes.
            let rows = cryptolake_lake::decode_parquet(&key, bytes).and_then(|batches| {
                let mut runs = Vec::new();
                let mut results = Vec::new();
                for b in &batches {
                    if is_run {
                        runs.extend(cryptolake_lake::runs_from_batch(b, key.as_ref())?);
                    } else {
                        results.extend(cryptolake_lake::quality_from_batch(b, key.as_ref())?);
                    }
                }
                Ok((runs, results))
            });
            log.seen.insert(key.clone());
            log.files += 1;
            match rows {
                Ok((runs, results)) => {
                    log.runs.extend(runs);
                    for r in results {
                        log.state.add(r.clone(), log.files);
                        log.recent.push(r);
                    }
                }
                Err(e) => {
                    warn!(key = %key, error = %e, "skipping an unreadable file of the run history or quality results")
                }
            }
        }
        let previous = log.view.clone();
        let runs = match (&previous, changed_runs) {
            (Some(p), false) => p.runs.clone(),
            _ => {
                // Newest first, then by the step's name as the table writes it.
                log.runs.sort_by_cached_key(|r| {
                    (std::cmp::Reverse(r.started_at), r.step.label(r.exchange))
                });
                Arc::new(log.runs.clone())
            }
        };
        let (open, recent) = match (&previous, changed_quality) {
            (Some(p), false) => (p.open.clone(), p.recent.clone()),
            _ => {
                log.recent.sort_by(|a, b| {
                    (b.checked_at, a.result.rule).cmp(&(a.checked_at, b.result.rule))
                });
                let mut kept = [0usize; 2];
                log.recent.retain(|r| {
                    let n = &mut kept[usize::from(r.result.is_violation())];
                    *n += 1;
                    *n <= RECENT_RESULTS
                });
                let mut open: Vec<RecordedResult> = log.state.open().cloned().collect();
                open.sort_by(|a, b| {
                    (
                        b.checked_at,
                        a.result.rule,
                        &a.result.exchange,
                        &a.result.symbol,
                        &a.result.subject,
                    )
                        .cmp(&(
                            a.checked_at,
                            b.result.rule,
                            &b.result.exchange,
                            &b.result.symbol,
                            &b.result.subject,
                        ))
                });
                (Arc::new(open), Arc::new(log.recent.clone()))
            }
        };
        let view = OpsView { runs, open, recent };
        log.view = Some(view.clone());
        Ok(view)
    }

    /// One decoded partition of `table` at the version `versions` names; `None` when the lake
    /// no longer holds that version (it changed since the snapshot).
    async fn partition(
        &self,
        versions: &BTreeMap<NaiveDate, String>,
        table: Table,
        date: NaiveDate,
    ) -> Result<Option<Arc<Part>>> {
        let Some(version) = versions.get(&date) else {
            return Ok(None);
        };
        let key = (table, date, version.clone());
        let lake = &self.lake;
        let loaded = self
            .cache
            .get_or_load(key, || async move {
                let file = match table {
                    Table::Silver => paths::silver_partition_file(date),
                    Table::Minutes => paths::minute_partition_file(date),
                    Table::Gold => paths::gold_partition_file(date),
                    Table::Gaps => paths::gaps_partition_file(date),
                };
                let Some((bytes, found)) = lake
                    .get_versioned(&file)
                    .await
                    .map_err(|e| Some(Error::Lake(e)))?
                else {
                    return Err(None);
                };
                if &found != version {
                    return Err(None);
                }
                let decoded =
                    tokio::task::spawn_blocking(move || decode(table, date, &file, bytes))
                        .await
                        .map_err(|e| Some(Error::Invalid(format!("decoding a partition: {e}"))))?;
                decoded.map_err(|e| Some(Error::Lake(e)))
            })
            .await;
        match loaded {
            Ok(d) => Ok(Some(d)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// The partitions of `table` on `dates`, in that order, read a few at a time; `Stale` when
    /// one of them changed since the snapshot.
    async fn partitions(
        &self,
        snapshot: &Snapshot,
        table: Table,
        dates: Vec<NaiveDate>,
    ) -> Result<Attempt<Vec<Loaded>>> {
        let versions = self.versions(snapshot, table).await?;
        let versions = versions.as_ref();
        let read: Vec<Result<Option<Loaded>>> = futures::stream::iter(dates)
            .map(|d| async move { Ok(self.partition(versions, table, d).await?.map(|p| (d, p))) })
            .buffered(READS_AT_ONCE)
            .collect()
            .await;
        let mut out = Vec::with_capacity(read.len());
        for r in read {
            match r? {
                Some(p) => out.push(p),
                None => return Ok(Attempt::Stale),
            }
        }
        Ok(Attempt::Done(out))
    }

    /// Candles of one exchange and symbol at `interval` whose buckets start in `[from, to)`,
    /// oldest first, at most `limit`. Buckets under an hour are built from `ohlcv_1m` (with
    /// `ohlcv_1h` for the minutes confirmed empty), the others from `ohlcv_1h`; each bar says
    /// how many of its minutes are present and whether all are accounted for. A bucket with
    /// no candle at all is left out, never filled.
    pub async fn candles(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Candles> {
        let pair = [(exchange, symbol.clone())];
        let mut all = self.candles_of(&pair, interval, from, to, limit).await?;
        Ok(all.pop().unwrap_or(Candles {
            interval,
            rows: Vec::new(),
        }))
    }

    /// [`ReadModel::candles`] encoded for the wire. The answer is computed, encoded and tagged
    /// once per snapshot and kept in a cache bounded in bytes (an eighth of the read cache),
    /// so the many readers of one chart cost one computation until the lake changes.
    #[allow(clippy::too_many_arguments)]
    pub async fn candles_encoded(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        encoding: Encoding,
    ) -> Result<Arc<Encoded>> {
        let id = self.snapshot().await?.id();
        let question = format!(
            "candles {exchange} {symbol} {} {} {} {limit} {encoding:?}",
            interval.as_str(),
            from.timestamp_micros(),
            to.timestamp_micros()
        );
        self.answers
            .get_or_load((id, question), || async {
                let c = self
                    .candles(exchange, symbol, interval, from, to, limit)
                    .await?;
                let batch = c.to_batch()?;
                encode(&batch.schema(), std::slice::from_ref(&batch), encoding)
            })
            .await
    }

    /// The bytes held by the cache of encoded answers.
    pub fn answer_cache_stats(&self) -> CacheStats {
        self.answers.stats()
    }

    /// [`ReadModel::candles`] of several exchanges and symbols at once, in their order: each
    /// partition of the range is read once for all of them.
    pub async fn candles_of(
        &self,
        pairs: &[(Exchange, Symbol)],
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Candles>> {
        // Whole buckets only: the first that starts at or after `from`, to the end of the
        // last that starts before `to`.
        let first = match interval.start_of(from) {
            s if s < from => interval.next(s),
            s => s,
        };
        let end = interval.next(interval.start_of(to - Duration::microseconds(1)));
        let none = || {
            pairs
                .iter()
                .map(|_| Candles {
                    interval,
                    rows: Vec::new(),
                })
                .collect()
        };
        if first >= to || limit == 0 {
            return Ok(none());
        }
        on_snapshot!(self, s => async {
            let last_date = (end - Duration::microseconds(1)).date_naive();
            let dates: Vec<NaiveDate> = s
                .silver
                .range(first.date_naive()..=last_date)
                .map(|(d, _)| *d)
                .collect();
            let source = interval.source();
            let (mut hours, mut minutes): (Vec<Loaded>, Vec<Loaded>) = (Vec::new(), Vec::new());
            // A chunk of dates at a time, so a small limit reads no more than it needs.
            for chunk in dates.chunks(READS_AT_ONCE) {
                let read = match self.partitions(s, Table::Silver, chunk.to_vec()).await? {
                    Attempt::Done(p) => p,
                    Attempt::Stale => return Ok(Attempt::Stale),
                };
                hours.extend(read);
                if source == Source::Minutes {
                    let read = match self.partitions(s, Table::Minutes, chunk.to_vec()).await? {
                        Attempt::Done(p) => p,
                        Attempt::Stale => return Ok(Attempt::Stale),
                    };
                    minutes.extend(read);
                }
                // Enough buckets begun that the first `limit` are whole.
                let begun = match hours.last().map(|(d, _)| *d) {
                    Some(d) => bucket_count(interval, first, day_end(d)),
                    None => 0,
                };
                if begun > limit {
                    break;
                }
            }
            let in_range = |t: DateTime<Utc>| first <= t && t < end;
            let out = pairs
                .iter()
                .map(|(exchange, symbol)| {
                    let hour_rows: Vec<&HourlyCandle> = hours
                        .iter()
                        .filter_map(|(_, p)| match &p.rows {
                            Decoded::Hours(g) => Some(g.of(*exchange, symbol)),
                            _ => None,
                        })
                        .flatten()
                        .filter(|h| in_range(h.open_time))
                        .collect();
                    let mut rows = match source {
                        Source::Hours => bars::from_hours(interval, &hour_rows),
                        Source::Minutes => {
                            let minute_rows: Vec<&MinuteCandle> = minutes
                                .iter()
                                .filter_map(|(_, p)| match &p.rows {
                                    Decoded::Minutes(g) => Some(g.of(*exchange, symbol)),
                                    _ => None,
                                })
                                .flatten()
                                .filter(|m| in_range(m.candle.open_time))
                                .collect();
                            bars::from_minutes(interval, &minute_rows, &hour_rows)
                        }
                    };
                    rows.retain(|r| r.time < to);
                    rows.truncate(limit);
                    Candles { interval, rows }
                })
                .collect();
            Ok(Attempt::Done(out))
        })
    }

    /// Per exchange and symbol, the figures merged over every partition of the snapshot;
    /// each partition's share is worked out once per version.
    async fn pairs(
        &self,
        s: &Snapshot,
    ) -> Result<Attempt<Arc<BTreeMap<(Exchange, Symbol), PairPart>>>> {
        if let Some(p) = s.pairs.get() {
            return Ok(Attempt::Done(p.clone()));
        }
        let mut merged: BTreeMap<(Exchange, Symbol), PairPart> = BTreeMap::new();
        for table in [Table::Silver, Table::Gold, Table::Gaps] {
            let versions = self.versions(s, table).await?;
            let (known, missing): (Vec<_>, Vec<_>) = {
                let sums = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
                let mut known = Vec::new();
                let mut missing = Vec::new();
                for (d, v) in versions.iter() {
                    match sums.get(&(table, *d, v.clone())) {
                        Some(sum) => known.push(sum.clone()),
                        None => missing.push(*d),
                    }
                }
                (known, missing)
            };
            let parts = match self.partitions(s, table, missing).await? {
                Attempt::Done(p) => p,
                Attempt::Stale => return Ok(Attempt::Stale),
            };
            let mut fresh = Vec::with_capacity(parts.len());
            for (d, part) in parts {
                let sum = Arc::new(summarize(&part));
                if let Some(v) = versions.get(&d) {
                    self.summaries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((table, d, v.clone()), sum.clone());
                }
                fresh.push(sum);
            }
            for sum in known.iter().chain(&fresh) {
                for (pair, part) in sum.iter() {
                    merged.entry(pair.clone()).or_default().merge(part);
                }
            }
        }
        // Only pairs silver holds are reported, as the tables' users know them.
        merged.retain(|_, p| p.hours > 0);
        let merged = Arc::new(merged);
        let _ = s.pairs.set(merged.clone());
        Ok(Attempt::Done(merged))
    }

    /// Every exchange and symbol silver holds, with its first and last hour.
    pub async fn symbols(&self) -> Result<Vec<SymbolRow>> {
        on_snapshot!(self, s => async {
            Ok(match self.pairs(s).await? {
                Attempt::Done(p) => Attempt::Done(
                    p.iter()
                        .map(|((exchange, symbol), part)| SymbolRow {
                            exchange: *exchange,
                            symbol: symbol.clone(),
                            first_hour: part.first_hour,
                            last_hour: part.last_hour,
                            hours: part.hours,
                        })
                        .collect(),
                ),
                Attempt::Stale => Attempt::Stale,
            })
        })
    }

    /// The freshness of every pair silver holds: its newest complete hour and how long ago it
    /// ended.
    pub async fn freshness(&self) -> Result<Vec<Freshness>> {
        let now = self.clock.now();
        on_snapshot!(self, s => async {
            Ok(match self.pairs(s).await? {
                Attempt::Done(p) => Attempt::Done(
                    p.iter()
                        .map(|((exchange, symbol), part)| freshness_of(*exchange, symbol, part, now))
                        .collect(),
                ),
                Attempt::Stale => Attempt::Stale,
            })
        })
    }

    /// One row per exchange and symbol: coverage, gaps, open violations, freshness and the
    /// last run. What the dashboard's overview shows.
    pub async fn overview(&self) -> Result<Overview> {
        let now = self.clock.now();
        let threshold = self.max_age_minutes * 60;
        on_snapshot!(self, s => async {
            let pairs = match self.pairs(s).await? {
                Attempt::Done(p) => p,
                Attempt::Stale => return Ok(Attempt::Stale),
            };
            let mut violations: HashMap<(Exchange, Symbol), i64> = HashMap::new();
            let extra = self.extra(s).await?;
            for r in extra.ops.open.iter() {
                if let (Some(e), Some(sym)) = (r.result.exchange, &r.result.symbol) {
                    *violations.entry((e, sym.clone())).or_default() += 1;
                }
            }
            let rows = pairs
                .iter()
                .map(|((exchange, symbol), part)| {
                    let f = freshness_of(*exchange, symbol, part, now);
                    let lag = f.lag.map(|l| l.as_secs_f64());
                    OverviewRow {
                        exchange: *exchange,
                        symbol: symbol.clone(),
                        days_covered: part.days,
                        days_complete: part.days_complete,
                        missing_minutes: part.gap_minutes[0],
                        unconfirmed_minutes: part.gap_minutes[1],
                        confirmed_minutes: part.gap_minutes[2],
                        unservable_minutes: part.gap_minutes[3],
                        open_violations: violations.get(&(*exchange, symbol.clone())).copied().unwrap_or(0),
                        last_complete_hour: f.newest_complete_hour,
                        lag_seconds: lag,
                        stale: lag.is_none_or(|l| l > threshold as f64),
                        last_run_status: last_run(&extra.ops.runs, *exchange),
                    }
                })
                .collect();
            Ok(Attempt::Done(Overview {
                generated_at: now,
                freshness_threshold_seconds: threshold,
                rows,
            }))
        })
    }

    /// The newest `limit` step records of the run history, newest first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let s = self.snapshot().await?;
        let extra = self.extra(&s).await?;
        Ok(extra.ops.runs.iter().take(limit).cloned().collect())
    }

    /// The read model's clock: what "now" is for answers without an end.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Mark price minutes of one perpetual market's symbol opening in `[from, to)`, oldest
    /// first (at most [`MAX_FUNDING_DAYS`] days), read from their partitions as they are.
    pub async fn marks(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<cryptolake_lake::mark::MarkRow>> {
        let mut out = self
            .read_days(
                paths::mark_table(),
                (from, to),
                cryptolake_lake::mark::marks_from_batch,
            )
            .await?;
        out.retain(|m| {
            m.exchange == exchange && &m.symbol == symbol && m.open_time >= from && m.open_time < to
        });
        out.sort_by_key(|m| m.open_time);
        Ok(out)
    }

    /// A perpetual's mark price as bars of `interval` starting in `[from, to)` (at most
    /// [`MAX_MARK_DAYS`] days), oldest first, each from the minutes the lake holds of it:
    /// `(start, open, high, low, close, minutes present)`.
    pub async fn mark_bars(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        interval: Interval,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Vec<MarkBar>> {
        if (to - from).num_days() > MAX_MARK_DAYS {
            return Err(Error::Invalid(format!(
                "from {from} to {to} is more than {MAX_MARK_DAYS} days of mark prices: ask for less"
            )));
        }
        let minutes = self.marks(exchange, symbol, from, to).await?;
        let mut out: Vec<MarkBar> = Vec::new();
        for m in minutes {
            let start = interval.start_of(m.open_time);
            match out.last_mut() {
                Some(b) if b.time == start => {
                    b.high = b.high.max(m.high);
                    b.low = b.low.min(m.low);
                    b.close = m.close;
                    b.minutes_present += 1;
                }
                _ => out.push(MarkBar {
                    time: start,
                    open: m.open,
                    high: m.high,
                    low: m.low,
                    close: m.close,
                    minutes_present: 1,
                }),
            }
        }
        Ok(out)
    }

    /// The newest funding event of every perpetual market and symbol the lake holds, from
    /// the newest funding partitions.
    pub async fn latest_funding(&self) -> Result<Vec<cryptolake_lake::funding::FundingRow>> {
        let table = paths::silver_funding_table();
        let dates = self.partition_dates(&table).await?;
        // Intervals are at most 8 hours: the newest three days hold every live symbol's
        // newest event.
        let Some(&last) = dates.last() else {
            return Ok(Vec::new());
        };
        let newest_days = dates
            .into_iter()
            .filter(|d| last - *d <= Duration::days(2))
            .collect();
        let rows = self
            .read_dates(
                table,
                newest_days,
                cryptolake_lake::funding::funding_from_batch,
            )
            .await?;
        let mut newest: BTreeMap<(Exchange, Symbol), cryptolake_lake::funding::FundingRow> =
            BTreeMap::new();
        for r in rows {
            let k = (r.exchange, r.symbol.clone());
            if newest.get(&k).is_none_or(|n| n.slot < r.slot) {
                newest.insert(k, r);
            }
        }
        Ok(newest.into_values().collect())
    }

    /// The rows of a table with one file per date over the dates of `[from, to)`.
    async fn read_days<T>(
        &self,
        table: Path,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        decode: fn(&arrow::array::RecordBatch, &str) -> cryptolake_lake::Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        if to <= from {
            return Err(Error::Invalid(format!("from {from} is not before to {to}")));
        }
        let (first, last) = (
            from.date_naive(),
            (to - Duration::microseconds(1)).date_naive(),
        );
        if (last - first).num_days() >= MAX_FUNDING_DAYS {
            return Err(Error::Invalid(format!(
                "from {from} to {to} is more than {MAX_FUNDING_DAYS} days: ask for less"
            )));
        }
        // One listing, then only the dates that have a partition.
        let dates: Vec<NaiveDate> = self
            .partition_dates(&table)
            .await?
            .into_iter()
            .filter(|d| *d >= first && *d <= last)
            .collect();
        self.read_dates(table, dates, decode).await
    }

    /// The dates of a table with one file per date, in order, from one listing.
    async fn partition_dates(&self, table: &Path) -> Result<Vec<NaiveDate>> {
        let mut dates: Vec<NaiveDate> = self
            .lake
            .list_keys(table)
            .await?
            .iter()
            .filter_map(|k| paths::partition_file_date(table, k))
            .collect();
        dates.sort();
        Ok(dates)
    }

    /// The rows of these dates' partitions of a table with one file per date.
    async fn read_dates<T>(
        &self,
        table: Path,
        dates: Vec<NaiveDate>,
        decode: fn(&arrow::array::RecordBatch, &str) -> cryptolake_lake::Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let reads: Vec<Result<Vec<T>>> = futures::stream::iter(dates.into_iter().map(|d| {
            let key = paths::partition_file(&table, d);
            async move {
                let Some(bytes) = self.lake.get_opt(&key).await? else {
                    return Ok(Vec::new());
                };
                let mut rows = Vec::new();
                for b in cryptolake_lake::decode_parquet(&key, bytes)? {
                    rows.extend(decode(&b, key.as_ref())?);
                }
                Ok(rows)
            }
        }))
        .buffered(READS_AT_ONCE)
        .collect()
        .await;
        let mut out = Vec::new();
        for r in reads {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Funding events of one perpetual market's symbol with slots in `[from, to)`, oldest
    /// first (at most `MAX_FUNDING_DAYS` days of partitions). Funding partitions are a few
    /// kilobytes a day: they are read as they are, not held.
    pub async fn funding(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<cryptolake_lake::funding::FundingRow>> {
        let mut out = self
            .read_days(
                paths::silver_funding_table(),
                (from, to),
                cryptolake_lake::funding::funding_from_batch,
            )
            .await?;
        out.retain(|f| {
            f.exchange == exchange && &f.symbol == symbol && f.slot >= from && f.slot < to
        });
        out.sort_by_key(|f| f.slot);
        Ok(out)
    }

    /// The gaps recorded by the last scans, ordered by exchange, symbol and start.
    pub async fn gaps(&self, filter: &GapFilter) -> Result<Vec<Gap>> {
        on_snapshot!(self, s => async {
            let dates: Vec<NaiveDate> = self
                .versions(s, Table::Gaps)
                .await?
                .keys()
                .copied()
                .filter(|d| filter.from.is_none_or(|f| *d >= f) && filter.to.is_none_or(|t| *d <= t))
                .collect();
            let parts = match self.partitions(s, Table::Gaps, dates).await? {
                Attempt::Done(p) => p,
                Attempt::Stale => return Ok(Attempt::Stale),
            };
            let mut out: Vec<Gap> = Vec::new();
            for (_, part) in &parts {
                let Decoded::Gaps(g) = &part.rows else { continue };
                match (filter.exchange, &filter.symbol) {
                    (Some(e), Some(sym)) => out.extend(g.of(e, sym).iter().cloned()),
                    _ => out.extend(g.rows.iter().filter(|gap| {
                        filter.exchange.is_none_or(|e| gap.exchange == e)
                            && filter.symbol.as_ref().is_none_or(|sym| &gap.symbol == sym)
                    }).cloned()),
                }
            }
            out.sort_by(|a, b| (a.exchange, &a.symbol, a.start).cmp(&(b.exchange, &b.symbol, b.start)));
            if let Some(limit) = filter.limit {
                out.truncate(limit);
            }
            Ok(Attempt::Done(out))
        })
    }

    /// Minutes of gaps per exchange, symbol and status.
    pub async fn gap_minutes(&self) -> Result<Vec<(Exchange, Symbol, GapStatus, i64)>> {
        on_snapshot!(self, s => async {
            Ok(match self.pairs(s).await? {
                Attempt::Done(p) => Attempt::Done(
                    p.iter()
                        .flat_map(|((e, sym), part)| {
                            [GapStatus::Missing, GapStatus::Unconfirmed, GapStatus::Confirmed, GapStatus::Unservable]
                                .into_iter()
                                .filter(|st| part.gap_minutes[gap_slot(*st)] > 0)
                                .map(|st| (*e, sym.clone(), st, part.gap_minutes[gap_slot(st)]))
                        })
                        .collect(),
                ),
                Attempt::Stale => Attempt::Stale,
            })
        })
    }

    /// Quality results, newest first: the history, or the violations still open.
    pub async fn quality(&self, filter: &QualityFilter) -> Result<Vec<RecordedResult>> {
        let s = self.snapshot().await?;
        let extra = self.extra(&s).await?;
        let rows = if filter.open_only {
            &extra.ops.open
        } else {
            &extra.ops.recent
        };
        Ok(rows
            .iter()
            .filter(|r| filter.status.is_none_or(|st| r.result.status == st))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    /// Open violations per rule (every rule listed, zero when none is open).
    pub async fn open_violations(&self) -> Result<BTreeMap<Rule, usize>> {
        let s = self.snapshot().await?;
        let mut out: BTreeMap<Rule, usize> = Rule::ALL.into_iter().map(|r| (r, 0)).collect();
        for r in self.extra(&s).await?.ops.open.iter() {
            *out.entry(r.result.rule).or_default() += 1;
        }
        Ok(out)
    }

    /// Reads what the dashboard asks for first (every gold partition, then silver from the
    /// newest date back, within half the cache), so the first requests find it in memory.
    pub async fn warm(&self) -> Result<()> {
        let s = self.snapshot().await?;
        let gold: Vec<NaiveDate> = s.gold.keys().copied().collect();
        let _ = self.partitions(&s, Table::Gold, gold).await?;
        let _ = self.pairs(&s).await?;
        let half = self.cache.stats().capacity / 2;
        let silver: Vec<NaiveDate> = s.silver.keys().rev().copied().collect();
        for chunk in silver.chunks(READS_AT_ONCE) {
            if self.cache.stats().bytes >= half {
                break;
            }
            if let Attempt::Stale = self.partitions(&s, Table::Silver, chunk.to_vec()).await? {
                break;
            }
        }
        Ok(())
    }
}

/// SQL over the held tables: a statement's partitions from memory, one snapshot for all of
/// them, or none (the files are read) when the range would take more than half the cache.
#[async_trait::async_trait]
impl cryptolake_query::memory::Partitions for ReadModel {
    async fn partitions(
        &self,
        prefix: &str,
        range: cryptolake_query::memory::DateRange,
    ) -> std::result::Result<Option<Vec<Vec<arrow::array::RecordBatch>>>, String> {
        let Some(table) = Table::ALL.into_iter().find(|t| t.prefix() == prefix) else {
            return Ok(None);
        };
        self.held(table, range).await.map_err(|e| e.to_string())
    }
}

impl ReadModel {
    async fn held(
        &self,
        table: Table,
        range: cryptolake_query::memory::DateRange,
    ) -> Result<Option<Vec<Vec<arrow::array::RecordBatch>>>> {
        let budget = self.cache.stats().capacity / 2;
        on_snapshot!(self, s => async {
            let versions = self.versions(s, table).await?;
            let dates: Vec<NaiveDate> = versions
                .keys()
                .copied()
                .filter(|d| range.first.is_none_or(|f| *d >= f) && range.last.is_none_or(|l| *d <= l))
                .collect();
            let mut out = Vec::with_capacity(dates.len());
            let mut bytes = 0usize;
            for chunk in dates.chunks(READS_AT_ONCE) {
                match self.partitions(s, table, chunk.to_vec()).await? {
                    Attempt::Stale => return Ok(Attempt::Stale),
                    Attempt::Done(parts) => {
                        for (_, part) in parts {
                            bytes += part.bytes();
                            out.push(part.arrow.clone());
                        }
                    }
                }
                // What was read so far says what the whole range would weigh.
                if (bytes / out.len().max(1)).saturating_mul(dates.len()) > budget {
                    return Ok(Attempt::Done(None));
                }
            }
            Ok(Attempt::Done(Some(out)))
        })
    }
}

/// The end of `date`.
fn day_end(date: NaiveDate) -> DateTime<Utc> {
    cryptolake_model::day_start(date) + Duration::days(1)
}

/// How many buckets of `interval` start in `[first, until)`.
fn bucket_count(interval: Interval, first: DateTime<Utc>, until: DateTime<Utc>) -> usize {
    if let Some(m) = Some(interval.nominal().num_minutes()).filter(|_| interval != Interval::Mo1) {
        return usize::try_from(((until - first).num_minutes() + m - 1) / m).unwrap_or(0);
    }
    let mut n = 0;
    let mut t = first;
    while t < until {
        n += 1;
        t = interval.next(t);
    }
    n
}

fn freshness_of(
    exchange: Exchange,
    symbol: &Symbol,
    part: &PairPart,
    now: DateTime<Utc>,
) -> Freshness {
    let hour = part.newest_complete;
    Freshness {
        exchange,
        symbol: symbol.clone(),
        newest_complete_hour: hour,
        lag: hour.map(|h| {
            (now - (h + Duration::hours(1)))
                .to_std()
                .unwrap_or_default()
        }),
    }
}

/// The outcome of the exchange's newest ingest, else of the newest silver build (a lake filled
/// by import or by the benchmark's generator has no ingest runs).
fn last_run(runs: &[RunRecord], exchange: Exchange) -> Option<cryptolake_model::Outcome> {
    use cryptolake_model::Step;
    runs.iter()
        .find(|r| r.step == Step::Ingest && r.exchange == Some(exchange))
        .or_else(|| runs.iter().find(|r| r.step == Step::Silver))
        .map(|r| r.status)
}

fn decode(
    table: Table,
    date: NaiveDate,
    file: &Path,
    bytes: bytes::Bytes,
) -> cryptolake_lake::Result<Part> {
    let batches = cryptolake_lake::decode_parquet(file, bytes)?;
    let arrow = cryptolake_query::memory::table_batches(table.prefix(), date, &batches)
        .map_err(|e| cryptolake_lake::Error::Invalid(format!("{file}: {e}")))?;
    let rows = match table {
        Table::Silver => {
            let mut rows = Vec::new();
            for b in &batches {
                rows.extend(cryptolake_lake::hourly_from_batch(b, file.as_ref())?);
            }
            Decoded::Hours(Grouped::new(
                rows,
                |h| (h.exchange, &h.symbol),
                |h| h.open_time,
            ))
        }
        Table::Minutes => {
            let mut rows = Vec::new();
            for b in &batches {
                rows.extend(cryptolake_lake::minutes_from_batch(b, file.as_ref())?);
            }
            Decoded::Minutes(Grouped::new(
                rows,
                |m| (m.candle.exchange, &m.candle.symbol),
                |m| m.candle.open_time,
            ))
        }
        Table::Gold => {
            let mut rows = Vec::new();
            for b in &batches {
                rows.extend(cryptolake_lake::daily_from_batch(b, date, file.as_ref())?);
            }
            Decoded::Days(Grouped::new(rows, |d| (d.exchange, &d.symbol), |d| d.date))
        }
        Table::Gaps => {
            let mut rows = Vec::new();
            for b in &batches {
                rows.extend(cryptolake_lake::gaps::gaps_from_batch(b, file.as_ref())?);
            }
            Decoded::Gaps(Grouped::new(rows, |g| (g.exchange, &g.symbol), |g| g.start))
        }
    };
    Ok(Part { rows, arrow })
}
