//! The lake: where every byte of cryptolake lives and how it gets there.
//!
//! - [`store`] turns a lake URL into an object store; [`paths`] is the only place that builds keys.
//! - [`bronze`] appends raw exchange responses; [`silver`] and [`gold`] are build operations that
//!   plan which partitions change, execute, and return metrics.
//! - [`state`] keeps incremental progress under `_state/`; [`lease`] keeps two runs from
//!   overlapping.

pub mod bronze;
pub mod columns;
mod encode;
mod error;
pub mod funding;
pub mod gaps;
pub mod gold;
pub mod lease;
pub mod mark;
pub mod ops;
mod parquet_io;
pub mod paths;
pub mod quality;
mod requests;
mod rollup;
pub mod silver;
pub mod state;
pub mod store;
pub mod verify;
pub mod view;

pub use encode::{
    MinuteRow, daily_from_batch, daily_to_batch, hourly_from_batch, hourly_to_batch,
    minutes_from_batch, minutes_to_batch, quality_from_batch, runs_from_batch,
};
pub use error::{Error, Result};
pub use parquet_io::{decode_parquet, read_parquet, write_parquet};
pub use requests::{RequestCounts, SimulatedLatency};
pub use store::{Lake, LakeLocation, LakeOptions};

/// A run id: sortable by start time and unique enough across processes.
/// Starts `work` as its own task at once, so it makes progress (on another core) while the
/// caller is busy; the returned future yields its result, a panic in it as an error naming
/// `what`. The builds run one task per date through this, a few dates at a time.
pub(crate) fn in_task<T, F>(what: String, work: F) -> impl std::future::Future<Output = Result<T>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let task = tokio::spawn(work);
    async move {
        task.await
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?
    }
}

/// How many dates a build works on at once: two per core, so that every core has work while
/// other dates wait on the store, and more on an object store, where each date waits on
/// requests with tens of milliseconds of latency. Never fewer than `min`.
pub(crate) fn dates_in_flight(lake: &Lake, min: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let floor = match lake.waits_on_requests() {
        true => min.max(16),
        false => min,
    };
    (2 * cores).max(floor)
}

pub fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{:08x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}
