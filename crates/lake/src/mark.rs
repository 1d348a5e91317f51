//! Mark price candles of perpetual markets: bronze (dataset `mark_klines_1m`), silver
//! `crypto_analytics.mark_ohlcv_1m` and its gap report `crypto_ops.mark_gaps`.
//!
//! A table of its own rather than a `price_type` column on `ohlcv_1m`: a mark price is an
//! index, without volume, trade count or taker volumes (every such column would be null for
//! its rows), and it is fetched from its own endpoints on its own cursor.
//!
//! The rules are the trade candles': only minutes closed when fetched, inside the request's
//! window; the latest fetch of a minute wins (ties broken by the values, so the order objects
//! are read in never matters, and merging new rows into a partition equals a rebuild); and a
//! minute asked for and absent is a gap, never filled: `missing` when no request after its
//! close covered it, `unconfirmed` after one, `confirmed` after two. Windows never cross
//! midnight, so a date's bronze partition holds every request that covered the date.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol, date_of, day_start, schema};
use cryptolake_sources::{Record, parse_mark_page};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::bronze::{self, MARK_KLINES_1M};
use crate::columns::Builder;
use crate::gaps::{Gap, GapStatus, gaps_from_batch, gaps_to_batch};
use crate::lease::Lease;
use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result, decode_parquet, state, write_parquet};

const READS_AT_ONCE: usize = 16;

type Pair = (Exchange, Symbol);

/// An object's rows and how many it rejected; `None` for an object gone since listed.
type ObjectRows = Option<(Vec<MarkRow>, usize)>;

/// Windows of open times per symbol.
type Windows = Vec<(Symbol, Vec<crate::bronze::Window>)>;

/// One row of `crypto_analytics.mark_ohlcv_1m`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkRow {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub open_time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub fetched_at: DateTime<Utc>,
}

impl MarkRow {
    fn rank(&self) -> (DateTime<Utc>, [u64; 4]) {
        (
            self.fetched_at,
            [self.open, self.high, self.low, self.close].map(f64::to_bits),
        )
    }
}

pub fn marks_to_batch(rows: &[MarkRow]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .time(|r| r.open_time)
        .float64(|r| r.open)
        .float64(|r| r.high)
        .float64(|r| r.low)
        .float64(|r| r.close)
        .time(|r| r.fetched_at)
        .finish(schema::mark_ohlcv_1m())
}

/// The rows of a `mark_ohlcv_1m` batch (`what` names its file in errors).
pub fn marks_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<MarkRow>> {
    let bad = |reason: String| Error::Data {
        key: what.to_string(),
        reason,
    };
    fn col<'a, T: Array + 'static>(b: &'a RecordBatch, name: &str) -> Option<&'a T> {
        b.column_by_name(name)?.as_any().downcast_ref::<T>()
    }
    let (Some(ex), Some(sym), Some(open_time), Some(fetched)) = (
        col::<StringArray>(batch, "exchange"),
        col::<StringArray>(batch, "symbol"),
        col::<TimestampMicrosecondArray>(batch, "open_time"),
        col::<TimestampMicrosecondArray>(batch, "fetched_at"),
    ) else {
        return Err(bad("not a mark_ohlcv_1m file: columns missing".into()));
    };
    let prices: Vec<&Float64Array> = ["open", "high", "low", "close"]
        .iter()
        .map(|n| col::<Float64Array>(batch, n).ok_or_else(|| bad(format!("column {n} missing"))))
        .collect::<Result<_>>()?;
    let time = |a: &TimestampMicrosecondArray, i: usize| {
        DateTime::from_timestamp_micros(a.value(i)).ok_or_else(|| bad("time out of range".into()))
    };
    (0..batch.num_rows())
        .map(|i| {
            Ok(MarkRow {
                exchange: ex.value(i).parse().map_err(|e| bad(format!("{e}")))?,
                symbol: Symbol::parse(sym.value(i)).map_err(|e| bad(e.to_string()))?,
                open_time: time(open_time, i)?,
                open: prices[0].value(i),
                high: prices[1].value(i),
                low: prices[2].value(i),
                close: prices[3].value(i),
                fetched_at: time(fetched, i)?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MarkState {
    watermark: Option<DateTime<Utc>>,
    #[serde(default)]
    recent: BTreeSet<String>,
}

/// What a mark price build did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarkMetrics {
    pub objects: usize,
    pub rows: usize,
    pub rejected: usize,
    pub changed_dates: Vec<NaiveDate>,
    /// Missing minutes recorded in the dates built.
    pub gap_minutes: i64,
}

/// The mark price table's build: [`MarkBuild::run`].
pub struct Mark;
pub type MarkBuild = crate::funding::ManifestBuild<Mark>;

impl MarkBuild {
    pub async fn run(&self, lake: &Lake, lease: Option<&Lease>) -> Result<MarkMetrics> {
        match self.build(lake, lease).await {
            Err(e)
                if self.repairs(&e, &paths::mark_table())
                    || self.repairs(&e, &paths::mark_gaps_table()) =>
            {
                self.clone().with_rebuild(true).build(lake, lease).await
            }
            r => r,
        }
    }

    async fn build(&self, lake: &Lake, lease: Option<&Lease>) -> Result<MarkMetrics> {
        let started = self.clock.now();
        let previous = match self.rebuild {
            true => MarkState::default(),
            false => state::read::<MarkState>(lake, &paths::mark_state())
                .await?
                .unwrap_or_default(),
        };
        let (keys, watermark, recent) = self
            .objects(
                lake,
                MARK_KLINES_1M,
                (previous.watermark, &previous.recent),
                started,
            )
            .await?;
        let next = MarkState { watermark, recent };
        let mut m = MarkMetrics::default();
        let reads: Vec<Result<ObjectRows>> =
            futures::stream::iter(keys.iter().map(|k| read_object(lake, k)))
                .buffer_unordered(READS_AT_ONCE)
                .collect()
                .await;
        let mut fresh: BTreeMap<NaiveDate, Vec<MarkRow>> = BTreeMap::new();
        for r in reads {
            let Some((rows, rejected)) = r? else {
                continue;
            };
            m.objects += 1;
            m.rows += rows.len();
            m.rejected += rejected;
            for row in rows {
                fresh.entry(date_of(row.open_time)).or_default().push(row);
            }
        }
        // Every date a new object covers, even one that brought no row: its gaps change.
        let mut touched: BTreeMap<NaiveDate, BTreeSet<Pair>> = BTreeMap::new();
        for k in &keys {
            touched
                .entry(k.date)
                .or_default()
                .insert((k.source, k.symbol.clone()));
        }
        let now = self.clock.now();
        let mut written = BTreeSet::new();
        for (date, pairs) in &touched {
            let key = paths::partition_file(&paths::mark_table(), *date);
            let mut rows = match self.rebuild {
                true => Vec::new(),
                false => read_table::<MarkRow>(lake, &key, marks_from_batch).await?,
            };
            rows.extend(fresh.remove(date).unwrap_or_default());
            let rows = latest_per_minute(rows);
            let gaps_key = paths::partition_file(&paths::mark_gaps_table(), *date);
            let mut gaps: Vec<Gap> = match self.rebuild {
                true => Vec::new(),
                false => read_table::<Gap>(lake, &gaps_key, gaps_from_batch).await?,
            };
            let before: BTreeMap<(Pair, DateTime<Utc>, DateTime<Utc>), DateTime<Utc>> = gaps
                .iter()
                .map(|g| {
                    (
                        ((g.exchange, g.symbol.clone()), g.start, g.end),
                        g.detected_at,
                    )
                })
                .collect();
            gaps.retain(|g| !pairs.contains(&(g.exchange, g.symbol.clone())));
            for pair in pairs {
                let objects: Vec<BronzeKey> = lake
                    .list_keys(&paths::bronze_partition(
                        pair.0,
                        MARK_KLINES_1M,
                        &pair.1,
                        *date,
                    ))
                    .await?
                    .iter()
                    .filter_map(BronzeKey::parse)
                    .collect();
                let present: BTreeSet<DateTime<Utc>> = rows
                    .iter()
                    .filter(|r| r.exchange == pair.0 && r.symbol == pair.1)
                    .map(|r| r.open_time)
                    .collect();
                for mut g in missing(pair, *date, &objects, &present, now) {
                    if let Some(t) = before.get(&(pair.clone(), g.start, g.end)) {
                        g.detected_at = *t;
                    }
                    m.gap_minutes += g.minutes();
                    gaps.push(g);
                }
            }
            gaps.sort_by(|a, b| {
                (a.exchange, &a.symbol, a.start).cmp(&(b.exchange, &b.symbol, b.start))
            });
            if let Some(l) = lease {
                l.check().await?;
            }
            if !rows.is_empty() {
                write_parquet(lake, &key, &marks_to_batch(&rows)?, &[0, 1, 2]).await?;
                written.insert(*date);
            }
            match gaps.is_empty() {
                true => lake.delete(&gaps_key).await?,
                false => {
                    write_parquet(lake, &gaps_key, &gaps_to_batch(&gaps)?, &[0, 1, 2]).await?;
                }
            }
        }
        if self.rebuild {
            for table in [paths::mark_table(), paths::mark_gaps_table()] {
                for key in lake.list_keys(&table).await? {
                    if let Some(d) = paths::partition_file_date(&table, &key)
                        && !touched.contains_key(&d)
                    {
                        lake.delete(&key).await?;
                        written.insert(d);
                    }
                }
            }
        }
        if let Some(l) = lease {
            l.check().await?;
        }
        state::write(lake, &paths::mark_state(), &next).await?;
        m.changed_dates = written.into_iter().collect();
        info!(
            objects = m.objects,
            rows = m.rows,
            dates = m.changed_dates.len(),
            gap_minutes = m.gap_minutes,
            "mark prices built"
        );
        Ok(m)
    }
}

/// The minutes of `date` that the pair's requests asked for (from the first asked to the last,
/// closed at the latest fetch) and that are not `present`, as runs with one status.
fn missing(
    (exchange, symbol): &Pair,
    date: NaiveDate,
    objects: &[BronzeKey],
    present: &BTreeSet<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Gap> {
    let (Some(first), Some(last)) = (
        objects.iter().map(|k| k.window_start).min(),
        objects
            .iter()
            .map(|k| k.window_end.min(floor_minute(k.fetched_at)))
            .max(),
    ) else {
        return Vec::new();
    };
    let day_end = day_start(date) + Duration::days(1);
    let mut out: Vec<Gap> = Vec::new();
    let mut t = first.max(day_start(date));
    while t < last.min(day_end) {
        if !present.contains(&t) {
            let close = t + Duration::minutes(1);
            let fetches = objects
                .iter()
                .filter(|k| k.window_start <= t && k.window_end > t && k.fetched_at >= close)
                .count() as i32;
            let status = match fetches {
                0 => GapStatus::Missing,
                1 => GapStatus::Unconfirmed,
                _ => GapStatus::Confirmed,
            };
            match out.last_mut() {
                Some(g) if g.end == t && g.status == status && g.fetches == fetches => {
                    g.end = close
                }
                _ => out.push(Gap {
                    exchange: *exchange,
                    symbol: symbol.clone(),
                    start: t,
                    end: close,
                    status,
                    fetches,
                    detected_at: now,
                }),
            }
        }
        t += Duration::minutes(1);
    }
    out
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

async fn read_table<T>(
    lake: &Lake,
    key: &object_store::path::Path,
    decode: impl Fn(&RecordBatch, &str) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let Some(bytes) = lake.get_opt(key).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in decode_parquet(key, bytes)? {
        out.extend(decode(&b, key.as_ref())?);
    }
    Ok(out)
}

/// One object's closed mark candles inside its window, and how many rows it rejected.
async fn read_object(lake: &Lake, key: &BronzeKey) -> Result<ObjectRows> {
    let path = key.path();
    let Some((envelope, payload)) = bronze::read_decoded(lake, &path).await? else {
        return Ok(None);
    };
    let records = match parse_mark_page(envelope.source, &payload, &envelope.symbol) {
        Ok(r) => r,
        Err(reason) => {
            quarantine(lake, &path, vec![serde_json::json!({ "reason": reason })]).await?;
            return Ok(Some((Vec::new(), 1)));
        }
    };
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    for r in records {
        match r {
            Record::Candle { candle, close_time } => {
                if close_time > envelope.fetched_at
                    || candle.open_time < envelope.window_start
                    || candle.open_time >= envelope.window_end
                {
                    continue;
                }
                rows.push(MarkRow {
                    exchange: candle.exchange,
                    symbol: candle.symbol,
                    open_time: candle.open_time,
                    open: candle.open,
                    high: candle.high,
                    low: candle.low,
                    close: candle.close,
                    fetched_at: envelope.fetched_at,
                });
            }
            Record::Rejected {
                index, raw, reason, ..
            } => rejected
                .push(serde_json::json!({ "index": index, "record": raw, "reason": reason })),
        }
    }
    let n = rejected.len();
    if n > 0 {
        warn!(key = %path, rejected = n, "mark price rows rejected; see quarantine");
        quarantine(lake, &path, rejected).await?;
    }
    Ok(Some((rows, n)))
}

async fn quarantine(
    lake: &Lake,
    bronze: &object_store::path::Path,
    rejected: Vec<serde_json::Value>,
) -> Result<()> {
    bronze::quarantine(lake, &paths::quarantine_mark_for(bronze), bronze, rejected).await
}

/// One row per exchange, symbol and minute: the latest fetch (then the values), sorted.
fn latest_per_minute(rows: Vec<MarkRow>) -> Vec<MarkRow> {
    let mut best: BTreeMap<(Exchange, Symbol, DateTime<Utc>), MarkRow> = BTreeMap::new();
    for r in rows {
        let k = (r.exchange, r.symbol.clone(), r.open_time);
        match best.get(&k) {
            Some(b) if b.rank() >= r.rank() => {}
            _ => {
                best.insert(k, r);
            }
        }
    }
    best.into_values().collect()
}

/// The recorded mark gaps worth fetching again (missing or unconfirmed) of `exchange`, as
/// windows per symbol.
pub async fn refetch_windows(
    lake: &Lake,
    exchange: Exchange,
    symbols: &[Symbol],
) -> Result<Windows> {
    let table = paths::mark_gaps_table();
    let mut out: BTreeMap<Symbol, Vec<crate::bronze::Window>> = BTreeMap::new();
    for key in lake.list_keys(&table).await? {
        if paths::partition_file_date(&table, &key).is_none() {
            continue;
        }
        for g in read_table::<Gap>(lake, &key, gaps_from_batch).await? {
            if g.exchange == exchange && g.status.refetch() && symbols.contains(&g.symbol) {
                out.entry(g.symbol.clone())
                    .or_default()
                    .push((g.start, g.end));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Every recorded mark price gap, oldest first per exchange and symbol.
pub async fn recorded_gaps(lake: &Lake) -> Result<Vec<Gap>> {
    let table = paths::mark_gaps_table();
    let mut out = Vec::new();
    for key in lake.list_keys(&table).await? {
        if paths::partition_file_date(&table, &key).is_some() {
            out.extend(read_table::<Gap>(lake, &key, gaps_from_batch).await?);
        }
    }
    out.sort_by(|a, b| (a.exchange, &a.symbol, a.start).cmp(&(b.exchange, &b.symbol, b.start)));
    Ok(out)
}
