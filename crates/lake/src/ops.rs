//! Run history: every step of every run leaves one row in `crypto_ops.runs`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use cryptolake_model::schema;

use crate::{Lake, Result, paths, write_parquet};

/// One step of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// `ingest`, `silver`, `gold`, ...
    pub step: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `ok` or `failed`.
    pub status: String,
    /// What the step read: pages requested, bronze objects, silver partitions.
    pub inputs: i64,
    /// What it wrote: bronze objects, partitions.
    pub outputs: i64,
    /// Candles fetched, hours or days written.
    pub rows: i64,
    pub quarantined: i64,
    pub error: Option<String>,
    /// The step's full metrics as JSON.
    pub details: String,
}

fn ts(t: DateTime<Utc>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC")
}

/// Writes the record as its own small Parquet file, so that concurrent runs never contend.
pub async fn record_run(lake: &Lake, r: &RunRecord) -> Result<()> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![r.run_id.as_str()])),
        Arc::new(StringArray::from(vec![r.step.as_str()])),
        Arc::new(ts(r.started_at)),
        Arc::new(ts(r.finished_at)),
        Arc::new(StringArray::from(vec![r.status.as_str()])),
        Arc::new(Int64Array::from(vec![r.inputs])),
        Arc::new(Int64Array::from(vec![r.outputs])),
        Arc::new(Int64Array::from(vec![r.rows])),
        Arc::new(Int64Array::from(vec![r.quarantined])),
        Arc::new(StringArray::from(vec![r.error.as_deref()])),
        Arc::new(StringArray::from(vec![r.details.as_str()])),
    ];
    let batch = RecordBatch::try_new(schema::runs(), cols)?;
    let key = paths::run_record(r.started_at, &r.run_id, &r.step);
    write_parquet(lake, &key, &batch, &[]).await
}
