//! The pipeline: every step of cryptolake and the hourly job, behind one typed configuration
//! and one clock. The CLI, the Lambda functions and the server are front ends over it: they
//! turn arguments, events or requests into calls on [`Pipeline`], and its results and
//! [`events`] into output. None of them holds orchestration of its own.
//!
//! - [`settings`]: `cryptolake.toml` and the `CRYPTOLAKE_*` variables, typed once at load.
//! - [`Pipeline`]: the steps (ingest, refetch, silver, gold, check, gaps, backfill, import),
//!   each under its lease, each leaving a row in `crypto_ops.runs` and a [`StepEvent`].
//! - [`schedule`]: the hourly job on a cron schedule.

pub mod events;
mod freshness;
mod pipeline;
pub mod schedule;
pub mod settings;

pub use cryptolake_model::{Clock, ManualClock, SharedClock, SystemClock, system_clock};
pub use events::{Counts, ErrorKind, EventSink, Freshness, Outcome, Step, StepEvent};
pub use pipeline::{
    BackfillPlan, BackfillReport, BackfillSymbol, ExchangeRun, GapRefetch, ImportReport,
    IngestRequest, Options, Pipeline, RunSummary, TransformReport, describe, incomplete_ingest,
    verdict,
};
pub use settings::{DEFAULT_TOML, Settings};

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

/// The async runtime every front end runs the pipeline on: one worker per core, and a pool
/// of blocking threads (parsing, Parquet encoding, local file I/O) capped at eight per core.
/// Uncapped, a build of many small objects hands the pool a task per object faster than
/// threads come free, and the pool grows toward tokio's 512 threads, each holding its own
/// stack and allocator caches: memory that grows with the number of objects.
///
/// On glibc it also caps malloc's arenas at one per core, not glibc's eight: with an arena per
/// thread, memory freed by one batch of a build sits in other threads' arenas, and resident
/// memory creeps up with the length of the build (measured: 52 MiB at 10,000 objects and
/// 81 MiB at 100,000 with the default arenas; 51 and 55 MiB with one). Fewer arenas than
/// cores make the cores queue for the allocator's locks (on 2 cores, one arena cost 16% more
/// CPU than two in a medium first build).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::env::var("MALLOC_ARENA_MAX")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(cores as i32);
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((8 * cores).max(16))
        .build()
}
