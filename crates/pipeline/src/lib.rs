//! The pipeline: every step of cryptolake and the hourly job, behind one typed configuration
//! and one clock. The CLI, the Lambda functions and the server are front ends over it: they
//! turn arguments, events or requests into calls on [`Pipeline`], and its results and
//! [`events`] into output. None of them holds orchestration of its own.
//!
//! - [`settings`]: `cryptolake.toml` and the `CRYPTOLAKE_*` variables, typed once at load.
//! - [`Pipeline`]: the steps (ingest, refetch, silver, gold, check, gaps, backfill, import),
//!   each under its lease, each leaving a row in `crypto_ops.runs` and a [`StepEvent`].
//! - [`schedule`]: the hourly job on a cron schedule.
//! - [`reads`]: the read model, which answers every reader of the lake from memory.

pub mod bench;
pub mod catalog;
pub mod events;
pub mod export;
mod freshness;
mod pipeline;
pub mod reads;
pub mod schedule;
pub mod settings;

pub use cryptolake_lake::LakeLocation;
pub use cryptolake_model::{Clock, ManualClock, SharedClock, SystemClock, system_clock};
/// The SQL engine the front ends run statements on ([`Pipeline::query_engine`]), with its
/// output formats, the catalogs' DDL and the PostgreSQL dialect: reached through the pipeline,
/// like everything below it.
pub use cryptolake_query as query;
pub use events::{Counts, ErrorKind, EventSink, Freshness, Outcome, Step, StepEvent};
pub use pipeline::{
    BackfillPart, BackfillPlan, BackfillProgress, BackfillReport, BackfillSymbol, ExchangeRun,
    FundingGap, FundingReport, FundingRequest, GapRefetch, ImportReport, IngestRequest, Options,
    PerpetualGaps, Pipeline, RunSummary, TransformReport, describe, incomplete_ingest, verdict,
};
pub use settings::{CronSchedule, Settings, default_toml};

// What front ends name of the layers below, through the one door: the steps' metrics and the
// types of their inputs.
pub use cryptolake_lake::bronze::IngestMetrics;
pub use cryptolake_lake::funding::{
    FundingDay, FundingGoldMetrics, FundingMetrics, FundingOutcome, FundingRow,
};
pub use cryptolake_lake::gold::GoldMetrics;
pub use cryptolake_lake::silver::SilverMetrics;
/// This process's requests to the exchanges (by exchange and HTTP status) and budget waits.
pub use cryptolake_sources::http::Stats as ExchangeRequests;
pub use cryptolake_sources::{ExchangeClient, HistoryStart, Prices};

/// Binance archive import: the market of a file, whether its checksum was verified, and the
/// timestamp unit it was found to use.
pub mod archive {
    pub use cryptolake_lake::bronze::archive::{Checksum, Market};
    pub use cryptolake_sources::binance::archive::TimeUnit;
}

/// The simulated exchange (`simulate`, the demo): a seeded market served over HTTP in the
/// exchanges' formats, with injected faults, and the request budgets clients keep.
pub mod sim {
    pub use cryptolake_sources::limit::Budget;
    pub use cryptolake_sources::sim::*;
}

/// Errors of the pipeline. Each names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key}: {reason}")]
    Setting { key: String, reason: String },
    #[error(transparent)]
    Lake(#[from] cryptolake_lake::Error),
    #[error(transparent)]
    Source(#[from] cryptolake_sources::Error),
    #[error(transparent)]
    Model(#[from] cryptolake_model::Error),
    #[error(transparent)]
    Query(#[from] cryptolake_query::Error),
    #[error(
        "{0}; another cryptolake run is working on this lake: try again later or pass --wait-lock SECONDS"
    )]
    Busy(cryptolake_lake::Error),
    #[error("{0}")]
    Quality(String),
    #[error("{0}")]
    Invalid(String),
    /// A step that finished but left part of its work undone.
    #[error("{message}")]
    Incomplete { kind: ErrorKind, message: String },
}

impl Error {
    /// The kind of problem, for events and exit handling.
    pub fn kind(&self) -> ErrorKind {
        use cryptolake_lake::Error as L;
        match self {
            Error::Busy(_) | Error::Lake(L::Busy { .. }) => ErrorKind::Busy,
            Error::Lake(L::Banned { .. }) => ErrorKind::Banned,
            Error::Lake(L::QualityFailed { .. }) | Error::Quality(_) => ErrorKind::Quality,
            Error::Lake(L::Source { .. }) | Error::Source(_) => ErrorKind::Exchange,
            Error::Lake(L::Invalid(_) | L::LakeUrl { .. })
            | Error::Setting { .. }
            | Error::Model(_)
            | Error::Query(_)
            | Error::Invalid(_) => ErrorKind::Input,
            Error::Lake(_) => ErrorKind::Storage,
            Error::Incomplete { kind, .. } => *kind,
        }
    }

    /// The outcome a step that ended with this error has.
    pub fn outcome(&self) -> Outcome {
        match self.kind() {
            ErrorKind::Busy => Outcome::Busy,
            ErrorKind::Banned => Outcome::Banned,
            _ => Outcome::Failed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Blocks at least this large are mapped on their own (see [`runtime`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// The blocking pool's size on `cores` cores: four threads per core, at least eight. The work
/// it runs is CPU-bound (parsing, encoding) or short reads of local files, so threads beyond a
/// few per core only wait for a core. Each one also keeps a stack and its own allocator cache
/// of freed blocks: with eight per core, a first build of 1,000,000 small objects took 30 to 45
/// s on 2 cores and peaked 2 to 3 MiB higher than with four per core (25 to 26 s); the medium
/// and large builds were the same either way (docs/benchmarks-log.md, "The blocking pool").
pub fn blocking_threads(cores: usize) -> usize {
    (4 * cores).max(8)
}

/// The async runtime every front end runs the pipeline on: one worker per core, and a pool
/// of blocking threads (parsing, Parquet encoding, local file I/O) capped at
/// [`blocking_threads`]. Uncapped, a build of many small objects hands the pool a task per
/// object faster than threads come free, and the pool grows toward tokio's 512 threads, each
/// holding its own stack and allocator caches: memory that grows with the number of objects.
///
/// On glibc it also sets two malloc parameters (the environment's `MALLOC_ARENA_MAX` and
/// `MALLOC_MMAP_THRESHOLD_` still win):
/// - arenas: one per core, not glibc's eight. With an arena per thread, memory freed by one
///   batch of a build sits in other threads' arenas and resident memory creeps up with the
///   build's length (52 MiB at 10,000 objects, 81 MiB at 100,000); with fewer arenas than
///   cores, the cores queue for the allocator's lock (on 2 cores one arena cost 16% more CPU
///   than two in a medium first build).
/// - blocks of 256 KiB and more come from `mmap` and go back to the system when freed. glibc
///   otherwise raises that threshold each time such a block is freed, after which big blocks
///   (listings, a batch's index) are cut from the heap and leave holes in it: the live heap of
///   a first build peaks at 15 MiB at 10,000 and at 100,000 objects alike (heaptrack), but
///   resident memory rose from 49 to 55 MiB; with the fixed threshold, to 50. Not lower: at
///   64 KiB every body of a 115 KB bronze object was mapped and unmapped, and system time
///   went from 3 to 11 CPU-seconds in a medium first build.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            if !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, cores as i32);
            }
            if !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads(cores))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_blocking_pool_is_four_threads_per_core_and_at_least_eight() {
        assert_eq!(blocking_threads(1), 8);
        assert_eq!(blocking_threads(2), 8);
        assert_eq!(blocking_threads(3), 12);
        assert_eq!(blocking_threads(64), 256);
    }

    #[test]
    fn the_runtime_runs_no_more_blocking_tasks_at_once_than_its_pool() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cap = blocking_threads(cores);
        let rt = runtime().unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        rt.block_on(async {
            let tasks: Vec<_> = (0..3 * cap)
                .map(|_| {
                    let (running, most) = (running.clone(), most.clone());
                    tokio::task::spawn_blocking(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        // Every thread of the pool was used, and never one more.
        assert_eq!(most.load(Ordering::SeqCst), cap);
    }
}
