//! Run history: every step of every run leaves one row in `crypto_ops.runs`.

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Outcome, Step, schema};

use crate::columns::Builder;
use crate::{Lake, Result, paths, write_parquet};

/// One step of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub step: Step,
    /// The exchange of a per-exchange step; the table's `step` is then `ingest:binance`.
    pub exchange: Option<Exchange>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: Outcome,
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

/// Writes the record as its own small Parquet file, so that concurrent runs never contend.
pub async fn record_run(lake: &Lake, r: &RunRecord) -> Result<()> {
    let label = r.step.label(r.exchange);
    let batch = Builder::new(std::slice::from_ref(r))
        .text(|r| r.run_id.as_str())
        .text(|_| label.as_str())
        .time(|r| r.started_at)
        .time(|r| r.finished_at)
        .text(|r| r.status.as_str())
        .int64(|r| r.inputs)
        .int64(|r| r.outputs)
        .int64(|r| r.rows)
        .int64(|r| r.quarantined)
        .text_opt(|r| r.error.as_deref())
        .text(|r| r.details.as_str())
        .finish(schema::runs())?;
    let key = paths::run_record(r.started_at, &r.run_id, &label, rand::random());
    write_parquet(lake, &key, &batch, &[]).await?;
    // Readers in other processes learn from this one small object that the lake changed.
    lake.put(&paths::change_marker(), bytes::Bytes::from(key.to_string()))
        .await?;
    Ok(())
}
