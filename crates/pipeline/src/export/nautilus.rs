//! nautilus_trader's Parquet data catalog, as `ParquetDataCatalog(DIR).bars()` and
//! `.instruments()` read it:
//!
//! - bars in `data/bar/{bar type}/{first ts_init}_{last ts_init}.parquet`, the bar type named
//!   as nautilus names it (`BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL`); prices and volume as
//!   16-byte little-endian integers of the value times 10^16 (the high-precision layout of
//!   nautilus's published builds), `ts_event` and `ts_init` the bar's close in nanoseconds,
//!   rows in time order, and the bar type, instrument and precisions in the schema's metadata;
//! - the instrument each bar type names: a `CurrencyPair` for spot markets in
//!   `data/currency_pair/{id}/`, a `CryptoPerpetual` for perpetuals in
//!   `data/crypto_perpetual/{id}/`.
//!
//! A run adds files holding the bars after the last one the catalog has (one per few days of
//! minutes, one for longer bars), so the files' intervals never overlap (nautilus prunes files
//! by the times in their names).
//! Prices and sizes are written with 8 decimal places, the most any exchange here gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryBuilder, RecordBatch, StringArray,
    UInt8Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{ExportReport, ExportRequest, ExportedFile, Staged, bars_after, pairs, scaled};
use crate::reads::{CandleRow, Interval, ReadModel};
use crate::{Error, Result};

/// Decimal places of every price and size written.
const PRECISION: usize = 8;
/// nautilus's fixed-point scale in its high-precision builds: 10^16.
const FIXED_PLACES: usize = 16;

/// The instrument id nautilus's adapters use for a market, or the venue's own product name.
pub fn instrument_id(exchange: Exchange, symbol: &Symbol) -> String {
    let (base, quote) = (symbol.base(), symbol.quote());
    match exchange {
        Exchange::Binance => format!("{base}{quote}.BINANCE"),
        Exchange::BinanceFutures => format!("{base}{quote}-PERP.BINANCE"),
        Exchange::Coinbase => format!("{base}-{quote}.COINBASE"),
        Exchange::Kraken => format!("{base}{quote}.KRAKEN"),
        Exchange::Okx => format!("{base}-{quote}.OKX"),
        Exchange::OkxSwap => format!("{base}-{quote}-SWAP.OKX"),
        Exchange::Bybit => format!("{base}{quote}-SPOT.BYBIT"),
        Exchange::BybitLinear => format!("{base}{quote}-LINEAR.BYBIT"),
    }
}

/// The step and aggregation of a bar type: `1-MINUTE`, `4-HOUR`, `1-WEEK`, `1-MONTH`.
fn step(interval: Interval) -> String {
    let name = interval.as_str();
    let (n, unit) = name.split_at(name.len() - 1);
    let unit = match unit {
        "m" => "MINUTE",
        "h" => "HOUR",
        "d" => "DAY",
        "w" => "WEEK",
        _ => "MONTH",
    };
    format!("{n}-{unit}")
}

pub fn bar_type(exchange: Exchange, symbol: &Symbol, interval: Interval) -> String {
    format!(
        "{}-{}-LAST-EXTERNAL",
        instrument_id(exchange, symbol),
        step(interval)
    )
}

/// Nanoseconds as nautilus names files: `2024-01-01T00-01-00-000000000Z`.
fn ns_name(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let t = DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!(
        "{}-{:09}Z",
        t.format("%Y-%m-%dT%H-%M-%S"),
        ns % 1_000_000_000
    )
}

/// The `{first}_{last}` interval of a catalog file's name, in nanoseconds.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('_')?;
    let one = |s: &str| -> Option<u64> {
        let s = s.strip_suffix('Z')?;
        let (time, frac) = s.rsplit_once('-')?;
        let t = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H-%M-%S").ok()?;
        let secs = u64::try_from(t.and_utc().timestamp()).ok()?;
        Some(secs * 1_000_000_000 + frac.parse::<u64>().ok()?)
    };
    Some((one(a)?, one(b)?))
}

/// The close of a bar in nanoseconds: what nautilus stamps bars with.
fn close_ns(interval: Interval, start: DateTime<Utc>) -> Result<u64> {
    interval
        .next(start)
        .timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Error::Invalid(format!("{start} is outside nautilus's time range")))
}

/// The newest bar close the catalog holds for a bar type, from its files' names, and how many
/// bars those files hold (from their footers).
fn existing(dir: &Path) -> Result<(Option<u64>, usize)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, 0)),
        Err(e) => return Err(Error::Invalid(format!("{}: {e}", dir.display()))),
    };
    let (mut last, mut rows) = (None, 0usize);
    for entry in entries {
        let entry = entry.map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".parquet") || name.starts_with('.') {
            continue;
        }
        let Some((_, end)) = parse_name(&name) else {
            return Err(Error::Invalid(format!(
                "{}: a catalog file whose name is not nautilus's {{start}}_{{end}}; move it away",
                entry.path().display()
            )));
        };
        last = Some(last.map_or(end, |l: u64| l.max(end)));
        let file = std::fs::File::open(entry.path())
            .map_err(|e| Error::Invalid(format!("{}: {e}", entry.path().display())))?;
        let meta = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| Error::Invalid(format!("{}: {e}", entry.path().display())))?;
        use parquet::file::reader::FileReader;
        rows += usize::try_from(meta.metadata().file_metadata().num_rows()).unwrap_or(0);
    }
    Ok((last, rows))
}

fn fixed(rows: &[CandleRow], f: fn(&CandleRow) -> f64) -> Result<ArrayRef> {
    let mut b = FixedSizeBinaryBuilder::with_capacity(rows.len(), 16);
    for r in rows {
        let raw = scaled(f(r), PRECISION)? * 10i128.pow((FIXED_PLACES - PRECISION) as u32);
        b.append_value(raw.to_le_bytes())
            .map_err(|e| Error::Invalid(format!("a bar value: {e}")))?;
    }
    Ok(Arc::new(b.finish()))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let (staged, file) = Staged::create(path)?;
    let err = |e: parquet::errors::ParquetError| Error::Invalid(format!("{}: {e}", path.display()));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.close().map_err(err)?;
    staged.commit()
}

fn bars_batch(
    exchange: Exchange,
    symbol: &Symbol,
    interval: Interval,
    rows: &[CandleRow],
) -> Result<RecordBatch> {
    let bin = |n: &str| Field::new(n, DataType::FixedSizeBinary(16), false);
    let metadata = HashMap::from([
        ("bar_type".to_string(), bar_type(exchange, symbol, interval)),
        ("instrument_id".to_string(), instrument_id(exchange, symbol)),
        ("price_precision".to_string(), PRECISION.to_string()),
        ("size_precision".to_string(), PRECISION.to_string()),
    ]);
    let schema = Schema::new(vec![
        bin("open"),
        bin("high"),
        bin("low"),
        bin("close"),
        bin("volume"),
        Field::new("ts_event", DataType::UInt64, false),
        Field::new("ts_init", DataType::UInt64, false),
    ])
    .with_metadata(metadata);
    let ts: Vec<u64> = rows
        .iter()
        .map(|r| close_ns(interval, r.time))
        .collect::<Result<_>>()?;
    let ts: ArrayRef = Arc::new(UInt64Array::from(ts));
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            fixed(rows, |r| r.open)?,
            fixed(rows, |r| r.high)?,
            fixed(rows, |r| r.low)?,
            fixed(rows, |r| r.close)?,
            fixed(rows, |r| r.volume)?,
            ts.clone(),
            ts,
        ],
    )
    .map_err(|e| Error::Invalid(format!("building nautilus bars: {e}")))
}

/// The instrument's file, written once: nautilus needs it to read the bars in a backtest.
fn write_instrument(catalog: &Path, exchange: Exchange, symbol: &Symbol) -> Result<()> {
    let id = instrument_id(exchange, symbol);
    let (class, folder) = if exchange.is_perpetual() {
        ("CryptoPerpetual", "crypto_perpetual")
    } else {
        ("CurrencyPair", "currency_pair")
    };
    let dir = catalog.join("data").join(folder).join(&id);
    if dir.exists() {
        return Ok(());
    }
    let text = |v: Option<&str>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let increment = format!("0.{}1", "0".repeat(PRECISION - 1));
    let (base, quote) = (symbol.base(), symbol.quote());
    let raw_symbol = match exchange {
        Exchange::Binance | Exchange::BinanceFutures | Exchange::Bybit | Exchange::BybitLinear => {
            format!("{base}{quote}")
        }
        Exchange::OkxSwap => format!("{symbol}-SWAP"),
        Exchange::Coinbase | Exchange::Kraken | Exchange::Okx => symbol.to_string(),
    };
    let mut fields = vec![
        ("id", text(Some(&id))),
        ("raw_symbol", text(Some(&raw_symbol))),
        ("base_currency", text(Some(base))),
        ("quote_currency", text(Some(quote))),
    ];
    if exchange.is_perpetual() {
        fields.push(("settlement_currency", text(Some(quote))));
        fields.push(("is_inverse", Arc::new(BooleanArray::from(vec![false]))));
    }
    let precision: ArrayRef = Arc::new(UInt8Array::from(vec![PRECISION as u8]));
    fields.extend([
        ("price_precision", precision.clone()),
        ("size_precision", precision),
        ("price_increment", text(Some(&increment))),
        ("size_increment", text(Some(&increment))),
        ("multiplier", text(Some("1"))),
        ("lot_size", text(None)),
        ("max_quantity", text(None)),
        ("min_quantity", text(None)),
        ("max_notional", text(None)),
        ("min_notional", text(None)),
        ("max_price", text(None)),
        ("min_price", text(None)),
        ("margin_init", text(Some("0"))),
        ("margin_maint", text(Some("0"))),
        ("maker_fee", text(Some("0"))),
        ("taker_fee", text(Some("0"))),
        ("info", Arc::new(BinaryArray::from(vec![None::<&[u8]>]))),
        ("ts_event", Arc::new(UInt64Array::from(vec![0u64]))),
        ("ts_init", Arc::new(UInt64Array::from(vec![0u64]))),
    ]);
    let schema = Schema::new(
        fields
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    )
    .with_metadata(HashMap::from([("class".to_string(), class.to_string())]));
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        fields.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| Error::Invalid(format!("building the instrument {id}: {e}")))?;
    let zero = ns_name(0);
    write_parquet(&dir.join(format!("{zero}_{zero}.parquet")), &batch)
}

/// Writes (or extends) the nautilus_trader catalog at `catalog`.
pub async fn export(
    reads: &ReadModel,
    catalog: &Path,
    req: &ExportRequest,
) -> Result<ExportReport> {
    let pairs = pairs(reads, req).await?;
    let mut report = ExportReport::default();
    for (exchange, symbol) in &pairs {
        write_instrument(catalog, *exchange, symbol)?;
    }
    for interval in &req.intervals {
        let dirs: Vec<PathBuf> = pairs
            .iter()
            .map(|(e, s)| {
                catalog
                    .join("data")
                    .join("bar")
                    .join(bar_type(*e, s, *interval))
            })
            .collect();
        let held: Vec<(Option<u64>, usize)> =
            dirs.iter().map(|d| existing(d)).collect::<Result<_>>()?;
        // The last bar held starts one interval before its close.
        let after: Vec<Option<DateTime<Utc>>> = held
            .iter()
            .map(|(last, _)| {
                last.map(|ns| {
                    let close = DateTime::from_timestamp_nanos(ns as i64);
                    interval.start_of(close - chrono::Duration::microseconds(1))
                })
            })
            .collect();
        let mut added = vec![(0usize, None::<DateTime<Utc>>); pairs.len()];
        bars_after(reads, &pairs, &after, *interval, req, |i, rows| {
            let (exchange, symbol) = &pairs[i];
            let (first, last) = (rows[0].time, rows[rows.len() - 1].time);
            let (a, b) = (close_ns(*interval, first)?, close_ns(*interval, last)?);
            let batch = bars_batch(*exchange, symbol, *interval, &rows)?;
            write_parquet(
                &dirs[i].join(format!("{}_{}.parquet", ns_name(a), ns_name(b))),
                &batch,
            )?;
            added[i] = (added[i].0 + rows.len(), Some(last));
            Ok(())
        })
        .await?;
        for (i, (exchange, symbol)) in pairs.iter().enumerate() {
            let ((n, last), (_, count)) = (added[i], held[i]);
            if n == 0 && count == 0 {
                continue;
            }
            report.files.push(ExportedFile {
                path: format!("data/bar/{}", bar_type(*exchange, symbol, *interval)),
                exchange: *exchange,
                symbol: symbol.clone(),
                interval: *interval,
                added: n,
                total: count + n,
                last: last.or(after[i]),
            });
        }
    }
    Ok(report)
}
