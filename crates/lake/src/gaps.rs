//! Gaps: minutes missing from silver, and whether the exchange has them at all.
//!
//! The expected grid of an (exchange, symbol) runs from the first minute any bronze request
//! asked for to the last whole hour silver can hold. A minute on that grid that silver's
//! `minute_mask` does not have is missing. Bronze keys say how many fetches, after the minute
//! closed, covered it, which decides what the gap is:
//!
//! - `missing`: no fetch covered it (an ingestion failed or was skipped): refetch;
//! - `unconfirmed`: one fetch covered it and had nothing: refetch once to confirm;
//! - `confirmed`: two or more fetches had nothing: the exchange has no candle there (no
//!   trades; Coinbase leaves such minutes out). Recorded, never refetched again;
//! - `unservable`: not confirmed, and the exchange no longer serves that range (Kraken keeps
//!   720 minutes). Recorded, not refetched.
//!
//! The result is written per date to `crypto_ops.gaps` (`ops/gaps/date=D/part-00000.parquet`).
//! Because everything is derived from bronze keys and silver, a scan can be repeated at any time
//! and gives the same answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol, date_of, day_start, hour_start, schema};
use cryptolake_sources::ExchangeClient;
use futures::StreamExt;

use crate::columns::Builder;
use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result, hourly_from_batch, read_parquet, write_parquet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GapStatus {
    Missing,
    Unconfirmed,
    Confirmed,
    Unservable,
}

impl GapStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GapStatus::Missing => "missing",
            GapStatus::Unconfirmed => "unconfirmed",
            GapStatus::Confirmed => "confirmed",
            GapStatus::Unservable => "unservable",
        }
    }

    pub fn parse(s: &str) -> Option<GapStatus> {
        [
            GapStatus::Missing,
            GapStatus::Unconfirmed,
            GapStatus::Confirmed,
            GapStatus::Unservable,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }

    /// Whether the next `run` or `backfill` fetches it again.
    pub fn refetch(self) -> bool {
        matches!(self, GapStatus::Missing | GapStatus::Unconfirmed)
    }
}

/// Consecutive missing minutes of one exchange and symbol with one status, within one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub exchange: Exchange,
    pub symbol: Symbol,
    /// First missing minute.
    pub start: DateTime<Utc>,
    /// End, exclusive.
    pub end: DateTime<Utc>,
    pub status: GapStatus,
    /// Fetches after the minutes closed whose window covered the gap (the fewest over its
    /// minutes).
    pub fetches: i32,
    pub detected_at: DateTime<Utc>,
}

impl Gap {
    pub fn minutes(&self) -> i64 {
        (self.end - self.start).num_minutes()
    }
}

type Pair = (Exchange, Symbol);
type Span = (DateTime<Utc>, DateTime<Utc>);

/// Ranges an ingest asked for that the exchange no longer served.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Unservable {
    windows: Vec<Span>,
}

/// Sorts spans and merges the ones that overlap or touch.
pub fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut out: Vec<Span> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Remembers that `windows` of `symbol` were asked for but not served, so that the gap report
/// lists them as unservable instead of not knowing they were wanted.
pub async fn record_unservable(
    lake: &Lake,
    exchange: Exchange,
    symbol: &Symbol,
    windows: &[Span],
) -> Result<()> {
    if windows.is_empty() {
        return Ok(());
    }
    let key = paths::unservable_state(exchange, symbol);
    let mut doc = crate::state::read::<Unservable>(lake, &key)
        .await?
        .unwrap_or_default();
    doc.windows.extend_from_slice(windows);
    doc.windows = merge_spans(std::mem::take(&mut doc.windows));
    crate::state::write(lake, &key, &doc).await
}

async fn read_unservable(lake: &Lake) -> Result<HashMap<Pair, Vec<Span>>> {
    let mut out = HashMap::new();
    for meta in lake
        .list(&object_store::path::Path::from(paths::UNSERVABLE))
        .await?
    {
        let parts: Vec<String> = meta
            .location
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        let [.., ex, file] = parts.as_slice() else {
            continue;
        };
        let (Ok(ex), Some(Ok(symbol))) = (
            ex.parse::<Exchange>(),
            file.strip_suffix(".json").map(Symbol::parse),
        ) else {
            continue;
        };
        if let Some(doc) = crate::state::read::<Unservable>(lake, &meta.location).await? {
            out.insert((ex, symbol), doc.windows);
        }
    }
    Ok(out)
}

/// The span each pair was ever asked for, kept so that an update after a silver build needs
/// only the partitions the build listed, not all of bronze.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct AskedState {
    /// `exchange/symbol` to [first window start, last window end).
    asked: BTreeMap<String, Span>,
}

impl From<&BTreeMap<Pair, Span>> for AskedState {
    fn from(m: &BTreeMap<Pair, Span>) -> Self {
        AskedState {
            asked: m
                .iter()
                .map(|((e, s), span)| (format!("{e}/{s}"), *span))
                .collect(),
        }
    }
}

impl AskedState {
    fn pairs(&self) -> BTreeMap<Pair, Span> {
        self.asked
            .iter()
            .filter_map(|(k, span)| {
                let (e, s) = k.split_once('/')?;
                Some(((e.parse().ok()?, Symbol::parse(s).ok()?), *span))
            })
            .collect()
    }
}

/// Widens each pair's asked span with `bronze` windows and unservable ranges.
fn extend_asked(
    asked: &mut BTreeMap<Pair, Span>,
    bronze: &HashMap<Pair, Vec<BronzeKey>>,
    unservable: &HashMap<Pair, Vec<Span>>,
) {
    let spans = bronze
        .iter()
        .flat_map(|(p, keys)| {
            keys.iter()
                .map(move |k| (p, (k.window_start, k.window_end)))
        })
        .chain(
            unservable
                .iter()
                .flat_map(|(p, spans)| spans.iter().map(move |s| (p, *s))),
        );
    for (pair, (a, b)) in spans {
        let e = asked.entry(pair.clone()).or_insert((a, b));
        *e = (e.0.min(a), e.1.max(b));
    }
}

/// The grid of each pair: from the first minute asked to the last whole hour asked.
fn grids_of(asked: &BTreeMap<Pair, Span>) -> BTreeMap<Pair, Span> {
    asked
        .iter()
        .filter_map(|(p, (s, e))| {
            let e = hour_start(*e);
            (*s < e).then(|| (p.clone(), (*s, e)))
        })
        .collect()
}

/// After a silver build (or each batch of one): rescans only the (date, pair) groups it
/// touched, from the bronze keys it listed (`listed`: every object of those pairs overlapping
/// those dates), keeping the other pairs' rows of each date as they were. Without an
/// asked-span state yet, a build that lists all of bronze in date order (`complete_listing`)
/// starts one; any other falls back to [`scan`] over the touched dates.
pub async fn update(
    lake: &Lake,
    touched: &BTreeMap<NaiveDate, BTreeSet<Pair>>,
    listed: &Arc<HashMap<Pair, Vec<BronzeKey>>>,
    now: DateTime<Utc>,
    complete_listing: bool,
) -> Result<GapScan> {
    let (Some(from), Some(to)) = (touched.keys().next(), touched.keys().next_back()) else {
        return Ok(GapScan::default());
    };
    let state = match crate::state::read::<AskedState>(lake, &paths::gaps_state()).await? {
        Some(state) => state,
        None if complete_listing => AskedState::default(),
        None => return scan(lake, Some(*from), Some(*to), now).await,
    };
    let mut asked = state.pairs();
    let unservable = read_unservable(lake).await?;
    extend_asked(&mut asked, listed, &unservable);
    crate::state::write(lake, &paths::gaps_state(), &AskedState::from(&asked)).await?;
    let grids = Arc::new(grids_of(&asked));
    let jobs = touched
        .iter()
        .map(|(date, pairs)| (*date, Some(pairs.clone())))
        .collect();
    rewrite_dates(lake, jobs, grids, listed.clone(), now).await
}

/// At least how many dates of the gap report are scanned at once.
const DATES_IN_FLIGHT: usize = 4;

/// Rewrites the gaps partition of each date: the gaps of the date's pairs (every pair with a
/// grid when `None`) scanned afresh, the other pairs' rows as they were. Dates are scanned
/// concurrently, each in its own task.
async fn rewrite_dates(
    lake: &Lake,
    jobs: Vec<(NaiveDate, Option<BTreeSet<Pair>>)>,
    grids: Arc<BTreeMap<Pair, Span>>,
    bronze: Arc<HashMap<Pair, Vec<BronzeKey>>>,
    now: DateTime<Utc>,
) -> Result<GapScan> {
    let mut out = GapScan {
        dates_scanned: jobs.len(),
        ..Default::default()
    };
    let tasks = jobs.into_iter().map(|(date, pairs)| {
        let (lake, grids, bronze) = (lake.clone(), grids.clone(), bronze.clone());
        crate::in_task(format!("gap report for {date}"), async move {
            let key = paths::gaps_partition_file(date);
            // The other pairs' rows as they were (one GET, which also says whether the
            // partition exists); a partition that cannot be read is rescanned whole instead.
            let mut rows: Vec<Gap> = Vec::new();
            let mut pairs = pairs;
            let exists = match &pairs {
                Some(only) => match lake.get_opt(&key).await? {
                    None => false,
                    Some(bytes) => {
                        let read = || {
                            let mut kept = Vec::new();
                            for batch in crate::decode_parquet(&key, bytes)? {
                                kept.extend(
                                    gaps_from_batch(&batch, key.as_ref())?
                                        .into_iter()
                                        .filter(|g| !only.contains(&(g.exchange, g.symbol.clone()))),
                                );
                            }
                            Ok::<_, Error>(kept)
                        };
                        match read() {
                            Ok(kept) => rows = kept,
                            Err(e) => {
                                tracing::warn!(key = %key, error = %e, "replacing an unreadable gaps partition: rescanning the whole date");
                                pairs = None;
                            }
                        }
                        true
                    }
                },
                None => lake.head(&key).await?.is_some(),
            };
            let only: BTreeMap<Pair, Span> = grids
                .iter()
                .filter(|(p, _)| pairs.as_ref().is_none_or(|ps| ps.contains(*p)))
                .map(|(p, s)| (p.clone(), *s))
                .collect();
            let fresh = scan_date(&lake, date, &only, &bronze, now).await?;
            rows.extend(fresh.iter().cloned());
            rows.sort_by(|a, b| {
                (a.exchange, &a.symbol, a.start).cmp(&(b.exchange, &b.symbol, b.start))
            });
            let (written, deleted) = if rows.is_empty() {
                if exists {
                    lake.delete(&key).await?;
                }
                (0, usize::from(exists))
            } else {
                write_parquet(&lake, &key, &gaps_to_batch(&rows)?, &[0, 1, 2]).await?;
                (1, 0)
            };
            Ok((fresh, written, deleted))
        })
    });
    let mut done =
        futures::stream::iter(tasks).buffered(crate::dates_in_flight(lake, DATES_IN_FLIGHT));
    while let Some(r) = done.next().await {
        let (fresh, written, deleted) = r?;
        out.partitions_written += written;
        out.partitions_deleted += deleted;
        out.gaps.extend(fresh);
    }
    Ok(out)
}

/// What a scan found and wrote.
#[derive(Debug, Default)]
pub struct GapScan {
    pub gaps: Vec<Gap>,
    pub dates_scanned: usize,
    pub partitions_written: usize,
    pub partitions_deleted: usize,
}

/// Scans the dates in `[from, to]` (all of the lake when `None`) and replaces their
/// `crypto_ops.gaps` partitions. Gaps before `from` or after `to` are left as they were.
pub async fn scan(
    lake: &Lake,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<GapScan> {
    // Every bronze object by pair: the requests made, and when.
    let mut bronze: HashMap<Pair, Vec<BronzeKey>> = HashMap::new();
    for key in lake.list_keys(&paths::bronze_root()).await? {
        if let Some(k) = BronzeKey::parse(&key)
            && crate::bronze::is_candle_dataset(&k.dataset)
        {
            bronze
                .entry((k.source, k.symbol.clone()))
                .or_default()
                .push(k);
        }
    }
    // The grid of each pair: [first asked, last whole hour asked for), including what was
    // asked for and not served.
    let unservable = read_unservable(lake).await?;
    let mut asked: BTreeMap<Pair, Span> = BTreeMap::new();
    extend_asked(&mut asked, &bronze, &unservable);
    crate::state::write(lake, &paths::gaps_state(), &AskedState::from(&asked)).await?;
    let grids = grids_of(&asked);
    let mut dates: BTreeSet<NaiveDate> = BTreeSet::new();
    for (s, e) in grids.values() {
        let mut d = date_of(*s);
        while day_start(d) < *e {
            if from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t) {
                dates.insert(d);
            }
            d = d.succ_opt().expect("date in range");
        }
    }
    // Dates in range that hold an old gaps partition but no longer any grid.
    for meta in lake.list(&paths::gaps_table()).await? {
        if let Some(d) = paths::partition_file_date(&paths::gaps_table(), &meta.location)
            && from.is_none_or(|f| d >= f)
            && to.is_none_or(|t| d <= t)
        {
            dates.insert(d);
        }
    }
    let jobs = dates.into_iter().map(|d| (d, None)).collect();
    rewrite_dates(lake, jobs, Arc::new(grids), Arc::new(bronze), now).await
}

async fn scan_date(
    lake: &Lake,
    date: NaiveDate,
    grids: &BTreeMap<Pair, Span>,
    bronze: &HashMap<Pair, Vec<BronzeKey>>,
    now: DateTime<Utc>,
) -> Result<Vec<Gap>> {
    let day = (day_start(date), day_start(date) + Duration::days(1));
    // Minutes present per pair, as 1440 flags.
    let mut present: HashMap<Pair, Vec<bool>> = HashMap::new();
    let key = paths::silver_partition_file(date);
    if let Some(bytes) = lake.get_opt(&key).await? {
        for batch in crate::decode_parquet(&key, bytes)? {
            for h in hourly_from_batch(&batch, key.as_ref())? {
                let flags = present
                    .entry((h.exchange, h.symbol.clone()))
                    .or_insert_with(|| vec![false; 1440]);
                let base = (h.open_time - day.0).num_minutes();
                for m in 0..60 {
                    if h.minute_mask & (1 << m) != 0
                        && let Some(f) = flags.get_mut((base + m) as usize)
                    {
                        *f = true;
                    }
                }
            }
        }
    }
    let mut gaps = Vec::new();
    for (pair, (g_start, g_end)) in grids {
        let (start, end) = ((*g_start).max(day.0), (*g_end).min(day.1));
        if start >= end {
            continue;
        }
        let served_from = ExchangeClient::served_from(pair.0, now);
        let keys: Vec<&BronzeKey> = bronze
            .get(pair)
            .map(|v| {
                v.iter()
                    .filter(|k| k.window_start < end && k.window_end > start)
                    .collect()
            })
            .unwrap_or_default();
        let flags = present.get(pair);
        let mut current: Option<Gap> = None;
        // Minute by minute from `start`, as indices into the day's flags; a time only for
        // minutes that are missing or end a gap.
        let base = (start - day.0).num_minutes();
        let steps = ((end - start).num_seconds() + 59) / 60;
        for k in 0..steps {
            let idx = (base + k) as usize;
            let missing = !flags.is_some_and(|f| f[idx]);
            if !missing && current.is_none() {
                continue;
            }
            let t = start + Duration::minutes(k);
            let status = missing.then(|| {
                let minute_end = t + Duration::minutes(1);
                let fetches = keys
                    .iter()
                    .filter(|k| {
                        k.window_start <= t && t < k.window_end && k.fetched_at >= minute_end
                    })
                    .count() as i32;
                let status = match fetches {
                    0 | 1 if served_from.is_some_and(|f| t < f) => GapStatus::Unservable,
                    0 => GapStatus::Missing,
                    1 => GapStatus::Unconfirmed,
                    _ => GapStatus::Confirmed,
                };
                (status, fetches)
            });
            match (&mut current, status) {
                (Some(g), Some((s, f))) if g.status == s && g.end == t => {
                    g.end = t + Duration::minutes(1);
                    g.fetches = g.fetches.min(f);
                }
                (_, status) => {
                    if let Some(g) = current.take() {
                        gaps.push(g);
                    }
                    current = status.map(|(s, f)| Gap {
                        exchange: pair.0,
                        symbol: pair.1.clone(),
                        start: t,
                        end: t + Duration::minutes(1),
                        status: s,
                        fetches: f,
                        detected_at: now,
                    });
                }
            }
        }
        gaps.extend(current);
    }
    Ok(gaps)
}

pub(crate) fn gaps_to_batch(gaps: &[Gap]) -> Result<RecordBatch> {
    Builder::new(gaps)
        .text(|g| g.exchange.as_str())
        .text(|g| g.symbol.as_str())
        .time(|g| g.start)
        .time(|g| g.end)
        .int64(Gap::minutes)
        .text(|g| g.status.as_str())
        .int32(|g| g.fetches)
        .time(|g| g.detected_at)
        .finish(schema::gaps())
}

pub fn gaps_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<Gap>> {
    let bad = |reason: String| Error::Data {
        key: what.to_string(),
        reason,
    };
    fn col<'a, T: Array + 'static>(b: &'a RecordBatch, name: &str) -> Option<&'a T> {
        b.column_by_name(name)?.as_any().downcast_ref::<T>()
    }
    let (Some(ex), Some(sym), Some(start), Some(end), Some(status), Some(fetches), Some(detected)) = (
        col::<StringArray>(batch, "exchange"),
        col::<StringArray>(batch, "symbol"),
        col::<TimestampMicrosecondArray>(batch, "gap_start"),
        col::<TimestampMicrosecondArray>(batch, "gap_end"),
        col::<StringArray>(batch, "status"),
        col::<Int32Array>(batch, "fetches"),
        col::<TimestampMicrosecondArray>(batch, "detected_at"),
    ) else {
        return Err(bad("not a gaps table file: columns missing".into()));
    };
    let time = |a: &TimestampMicrosecondArray, i: usize| {
        DateTime::from_timestamp_micros(a.value(i))
            .ok_or_else(|| bad("timestamp out of range".into()))
    };
    (0..batch.num_rows())
        .map(|i| {
            Ok(Gap {
                exchange: ex.value(i).parse().map_err(|e| bad(format!("{e}")))?,
                symbol: Symbol::parse(sym.value(i)).map_err(|e| bad(e.to_string()))?,
                start: time(start, i)?,
                end: time(end, i)?,
                status: GapStatus::parse(status.value(i))
                    .ok_or_else(|| bad(format!("unknown gap status {:?}", status.value(i))))?,
                fetches: fetches.value(i),
                detected_at: time(detected, i)?,
            })
        })
        .collect()
}

/// The gaps recorded by the last scans, for dates in `[from, to]`.
pub async fn read(lake: &Lake, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Vec<Gap>> {
    let mut out = Vec::new();
    for meta in lake.list(&paths::gaps_table()).await? {
        let Some(d) = paths::partition_file_date(&paths::gaps_table(), &meta.location) else {
            continue;
        };
        if from.is_some_and(|f| d < f) || to.is_some_and(|t| d > t) {
            continue;
        }
        // A damaged partition is left out (and said so): the next scan of its date rewrites it.
        let batches = match read_parquet(lake, &meta.location).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(key = %meta.location, error = %e, "skipping an unreadable gaps partition; `cryptolake check --files` says how it is repaired");
                continue;
            }
        };
        for batch in batches {
            out.extend(gaps_from_batch(&batch, meta.location.as_ref())?);
        }
    }
    out.sort_by(|a, b| (a.exchange, &a.symbol, a.start).cmp(&(b.exchange, &b.symbol, b.start)));
    Ok(out)
}

/// The windows to fetch again for the gaps worth refetching, per symbol of `exchange`: gaps
/// close together share one window of at most the exchange's page size, at most `max_windows`
/// per symbol (the oldest first).
pub fn refetch_windows(
    gaps: &[Gap],
    exchange: Exchange,
    max_windows: usize,
) -> Vec<(Symbol, Vec<Span>)> {
    let max = Duration::minutes(ExchangeClient::max_window_minutes(exchange));
    let mut by_symbol: BTreeMap<Symbol, Vec<Span>> = BTreeMap::new();
    let mut sorted: Vec<&Gap> = gaps
        .iter()
        .filter(|g| g.exchange == exchange && g.status.refetch())
        .collect();
    sorted.sort_by(|a, b| (&a.symbol, a.start).cmp(&(&b.symbol, b.start)));
    for g in sorted {
        let windows = by_symbol.entry(g.symbol.clone()).or_default();
        let full = windows.len() >= max_windows;
        match windows.last_mut() {
            Some(w) if g.end - w.0 <= max && date_of(w.0) == date_of(g.start) => {
                w.1 = w.1.max(g.end)
            }
            _ if full => {}
            _ => windows.push((g.start, g.end)),
        }
    }
    by_symbol.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    fn gap(sym: &str, start: &str, minutes: i64, status: GapStatus) -> Gap {
        let s = parse_time(start).unwrap();
        Gap {
            exchange: Exchange::Coinbase,
            symbol: Symbol::parse(sym).unwrap(),
            start: s,
            end: s + Duration::minutes(minutes),
            status,
            fetches: 1,
            detected_at: s,
        }
    }

    #[test]
    fn refetch_windows_merge_nearby_gaps_and_skip_settled_ones() {
        let gaps = vec![
            gap("BTC-USD", "2024-03-01T00:10:00Z", 1, GapStatus::Unconfirmed),
            gap("BTC-USD", "2024-03-01T02:00:00Z", 3, GapStatus::Missing),
            gap("BTC-USD", "2024-03-01T06:00:00Z", 1, GapStatus::Unconfirmed),
            gap("BTC-USD", "2024-03-01T07:00:00Z", 1, GapStatus::Confirmed),
            gap("ETH-USD", "2024-03-01T23:59:00Z", 1, GapStatus::Missing),
            gap("ETH-USD", "2024-03-02T00:00:00Z", 1, GapStatus::Unservable),
        ];
        let w = refetch_windows(&gaps, Exchange::Coinbase, 10);
        let t = |s| parse_time(s).unwrap();
        assert_eq!(
            w,
            vec![
                (
                    Symbol::parse("BTC-USD").unwrap(),
                    vec![
                        // 00:10..02:03 fits one 300-minute Coinbase page; 06:00 does not.
                        (t("2024-03-01T00:10:00Z"), t("2024-03-01T02:03:00Z")),
                        (t("2024-03-01T06:00:00Z"), t("2024-03-01T06:01:00Z")),
                    ]
                ),
                (
                    Symbol::parse("ETH-USD").unwrap(),
                    vec![(t("2024-03-01T23:59:00Z"), t("2024-03-02T00:00:00Z"))]
                ),
            ]
        );
        assert!(refetch_windows(&gaps, Exchange::Binance, 10).is_empty());
        assert_eq!(refetch_windows(&gaps, Exchange::Coinbase, 1)[0].1.len(), 1);
    }

    #[test]
    fn batch_round_trip() {
        let gaps = vec![
            gap("BTC-USD", "2024-03-01T00:10:00Z", 1, GapStatus::Unconfirmed),
            gap("SOL-USD", "2024-03-01T05:00:00Z", 61, GapStatus::Unservable),
        ];
        let batch = gaps_to_batch(&gaps).unwrap();
        assert_eq!(gaps_from_batch(&batch, "t").unwrap(), gaps);
    }
}
