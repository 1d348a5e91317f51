//! SQL over the lake, the way Athena queries it on AWS: `crypto_analytics` holds silver,
//! `crypto_gold` holds gold, `crypto_ops` holds run history. The session is read-only: DDL, DML (including `COPY`) and
//! session statements are refused before planning reaches any table.

pub mod ddl;
mod functions;
mod limits;
pub mod memory;
mod output;
pub mod postgres;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use cryptolake_lake::view::LakeView;
use cryptolake_lake::{Lake, paths};
use cryptolake_model::schema;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;
use object_store::ObjectStore;

pub use limits::{Limits, format_bytes};
pub use output::{OutputFormat, render};

/// The SQL databases and their tables: (database, table, lake prefix, file schema).
pub fn tables() -> Vec<(&'static str, &'static str, String, SchemaRef)> {
    vec![
        (
            "crypto_analytics",
            "ohlcv_1h",
            paths::SILVER_OHLCV_1H.to_string(),
            schema::ohlcv_1h(),
        ),
        (
            "crypto_analytics",
            "ohlcv_1m",
            paths::SILVER_OHLCV_1M.to_string(),
            schema::ohlcv_1m(),
        ),
        (
            "crypto_gold",
            "ohlcv_1d",
            paths::GOLD_OHLCV_1D.to_string(),
            schema::ohlcv_1d(),
        ),
        (
            "crypto_analytics",
            "funding_rates",
            paths::SILVER_FUNDING_RATES.to_string(),
            schema::funding_rates(),
        ),
        (
            "crypto_analytics",
            "mark_ohlcv_1m",
            paths::SILVER_MARK_OHLCV_1M.to_string(),
            schema::mark_ohlcv_1m(),
        ),
        (
            "crypto_gold",
            "funding_1d",
            paths::GOLD_FUNDING_1D.to_string(),
            schema::funding_1d(),
        ),
        (
            "crypto_ops",
            "runs",
            paths::OPS_RUNS.to_string(),
            schema::runs(),
        ),
        (
            "crypto_ops",
            "quality_results",
            paths::OPS_QUALITY_RESULTS.to_string(),
            schema::quality_results(),
        ),
        (
            "crypto_ops",
            "gaps",
            paths::OPS_GAPS.to_string(),
            schema::gaps(),
        ),
        (
            "crypto_ops",
            "funding_gaps",
            paths::OPS_FUNDING_GAPS.to_string(),
            schema::funding_gaps(),
        ),
        (
            "crypto_ops",
            "mark_gaps",
            paths::OPS_MARK_GAPS.to_string(),
            schema::gaps(),
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Query(String),
    #[error(
        "read-only: {0}. cryptolake sql only reads the lake; tables change through ingest, silver and gold"
    )]
    ReadOnly(String),
    #[error("output: {0}")]
    Output(#[from] arrow::error::ArrowError),
    #[error("cannot open table {table}: {reason}")]
    Table { table: String, reason: String },
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Timeout(String),
}

impl Error {
    /// The PostgreSQL error code (SQLSTATE) that fits: what a PostgreSQL client would get
    /// from PostgreSQL itself for the same kind of failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // read_only_sql_transaction
            Error::ReadOnly(_) => "25006",
            // query_canceled, as for statement_timeout
            Error::Timeout(_) => "57014",
            // out_of_memory, or program_limit_exceeded for a refused join or row count
            Error::Limit(m) if m.contains("memory limit") || m.contains("resource limits") => {
                "53200"
            }
            Error::Limit(_) => "54000",
            // io_error: a table's files could not be read
            Error::Table { .. } => "58030",
            Error::Output(_) => "XX000",
            Error::Query(m) => {
                if m.contains("SQL error") || m.contains("ParserError") {
                    // syntax_error
                    "42601"
                } else if m.contains("table function") && m.contains("not found") {
                    // undefined_function
                    "42883"
                } else if m.contains("table") && m.contains("not found") {
                    // undefined_table
                    "42P01"
                } else if m.contains("No field named")
                    || m.contains("column") && m.contains("not found")
                {
                    // undefined_column
                    "42703"
                } else if m.contains("Invalid function")
                    || m.contains("function") && m.contains("not found")
                {
                    // undefined_function
                    "42883"
                } else if m.contains("Error during planning") || m.contains("Schema error") {
                    // syntax_error_or_access_rule_violation
                    "42000"
                } else if m.contains("damaged file") {
                    // data_corrupted
                    "XX001"
                } else {
                    // internal_error
                    "XX000"
                }
            }
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        if let DataFusionError::ResourcesExhausted(m) = e.find_root() {
            return Error::Limit(format!(
                "the query went past its resource limits: {}. Raise query.memory_limit (CRYPTOLAKE_QUERY_MEMORY_LIMIT) or query.spill_limit (CRYPTOLAKE_QUERY_SPILL_LIMIT), or ask for less",
                first_line(m)
            ));
        }
        let msg = e.strip_backtrace();
        if msg.contains("DDL not supported")
            || msg.contains("DML not supported")
            || msg.contains("Statement not supported")
        {
            Error::ReadOnly(
                msg.trim_start_matches("Error during planning: ")
                    .to_string(),
            )
        } else {
            Error::Query(msg)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most rows a join without an equality (a cross or nested-loop join) may produce, by the
/// planner's own estimate: such a join computes without yielding, so it is refused before it
/// starts rather than stopped after.
pub const MAX_JOIN_ROWS: usize = 1_000_000_000;

/// Refuses a plan holding a cross or nested-loop join estimated past [`MAX_JOIN_ROWS`].
fn check_joins(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> Result<()> {
    let name = plan.name();
    if name == "CrossJoinExec" || name == "NestedLoopJoinExec" {
        let children = plan.children();
        // The per-node estimate is all this needs; the newer StatisticsContext walks the tree.
        #[allow(deprecated)]
        let rows = |i: usize| {
            children
                .get(i)
                .and_then(|c| c.partition_statistics(None).ok())
                .and_then(|s| s.num_rows.get_value().copied())
        };
        if let (Some(l), Some(r)) = (rows(0), rows(1))
            && l.saturating_mul(r) > MAX_JOIN_ROWS
        {
            return Err(Error::Limit(format!(
                "the query joins {l} rows with {r} without a condition that pairs them ({} combinations, more than {MAX_JOIN_ROWS}); join on a key, or filter both sides first",
                l.saturating_mul(r)
            )));
        }
    }
    for child in plan.children() {
        check_joins(child)?;
    }
    Ok(())
}

/// The plan with the output of every join without an equality wrapped so that it takes its
/// share of the task's cooperative budget: such a join can produce batches for minutes from
/// what it has buffered, and whatever consumes them (an aggregate) would never give the task
/// back. Wrapped, the task yields now and then, so a statement past its time limit is
/// actually stopped, not just answered for.
fn yielding_joins(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    Ok(plan
        .transform_up(|node| {
            Ok(match node.name() {
                "CrossJoinExec" | "NestedLoopJoinExec" => {
                    Transformed::yes(Arc::new(CooperativeExec::new(node)) as _)
                }
                _ => Transformed::no(node),
            })
        })?
        .data)
}

/// Whether `msg` is a file reader's error that does not name the file.
fn names_no_file(msg: &str) -> bool {
    let lower = msg.to_ascii_lowercase();
    (lower.contains("parquet") || lower.contains("footer") || lower.contains("eof"))
        && !lower.contains(".parquet")
}

/// The first line of a message, without the pool's list of consumers.
fn first_line(m: &str) -> &str {
    m.lines().next().unwrap_or(m).trim_end_matches(':').trim()
}

/// A statement's result, counted against the memory limit while this is held.
pub struct Held(#[allow(dead_code)] MemoryReservation);

/// A read-only SQL session over one lake.
pub struct QueryEngine {
    ctx: SessionContext,
    limits: Limits,
    lake: Lake,
    /// Statements that may run at once, shared by every engine of a long-running front end.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// The runtime statements run on, apart from the one that serves requests: a statement that
/// computes without yielding (a function over huge arguments) holds one of these threads, never
/// one that answers health checks and other requests. `None` if it could not be made, and
/// statements then run where they are asked.
fn statement_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("cryptolake-sql")
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no separate runtime for statements"))
                .ok()
        })
        .as_ref()
}

/// Aborts a statement's task when the one waiting for it goes away (a cancel request, a client
/// that disconnected, a time limit).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl QueryEngine {
    /// A session under the default [`Limits`].
    pub async fn open(lake: &Lake) -> Result<QueryEngine> {
        Self::open_with(lake, &Limits::default()).await
    }

    /// A session whose every statement runs under `limits`. Tables read the lake through
    /// [`LakeView`]: only keys in the lake's layout, never a write; and the tables with one
    /// file per partition read exactly `part-00000.parquet`, whatever else lies beside it.
    pub async fn open_with(lake: &Lake, limits: &Limits) -> Result<QueryEngine> {
        Self::open_over(lake, limits, None).await
    }

    /// [`QueryEngine::open_with`], with the tables `held` holds partitions of scanned from
    /// there (see [`memory`]): a long-running front end's statements then neither list the
    /// tables' folders nor read their files.
    pub async fn open_from_memory(
        lake: &Lake,
        limits: &Limits,
        held: Arc<dyn memory::Partitions>,
        slots: Arc<tokio::sync::Semaphore>,
    ) -> Result<QueryEngine> {
        let mut engine = Self::open_over(lake, limits, Some(held)).await?;
        engine.slots = Some(slots);
        Ok(engine)
    }

    async fn open_over(
        lake: &Lake,
        limits: &Limits,
        held: Option<Arc<dyn memory::Partitions>>,
    ) -> Result<QueryEngine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "crypto_analytics");
        let ctx = SessionContext::new_with_config_rt(config, limits::runtime(limits)?);
        limits::cap_functions(&ctx, limits.function_output_bytes())?;
        functions::restrict(&ctx, &[]);
        let (url, store) = match lake.bucket_store() {
            Some((bucket_url, store)) => (ObjectStoreUrl::parse(bucket_url)?, store.clone()),
            None => (
                ObjectStoreUrl::local_filesystem(),
                Arc::new(object_store::local::LocalFileSystem::new()) as Arc<dyn ObjectStore>,
            ),
        };
        ctx.runtime_env()
            .register_object_store(url.as_ref(), Arc::new(LakeView::new(store)));
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| Error::Query("default catalog missing".into()))?;
        for (db, _, _, _) in tables() {
            if catalog.schema(db).is_none() {
                catalog.register_schema(db, Arc::new(MemorySchemaProvider::new()))?;
            }
        }
        for (db, table, prefix, file_schema) in tables() {
            let table_err = |reason: String| Error::Table {
                table: format!("{db}.{table}"),
                reason,
            };
            let url = ListingTableUrl::parse(format!("{}/", lake.url_of(&prefix.as_str().into())))
                .and_then(|u| {
                    u.with_glob(match paths::one_file_per_partition(&prefix) {
                        true => paths::part_file_name(),
                        false => "*.parquet",
                    })
                })
                .map_err(|e| table_err(e.strip_backtrace()))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![(
                    schema::PARTITION_COLUMN.to_string(),
                    DataType::Date32,
                )]);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(file_schema);
            let files: Arc<dyn datafusion::datasource::TableProvider> = Arc::new(
                ListingTable::try_new(config).map_err(|e| table_err(e.strip_backtrace()))?,
            );
            let provider = match (&held, paths::one_file_per_partition(&prefix)) {
                (Some(held), true) => {
                    Arc::new(memory::FromMemory::new(prefix.clone(), files, held.clone())) as _
                }
                _ => files,
            };
            ctx.register_table(TableReference::partial(db, table), provider)?;
        }
        Ok(QueryEngine {
            ctx,
            limits: limits.clone(),
            lake: lake.clone(),
            slots: None,
        })
    }

    /// `msg`, followed by the damaged files of the lake's tables (the reader's errors do not
    /// say which file they are about).
    async fn name_damaged(&self, msg: String) -> String {
        let damaged: Vec<String> = match cryptolake_lake::verify::verify(&self.lake, true).await {
            Ok(found) => found
                .into_iter()
                .filter(|f| f.problem == cryptolake_lake::verify::Problem::Damaged)
                .map(|f| f.key)
                .collect(),
            Err(_) => Vec::new(),
        };
        match damaged.as_slice() {
            [] => msg,
            files => format!(
                "{msg}; damaged file(s): {}. `cryptolake check --files` says how each is repaired",
                files.join(", ")
            ),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs one read-only statement and collects its result, within the time limit; the result
    /// counts against the memory limit as it arrives.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.query_table(sql, None).await?.1)
    }

    /// [`QueryEngine::query`] with the result's schema (an empty result has one too), and at
    /// most `max_rows` rows: more is an error, not a cut.
    pub async fn query_table(
        &self,
        sql: &str,
        max_rows: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let ctx = self.ctx.clone();
        let sql = sql.to_string();
        let (schema, batches, _) = self
            .run(&self.ctx, max_rows, None, async move {
                let df = ctx.sql_with_options(&sql, read_only()).await?;
                Ok(df.logical_plan().clone())
            })
            .await?;
        Ok((schema, batches))
    }

    /// A session of its own over the same tables, functions, limits and memory pool: its
    /// settings (the time zone, …) are its own, never another session's. One per client of a
    /// long-lived front end.
    pub fn session(&self) -> SessionContext {
        SessionContext::new_with_state(self.ctx.state())
    }

    /// Refuses any plan that would write, define or change something: the same rules as
    /// [`QueryEngine::query`] applies to SQL text, for a plan made elsewhere (a prepared
    /// statement, a wire protocol's parser).
    pub fn check_read_only(plan: &LogicalPlan) -> Result<()> {
        read_only().verify_plan(plan).map_err(Error::from)
    }

    /// Runs a read-only `plan` in `session` (one of [`QueryEngine::session`]) under the
    /// engine's limits: the time limit (or `timeout`, when shorter), the memory limit counting
    /// the result, and at most `max_rows` rows. The result stays counted against the memory
    /// limit until the [`Held`] returned with it is dropped: a front end keeps it until the
    /// client has read the result, so clients that do not read cannot hold more than the
    /// limit between them.
    pub async fn execute(
        &self,
        session: &SessionContext,
        plan: LogicalPlan,
        max_rows: Option<usize>,
        timeout: Option<std::time::Duration>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, Held)> {
        Self::check_read_only(&plan)?;
        let (schema, batches, held) = self
            .run(session, max_rows, timeout, async move { Ok(plan) })
            .await?;
        Ok((schema, batches, Held(held)))
    }

    /// The engine's own session, to install functions and catalogs every
    /// [`QueryEngine::session`] made afterwards inherits.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans (through `plan`), then runs one statement as its own task: the time limit holds
    /// even while an operator computes without yielding, and the task is aborted when it
    /// passes.
    async fn run(
        &self,
        ctx: &SessionContext,
        max_rows: Option<usize>,
        timeout: Option<std::time::Duration>,
        plan: impl std::future::Future<Output = Result<LogicalPlan>> + Send + 'static,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, MemoryReservation)> {
        let ctx = ctx.clone();
        let limits = self.limits.clone();
        let slots = self.slots.clone();
        let roots = lake_roots(&self.lake);
        let run = async move {
            // Waiting for a slot counts against the statement's time.
            let _slot = match slots {
                Some(s) => Some(
                    s.acquire_owned()
                        .await
                        .map_err(|_| Error::Query("the server is stopping".into()))?,
                ),
                None => None,
            };
            let plan = plan.await?;
            let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            let plan = ctx.state().create_physical_plan(&plan).await?;
            check_joins(&plan)?;
            let plan = yielding_joins(plan)?;
            let mut stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())?;
            let pool = ctx.runtime_env().memory_pool.clone();
            let reservation = MemoryConsumer::new("query result").register(&pool);
            let mut out = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                if let Some(max) = max_rows
                    && rows > max
                {
                    return Err(Error::Limit(format!(
                        "the result has more than {max} rows, the most one request returns; add a LIMIT or aggregate"
                    )));
                }
                reservation
                    .try_grow(batch.get_array_memory_size())
                    .map_err(|_| {
                        Error::Limit(format!(
                            "the result is larger than the memory limit of {}; add a LIMIT or aggregate, or raise query.memory_limit (CRYPTOLAKE_QUERY_MEMORY_LIMIT)",
                            format_bytes(limits.memory_bytes as u64)
                        ))
                    })?;
                out.push(batch);
            }
            if explain {
                out = out
                    .iter()
                    .map(|b| without_paths(b, &roots))
                    .collect::<Result<_>>()?;
            }
            Ok::<_, Error>((schema, out, reservation))
        };
        let task = match statement_runtime() {
            Some(rt) => rt.spawn(run),
            None => tokio::spawn(run),
        };
        let abort = task.abort_handle();
        let _stop_when_dropped = AbortOnDrop(abort.clone());
        let limit = timeout.map_or(self.limits.timeout, |t| t.min(self.limits.timeout));
        let finished = tokio::time::timeout(limit, task).await;
        match finished {
            Ok(Ok(Err(Error::Query(msg)))) if names_no_file(&msg) => {
                Err(Error::Query(self.name_damaged(msg).await))
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Query(format!("the query stopped: {e}"))),
            Err(_) => {
                abort.abort();
                Err(Error::Timeout(if limit < self.limits.timeout {
                    format!(
                        "canceling statement due to statement timeout ({})",
                        humanize(limit)
                    )
                } else {
                    format!(
                        "the query ran past its time limit of {}; raise query.timeout (CRYPTOLAKE_QUERY_TIMEOUT) or ask for less",
                        humanize(limit)
                    )
                }))
            }
        }
    }
}

/// How the lake's root shows in a plan: its URL, and its path as the object store names it
/// (`tmp/x/lake/` for `file:///tmp/x/lake`, `prefix/` in a bucket), longest first.
fn lake_roots(lake: &Lake) -> Vec<String> {
    let url = lake.root_url().trim_end_matches('/').to_string();
    let path = url
        .split_once("://")
        .map(|(scheme, rest)| match scheme {
            "file" => rest.trim_start_matches('/').to_string(),
            _ => rest
                .split_once('/')
                .map(|(_, p)| p.to_string())
                .unwrap_or_default(),
        })
        .unwrap_or_default();
    let mut roots = vec![format!("{url}/"), format!("/{path}/"), format!("{path}/")];
    roots.retain(|r| r.trim_matches('/').len() > 1);
    roots
}

/// `batch` (an EXPLAIN's rows) with the lake's root taken out of its text: a SQL user sees
/// table keys (`silver/ohlcv_1h/date=…`), never where the lake is kept.
fn without_paths(batch: &RecordBatch, roots: &[String]) -> Result<RecordBatch> {
    use arrow::array::{Array, AsArray, StringArray};
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 => {
                let s = c.as_string::<i32>();
                let cleaned: StringArray = (0..s.len())
                    .map(|i| {
                        (!s.is_null(i)).then(|| {
                            roots
                                .iter()
                                .fold(s.value(i).to_string(), |t, r| t.replace(r.as_str(), ""))
                        })
                    })
                    .collect();
                Arc::new(cleaned) as arrow::array::ArrayRef
            }
            _ => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// `300s` as `5m`, `90s` as `90s`.
fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
