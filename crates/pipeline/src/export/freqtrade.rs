//! freqtrade's data directory, as its feather data handler reads it: one Arrow IPC file per
//! pair and timeframe (LZ4 frame compressed, as freqtrade writes them), columns `date`
//! (milliseconds, UTC), `open`, `high`, `low`, `close`, `volume`. Spot pairs are
//! `BTC_USDT-1m.feather` at the top of the directory; perpetuals are
//! `futures/BTC_USDT_USDT-1m-futures.feather`, where freqtrade's futures mode looks. The month
//! is `1Mo` in file names, as freqtrade spells it.
//!
//! A perpetual pair also gets what freqtrade's futures backtests read beside its candles, at
//! the timeframe freqtrade asks them at (`mark_ohlcv_timeframe` and `funding_fee_timeframe`,
//! 1h): `futures/BTC_USDT_USDT-1h-mark.feather` (hourly mark price candles from
//! `mark_ohlcv_1m`, an hour only when all its minutes are there; volume 0) and
//! `futures/BTC_USDT_USDT-1h-funding_rate.feather` (columns `date`, `funding_rate`: one row per
//! funding event of `funding_rates`, at its slot).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};

use super::{ExportReport, ExportRequest, ExportedFile, Staged, bars_after, pairs};
use crate::reads::{CandleRow, Interval, ReadModel};
use crate::{Error, Result};

/// The venue a freqtrade data directory holds: a venue's spot and perpetual markets share one.
fn venue(e: Exchange) -> &'static str {
    match e {
        Exchange::Binance | Exchange::BinanceFutures => "binance",
        Exchange::Coinbase => "coinbase",
        Exchange::Kraken => "kraken",
        Exchange::Okx | Exchange::OkxSwap => "okx",
        Exchange::Bybit | Exchange::BybitLinear => "bybit",
    }
}

/// The file of a pair and timeframe, relative to the data directory.
pub fn file_name(exchange: Exchange, symbol: &Symbol, interval: Interval) -> String {
    // freqtrade writes the month as `1Mo` (its minute is `1m`).
    let tf = interval.as_str().replace('M', "Mo");
    let (base, quote) = (symbol.base(), symbol.quote());
    if exchange.is_perpetual() {
        format!("futures/{base}_{quote}_{quote}-{tf}-futures.feather")
    } else {
        format!("{base}_{quote}-{tf}.feather")
    }
}

/// A freqtrade file's columns: `date` (ms, UTC), then `values`, all doubles.
fn schema_of(values: &[&str]) -> SchemaRef {
    let mut fields = vec![Field::new(
        "date",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )];
    fields.extend(
        values
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, false)),
    );
    Arc::new(Schema::new(fields))
}

/// Candles: `date, open, high, low, close, volume`.
fn schema() -> SchemaRef {
    schema_of(&["open", "high", "low", "close", "volume"])
}

/// Funding rates: `date, funding_rate`, as freqtrade stores them.
fn funding_schema() -> SchemaRef {
    schema_of(&["funding_rate"])
}

/// The timeframe freqtrade asks a perpetual's mark candles and funding rates at.
const FUTURES_DATA_TIMEFRAME: &str = "1h";

/// The mark candles and funding rates of a perpetual pair, relative to the data directory.
pub fn futures_data_files(symbol: &Symbol) -> [String; 2] {
    let (base, quote) = (symbol.base(), symbol.quote());
    let tf = FUTURES_DATA_TIMEFRAME;
    [
        format!("futures/{base}_{quote}_{quote}-{tf}-mark.feather"),
        format!("futures/{base}_{quote}_{quote}-{tf}-funding_rate.feather"),
    ]
}

fn batch(rows: &[CandleRow]) -> Result<RecordBatch> {
    let col = |f: fn(&CandleRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let date =
        TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.time.timestamp_millis()))
            .with_timezone("UTC");
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(date),
            col(|r| r.open),
            col(|r| r.high),
            col(|r| r.low),
            col(|r| r.close),
            col(|r| r.volume),
        ],
    )
    .map_err(|e| Error::Invalid(format!("building a freqtrade batch: {e}")))
}

/// What a file already holds: its candles and the newest one's start.
#[derive(Default)]
struct Existing {
    rows: usize,
    last: Option<DateTime<Utc>>,
}

/// Reads the file at `path` a batch at a time, each cast to the export's schema (freqtrade's
/// own files hold microseconds and pandas metadata); no file is no batch.
fn each_batch(
    path: &Path,
    want: &SchemaRef,
    mut f: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Invalid(format!("{}: {e}", path.display()))),
    };
    let bad = |why: String| {
        Error::Invalid(format!(
            "{}: {why}; not a candle file this export can extend (move it away to write it anew)",
            path.display()
        ))
    };
    let reader = FileReader::try_new(file, None).map_err(|e| bad(e.to_string()))?;
    for b in reader {
        let b = b.map_err(|e| bad(e.to_string()))?;
        let columns = want
            .fields()
            .iter()
            .map(|field| {
                let c = b
                    .column_by_name(field.name())
                    .ok_or_else(|| bad(format!("no column {}", field.name())))?;
                arrow::compute::cast(c, field.data_type()).map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        f(RecordBatch::try_new(want.clone(), columns).map_err(|e| bad(e.to_string()))?)?;
    }
    Ok(())
}

fn read_existing(path: &Path, schema: &SchemaRef) -> Result<Existing> {
    let mut out = Existing::default();
    each_batch(path, schema, |b| {
        let dates = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("cast to the schema");
        for i in 0..dates.len() {
            let t = DateTime::from_timestamp_millis(dates.value(i)).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: date {} out of range",
                    path.display(),
                    dates.value(i)
                ))
            })?;
            out.last = Some(out.last.map_or(t, |l| l.max(t)));
        }
        out.rows += b.num_rows();
        Ok(())
    })?;
    Ok(out)
}

/// A pair's file being rewritten: what it held, then the new candles as they come.
struct Rewrite {
    staged: Staged,
    writer: FileWriter<std::fs::File>,
}

impl Rewrite {
    fn start(path: &Path, schema: &SchemaRef) -> Result<Rewrite> {
        let (staged, file) = Staged::create(path)?;
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .map_err(|e| Error::Invalid(format!("LZ4 for {}: {e}", path.display())))?;
        let mut writer =
            FileWriter::try_new_with_options(file, schema, options).map_err(ipc_error(path))?;
        each_batch(path, schema, |b| writer.write(&b).map_err(ipc_error(path)))?;
        Ok(Rewrite { staged, writer })
    }

    fn finish(mut self, path: &Path) -> Result<()> {
        self.writer.finish().map_err(ipc_error(path))?;
        self.staged.commit()
    }
}

fn ipc_error(path: &Path) -> impl Fn(arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Invalid(format!("{}: {e}", path.display()))
}

/// Writes (or extends) the freqtrade data directory `dir`.
pub async fn export(reads: &ReadModel, dir: &Path, req: &ExportRequest) -> Result<ExportReport> {
    let pairs = pairs(reads, req).await?;
    let venues: BTreeSet<&str> = pairs.iter().map(|(e, _)| venue(*e)).collect();
    if venues.len() > 1 {
        return Err(Error::Invalid(format!(
            "a freqtrade data directory holds one exchange, and the lake holds {}: choose one with --exchange",
            venues.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut report = ExportReport::default();
    for interval in &req.intervals {
        let paths: Vec<PathBuf> = pairs
            .iter()
            .map(|(e, s)| dir.join(file_name(*e, s, *interval)))
            .collect();
        let mut existing: Vec<Existing> = Vec::with_capacity(pairs.len());
        for p in &paths {
            existing.push(read_existing(p, &schema())?);
        }
        let after: Vec<Option<DateTime<Utc>>> = existing.iter().map(|e| e.last).collect();
        // Each file with new candles is rewritten as they come, a few days at a time: what it
        // held first, then the new candles; renamed into place once whole.
        let mut rewrites: Vec<Option<Rewrite>> = (0..pairs.len()).map(|_| None).collect();
        let mut counts = vec![(0usize, None::<DateTime<Utc>>); pairs.len()];
        bars_after(reads, &pairs, &after, *interval, req, |i, rows| {
            counts[i].0 += rows.len();
            counts[i].1 = rows.last().map(|r| r.time);
            if rewrites[i].is_none() {
                rewrites[i] = Some(Rewrite::start(&paths[i], &schema())?);
            }
            let w = rewrites[i].as_mut().expect("started");
            w.writer.write(&batch(&rows)?).map_err(ipc_error(&paths[i]))
        })
        .await?;
        for (i, (exchange, symbol)) in pairs.iter().enumerate() {
            let (n, last) = counts[i];
            if let Some(w) = rewrites[i].take() {
                w.finish(&paths[i])?;
            }
            if n > 0 || existing[i].rows > 0 {
                report.files.push(ExportedFile {
                    path: file_name(*exchange, symbol, *interval),
                    exchange: *exchange,
                    symbol: symbol.clone(),
                    interval: *interval,
                    added: n,
                    total: existing[i].rows + n,
                    last: last.or(existing[i].last),
                });
            }
        }
    }
    for (exchange, symbol) in pairs.iter().filter(|(e, _)| e.is_perpetual()) {
        futures_data(reads, dir, req, *exchange, symbol, &mut report).await?;
    }
    Ok(report)
}

/// Writes (or extends) a perpetual pair's hourly mark candles and its funding rates.
async fn futures_data(
    reads: &ReadModel,
    dir: &Path,
    req: &ExportRequest,
    exchange: Exchange,
    symbol: &Symbol,
    report: &mut ExportReport,
) -> Result<()> {
    let to = req.to.unwrap_or_else(|| reads.now());
    let from = req
        .from
        .unwrap_or(to - chrono::Duration::days(crate::reads::MAX_FUNDING_DAYS - 1));
    let [mark_file, funding_file] = futures_data_files(symbol);
    // Mark candles: the hours whose every minute the lake holds.
    let path = dir.join(&mark_file);
    let existing = read_existing(&path, &schema())?;
    let start = existing
        .last
        .map_or(from, |l| (l + chrono::Duration::hours(1)).max(from));
    let mut hours: Vec<[f64; 6]> = Vec::new();
    if start < to {
        let minutes = reads.marks(exchange, symbol, start, to).await?;
        for hour in minutes.chunk_by(|a, b| {
            a.open_time.timestamp().div_euclid(3600) == b.open_time.timestamp().div_euclid(3600)
        }) {
            let first = &hour[0];
            if hour.len() == 60 && first.open_time.timestamp() % 3600 == 0 {
                hours.push([
                    first.open_time.timestamp_millis() as f64,
                    first.open,
                    hour.iter().map(|m| m.high).fold(f64::MIN, f64::max),
                    hour.iter().map(|m| m.low).fold(f64::MAX, f64::min),
                    hour[59].close,
                    0.0,
                ]);
            }
        }
    }
    let columns = |rows: &[[f64; 6]], n: usize| -> Vec<ArrayRef> {
        let mut c: Vec<ArrayRef> = vec![Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r[0] as i64))
                .with_timezone("UTC"),
        )];
        c.extend((1..=n).map(|i| {
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r[i]))) as ArrayRef
        }));
        c
    };
    append(&path, &schema(), columns(&hours, 5))?;
    push_file(report, (exchange, symbol), mark_file, (&hours, &existing));
    // Funding rates at their slots.
    let path = dir.join(&funding_file);
    let existing = read_existing(&path, &funding_schema())?;
    let start = existing
        .last
        .map_or(from, |l| (l + chrono::Duration::seconds(1)).max(from));
    let mut events: Vec<[f64; 6]> = Vec::new();
    if start < to {
        for f in reads.funding(exchange, symbol, start, to).await? {
            events.push([f.slot.timestamp_millis() as f64, f.rate, 0.0, 0.0, 0.0, 0.0]);
        }
    }
    append(&path, &funding_schema(), columns(&events, 1))?;
    push_file(
        report,
        (exchange, symbol),
        funding_file,
        (&events, &existing),
    );
    Ok(())
}

/// Rewrites `path` with what it held and then `columns` (nothing to do without new rows).
fn append(path: &Path, schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<()> {
    if columns.first().is_none_or(|c| c.is_empty()) {
        return Ok(());
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Invalid(format!("building {}: {e}", path.display())))?;
    let mut w = Rewrite::start(path, schema)?;
    w.writer.write(&batch).map_err(ipc_error(path))?;
    w.finish(path)
}

fn push_file(
    report: &mut ExportReport,
    (exchange, symbol): (Exchange, &Symbol),
    path: String,
    (new, existing): (&[[f64; 6]], &Existing),
) {
    if new.is_empty() && existing.rows == 0 {
        return;
    }
    report.files.push(ExportedFile {
        path,
        exchange,
        symbol: symbol.clone(),
        interval: Interval::H1,
        added: new.len(),
        total: existing.rows + new.len(),
        last: new
            .last()
            .and_then(|r| DateTime::from_timestamp_millis(r[0] as i64))
            .or(existing.last),
    });
}
