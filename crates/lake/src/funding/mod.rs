//! Funding of perpetual markets: bronze (dataset `funding_rate`), silver
//! `crypto_analytics.funding_rates`, its gap report `crypto_ops.funding_gaps`, and gold
//! `crypto_gold.funding_1d`.
//!
//! Silver keeps one row per exchange, symbol and funding slot, the most recently fetched copy
//! of each (ties broken by the values, so the result never depends on the order objects are
//! read in). Merging new rows into a partition that way gives what a rebuild from all of
//! bronze gives, so the build reads only the objects the bronze manifest announces since its
//! watermark. What depends on a symbol's other slots (each slot's interval, the missing ones)
//! comes from the symbol's slot series, kept in the build's state as runs ([`series::Runs`]).

mod build;
mod gold;
mod ingest;
pub mod series;

use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol, schema};

pub use build::{Funding, FundingBuild, FundingMetrics, ManifestBuild, recorded_gaps};
pub use gold::{FundingDay, FundingGold, FundingGoldMetrics, funding_days_from_batch};
pub use ingest::{FundingIngest, FundingOutcome};

use crate::columns::Builder;
use crate::{Error, Result};

/// Rows of `funding_rates` are sorted by exchange, symbol and slot.
pub const SORTED_BY: [usize; 3] = [0, 1, 2];

/// One row of `crypto_analytics.funding_rates`.
#[derive(Debug, Clone, PartialEq)]
pub struct FundingRow {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub slot: DateTime<Utc>,
    pub funding_time: DateTime<Utc>,
    pub rate: f64,
    pub interval_hours: Option<f64>,
    pub mark_price: Option<f64>,
    pub fetched_at: DateTime<Utc>,
}

impl FundingRow {
    /// The order in which copies of one slot win: the latest fetch, then the values, so any
    /// order of reading keeps the same copy.
    fn rank(&self) -> (DateTime<Utc>, DateTime<Utc>, u64, u64) {
        (
            self.fetched_at,
            self.funding_time,
            self.rate.to_bits(),
            self.mark_price.map_or(0, f64::to_bits),
        )
    }
}

pub fn funding_to_batch(rows: &[FundingRow]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .time(|r| r.slot)
        .time(|r| r.funding_time)
        .float64(|r| r.rate)
        .float64_opt(|r| r.interval_hours)
        .float64_opt(|r| r.mark_price)
        .time(|r| r.fetched_at)
        .finish(schema::funding_rates())
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, what: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Data {
            key: what.to_string(),
            reason: format!("column {name} is missing or of another type"),
        })
}

fn time_at(
    a: &TimestampMicrosecondArray,
    i: usize,
    name: &str,
    what: &str,
) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(a.value(i)).ok_or_else(|| Error::Data {
        key: what.to_string(),
        reason: format!("{name} of row {i} is out of range"),
    })
}

fn opt_f64(a: &Float64Array, i: usize) -> Option<f64> {
    a.is_valid(i).then(|| a.value(i))
}

/// The rows of a `funding_rates` batch (`what` names its file in errors).
pub fn funding_from_batch(batch: &RecordBatch, what: &str) -> Result<Vec<FundingRow>> {
    let exchange = column::<StringArray>(batch, "exchange", what)?;
    let symbol = column::<StringArray>(batch, "symbol", what)?;
    let slot = column::<TimestampMicrosecondArray>(batch, "funding_slot", what)?;
    let time = column::<TimestampMicrosecondArray>(batch, "funding_time", what)?;
    let rate = column::<Float64Array>(batch, "rate", what)?;
    let interval = column::<Float64Array>(batch, "interval_hours", what)?;
    let mark = column::<Float64Array>(batch, "mark_price", what)?;
    let fetched = column::<TimestampMicrosecondArray>(batch, "fetched_at", what)?;
    let bad = |i: usize, reason: String| Error::Data {
        key: what.to_string(),
        reason: format!("row {i}: {reason}"),
    };
    (0..batch.num_rows())
        .map(|i| {
            Ok(FundingRow {
                exchange: exchange
                    .value(i)
                    .parse()
                    .map_err(|e: cryptolake_model::Error| bad(i, e.to_string()))?,
                symbol: Symbol::parse(symbol.value(i)).map_err(|e| bad(i, e.to_string()))?,
                slot: time_at(slot, i, "funding_slot", what)?,
                funding_time: time_at(time, i, "funding_time", what)?,
                rate: rate.value(i),
                interval_hours: opt_f64(interval, i),
                mark_price: opt_f64(mark, i),
                fetched_at: time_at(fetched, i, "fetched_at", what)?,
            })
        })
        .collect()
}
