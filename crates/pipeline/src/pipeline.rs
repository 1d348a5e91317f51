//! The steps as every front end runs them: leases, clients from settings, run records, quality
//! verdicts and step events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use cryptolake_lake::bronze::archive::{ImportOutcome, Market, import_archive};
use cryptolake_lake::bronze::{
    Ingest, IngestMetrics, KLINES_1M, KLINES_1M_ARCHIVE, MARK_KLINES_1M, Window, plan_windows,
};
use cryptolake_lake::funding::{
    FundingBuild, FundingGold, FundingGoldMetrics, FundingIngest, FundingMetrics, FundingOutcome,
};
use cryptolake_lake::gaps::{self, GapScan};
use cryptolake_lake::gold::{GoldBuild, GoldMetrics};
use cryptolake_lake::lease::{Lease, LeaseOptions};
use cryptolake_lake::mark::{MarkBuild, MarkMetrics};
use cryptolake_lake::ops::{RunRecord, record_run};
use cryptolake_lake::paths::{self, BronzeKey};
use cryptolake_lake::quality::{self, QualityResult};
use cryptolake_lake::silver::{Batch, SilverBuild, SilverMetrics};
use cryptolake_lake::{Lake, RequestCounts, new_run_id};
use cryptolake_model::{Exchange, SharedClock, Symbol};
use cryptolake_sources::Prices;
use cryptolake_sources::http::RetryPolicy;
use cryptolake_sources::{ExchangeClient, HistoryStart};
use serde::Serialize;
use tracing::{info, warn};

use crate::events::{Counts, ErrorKind, EventSink, Freshness, Outcome, Step, StepEvent};
use crate::settings::Settings;
use crate::{Error, Result};

/// How a front end opens the pipeline.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for another run's lease (zero: fail at once).
    pub lock_wait: StdDuration,
    pub clock: SharedClock,
    /// Who holds leases, for messages to other runs (`pid 123`, `lambda`).
    pub owner: String,
    /// Open an existing lake only, never create one (commands that only read or report).
    pub existing_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_wait: StdDuration::ZERO,
            clock: cryptolake_model::system_clock(),
            owner: format!("pid {}", std::process::id()),
            existing_only: false,
        }
    }
}

/// SQL statements of a long-running front end running at once; each has the configured memory
/// limit, and more wait for a turn (within their time limit).
pub const STATEMENTS_AT_ONCE: usize = 2;

/// The pipeline over one lake.
pub struct Pipeline {
    settings: Settings,
    lake: Lake,
    options: Options,
    events: Option<EventSink>,
    /// One client per exchange and base URL for the life of the process, so that every
    /// request to an exchange (ingest, backfill, gap refetch) shares one budget.
    clients: Mutex<HashMap<(Exchange, String), ExchangeClient>>,
    /// What those clients have sent, for metrics.
    request_stats: cryptolake_sources::http::RequestStats,
    /// What every reader of the lake asks: the dashboard, the API, metrics, reports.
    reads: Arc<crate::reads::ReadModel>,
    /// Statements of [`Pipeline::served_query_engine`]s running at once, for every protocol.
    statement_slots: Arc<tokio::sync::Semaphore>,
}

/// One ingest: the hourly one, a range, or exact windows.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub exchange: Exchange,
    /// `None`: the configured symbols.
    pub symbols: Option<Vec<Symbol>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Instead of the configured base URL.
    pub base_url: Option<String>,
    /// Instead of the configured lookback.
    pub lookback: Option<chrono::Duration>,
    /// Instead of the configured concurrency.
    pub concurrency: Option<usize>,
    pub run_id: String,
    /// The time the ingest stands for: nothing at or after it is asked for.
    pub now: DateTime<Utc>,
    /// Exact windows per symbol (backfill, gap refetch) instead of since/until.
    pub windows: Option<Vec<(Symbol, Vec<Window>)>>,
    /// Whether fetched windows move the hourly ingest's cursor.
    pub move_cursor: bool,
    /// Skip windows this run id already wrote (a retried scheduled invocation).
    pub skip_done_by_run: bool,
    /// How the step is recorded: ingest, refetch or backfill.
    pub step: Step,
    /// Trade candles, or a perpetual market's mark price candles.
    pub prices: Prices,
}

impl IngestRequest {
    /// The hourly ingest of `exchange`'s configured symbols from where the cursor stands.
    pub fn hourly(exchange: Exchange, run_id: &str, now: DateTime<Utc>) -> IngestRequest {
        IngestRequest {
            exchange,
            symbols: None,
            since: None,
            until: None,
            base_url: None,
            lookback: None,
            concurrency: None,
            run_id: run_id.to_string(),
            now,
            windows: None,
            move_cursor: true,
            skip_done_by_run: false,
            step: Step::Ingest,
            prices: Prices::Trades,
        }
    }
}

/// Which recorded gaps to fetch again.
#[derive(Debug, Clone)]
pub struct GapRefetch {
    pub exchange: Exchange,
    /// `None`: every symbol with gaps.
    pub symbols: Option<Vec<Symbol>>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub base_url: Option<String>,
    /// Skip a gap window this run id already fetched (a retried scheduled invocation): a
    /// second fetch by the same run must not count as a second confirmation.
    pub skip_done_by_run: bool,
}

impl GapRefetch {
    pub fn all(exchange: Exchange, symbols: Option<Vec<Symbol>>) -> GapRefetch {
        GapRefetch {
            exchange,
            symbols,
            from: None,
            to: None,
            base_url: None,
            skip_done_by_run: false,
        }
    }
}

/// What a backfill will fetch for one symbol.
#[derive(Debug, Clone)]
pub struct BackfillSymbol {
    pub symbol: Symbol,
    pub windows: Vec<Window>,
    /// Minutes of the range already in bronze from earlier fetches or imports.
    pub covered_minutes: i64,
    /// Where the venue's history of the symbol starts, when it starts later than the range
    /// (searched for when bronze holds nothing of the symbol before the first minute to fetch).
    pub history: Option<HistoryStart>,
    /// Requests the search for the history's start sent.
    pub search_requests: usize,
}

/// A backfill of `[from, to)` for some symbols of one exchange.
#[derive(Debug, Clone)]
pub struct BackfillPlan {
    pub exchange: Exchange,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub symbols: Vec<BackfillSymbol>,
    pub base_url: Option<String>,
    pub concurrency: Option<usize>,
    /// Before this the exchange serves nothing (Kraken keeps 720 minutes).
    pub served_from: Option<DateTime<Utc>>,
    pub run_id: String,
    pub now: DateTime<Utc>,
}

impl BackfillPlan {
    pub fn pages(&self) -> usize {
        self.symbols.iter().map(|s| s.windows.len()).sum()
    }
}

/// The parts of a backfill, in the order they run: candles, then a perpetual market's mark
/// prices and funding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackfillPart {
    Candles,
    MarkPrices,
    Funding,
}

impl BackfillPart {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillPart::Candles => "candles",
            BackfillPart::MarkPrices => "mark prices",
            BackfillPart::Funding => "funding",
        }
    }

    /// What a page of this part holds.
    pub fn rows_name(self) -> &'static str {
        match self {
            BackfillPart::Candles => "candles",
            BackfillPart::MarkPrices => "minutes",
            BackfillPart::Funding => "events",
        }
    }
}

/// What a backfill tells its front end as it goes.
pub trait BackfillProgress: Sync {
    /// A part starts, with the requests planned per symbol: `None` where the count is known
    /// only as the venue answers (funding continues through the venue's pages).
    fn start(&self, part: BackfillPart, planned: &[(Symbol, Option<usize>)]);
    /// One page of `symbol` landed in bronze with `rows` rows.
    fn page(&self, part: BackfillPart, symbol: &Symbol, rows: usize);
}

/// No progress to show.
impl BackfillProgress for () {
    fn start(&self, _: BackfillPart, _: &[(Symbol, Option<usize>)]) {}
    fn page(&self, _: BackfillPart, _: &Symbol, _: usize) {}
}

/// What a backfill did.
#[derive(Debug)]
pub struct BackfillReport {
    pub ingest: IngestMetrics,
    /// The funding of the range, for a perpetual market.
    pub funding: Option<Vec<FundingOutcome>>,
    /// The mark price candles of the range's windows, for a perpetual market.
    pub mark: Option<IngestMetrics>,
    pub transform: TransformReport,
}

impl BackfillReport {
    /// Why the backfill is incomplete, if it is: failed symbols, then unservable spans.
    pub fn incomplete(&self, exchange: Exchange) -> Option<Error> {
        let failures = self.ingest.failures().count()
            + self
                .mark
                .iter()
                .map(|m| m.failures().count())
                .sum::<usize>()
            + self
                .funding
                .iter()
                .flatten()
                .filter(|o| o.error.is_some())
                .count();
        if failures > 0 {
            return Some(Error::Incomplete {
                kind: ErrorKind::Exchange,
                message: format!(
                    "backfill incomplete: {failures} symbol(s) failed (see above); run the same command again to continue where it stopped"
                ),
            });
        }
        let unservable: usize = self.ingest.symbols.iter().map(|o| o.unservable.len()).sum();
        (unservable > 0).then(|| Error::Incomplete {
            kind: ErrorKind::Unservable,
            message: format!(
                "backfill incomplete: {exchange} no longer serves part of the range ({unservable} span(s) above); those minutes are recorded as unservable gaps"
            ),
        })
    }
}

/// Silver (with the gap report and quality checks), optionally one round of gap refetches and
/// silver again, then gold and the freshness of every enabled exchange and symbol.
#[derive(Debug, Default)]
pub struct TransformReport {
    pub silver: Vec<SilverMetrics>,
    pub refetch: Option<IngestMetrics>,
    pub gold: GoldMetrics,
    pub freshness: Vec<Freshness>,
    /// The funding build: `funding_rates`, its gap report and `funding_1d`.
    pub funding: FundingReport,
}

/// What the perpetual markets' builds did: funding (silver and gold) and mark prices.
#[derive(Debug, Default, Clone)]
pub struct FundingReport {
    pub silver: FundingMetrics,
    pub gold: FundingGoldMetrics,
    /// `mark_ohlcv_1m` and its gap report.
    pub mark: MarkMetrics,
    /// Violations of the perpetual tables' quality rules over the dates that changed.
    pub violations: usize,
}

/// A stretch of a perpetual's funding with one or more slots missing strictly between two
/// present ones.
#[derive(Debug, Clone, PartialEq)]
pub struct FundingGap {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub after: DateTime<Utc>,
    pub before: DateTime<Utc>,
    pub status: gaps::GapStatus,
    pub fetches: i32,
}

/// The perpetual markets' gap reports.
#[derive(Debug, Clone, Default)]
pub struct PerpetualGaps {
    pub funding: Vec<FundingGap>,
    /// Mark price minutes missing, laid out as the candles' gaps.
    pub mark: Vec<gaps::Gap>,
}

/// One funding ingest of a perpetual market: the hourly one (from the cursor), a range, or
/// exact ranges (a gap refetch).
#[derive(Debug, Clone)]
pub struct FundingRequest {
    pub exchange: Exchange,
    /// `None`: the configured symbols.
    pub symbols: Option<Vec<Symbol>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub windows: Option<Vec<(Symbol, Vec<Window>)>>,
    pub base_url: Option<String>,
    pub run_id: String,
    pub now: DateTime<Utc>,
    /// Skip a range this run id already fetched (a retried scheduled invocation).
    pub skip_done_by_run: bool,
}

impl FundingRequest {
    pub fn hourly(exchange: Exchange, run_id: &str, now: DateTime<Utc>) -> FundingRequest {
        FundingRequest {
            exchange,
            symbols: None,
            since: None,
            until: None,
            windows: None,
            base_url: None,
            run_id: run_id.to_string(),
            now,
            skip_done_by_run: false,
        }
    }
}

/// What an import of archive files did.
#[derive(Debug)]
pub struct ImportReport {
    pub files: Vec<(PathBuf, Result<ImportOutcome>)>,
    pub transform: Option<TransformReport>,
}

impl ImportReport {
    pub fn failed(&self) -> usize {
        self.files.iter().filter(|(_, r)| r.is_err()).count()
    }
}

/// One exchange's part of the hourly job.
#[derive(Debug)]
pub struct ExchangeRun {
    pub exchange: Exchange,
    pub ingest: Result<IngestMetrics>,
    pub refetch: Option<Result<IngestMetrics>>,
    /// A perpetual market's funding (with its gaps' refetch).
    pub funding: Option<Result<Vec<FundingOutcome>>>,
    /// A perpetual market's mark price candles (with its gaps' refetch).
    pub mark: Option<Result<IngestMetrics>>,
}

impl ExchangeRun {
    /// Problems of this exchange, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, r) in std::iter::once(("ingest", Some(&self.ingest)))
            .chain(std::iter::once(("gap refetch", self.refetch.as_ref())))
        {
            match r {
                None => {}
                Some(Err(e)) => out.push(format!("{} {what}: {e}", self.exchange)),
                Some(Ok(m)) => out.extend(
                    ingest_problems(m)
                        .into_iter()
                        .map(|p| format!("{} {p}", self.exchange)),
                ),
            }
        }
        match &self.mark {
            None => {}
            Some(Err(e)) => out.push(format!("{} mark prices: {e}", self.exchange)),
            Some(Ok(m)) => out.extend(
                ingest_problems(m)
                    .into_iter()
                    .map(|p| format!("{} mark prices: {p}", self.exchange)),
            ),
        }
        match &self.funding {
            None => {}
            Some(Err(e)) => out.push(format!("{} funding: {e}", self.exchange)),
            Some(Ok(outcomes)) => out.extend(outcomes.iter().filter_map(|o| {
                let e = o.error.as_ref()?;
                Some(format!("{} funding of {}: {e}", self.exchange, o.symbol))
            })),
        }
        out
    }
}

/// The hourly job's result: each exchange, then the transform.
#[derive(Debug)]
pub struct RunSummary {
    pub run_id: String,
    pub exchanges: Vec<ExchangeRun>,
    pub transform: Result<TransformReport>,
    /// The requests the whole run made to the lake's store.
    pub requests: RequestCounts,
}

impl RunSummary {
    /// Every problem of the run, one line each; empty when everything went through.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .exchanges
            .iter()
            .flat_map(ExchangeRun::problems)
            .collect();
        if let Err(e) = &self.transform {
            out.push(format!("transform: {e}"));
        }
        out
    }
}

/// Failed symbols and unservable spans of an ingest, one line each.
fn ingest_problems(m: &IngestMetrics) -> Vec<String> {
    let mut out: Vec<String> = m
        .failures()
        .map(|f| format!("{}: {}", f.symbol, f.error.as_deref().unwrap_or("")))
        .collect();
    for o in &m.symbols {
        for (a, b) in &o.unservable {
            out.push(format!(
                "{}: {} .. {} ({} minutes) is no longer served by the exchange",
                o.symbol,
                a.to_rfc3339(),
                b.to_rfc3339(),
                (*b - *a).num_minutes()
            ));
        }
    }
    out
}

/// The error for an ingest that finished with failed symbols or unservable ranges, naming
/// them; `None` when everything asked for arrived.
pub fn incomplete_ingest(exchange: Exchange, m: &IngestMetrics) -> Option<Error> {
    ingest_problem(m).map(|(kind, problems)| Error::Incomplete {
        kind,
        message: format!("ingest {exchange} incomplete: {problems}"),
    })
}

/// What is wrong with a finished ingest, if anything: failed symbols (an exchange problem)
/// before unservable ranges, and every problem on one line.
fn ingest_problem(m: &IngestMetrics) -> Option<(ErrorKind, String)> {
    let problems = ingest_problems(m);
    if problems.is_empty() {
        return None;
    }
    let kind = if m.failures().next().is_some() {
        ErrorKind::Exchange
    } else {
        ErrorKind::Unservable
    };
    Some((kind, problems.join("; ")))
}

/// What a step reports to the run history and its event.
struct StepReport {
    counts: Counts,
    details: serde_json::Value,
    /// The problem that makes a finished step partial.
    problem: Option<(ErrorKind, String)>,
    freshness: Vec<Freshness>,
}

impl StepReport {
    fn new(counts: Counts, details: impl Serialize) -> StepReport {
        StepReport {
            counts,
            details: serde_json::to_value(details).unwrap_or_default(),
            problem: None,
            freshness: Vec::new(),
        }
    }
}

fn ingest_report(m: &IngestMetrics) -> StepReport {
    StepReport {
        problem: ingest_problem(m),
        ..StepReport::new(
            Counts {
                inputs: m.symbols.len() as i64,
                outputs: m.pages as i64,
                rows: m.rows as i64,
                quarantined: 0,
            },
            serde_json::json!({
                "bytes": m.bytes,
                "symbols": m.symbols.iter().map(|o| serde_json::json!({
                    "symbol": o.symbol.as_str(),
                    "pages": o.pages,
                    "rows": o.rows,
                    "next_open_time": o.next_open_time,
                    "error": o.error,
                    "unservable": o.unservable,
                })).collect::<Vec<_>>(),
            }),
        )
    }
}

fn silver_report(m: &SilverMetrics) -> StepReport {
    StepReport::new(
        Counts {
            inputs: m.objects_read as i64,
            outputs: (m.partitions_written + m.partitions_deleted) as i64,
            rows: m.hours_written as i64,
            quarantined: m.rejected_records as i64,
        },
        m,
    )
}

fn gold_report(m: &GoldMetrics) -> StepReport {
    StepReport::new(
        Counts {
            inputs: m.changed_dates.len() as i64,
            outputs: (m.partitions_written + m.partitions_deleted) as i64,
            rows: m.rows_written as i64,
            quarantined: 0,
        },
        m,
    )
}

/// One finding as a line: rule, where, what.
pub fn describe(r: &QualityResult) -> String {
    let who = match (&r.exchange, &r.symbol) {
        (Some(e), Some(s)) => format!(" {e} {s}"),
        _ => String::new(),
    };
    let at = r
        .subject
        .as_deref()
        .map(|s| format!(" at {s}"))
        .unwrap_or_default();
    format!("{}{who}{at}: {}", r.rule, r.message)
}

/// Subtracts the sorted, merged `covered` intervals from `[start, end)`.
fn uncovered(start: DateTime<Utc>, end: DateTime<Utc>, covered: &[Window]) -> Vec<Window> {
    let mut out = Vec::new();
    let mut t = start;
    for (a, b) in covered {
        if *b <= t || *a >= end {
            continue;
        }
        if *a > t {
            out.push((t, (*a).min(end)));
        }
        t = t.max(*b);
        if t >= end {
            break;
        }
    }
    if t < end {
        out.push((t, end));
    }
    out
}

impl Pipeline {
    /// Opens the lake the settings name and checks it answers.
    pub async fn open(settings: Settings, options: Options) -> Result<Pipeline> {
        let lake_options = settings.lake_options();
        let lake = if options.existing_only {
            Lake::open_existing(&settings.lake, &lake_options)?
        } else {
            Lake::open_at(&settings.lake, &lake_options)?
        };
        lake.probe().await?;
        let reads = Arc::new(crate::reads::ReadModel::new(
            lake.clone(),
            options.clock.clone(),
            settings.server.read_cache,
            settings.quality.max_age_minutes,
        ));
        Ok(Pipeline {
            settings,
            lake,
            options,
            events: None,
            clients: Mutex::new(HashMap::new()),
            request_stats: Default::default(),
            reads,
            statement_slots: Arc::new(tokio::sync::Semaphore::new(STATEMENTS_AT_ONCE)),
        })
    }

    /// Sends every step's event to `sink` as well.
    pub fn with_events(mut self, sink: EventSink) -> Pipeline {
        self.events = Some(sink);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The read model: typed answers from memory for every reader of the lake.
    pub fn reads(&self) -> &crate::reads::ReadModel {
        &self.reads
    }

    /// Whether the lake answers (one listing).
    pub async fn probe(&self) -> Result<()> {
        Ok(self.lake.probe().await?)
    }

    /// The lake's stray and missing table files, and with `read` its damaged ones, each with
    /// what the next build does about it.
    pub async fn verify_files(
        &self,
        read: bool,
    ) -> Result<Vec<cryptolake_lake::verify::FileProblem>> {
        Ok(cryptolake_lake::verify::verify(&self.lake, read).await?)
    }

    /// A read-only SQL session over the lake, every statement under the configured limits.
    pub async fn query_engine(&self) -> Result<cryptolake_query::QueryEngine> {
        Ok(cryptolake_query::QueryEngine::open_with(&self.lake, &self.settings.query).await?)
    }

    /// [`Pipeline::query_engine`] for a long-running reader, its statements at most
    /// [`STATEMENTS_AT_ONCE`] at a time over every engine this pipeline serves (HTTP and the
    /// wire protocol alike): the tables the read model holds
    /// (silver, gold, the gap report) are scanned from its memory, so a statement lists no
    /// folders and reads no files that the model has already read, and sees the lake as the
    /// model's current snapshot does.
    pub async fn served_query_engine(&self) -> Result<cryptolake_query::QueryEngine> {
        Ok(cryptolake_query::QueryEngine::open_from_memory(
            &self.lake,
            &self.settings.query,
            self.reads.clone(),
            self.statement_slots.clone(),
        )
        .await?)
    }

    pub fn clock(&self) -> &SharedClock {
        &self.options.clock
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.options.clock.now()
    }

    /// A fresh run id for a run starting now.
    pub fn new_run_id(&self) -> String {
        new_run_id(self.now())
    }

    /// Writes the step's row in `crypto_ops.runs` and sends its event. A failure to record is
    /// logged; it never hides the step's own outcome.
    async fn finish<T>(
        &self,
        run_id: &str,
        step: Step,
        exchange: Option<Exchange>,
        (started_at, clock, before): (DateTime<Utc>, Instant, RequestCounts),
        result: &Result<T>,
        report: impl FnOnce(&T) -> StepReport,
    ) {
        let duration = clock.elapsed();
        let requests = self.lake.requests().since(before);
        let (outcome, error_kind, error, report) = match result {
            Ok(v) => {
                let r = report(v);
                match r.problem.clone() {
                    None => (Outcome::Ok, None, None, r),
                    // Broken `fail` rules fail a step that otherwise finished; anything else
                    // left undone makes it partial.
                    Some((ErrorKind::Quality, message)) => {
                        (Outcome::Failed, Some(ErrorKind::Quality), Some(message), r)
                    }
                    Some((kind, message)) => (Outcome::Partial, Some(kind), Some(message), r),
                }
            }
            Err(e) => (
                e.outcome(),
                Some(e.kind()),
                Some(e.to_string()),
                StepReport::new(Counts::default(), serde_json::json!({})),
            ),
        };
        let mut details = report.details;
        if let Some(fields) = details.as_object_mut() {
            fields.insert(
                "requests".into(),
                serde_json::to_value(requests).unwrap_or_default(),
            );
        }
        let record = RunRecord {
            run_id: run_id.to_string(),
            step,
            exchange,
            started_at,
            finished_at: started_at
                + chrono::Duration::from_std(duration).unwrap_or_else(|_| chrono::Duration::zero()),
            status: outcome,
            inputs: report.counts.inputs,
            outputs: report.counts.outputs,
            rows: report.counts.rows,
            quarantined: report.counts.quarantined,
            error: error.clone(),
            details: details.to_string(),
        };
        if let Err(e) = record_run(&self.lake, &record).await {
            warn!(step = %step, run_id, error = %e, "could not record the run");
        }
        self.reads.changed();
        let event = StepEvent {
            run_id: run_id.to_string(),
            step,
            exchange,
            outcome,
            started_at,
            duration,
            counts: report.counts,
            error_kind,
            error,
            freshness: report.freshness,
            requests,
        };
        tracing::debug!(step = %step, exchange = ?exchange, outcome = %outcome, seconds = duration.as_secs_f64(), rows = event.counts.rows, get = requests.get, head = requests.head, put = requests.put, list = requests.list, delete = requests.delete, "step finished");
        if let Some(sink) = &self.events {
            sink(&event);
        }
    }

    fn start(&self) -> (DateTime<Utc>, Instant, RequestCounts) {
        (self.now(), Instant::now(), self.lake.requests())
    }

    /// Runs `work` under the lease `name`, and releases the lease on every path: success,
    /// error, or an error of the release itself after a success.
    async fn with_lease<T>(
        &self,
        name: &str,
        run_id: &str,
        work: impl AsyncFnOnce(&Lease) -> Result<T>,
    ) -> Result<T> {
        let opts = LeaseOptions {
            wait: self.options.lock_wait,
            ..LeaseOptions::default()
        };
        let owner = format!("{} run {run_id}", self.options.owner);
        let lease = match Lease::acquire(&self.lake, name, &owner, &opts).await {
            Ok(lease) => lease,
            Err(e @ cryptolake_lake::Error::Busy { .. }) => return Err(Error::Busy(e)),
            Err(e) => return Err(e.into()),
        };
        let result = work(&lease).await;
        let released = lease.release().await;
        match (result, released) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(release)) => {
                warn!(lease = name, error = %release, "could not release the lease after an error");
                Err(e)
            }
        }
    }

    /// The requests this pipeline's clients have sent to the exchanges, by exchange and HTTP
    /// status, and the time they waited for a request budget: for metrics.
    pub fn exchange_requests(&self) -> crate::ExchangeRequests {
        self.request_stats.snapshot()
    }

    /// A client for `exchange`: `base_url`, else the configured one; the configured budget
    /// and request timeout.
    pub fn client(&self, exchange: Exchange, base_url: Option<&str>) -> Result<ExchangeClient> {
        let url = base_url
            .map(str::to_string)
            .unwrap_or_else(|| self.settings.exchange(exchange).base_url.clone());
        let key = (exchange, url.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let policy = RetryPolicy {
            request_timeout: self.settings.ingest.request_timeout,
            max_body_bytes: self.settings.exchange(exchange).max_response_bytes,
            ..RetryPolicy::default()
        };
        let client = ExchangeClient::counted(
            exchange,
            Some(&url),
            policy,
            Some(self.settings.exchange(exchange).budget),
            self.request_stats.clone(),
        )?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Fetches closed candles into bronze. A finished ingest in which some symbols failed or
    /// part of the range is no longer served is `Ok` here (what arrived is kept) and recorded
    /// as partial; [`Pipeline::ingest_strict`] makes that an error.
    pub async fn ingest(
        &self,
        req: &IngestRequest,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        let started = self.start();
        let result = self.ingest_inner(req, on_page).await;
        self.finish(
            &req.run_id,
            req.step,
            Some(req.exchange),
            started,
            &result,
            ingest_report,
        )
        .await;
        result
    }

    /// [`Pipeline::ingest`], with failed symbols and unservable ranges as an error that names
    /// them (after what did arrive is kept).
    pub async fn ingest_strict(
        &self,
        req: &IngestRequest,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        let m = self.ingest(req, on_page).await?;
        match incomplete_ingest(req.exchange, &m) {
            None => Ok(m),
            Some(e) => Err(e),
        }
    }

    async fn ingest_inner(
        &self,
        req: &IngestRequest,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        let exchange = req.exchange;
        let symbols = req
            .symbols
            .clone()
            .unwrap_or_else(|| self.settings.exchange(exchange).symbols.clone());
        if symbols.is_empty() {
            return Err(Error::Invalid(format!(
                "no symbols to ingest for {exchange}: pass --symbols, set exchanges.{exchange}.symbols or {}",
                Settings::exchange_var(exchange, "symbols")
            )));
        }
        let client = self.client(exchange, req.base_url.as_deref())?;
        self.with_lease(&format!("ingest-{exchange}"), &req.run_id, async |_| {
            let mut job = Ingest::new(exchange, symbols, &req.run_id, req.now)
                .with_since(req.since)
                .with_until(req.until)
                .with_lookback(req.lookback.unwrap_or(self.settings.ingest.lookback))
                .with_concurrency(req.concurrency.unwrap_or(self.settings.ingest.concurrency))
                .with_skip_done_by_run(req.skip_done_by_run)
                .with_prices(req.prices)
                .with_clock(self.options.clock.clone());
            if let Some(windows) = &req.windows {
                job = job.with_windows(windows.clone());
            } else if !req.move_cursor {
                job = job.with_cursor(false);
            }
            let plan = job.plan(&self.lake).await?;
            info!(%exchange, base_url = client.base_url(), pages = plan.pages(), "ingest planned");
            Ok(job.execute(&self.lake, &client, plan, on_page).await?)
        })
        .await
    }

    /// Builds silver from new bronze (all of it with `rebuild`), then the gap report and the
    /// quality checks of the changed dates. A quality rule with action `fail` that is broken,
    /// or that cannot be evaluated, fails the step.
    pub async fn silver(&self, rebuild: bool, run_id: &str) -> Result<SilverMetrics> {
        let started = self.start();
        let result = self
            .with_lease("transform", run_id, async |lease| {
                self.silver_under(lease, rebuild, run_id).await
            })
            .await
            .map(|m| SilverMetrics {
                requests: self.lake.requests().since(started.2),
                ..m
            });
        self.finish(run_id, Step::Silver, None, started, &result, silver_report)
            .await;
        result
    }

    async fn silver_under(
        &self,
        lease: &Lease,
        rebuild: bool,
        run_id: &str,
    ) -> Result<SilverMetrics> {
        let rules = self.settings.quality.clone();
        // Reads on an object store wait on the network: many in flight hide it.
        let read_concurrency =
            self.settings
                .silver
                .read_concurrency
                .unwrap_or(match self.lake.waits_on_requests() {
                    true => 64,
                    false => 8,
                });
        let build = SilverBuild::new()
            .with_rebuild(rebuild)
            .with_manifest_overlap(self.settings.silver.manifest_overlap)
            .with_concurrency(read_concurrency)
            .with_dates_per_batch(self.settings.silver.batch_days)
            .with_rules(rules.clone())
            .with_clock(self.options.clock.clone());
        let plan = build.plan(&self.lake).await?;
        info!(
            new_objects = plan.new_objects.len(),
            dates = plan.affected.len(),
            full_listing = plan.full_listing,
            rebuild,
            read_concurrency,
            "silver planned"
        );
        // The gap report follows silver, still under its lease, batch by batch: the groups
        // each batch touched are rescanned from the bronze keys silver already listed.
        let now = self.now();
        let (mut dates_scanned, mut gaps_found) = (0, 0);
        let gap_report = async |batch: Batch<'_>| match gaps::update(
            &self.lake,
            batch.touched,
            &batch.listed,
            now,
            batch.complete_listing,
        )
        .await
        {
            Ok(scan) => {
                dates_scanned += scan.dates_scanned;
                gaps_found += scan.gaps.len();
            }
            Err(e) => {
                warn!(error = %e, "the gap report could not be updated; `cryptolake gaps` rebuilds it")
            }
        };
        let m = build
            .execute_with(&self.lake, plan, Some(lease), gap_report)
            .await?;
        if !m.touched.is_empty() {
            info!(
                dates = dates_scanned,
                gaps = gaps_found,
                "gap report updated"
            );
        }
        // The findings go to their file as they are found: a first build over years of
        // hours may have many, and memory holds a row group of them.
        let mut file = quality::ResultsFile::new(run_id, Step::Silver, self.now());
        file.push(quality::duplicates_result(&rules, m.conflicting_duplicates));
        if let (Some(from), Some(to)) = (m.changed_dates.first(), m.changed_dates.last()) {
            quality::evaluate_silver_into(
                &self.lake,
                &rules,
                Some(*from),
                Some(*to),
                now,
                false,
                |r| file.push(r),
            )
            .await
            .map_err(|e| {
                Error::Quality(format!("the quality checks of silver could not run: {e}"))
            })?;
        }
        verdict_of(&self.close_quality(Step::Silver, file).await?)?;
        Ok(m)
    }

    /// Builds gold for the days whose silver changed (all with `rebuild`), then its quality
    /// checks.
    pub async fn gold(&self, rebuild: bool, run_id: &str) -> Result<GoldMetrics> {
        self.gold_with_freshness(rebuild, run_id, false)
            .await
            .map(|(m, _)| m)
    }

    async fn gold_with_freshness(
        &self,
        rebuild: bool,
        run_id: &str,
        freshness: bool,
    ) -> Result<(GoldMetrics, Vec<Freshness>)> {
        let started = self.start();
        let result = self
            .with_lease("transform", run_id, async |lease| {
                let build = GoldBuild::new().with_rebuild(rebuild);
                let plan = build.plan(&self.lake).await?;
                info!(
                    dates = plan.build.len(),
                    removed = plan.remove.len(),
                    rebuild,
                    "gold planned"
                );
                let m = build.execute(&self.lake, plan, Some(lease)).await?;
                if let (Some(from), Some(to)) = (m.changed_dates.first(), m.changed_dates.last()) {
                    let results = quality::evaluate_gold(
                        &self.lake,
                        &self.settings.quality,
                        Some(*from),
                        Some(*to),
                        self.now(),
                    )
                    .await
                    .map_err(|e| {
                        Error::Quality(format!("the quality checks of gold could not run: {e}"))
                    })?;
                    self.quality_verdict(run_id, Step::Gold, &results).await?;
                }
                let fresh = if freshness {
                    self.freshness().await.unwrap_or_else(|e| {
                        warn!(error = %e, "freshness could not be measured");
                        Vec::new()
                    })
                } else {
                    Vec::new()
                };
                Ok((m, fresh))
            })
            .await
            .map(|(m, fresh)| {
                let requests = self.lake.requests().since(started.2);
                (GoldMetrics { requests, ..m }, fresh)
            });
        self.finish(run_id, Step::Gold, None, started, &result, |(m, f)| {
            StepReport {
                freshness: f.clone(),
                ..gold_report(m)
            }
        })
        .await;
        result
    }

    /// Records quality results, logs violations, and fails if a `fail` rule was broken.
    async fn quality_verdict(
        &self,
        run_id: &str,
        step: Step,
        results: &[QualityResult],
    ) -> Result<()> {
        verdict_of(&self.record_quality(run_id, step, results).await?)
    }

    /// Records quality results in `crypto_ops.quality_results` and logs the violations.
    async fn record_quality(
        &self,
        run_id: &str,
        step: Step,
        results: &[QualityResult],
    ) -> Result<quality::Summary> {
        let mut file = quality::ResultsFile::new(run_id, step, self.now());
        results.iter().cloned().for_each(|r| file.push(r));
        self.close_quality(step, file).await
    }

    /// Writes a step's quality results file and logs its violations: a few per rule, the rest
    /// counted (all of them are in crypto_ops.quality_results).
    async fn close_quality(
        &self,
        step: Step,
        file: quality::ResultsFile,
    ) -> Result<quality::Summary> {
        let summary = file.finish(&self.lake).await.map_err(|e| {
            Error::Quality(format!("the quality results could not be recorded: {e}"))
        })?;
        for r in &summary.examples {
            warn!(rule = %r.rule, action = r.action.as_str(), exchange = ?r.exchange, symbol = ?r.symbol, subject = ?r.subject, "{}", r.message);
        }
        for (rule, &n) in &summary.violations {
            if n > quality::EXAMPLES_PER_RULE {
                warn!(rule = rule.as_str(), findings = n, step = %step, "{} more findings of this rule in crypto_ops.quality_results", n - quality::EXAMPLES_PER_RULE);
            }
        }
        Ok(summary)
    }

    /// Evaluates the table rules over silver and gold in `[from, to]` and records them. The
    /// results are returned whatever they say; [`verdict`] turns broken `fail` rules into the
    /// error a front end exits with.
    pub async fn check(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        run_id: &str,
    ) -> Result<Vec<QualityResult>> {
        let started = self.start();
        let result = async {
            let results =
                quality::evaluate(&self.lake, &self.settings.quality, from, to, self.now()).await?;
            self.record_quality(run_id, Step::Check, &results).await?;
            Ok(results)
        }
        .await;
        self.finish(run_id, Step::Check, None, started, &result, |results| {
            let violations = results.iter().filter(|r| r.is_violation()).count();
            StepReport {
                problem: verdict(results)
                    .err()
                    .map(|e| (ErrorKind::Quality, e.to_string())),
                ..StepReport::new(
                    Counts {
                        inputs: results.len() as i64,
                        outputs: violations as i64,
                        rows: 0,
                        quarantined: 0,
                    },
                    serde_json::json!({
                        "violations": violations,
                        "fail_violations": results.iter().filter(|r| r.fails()).count(),
                    }),
                )
            }
        })
        .await;
        result
    }

    /// Rescans `crypto_ops.gaps` for the dates in `[from, to]`, under the transform lease so
    /// that it never races a silver build rewriting the same partitions.
    pub async fn scan_gaps(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<GapScan> {
        let run_id = self.new_run_id();
        let started = self.start();
        let result = self
            .with_lease("transform", &run_id, async |_| {
                Ok(gaps::scan(&self.lake, from, to, self.now()).await?)
            })
            .await;
        self.finish(&run_id, Step::Gaps, None, started, &result, |s| {
            StepReport::new(
                Counts {
                    inputs: s.dates_scanned as i64,
                    outputs: (s.partitions_written + s.partitions_deleted) as i64,
                    rows: s.gaps.len() as i64,
                    quarantined: 0,
                },
                serde_json::json!({ "minutes": s.gaps.iter().map(|g| g.minutes()).sum::<i64>() }),
            )
        })
        .await;
        result
    }

    /// The perpetual markets' recorded gaps: funding stretches with slots missing (the
    /// present slots around them) and mark price minutes missing.
    pub async fn perpetual_gaps(&self) -> Result<PerpetualGaps> {
        let funding = cryptolake_lake::funding::recorded_gaps(&self.lake)
            .await?
            .into_iter()
            .map(
                |(exchange, symbol, after, before, status, fetches)| FundingGap {
                    exchange,
                    symbol,
                    after,
                    before,
                    status,
                    fetches,
                },
            )
            .collect();
        let mark = cryptolake_lake::mark::recorded_gaps(&self.lake).await?;
        Ok(PerpetualGaps { funding, mark })
    }

    /// Fetches again the recorded gaps worth refetching (missing or unconfirmed, still
    /// served) that `scope` selects.
    pub async fn refetch_gaps(
        &self,
        scope: &GapRefetch,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IngestMetrics>> {
        let recorded = gaps::read(&self.lake, scope.from, scope.to).await?;
        let windows: Vec<(Symbol, Vec<Window>)> = gaps::refetch_windows(
            &recorded,
            scope.exchange,
            self.settings.ingest.max_refetch_windows,
        )
        .into_iter()
        .filter(|(s, _)| scope.symbols.as_ref().is_none_or(|list| list.contains(s)))
        .collect();
        if windows.is_empty() {
            return Ok(None);
        }
        info!(exchange = %scope.exchange, symbols = windows.len(), windows = windows.iter().map(|(_, w)| w.len()).sum::<usize>(), "refetching gaps");
        let req = IngestRequest {
            symbols: Some(windows.iter().map(|(s, _)| s.clone()).collect()),
            base_url: scope.base_url.clone(),
            windows: Some(windows),
            move_cursor: false,
            step: Step::Refetch,
            skip_done_by_run: scope.skip_done_by_run,
            ..IngestRequest::hourly(scope.exchange, run_id, now)
        };
        Ok(Some(self.ingest(&req, &|_, _| {}).await?))
    }

    /// Silver, then one round of refetches of the gaps each of `refetch` selects and, if
    /// anything was fetched, silver again; then gold, and the freshness of every enabled
    /// exchange and symbol.
    pub async fn transform(&self, refetch: &[GapRefetch], run_id: &str) -> Result<TransformReport> {
        let mut report = TransformReport {
            silver: vec![self.silver(false, run_id).await?],
            ..TransformReport::default()
        };
        let mut fetched: Option<IngestMetrics> = None;
        for scope in refetch {
            if let Some(m) = self.refetch_gaps(scope, run_id, self.now()).await? {
                let total = fetched.get_or_insert_with(IngestMetrics::default);
                total.pages += m.pages;
                total.rows += m.rows;
                total.bytes += m.bytes;
                total.symbols.extend(m.symbols);
            }
        }
        if fetched.is_some() {
            report.refetch = fetched;
            report.silver.push(self.silver(false, run_id).await?);
        }
        let (gold, freshness) = self.gold_with_freshness(false, run_id, true).await?;
        report.gold = gold;
        report.freshness = freshness;
        report.funding = self.funding(false, run_id).await?;
        Ok(report)
    }

    /// Fetches a perpetual market's funding into bronze, under the exchange's ingest lease.
    /// Symbols that failed are in the outcomes (what arrived is kept).
    pub async fn ingest_funding(
        &self,
        req: &FundingRequest,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<Vec<FundingOutcome>> {
        let started = self.start();
        let result = self.ingest_funding_inner(req, on_page).await;
        self.finish(
            &req.run_id,
            Step::Funding,
            Some(req.exchange),
            started,
            &result,
            |outcomes| {
                let failed: Vec<String> = outcomes
                    .iter()
                    .filter_map(|o| Some(format!("{}: {}", o.symbol, o.error.as_ref()?)))
                    .collect();
                StepReport {
                    problem: (!failed.is_empty()).then(|| (ErrorKind::Exchange, failed.join("; "))),
                    ..StepReport::new(
                        Counts {
                            inputs: outcomes.len() as i64,
                            outputs: outcomes.iter().map(|o| o.pages as i64).sum(),
                            rows: outcomes.iter().map(|o| o.rows as i64).sum(),
                            quarantined: 0,
                        },
                        serde_json::json!({ "failed": failed.len() }),
                    )
                }
            },
        )
        .await;
        result
    }

    async fn ingest_funding_inner(
        &self,
        req: &FundingRequest,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<Vec<FundingOutcome>> {
        let exchange = req.exchange;
        let symbols = req
            .symbols
            .clone()
            .unwrap_or_else(|| self.settings.exchange(exchange).symbols.clone());
        let client = self.client(exchange, req.base_url.as_deref())?;
        self.with_lease(&format!("ingest-{exchange}"), &req.run_id, async |_| {
            let mut job = FundingIngest::new(exchange, symbols, &req.run_id, req.now)
                .with_range(req.since, req.until)
                .with_lookback(self.settings.ingest.lookback)
                .with_skip_done_by_run(req.skip_done_by_run)
                .with_clock(self.options.clock.clone());
            if let Some(w) = &req.windows {
                job = job.with_windows(w.clone());
            }
            let plan = job.plan(&self.lake).await?;
            Ok(job.execute(&self.lake, &client, plan, on_page).await?)
        })
        .await
    }

    /// The hourly funding of a perpetual market: from its cursors, then its recorded gaps
    /// worth fetching again.
    async fn hourly_funding(
        &self,
        exchange: Exchange,
        run_id: &str,
        now: DateTime<Utc>,
        skip_done_by_run: bool,
    ) -> Result<Vec<FundingOutcome>> {
        let hourly = FundingRequest {
            skip_done_by_run,
            ..FundingRequest::hourly(exchange, run_id, now)
        };
        let mut outcomes = self.ingest_funding(&hourly, &|_, _| {}).await?;
        let symbols = self.settings.exchange(exchange).symbols.clone();
        let mut windows: BTreeMap<Symbol, Vec<Window>> = BTreeMap::new();
        for (e, symbol, after, before, status, _) in
            cryptolake_lake::funding::recorded_gaps(&self.lake).await?
        {
            if e == exchange && status.refetch() && symbols.contains(&symbol) {
                windows
                    .entry(symbol)
                    .or_default()
                    .push((after + chrono::Duration::seconds(1), before));
            }
        }
        if !windows.is_empty() {
            info!(%exchange, symbols = windows.len(), "refetching funding gaps");
            let req = FundingRequest {
                windows: Some(windows.into_iter().collect()),
                ..hourly
            };
            outcomes.extend(self.ingest_funding(&req, &|_, _| {}).await?);
        }
        Ok(outcomes)
    }

    /// The hourly mark price candles of a perpetual market: from their cursors, then the
    /// recorded mark gaps worth fetching again.
    async fn hourly_mark(
        &self,
        exchange: Exchange,
        run_id: &str,
        now: DateTime<Utc>,
        skip_done_by_run: bool,
    ) -> Result<IngestMetrics> {
        let req = IngestRequest {
            skip_done_by_run,
            prices: Prices::Mark,
            ..IngestRequest::hourly(exchange, run_id, now)
        };
        let mut m = self.ingest(&req, &|_, _| {}).await?;
        let symbols = self.settings.exchange(exchange).symbols.clone();
        let windows: Vec<(Symbol, Vec<Window>)> =
            cryptolake_lake::mark::refetch_windows(&self.lake, exchange, &symbols)
                .await?
                .into_iter()
                .map(|(s, w)| {
                    let w = w
                        .into_iter()
                        .take(self.settings.ingest.max_refetch_windows)
                        .collect();
                    (s, w)
                })
                .collect();
        if !windows.is_empty() {
            let req = IngestRequest {
                symbols: Some(windows.iter().map(|(s, _)| s.clone()).collect()),
                windows: Some(windows),
                move_cursor: false,
                step: Step::Refetch,
                prices: Prices::Mark,
                skip_done_by_run,
                ..IngestRequest::hourly(exchange, run_id, now)
            };
            let r = self.ingest(&req, &|_, _| {}).await?;
            m.pages += r.pages;
            m.rows += r.rows;
            m.bytes += r.bytes;
            m.symbols.extend(r.symbols);
        }
        Ok(m)
    }

    /// Builds funding silver (`funding_rates` and its gap report) from new bronze (all of it
    /// with `rebuild`), then `funding_1d` from the silver days that changed, then
    /// `mark_ohlcv_1m`, then the perpetual quality rules over the dates that changed. A
    /// broken rule with action `fail` fails the step.
    pub async fn funding(&self, rebuild: bool, run_id: &str) -> Result<FundingReport> {
        let started = self.start();
        let result = self
            .with_lease("transform", run_id, async |lease| {
                let silver = FundingBuild::new()
                    .with_rebuild(rebuild)
                    .with_manifest_overlap(self.settings.silver.manifest_overlap)
                    .with_clock(self.options.clock.clone())
                    .run(&self.lake, Some(lease))
                    .await?;
                let gold = FundingGold::new()
                    .with_rebuild(rebuild)
                    .run(&self.lake, Some(lease))
                    .await?;
                let mark = MarkBuild::new()
                    .with_rebuild(rebuild)
                    .with_manifest_overlap(self.settings.silver.manifest_overlap)
                    .with_clock(self.options.clock.clone())
                    .run(&self.lake, Some(lease))
                    .await?;
                let changed: std::collections::BTreeSet<NaiveDate> = silver
                    .changed_dates
                    .iter()
                    .chain(&gold.changed_dates)
                    .chain(&mark.changed_dates)
                    .copied()
                    .collect();
                let mut violations = 0;
                if !changed.is_empty() {
                    let results = quality::evaluate_perpetual_on(
                        &self.lake,
                        &self.settings.quality,
                        &changed,
                        self.now(),
                    )
                    .await
                    .map_err(|e| {
                        Error::Quality(format!(
                            "the quality checks of the perpetual tables could not run: {e}"
                        ))
                    })?;
                    violations = results.iter().filter(|r| r.is_violation()).count();
                    self.quality_verdict(run_id, Step::Funding, &results)
                        .await?;
                }
                Ok(FundingReport {
                    silver,
                    gold,
                    mark,
                    violations,
                })
            })
            .await;
        // A lake without perpetual markets has no funding: nothing done, nothing recorded.
        if let Ok(r) = &result
            && !rebuild
            && r.silver.objects == 0
            && r.gold.changed_dates.is_empty()
            && r.mark.objects == 0
        {
            return result;
        }
        self.finish(run_id, Step::Funding, None, started, &result, |r| {
            StepReport::new(
                Counts {
                    inputs: (r.silver.objects + r.mark.objects) as i64,
                    outputs: (r.silver.changed_dates.len()
                        + r.gold.changed_dates.len()
                        + r.mark.changed_dates.len()) as i64,
                    rows: (r.silver.rows + r.mark.rows) as i64,
                    quarantined: (r.silver.rejected + r.mark.rejected) as i64,
                },
                serde_json::json!({
                    "funding_gaps": r.silver.gaps,
                    "gold_rows": r.gold.rows,
                    "mark_gap_minutes": r.mark.gap_minutes,
                    "violations": r.violations,
                }),
            )
        })
        .await;
        result
    }

    /// The ingest half of the hourly job: every enabled exchange from where its cursor
    /// stands up to `now`, then that exchange's recorded gaps. One exchange's failure (a ban,
    /// a busy lease, an outage) never stops the others.
    pub async fn hourly_ingest(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
        skip_done_by_run: bool,
    ) -> Vec<ExchangeRun> {
        let mut out = Vec::new();
        let enabled: Vec<Exchange> = self.settings.enabled_exchanges().map(|(e, _)| e).collect();
        for exchange in enabled {
            let req = IngestRequest {
                skip_done_by_run,
                ..IngestRequest::hourly(exchange, run_id, now)
            };
            let ingest = self.ingest(&req, &|_, _| {}).await;
            // After a ban or a busy lease the refetch would meet the same; after any other
            // error the recorded gaps are still worth a try.
            let refetch = match &ingest {
                Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::Banned) => None,
                _ => {
                    let symbols = self.settings.exchange(exchange).symbols.clone();
                    let scope = GapRefetch {
                        skip_done_by_run,
                        ..GapRefetch::all(exchange, Some(symbols))
                    };
                    self.refetch_gaps(&scope, run_id, now).await.transpose()
                }
            };
            let settings = self.settings.exchange(exchange);
            let perpetual = exchange.is_perpetual();
            let funding = match perpetual && settings.funding {
                false => None,
                true => Some(
                    self.hourly_funding(exchange, run_id, now, skip_done_by_run)
                        .await,
                ),
            };
            let mark = match perpetual && settings.mark_prices {
                false => None,
                true => Some(
                    self.hourly_mark(exchange, run_id, now, skip_done_by_run)
                        .await,
                ),
            };
            out.push(ExchangeRun {
                exchange,
                ingest,
                refetch,
                funding,
                mark,
            });
        }
        out
    }

    /// The hourly job once: [`Pipeline::hourly_ingest`], then silver (with the gap report and
    /// quality checks), then gold. Silver and gold run even when an exchange failed: what did
    /// arrive is still processed.
    pub async fn run_once(&self) -> RunSummary {
        let before = self.lake.requests();
        let now = self.now();
        let run_id = new_run_id(now);
        let exchanges = self.hourly_ingest(&run_id, now, false).await;
        let transform = self.transform(&[], &run_id).await;
        RunSummary {
            run_id,
            exchanges,
            transform,
            requests: self.lake.requests().since(before),
        }
    }

    /// The windows of `dataset` objects of a symbol overlapping `[from, to)` that were fetched
    /// after they closed (final).
    async fn final_windows(
        &self,
        exchange: Exchange,
        dataset: &str,
        symbol: &Symbol,
        (from, to): Window,
    ) -> Result<Vec<Window>> {
        Ok(self
            .lake
            .list_keys(&paths::bronze_symbol(exchange, dataset, symbol))
            .await?
            .iter()
            .filter_map(BronzeKey::parse)
            .filter(|k| k.fetched_at >= k.window_end && k.window_end > from && k.window_start < to)
            .map(|k| (k.window_start, k.window_end))
            .collect())
    }

    /// The mark price windows a perpetual's backfill still has to fetch, once its candles are
    /// in: from the first of the range's candle objects (the venue's history, not years before
    /// a listing) to the range's end, less what final mark objects already cover. So a
    /// backfill stopped between its candles and its mark prices fetches the mark prices again.
    async fn mark_windows(&self, plan: &BackfillPlan) -> Result<Vec<(Symbol, Vec<Window>)>> {
        let max = ExchangeClient::max_window_minutes(plan.exchange);
        let range = (plan.from, plan.to);
        let mut out = Vec::new();
        for s in &plan.symbols {
            let candles = self
                .final_windows(plan.exchange, KLINES_1M, &s.symbol, range)
                .await?;
            let Some(start) = candles.iter().map(|w| w.0).min() else {
                continue;
            };
            let marks = self
                .final_windows(plan.exchange, MARK_KLINES_1M, &s.symbol, range)
                .await?;
            let todo = uncovered(start.max(plan.from), plan.to, &gaps::merge_spans(marks));
            out.push((
                s.symbol.clone(),
                todo.into_iter()
                    .flat_map(|(a, b)| plan_windows(a, b, max))
                    .collect(),
            ));
        }
        Ok(out)
    }

    /// Works out what a backfill of `[from, to)` still has to fetch: the range minus what
    /// final bronze objects (fetched after their window closed, by any earlier run, backfill or
    /// import) already cover, in windows of the exchange's page size. `to` is capped at the
    /// last closed minute.
    pub async fn plan_backfill(
        &self,
        exchange: Exchange,
        symbols: Option<Vec<Symbol>>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        base_url: Option<String>,
    ) -> Result<BackfillPlan> {
        let symbols = symbols.unwrap_or_else(|| self.settings.exchange(exchange).symbols.clone());
        if symbols.is_empty() {
            return Err(Error::Invalid(format!(
                "no symbols to backfill for {exchange}: pass --symbols or set exchanges.{exchange}.symbols"
            )));
        }
        let now = self.now();
        let closed =
            DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0).unwrap_or(now);
        if from >= closed {
            return Err(Error::Invalid(format!(
                "--from {} is in the future",
                from.to_rfc3339()
            )));
        }
        if from >= to {
            return Err(Error::Invalid(format!(
                "--from {} is not before --to {}",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        let to = to.min(closed);
        // Fail on a bad base URL before anything else.
        self.client(exchange, base_url.as_deref())?;
        let max = ExchangeClient::max_window_minutes(exchange);
        let mut planned = Vec::new();
        for symbol in symbols {
            let mut covered: Vec<Window> = Vec::new();
            for dataset in [KLINES_1M, KLINES_1M_ARCHIVE] {
                covered.extend(
                    self.final_windows(exchange, dataset, &symbol, (from, to))
                        .await?,
                );
            }
            let merged = gaps::merge_spans(covered);
            let mut todo = uncovered(from, to, &merged);
            let todo_minutes: i64 = todo.iter().map(|(a, b)| (*b - *a).num_minutes()).sum();
            // With nothing of the symbol in bronze before the first minute to fetch, where
            // the venue's history starts is not known: a bounded search finds it, so years
            // before a listing are never walked page by page. (Kraken serves its last 720
            // minutes only: nothing to search.)
            let (mut history, mut search_requests) = (None, 0);
            if let Some(&(first, _)) = todo.first()
                && ExchangeClient::served_from(exchange, now).is_none()
                && !merged.iter().any(|(a, _)| *a <= first)
            {
                let client = self.client(exchange, base_url.as_deref())?;
                let (start, sent) =
                    client
                        .history_start(&symbol, first, to)
                        .await
                        .map_err(|source| {
                            Error::Lake(cryptolake_lake::Error::Source {
                                exchange: exchange.to_string(),
                                symbol: symbol.to_string(),
                                source,
                            })
                        })?;
                search_requests = sent;
                match start {
                    HistoryStart::AtStart => {}
                    HistoryStart::From(t) => {
                        let t = DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0)
                            .unwrap_or(t);
                        todo = todo
                            .into_iter()
                            .filter(|(_, b)| *b > t)
                            .map(|(a, b)| (a.max(t), b))
                            .collect();
                        history = Some(start);
                    }
                    HistoryStart::Nothing => {
                        todo.clear();
                        history = Some(start);
                    }
                }
            }
            planned.push(BackfillSymbol {
                symbol,
                windows: todo
                    .into_iter()
                    .flat_map(|(a, b)| plan_windows(a, b, max))
                    .collect(),
                covered_minutes: (to - from).num_minutes() - todo_minutes,
                history,
                search_requests,
            });
        }
        Ok(BackfillPlan {
            exchange,
            from,
            to,
            symbols: planned,
            base_url,
            concurrency: None,
            served_from: ExchangeClient::served_from(exchange, now),
            run_id: new_run_id(now),
            now,
        })
    }

    /// Fetches a planned backfill, then silver with the gap report, one round of refetches of
    /// the range's gaps, and gold.
    pub async fn backfill(
        &self,
        plan: &BackfillPlan,
        progress: &dyn BackfillProgress,
    ) -> Result<BackfillReport> {
        let planned: Vec<(Symbol, Option<usize>)> = plan
            .symbols
            .iter()
            .map(|s| (s.symbol.clone(), Some(s.windows.len())))
            .collect();
        progress.start(BackfillPart::Candles, &planned);
        let req = IngestRequest {
            symbols: Some(plan.symbols.iter().map(|s| s.symbol.clone()).collect()),
            base_url: plan.base_url.clone(),
            concurrency: plan.concurrency,
            windows: Some(
                plan.symbols
                    .iter()
                    .map(|p| (p.symbol.clone(), p.windows.clone()))
                    .collect(),
            ),
            move_cursor: false,
            step: Step::Backfill,
            ..IngestRequest::hourly(plan.exchange, &plan.run_id, plan.now)
        };
        let ingest = self
            .ingest(&req, &|symbol, rows| {
                progress.page(BackfillPart::Candles, symbol, rows)
            })
            .await?;
        let mark = match plan.exchange.is_perpetual() {
            false => None,
            true => 'mark: {
                let windows = self.mark_windows(plan).await?;
                if windows.iter().all(|(_, w)| w.is_empty()) {
                    break 'mark None;
                }
                let planned: Vec<(Symbol, Option<usize>)> = windows
                    .iter()
                    .map(|(s, w)| (s.clone(), Some(w.len())))
                    .collect();
                progress.start(BackfillPart::MarkPrices, &planned);
                let req = IngestRequest {
                    prices: Prices::Mark,
                    symbols: Some(windows.iter().map(|(s, _)| s.clone()).collect()),
                    windows: Some(windows),
                    ..req.clone()
                };
                let on_page =
                    |symbol: &Symbol, rows| progress.page(BackfillPart::MarkPrices, symbol, rows);
                Some(self.ingest(&req, &on_page).await?)
            }
        };
        let funding = match plan.exchange.is_perpetual() {
            false => None,
            true => {
                let freq = FundingRequest {
                    symbols: req.symbols.clone(),
                    since: Some(plan.from),
                    until: Some(plan.to),
                    base_url: plan.base_url.clone(),
                    ..FundingRequest::hourly(plan.exchange, &plan.run_id, plan.now)
                };
                let planned: Vec<(Symbol, Option<usize>)> = plan
                    .symbols
                    .iter()
                    .map(|s| (s.symbol.clone(), None))
                    .collect();
                progress.start(BackfillPart::Funding, &planned);
                let on_page =
                    |symbol: &Symbol, rows| progress.page(BackfillPart::Funding, symbol, rows);
                Some(self.ingest_funding(&freq, &on_page).await?)
            }
        };
        let days = (
            plan.from.date_naive(),
            (plan.to - chrono::Duration::minutes(1)).date_naive(),
        );
        let scope = GapRefetch {
            symbols: req.symbols.clone(),
            from: Some(days.0),
            to: Some(days.1),
            base_url: plan.base_url.clone(),
            ..GapRefetch::all(plan.exchange, None)
        };
        let transform = self.transform(&[scope], &plan.run_id).await?;
        Ok(BackfillReport {
            ingest,
            funding,
            mark,
            transform,
        })
    }

    /// Imports Binance archive files into bronze (each file whole or not at all), then builds
    /// silver and gold if anything was written.
    pub async fn import_archives(
        &self,
        files: &[PathBuf],
        symbol: Option<&Symbol>,
        market: Option<Market>,
    ) -> Result<ImportReport> {
        let run_id = self.new_run_id();
        let started = self.start();
        let mut done = Vec::new();
        for f in files {
            let r = import_archive(&self.lake, f, symbol, market, self.now()).await;
            done.push((f.clone(), r.map_err(Error::from)));
        }
        let outcome: Result<&Vec<(PathBuf, Result<ImportOutcome>)>> = Ok(&done);
        self.finish(&run_id, Step::Import, None, started, &outcome, |files| {
            let failed: Vec<String> = files
                .iter()
                .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("{}: {e}", p.display())))
                .collect();
            let ok = files.iter().filter_map(|(_, r)| r.as_ref().ok());
            StepReport {
                problem: (!failed.is_empty()).then(|| (ErrorKind::Input, failed.join("; "))),
                ..StepReport::new(
                    Counts {
                        inputs: files.len() as i64,
                        outputs: ok.clone().map(|o| o.days_written as i64).sum(),
                        rows: ok.map(|o| o.lines as i64).sum(),
                        quarantined: 0,
                    },
                    serde_json::json!({}),
                )
            }
        })
        .await;
        let written: usize = done
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|o| o.days_written)
            .sum();
        let transform = if written > 0 {
            Some(self.transform(&[], &run_id).await?)
        } else {
            None
        };
        Ok(ImportReport {
            files: done,
            transform,
        })
    }

    /// How fresh every enabled exchange and symbol is in silver.
    pub async fn freshness(&self) -> Result<Vec<Freshness>> {
        let pairs: Vec<(Exchange, Symbol)> = self
            .settings
            .enabled_exchanges()
            .flat_map(|(e, s)| s.symbols.iter().map(move |sym| (e, sym.clone())))
            .collect();
        crate::freshness::measure(&self.lake, &pairs, self.now()).await
    }

    /// The freshness of the given exchanges and symbols, enabled or not (a dashboard shows
    /// every pair the lake holds).
    pub async fn freshness_of(&self, pairs: &[(Exchange, Symbol)]) -> Result<Vec<Freshness>> {
        crate::freshness::measure(&self.lake, pairs, self.now()).await
    }
}

/// The error for the broken `fail` rules among `results`, naming the first few.
pub fn verdict(results: &[QualityResult]) -> Result<()> {
    verdict_of(&quality::Summary::of(results))
}

/// The error for the broken `fail` rules a summary counted, naming the first few.
pub fn verdict_of(summary: &quality::Summary) -> Result<()> {
    if summary.failed == 0 {
        return Ok(());
    }
    Err(Error::Quality(format!(
        "{} violation(s) of quality rules with action fail: {}",
        summary.failed,
        summary
            .failed_examples
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    #[test]
    fn uncovered_subtracts_covered_windows() {
        let t = |s: &str| parse_time(s).unwrap();
        let (s, e) = (t("2024-03-01T00:00:00Z"), t("2024-03-02T00:00:00Z"));
        let covered = vec![
            (t("2024-02-29T12:00:00Z"), t("2024-03-01T01:00:00Z")),
            (t("2024-03-01T05:00:00Z"), t("2024-03-01T06:00:00Z")),
            (t("2024-03-01T23:00:00Z"), t("2024-03-02T03:00:00Z")),
        ];
        assert_eq!(
            uncovered(s, e, &covered),
            vec![
                (t("2024-03-01T01:00:00Z"), t("2024-03-01T05:00:00Z")),
                (t("2024-03-01T06:00:00Z"), t("2024-03-01T23:00:00Z")),
            ]
        );
        assert_eq!(uncovered(s, e, &[]), vec![(s, e)]);
        assert!(uncovered(s, e, &[(s, e)]).is_empty());
    }
}
