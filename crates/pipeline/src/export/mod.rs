//! Exports of the lake's candles in the formats traders' tools read as they are: freqtrade's
//! data directory ([`freqtrade`]) and nautilus_trader's Parquet data catalog ([`nautilus`]).
//!
//! Both read through the read model, both are incremental (a file already exported keeps its
//! candles, and a new run adds only the candles after its last one), and both leave out what
//! the lake does not hold: a minute without a candle is not written, and a bar of a longer
//! timeframe is written only when every one of its minutes is present or confirmed empty, so
//! no candle is ever made up or forward-filled. Files are written whole beside their place and
//! renamed into it, so a reader never sees half of one.

pub mod freqtrade;
pub mod nautilus;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol, day_start};
use serde::Serialize;

use crate::reads::{CandleRow, Interval, ReadModel, Source};
use crate::{Error, Result};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Only these exchanges (empty: every exchange the lake holds).
    pub exchanges: Vec<Exchange>,
    /// Only these symbols (empty: every symbol of the chosen exchanges).
    pub symbols: Vec<Symbol>,
    /// The bar widths to write, each a file (or a catalog directory) of its own.
    pub intervals: Vec<Interval>,
    /// Bars starting at or after this instant (default: the first the lake holds).
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant (default: the last the lake holds).
    pub to: Option<DateTime<Utc>>,
}

/// One file an export wrote or left as it was.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// Relative to the export's directory.
    pub path: String,
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub interval: Interval,
    /// Candles this run added.
    pub added: usize,
    /// Candles the export holds for this exchange, symbol and interval after the run.
    pub total: usize,
    /// The newest candle's start, after the run.
    pub last: Option<DateTime<Utc>>,
}

/// Where and in which tool's layout an export writes.
#[derive(Debug, Clone)]
pub enum ExportTarget {
    /// freqtrade's data directory (`--datadir`).
    Freqtrade(PathBuf),
    /// A nautilus_trader `ParquetDataCatalog` directory.
    Nautilus(PathBuf),
}

impl crate::Pipeline {
    /// Writes the lake's candles where `target` says, adding only what it does not hold yet.
    pub async fn export(&self, target: &ExportTarget, req: &ExportRequest) -> Result<ExportReport> {
        if req.intervals.is_empty() {
            return Err(Error::Invalid("no timeframe to export".into()));
        }
        match target {
            ExportTarget::Freqtrade(dir) => freqtrade::export(self.reads(), dir, req).await,
            ExportTarget::Nautilus(dir) => nautilus::export(self.reads(), dir, req).await,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub files: Vec<ExportedFile>,
}

impl ExportReport {
    pub fn added(&self) -> usize {
        self.files.iter().map(|f| f.added).sum()
    }

    /// One row per file, for the front ends' tables.
    pub fn to_batch(&self) -> Result<arrow::array::RecordBatch> {
        Ok(cryptolake_lake::columns::Builder::new(&self.files)
            .text(|f| f.path.as_str())
            .text(|f| f.exchange.as_str())
            .text(|f| f.symbol.as_str())
            .text(|f| f.interval.as_str())
            .int64(|f| f.added as i64)
            .int64(|f| f.total as i64)
            .time_opt(|f| f.last)
            .finish_named(&[
                "path",
                "exchange",
                "symbol",
                "timeframe",
                "added",
                "candles",
                "last_candle",
            ])?)
    }
}

/// The exchanges and symbols an export covers: those silver holds, narrowed by the request.
pub(crate) async fn pairs(
    reads: &ReadModel,
    req: &ExportRequest,
) -> Result<Vec<(Exchange, Symbol)>> {
    let held = reads.symbols().await?;
    for e in &req.exchanges {
        if !held.iter().any(|s| s.exchange == *e) {
            return Err(Error::Invalid(format!(
                "--exchange {e}: the lake holds no candles of it"
            )));
        }
    }
    for sym in &req.symbols {
        if !held.iter().any(|s| {
            &s.symbol == sym && (req.exchanges.is_empty() || req.exchanges.contains(&s.exchange))
        }) {
            return Err(Error::Invalid(format!(
                "--symbols {sym}: the lake holds no candles of it on the chosen exchanges"
            )));
        }
    }
    Ok(held
        .into_iter()
        .filter(|s| req.exchanges.is_empty() || req.exchanges.contains(&s.exchange))
        .filter(|s| req.symbols.is_empty() || req.symbols.contains(&s.symbol))
        .map(|s| (s.exchange, s.symbol))
        .collect())
}

/// The whole bars of `interval` for each pair that start after its `after` (and in the
/// request's range), oldest first: sub-hour bars a few days of minutes at a time, so memory
/// holds a few days of the minute table whatever the range; each day handed to `sink` with
/// the bars of every pair.
pub(crate) async fn bars_after(
    reads: &ReadModel,
    pairs: &[(Exchange, Symbol)],
    after: &[Option<DateTime<Utc>>],
    interval: Interval,
    req: &ExportRequest,
    mut sink: impl FnMut(usize, Vec<CandleRow>) -> Result<()>,
) -> Result<()> {
    let symbols = reads.symbols().await?;
    let held = |i: usize| {
        symbols
            .iter()
            .find(|s| (s.exchange, &s.symbol) == (pairs[i].0, &pairs[i].1))
            .and_then(|s| Some((s.first_hour?, s.last_hour? + Duration::hours(1))))
    };
    // The range every pair still needs: from the earliest start to the latest end.
    let (mut lo, mut hi): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    for (i, after) in after.iter().enumerate() {
        let Some((first, end)) = held(i) else {
            continue;
        };
        let start = [Some(first), req.from, after.map(|t| interval.next(t))]
            .into_iter()
            .flatten()
            .max()
            .expect("first is set");
        let end = req.to.map_or(end, |t| t.min(end));
        if start < end {
            lo = Some(lo.map_or(start, |l| l.min(start)));
            hi = Some(hi.map_or(end, |h| h.max(end)));
        }
    }
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(());
    };
    // Sub-hour bars never cross midnight: a few whole days at a time.
    let step = match interval.source() {
        Source::Minutes => Duration::days(8),
        Source::Hours => hi - lo + Duration::days(1),
    };
    let mut from = match interval.source() {
        Source::Minutes => day_start(lo.date_naive()),
        Source::Hours => lo,
    };
    while from < hi {
        let to = (from + step).min(hi);
        let all = reads
            .candles_of(pairs, interval, from, to, usize::MAX)
            .await?;
        for (i, candles) in all.into_iter().enumerate() {
            let rows: Vec<CandleRow> = candles
                .rows
                .into_iter()
                .filter(|r| r.complete)
                .filter(|r| after[i].is_none_or(|a| r.time > a))
                .filter(|r| req.from.is_none_or(|f| r.time >= f))
                .collect();
            if !rows.is_empty() {
                sink(i, rows)?;
            }
        }
        from = to;
    }
    Ok(())
}

/// A file being written beside its place, renamed into it by [`Staged::commit`]; dropped
/// uncommitted, it is removed and the place keeps what it held.
pub(crate) struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl Staged {
    pub(crate) fn create(path: &Path) -> Result<(Staged, std::fs::File)> {
        let dir = path
            .parent()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Invalid(format!("creating {}: {e}", dir.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::Invalid(format!("creating {}: {e}", tmp.display())))?;
        let staged = Staged {
            tmp,
            path: path.to_path_buf(),
            done: false,
        };
        Ok((staged, file))
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| {
            Error::Invalid(format!("moving {} into place: {e}", self.path.display()))
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A decimal with exactly `places` places as an integer of that many places, from its
/// correctly rounded text (exact where an f64 times a power of ten would not be).
pub(crate) fn scaled(v: f64, places: usize) -> Result<i128> {
    let text = format!("{v:.places$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = format!("{int}{frac}");
    digits
        .parse::<i128>()
        .map_err(|_| Error::Invalid(format!("{v} cannot be written as a decimal")))
}
