//! Arrow schemas of the lake's tables: the one definition writers, readers and DDL share.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Parquet timestamps are microseconds in UTC: what Athena, Spark and Hive read correctly.
pub fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Hive partition column of every table, `date=YYYY-MM-DD`. It lives in the path, not the file.
pub const PARTITION_COLUMN: &str = "date";

/// Silver `ohlcv_1h` as stored in each Parquet file (without the partition column).
pub fn ohlcv_1h() -> SchemaRef {
    let mut fields = identity_fields();
    fields.extend([
        Field::new("base", DataType::Utf8, false),
        Field::new("quote", DataType::Utf8, false),
    ]);
    fields.extend(candle_fields());
    fields.extend([
        Field::new("minutes_present", DataType::Int32, false),
        Field::new("minute_mask", DataType::Int64, false),
        Field::new("empty_mask", DataType::Int64, false),
        Field::new("ingested_at", timestamp_utc(), false),
    ]);
    Arc::new(Schema::new(fields))
}

fn identity_fields() -> Vec<Field> {
    vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
    ]
}

/// The columns silver's two tables share after their identity: open time, prices and amounts.
fn candle_fields() -> Vec<Field> {
    vec![
        Field::new("open_time", timestamp_utc(), false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Float64, false),
        Field::new("quote_volume", DataType::Float64, true),
        Field::new("trade_count", DataType::Int64, true),
    ]
}

/// Silver `ohlcv_1m` as stored in each Parquet file (without the partition column): one row
/// per exchange, symbol and closed UTC minute. Unlike `ohlcv_1h` it has no `base` and `quote`:
/// they are the two halves of `symbol` (`split_part(symbol, '-', 1)`), and at sixty times the
/// rows they cost 6% of a first build's CPU.
pub fn ohlcv_1m() -> SchemaRef {
    let mut fields = identity_fields();
    fields.extend(candle_fields());
    fields.extend([
        Field::new("taker_buy_volume", DataType::Float64, true),
        Field::new("taker_buy_quote_volume", DataType::Float64, true),
        Field::new("fetched_at", timestamp_utc(), false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Gold `ohlcv_1d` as stored in each Parquet file (without the partition column).
pub fn ohlcv_1d() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Float64, false),
        Field::new("quote_volume", DataType::Float64, true),
        Field::new("trade_count", DataType::Int64, true),
        Field::new("hours_present", DataType::Int32, false),
        Field::new("is_complete", DataType::Boolean, false),
    ]))
}

/// `crypto_ops.runs`: one row per step of every run (without the partition column).
pub fn runs() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("started_at", timestamp_utc(), false),
        Field::new("finished_at", timestamp_utc(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("inputs", DataType::Int64, false),
        Field::new("outputs", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("quarantined", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, false),
    ]))
}

/// `crypto_ops.quality_results`: one row per finding (or pass) of a quality rule.
pub fn quality_results() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("checked_at", timestamp_utc(), false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("exchange", DataType::Utf8, true),
        Field::new("symbol", DataType::Utf8, true),
        Field::new("subject", DataType::Utf8, true),
        Field::new("observed", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, true),
        Field::new("message", DataType::Utf8, false),
    ]))
}

/// `crypto_ops.gaps`: minutes missing from silver, one row per run of consecutive minutes with
/// one status within a UTC day (without the partition column).
pub fn gaps() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("gap_start", timestamp_utc(), false),
        Field::new("gap_end", timestamp_utc(), false),
        Field::new("minutes", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("fetches", DataType::Int32, false),
        Field::new("detected_at", timestamp_utc(), false),
    ]))
}

/// Silver `funding_rates` as stored in each Parquet file (without the partition column): one
/// row per exchange, symbol and funding slot of a perpetual market.
pub fn funding_rates() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        // The funding slot: the funding time to the whole minute, one key per event.
        Field::new("funding_slot", timestamp_utc(), false),
        // The funding time exactly as the venue gave it.
        Field::new("funding_time", timestamp_utc(), false),
        Field::new("rate", DataType::Float64, false),
        // Hours since the symbol's previous funding slot (for its first, until the next);
        // null while the symbol has only one slot.
        Field::new("interval_hours", DataType::Float64, true),
        Field::new("mark_price", DataType::Float64, true),
        Field::new("fetched_at", timestamp_utc(), false),
    ]))
}

/// Gold `funding_1d`: per exchange, symbol and UTC day, what funding paid (without the
/// partition column).
pub fn funding_1d() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("rate_sum", DataType::Float64, false),
        Field::new("events", DataType::Int32, false),
        Field::new("rate_min", DataType::Float64, false),
        Field::new("rate_max", DataType::Float64, false),
        // Every slot of the symbol's interval in the day is present: no slot missing between
        // the day's events, and funding on both sides of the day.
        Field::new("is_complete", DataType::Boolean, false),
    ]))
}

/// `crypto_ops.funding_gaps`: funding slots missing between two present ones (without the
/// partition column, the date of the gap's start).
pub fn funding_gaps() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        // The present slots on either side: one or more slots are missing strictly between.
        Field::new("after_slot", timestamp_utc(), false),
        Field::new("before_slot", timestamp_utc(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("fetches", DataType::Int32, false),
        Field::new("detected_at", timestamp_utc(), false),
    ]))
}

/// Silver `mark_ohlcv_1m`: one row per perpetual market, symbol and closed UTC minute of its
/// mark price (without the partition column). A mark price is an index, not trades: it has
/// no volume.
pub fn mark_ohlcv_1m() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("open_time", timestamp_utc(), false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("fetched_at", timestamp_utc(), false),
    ]))
}
