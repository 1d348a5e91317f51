//! The read model's typed answers, and their Arrow batches for callers that render tables
//! (JSON, CSV, Arrow IPC): the column names and types are the ones the API has always served.

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use cryptolake_lake::columns::Builder;
use cryptolake_lake::gaps::Gap;
use cryptolake_lake::ops::RunRecord;
use cryptolake_lake::quality::RecordedResult;
use cryptolake_model::{Exchange, Outcome, Symbol};
use serde::Serialize;

use super::Interval;
use crate::Result;

/// One candle as charts use it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandleRow {
    pub time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// Minutes with a candle in the bar.
    pub minutes_present: i32,
    /// The bar's length in minutes.
    pub minutes: i64,
    /// Every minute of the bar present or confirmed empty.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candles {
    pub interval: Interval,
    pub rows: Vec<CandleRow>,
}

impl Candles {
    pub fn to_batch(&self) -> Result<RecordBatch> {
        Ok(Builder::new(&self.rows)
            .time(|r| r.time)
            .float64(|r| r.open)
            .float64(|r| r.high)
            .float64(|r| r.low)
            .float64(|r| r.close)
            .float64(|r| r.volume)
            .int32(|r| r.minutes_present)
            .int64(|r| r.minutes)
            .boolean(|r| r.complete)
            .finish_named(&[
                "time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "minutes_present",
                "minutes",
                "complete",
            ])?)
    }
}

/// An exchange and symbol silver holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SymbolRow {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub first_hour: Option<DateTime<Utc>>,
    pub last_hour: Option<DateTime<Utc>>,
    pub hours: i64,
}

pub fn symbols_batch(rows: &[SymbolRow]) -> Result<RecordBatch> {
    Ok(Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .time_opt(|r| r.first_hour)
        .time_opt(|r| r.last_hour)
        .int64(|r| r.hours)
        .finish_named(&["exchange", "symbol", "first_hour", "last_hour", "hours"])?)
}

/// One row of the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverviewRow {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub days_covered: i64,
    pub days_complete: i64,
    pub missing_minutes: i64,
    pub unconfirmed_minutes: i64,
    pub confirmed_minutes: i64,
    pub unservable_minutes: i64,
    /// Violations whose latest evaluation still finds them.
    pub open_violations: i64,
    pub last_complete_hour: Option<DateTime<Utc>>,
    pub lag_seconds: Option<f64>,
    pub stale: bool,
    pub last_run_status: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub freshness_threshold_seconds: i64,
    pub rows: Vec<OverviewRow>,
}

pub fn runs_batch(rows: &[RunRecord]) -> Result<RecordBatch> {
    let seconds = |r: &RunRecord| {
        let us = (r.finished_at - r.started_at)
            .num_microseconds()
            .unwrap_or(0);
        (us as f64 / 1e3).round() / 1e3
    };
    Ok(Builder::new(rows)
        .text(|r| r.run_id.as_str())
        .text_owned(|r| r.step.label(r.exchange))
        .time(|r| r.started_at)
        .time(|r| r.finished_at)
        .float64(seconds)
        .text(|r| r.status.as_str())
        .int64(|r| r.inputs)
        .int64(|r| r.outputs)
        .int64(|r| r.rows)
        .int64(|r| r.quarantined)
        .text_opt(|r| r.error.as_deref())
        .finish_named(&[
            "run_id",
            "step",
            "started_at",
            "finished_at",
            "seconds",
            "status",
            "inputs",
            "outputs",
            "rows",
            "quarantined",
            "error",
        ])?)
}

/// Funding events as the API answers them.
pub fn funding_batch(rows: &[cryptolake_lake::funding::FundingRow]) -> Result<RecordBatch> {
    Ok(Builder::new(rows)
        .text(|f| f.exchange.as_str())
        .text(|f| f.symbol.as_str())
        .time(|f| f.slot)
        .time(|f| f.funding_time)
        .float64(|f| f.rate)
        .float64_opt(|f| f.interval_hours)
        .float64_opt(|f| f.mark_price)
        .finish_named(&[
            "exchange",
            "symbol",
            "funding_slot",
            "funding_time",
            "rate",
            "interval_hours",
            "mark_price",
        ])?)
}

/// Mark price bars as the API answers them.
pub fn mark_batch(rows: &[super::MarkBar]) -> Result<RecordBatch> {
    Ok(Builder::new(rows)
        .time(|b| b.time)
        .float64(|b| b.open)
        .float64(|b| b.high)
        .float64(|b| b.low)
        .float64(|b| b.close)
        .int32(|b| b.minutes_present)
        .finish_named(&["time", "open", "high", "low", "close", "minutes_present"])?)
}

pub fn gaps_batch(rows: &[Gap]) -> Result<RecordBatch> {
    Ok(Builder::new(rows)
        .text(|g| g.exchange.as_str())
        .text(|g| g.symbol.as_str())
        .time(|g| g.start)
        .time(|g| g.end)
        .int64(Gap::minutes)
        .text(|g| g.status.as_str())
        .int32(|g| g.fetches)
        .finish_named(&GAP_COLUMNS)?)
}

/// The gaps of a report as a table for people: start and end to the minute, as text.
pub fn gap_report_batch(rows: &[&Gap]) -> Result<RecordBatch> {
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%MZ").to_string();
    Ok(Builder::new(rows)
        .text(|g| g.exchange.as_str())
        .text(|g| g.symbol.as_str())
        .text_owned(|g| minute(g.start))
        .text_owned(|g| minute(g.end))
        .int64(|g| g.minutes())
        .text(|g| g.status.as_str())
        .int32(|g| g.fetches)
        .finish_named(&GAP_COLUMNS)?)
}

/// The columns of a gap table.
const GAP_COLUMNS: [&str; 7] = [
    "exchange",
    "symbol",
    "gap_start",
    "gap_end",
    "minutes",
    "status",
    "fetches",
];

pub fn quality_batch(rows: &[RecordedResult]) -> Result<RecordBatch> {
    Ok(Builder::new(rows)
        .time(|r| r.checked_at)
        .text(|r| r.run_id.as_str())
        .text(|r| r.step.as_str())
        .text(|r| r.result.rule.as_str())
        .text(|r| r.result.action.as_str())
        .text(|r| r.result.status.as_str())
        .text_opt(|r| r.result.exchange.map(Exchange::as_str))
        .text_opt(|r| r.result.symbol.as_ref().map(Symbol::as_str))
        .text_opt(|r| r.result.subject.as_deref())
        .float64_opt(|r| r.result.observed)
        .float64_opt(|r| r.result.threshold)
        .text(|r| r.result.message.as_str())
        .finish_named(&[
            "checked_at",
            "run_id",
            "step",
            "rule",
            "action",
            "status",
            "exchange",
            "symbol",
            "subject",
            "observed",
            "threshold",
            "message",
        ])?)
}
