//! The pipeline steps as the commands run them: leases, clients from config, and summaries.

use std::time::Duration as StdDuration;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use cryptolake_lake::bronze::{Ingest, IngestMetrics, KLINES_1M, Window, plan_windows};
use cryptolake_lake::gaps::{self, GapScan};
use cryptolake_lake::gold::{GoldBuild, GoldMetrics};
use cryptolake_lake::lease::{Lease, LeaseOptions};
use cryptolake_lake::ops::{RunRecord, record_run};
use cryptolake_lake::paths::{self, BronzeKey};
use cryptolake_lake::quality::{self, QualityResult};
use cryptolake_lake::silver::{SilverBuild, SilverMetrics};
use cryptolake_lake::{Lake, new_run_id};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::ExchangeClient;
use cryptolake_sources::http::RetryPolicy;
use tracing::{info, warn};

use crate::config::Config;

/// What every step needs.
pub struct Env {
    pub config: Config,
    pub lake: Lake,
    pub lock_wait: StdDuration,
    /// One client per exchange and base URL for the life of the process, so that every
    /// request to an exchange (ingest, backfill, gap refetch) shares one budget.
    pub clients: std::sync::Mutex<std::collections::HashMap<(Exchange, String), ExchangeClient>>,
}

/// An ingest request after flags and config are merged.
pub struct IngestArgs {
    pub exchange: Exchange,
    pub symbols: Vec<Symbol>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub base_url: Option<String>,
    pub run_id: String,
    /// Exact windows per symbol (backfill, gap refetch) instead of since/until.
    pub windows: Option<Vec<(Symbol, Vec<Window>)>>,
    /// Whether fetched windows move the hourly ingest's cursor.
    pub move_cursor: bool,
}

impl IngestArgs {
    /// The hourly ingest of `symbols` from where the cursor stands.
    pub fn hourly(exchange: Exchange, symbols: Vec<Symbol>, run_id: &str) -> IngestArgs {
        IngestArgs {
            exchange,
            symbols,
            since: None,
            until: None,
            base_url: None,
            run_id: run_id.to_string(),
            windows: None,
            move_cursor: true,
        }
    }
}

fn owner(run_id: &str) -> String {
    format!("pid {} run {run_id}", std::process::id())
}

/// What a step reports to the run history: inputs, outputs, rows, quarantined, details, and
/// the problem that makes a finished step a failure (an ingest where some symbols failed).
struct StepCounts(i64, i64, i64, i64, String, Option<String>);

impl Env {
    /// Writes the step's row in `crypto_ops.runs`. A failure to record is logged, never hides
    /// the step's own outcome.
    async fn record<T>(
        &self,
        run_id: &str,
        step: &str,
        started_at: DateTime<Utc>,
        outcome: &Result<T>,
        counts: impl Fn(&T) -> StepCounts,
    ) {
        let (status, error, c) = match outcome {
            Ok(v) => {
                let c = counts(v);
                match c.5.clone() {
                    None => ("ok", None, c),
                    Some(problem) => ("failed", Some(problem), c),
                }
            }
            Err(e) => (
                "failed",
                Some(crate::one_line(e)),
                StepCounts(0, 0, 0, 0, "{}".into(), None),
            ),
        };
        let record = RunRecord {
            run_id: run_id.to_string(),
            step: step.to_string(),
            started_at,
            finished_at: Utc::now(),
            status: status.to_string(),
            inputs: c.0,
            outputs: c.1,
            rows: c.2,
            quarantined: c.3,
            error,
            details: c.4,
        };
        if let Err(e) = record_run(&self.lake, &record).await {
            warn!(step, run_id, error = %e, "could not record the run");
        }
    }

    /// The run-history row of a `check`.
    pub async fn record_check(
        &self,
        run_id: &str,
        started: DateTime<Utc>,
        outcome: &cryptolake_lake::Result<Vec<QualityResult>>,
    ) {
        let outcome = match outcome {
            Ok(r) => Ok(r),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        self.record(run_id, "check", started, &outcome, |results| {
            let violations = results.iter().filter(|r| r.is_violation()).count();
            let fails = results.iter().filter(|r| r.fails()).count();
            StepCounts(
                results.len() as i64,
                violations as i64,
                0,
                0,
                serde_json::json!({ "violations": violations, "fail_violations": fails })
                    .to_string(),
                (fails > 0).then(|| format!("{fails} violation(s) of rules with action fail")),
            )
        })
        .await;
    }

    /// Records quality results, logs violations, and fails if a `fail` rule was broken.
    pub async fn quality_verdict(
        &self,
        run_id: &str,
        step: &str,
        results: &[QualityResult],
    ) -> Result<()> {
        if let Err(e) = quality::record_results(&self.lake, run_id, step, Utc::now(), results).await
        {
            warn!(step, error = %e, "could not record quality results");
        }
        // A few findings per rule in the log, the rest counted: all of them are in
        // crypto_ops.quality_results.
        let mut per_rule: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in results.iter().filter(|r| r.is_violation()) {
            let n = per_rule.entry(r.rule.as_str()).or_default();
            *n += 1;
            if *n <= 3 {
                warn!(rule = %r.rule, action = r.action.as_str(), exchange = ?r.exchange, symbol = ?r.symbol, subject = ?r.subject, "{}", r.message);
            }
        }
        for (rule, n) in per_rule.into_iter().filter(|(_, n)| *n > 3) {
            warn!(
                rule,
                findings = n,
                step,
                "{} more findings of this rule in crypto_ops.quality_results",
                n - 3
            );
        }
        let failed: Vec<String> = results.iter().filter(|r| r.fails()).map(describe).collect();
        if !failed.is_empty() {
            bail!(
                "{} violation(s) of quality rules with action fail: {}",
                failed.len(),
                failed
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(())
    }

    async fn lease(&self, name: &str, run_id: &str) -> Result<Lease> {
        let opts = LeaseOptions {
            wait: self.lock_wait,
            ..LeaseOptions::default()
        };
        match Lease::acquire(&self.lake, name, &owner(run_id), &opts).await {
            Ok(lease) => Ok(lease),
            Err(e @ cryptolake_lake::Error::Busy { .. }) => Err(anyhow::anyhow!(
                "{e}; another cryptolake run is working on this lake: try again later or pass --wait-lock SECONDS"
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A client for `exchange`: base URL from the flag, else the config, else the real API;
    /// the configured budget and request timeout.
    pub fn client(&self, exchange: Exchange, base_url: Option<&str>) -> Result<ExchangeClient> {
        let configured = self
            .config
            .exchange(exchange)
            .and_then(|c| c.base_url.clone());
        let url = base_url.map(str::to_string).or(configured);
        let key = (exchange, url.clone().unwrap_or_default());
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let policy = RetryPolicy {
            request_timeout: self.config.request_timeout(),
            ..RetryPolicy::default()
        };
        let client = ExchangeClient::new(
            exchange,
            url.as_deref(),
            policy,
            Some(self.config.budget(exchange)),
        )?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    pub async fn ingest(
        &self,
        args: &IngestArgs,
        now: DateTime<Utc>,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        let started = Utc::now();
        let outcome = self.ingest_inner(args, now, on_page).await;
        self.record(
            &args.run_id,
            &format!("ingest:{}", args.exchange),
            started,
            &outcome,
            |m| {
                StepCounts(
                    m.symbols.len() as i64,
                    m.pages as i64,
                    m.rows as i64,
                    0,
                    serde_json::json!({
                        "bytes": m.bytes,
                        "symbols": m.symbols.iter().map(|o| serde_json::json!({
                            "symbol": o.symbol.as_str(),
                            "pages": o.pages,
                            "rows": o.rows,
                            "next_open_time": o.next_open_time,
                            "error": o.error,
                        })).collect::<Vec<_>>(),
                    })
                    .to_string(),
                    (m.failures().next().is_some()).then(|| {
                        m.failures()
                            .map(|f| format!("{}: {}", f.symbol, f.error.as_deref().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join("; ")
                    }),
                )
            },
        )
        .await;
        outcome
    }

    async fn ingest_inner(
        &self,
        args: &IngestArgs,
        now: DateTime<Utc>,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        if args.symbols.is_empty() {
            bail!(
                "no symbols to ingest for {}: pass --symbols or set exchanges.{}.symbols",
                args.exchange,
                args.exchange
            );
        }
        let client = self.client(args.exchange, args.base_url.as_deref())?;
        let lease = self
            .lease(&format!("ingest-{}", args.exchange), &args.run_id)
            .await?;
        let mut job = Ingest::new(args.exchange, args.symbols.clone(), &args.run_id, now)
            .with_since(args.since)
            .with_until(args.until)
            .with_lookback(self.config.lookback())
            .with_concurrency(self.config.ingest.concurrency);
        if let Some(windows) = &args.windows {
            job = job.with_windows(windows.clone());
        } else if !args.move_cursor {
            job = job.with_cursor(false);
        }
        let plan = job.plan(&self.lake).await?;
        info!(exchange = %args.exchange, base_url = client.base_url(), pages = plan.pages(), "ingest planned");
        let metrics = job.execute(&self.lake, &client, plan, on_page).await;
        lease.release().await?;
        Ok(metrics?)
    }

    pub async fn silver(&self, rebuild: bool, run_id: &str) -> Result<SilverMetrics> {
        let started = Utc::now();
        let outcome = match self.silver_inner(rebuild, run_id).await {
            Ok((m, results)) => match self.quality_verdict(run_id, "silver", &results).await {
                Ok(()) => Ok(m),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.record(run_id, "silver", started, &outcome, |m| {
            StepCounts(
                m.objects_read as i64,
                (m.partitions_written + m.partitions_deleted) as i64,
                m.hours_written as i64,
                m.rejected_records as i64,
                serde_json::to_string(m).unwrap_or_default(),
                None,
            )
        })
        .await;
        outcome
    }

    /// The build, then the gap report and the quality checks of the changed dates.
    async fn silver_inner(
        &self,
        rebuild: bool,
        run_id: &str,
    ) -> Result<(SilverMetrics, Vec<QualityResult>)> {
        let lease = self.lease("transform", run_id).await?;
        let rules = self.config.quality.rules();
        let build = SilverBuild::new()
            .with_rebuild(rebuild)
            .with_manifest_overlap(self.config.silver.manifest_overlap()?)
            .with_rules(rules.clone());
        let plan = build.plan(&self.lake).await?;
        info!(
            new_objects = plan.new_objects.len(),
            dates = plan.affected.len(),
            rebuild,
            "silver planned"
        );
        let metrics = build.execute(&self.lake, plan, Some(&lease)).await;
        let mut results = Vec::new();
        if let Ok(m) = &metrics {
            results.push(quality::duplicates_result(&rules, m.conflicting_duplicates));
            // The gap report follows silver, still under its lease: the groups new bronze
            // touched are rescanned, from the bronze keys silver already listed. The quality
            // checks only read the new partitions, so both run at once.
            let gap_report = async {
                if m.touched.is_empty() {
                    return;
                }
                match gaps::update(&self.lake, &m.touched, &m.listed, Utc::now()).await {
                    Ok(scan) => info!(
                        dates = scan.dates_scanned,
                        gaps = scan.gaps.len(),
                        "gap report updated"
                    ),
                    Err(e) => warn!(error = %e, "the gap report could not be updated"),
                }
            };
            let checks = async {
                let (Some(from), Some(to)) = (m.changed_dates.first(), m.changed_dates.last())
                else {
                    return Vec::new();
                };
                quality::evaluate_silver(&self.lake, &rules, Some(*from), Some(*to), Utc::now())
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "quality checks of silver could not run");
                        Vec::new()
                    })
            };
            let ((), found) = tokio::join!(gap_report, checks);
            results.extend(found);
        }
        lease.release().await?;
        Ok((metrics?, results))
    }

    pub async fn gold(&self, rebuild: bool, run_id: &str) -> Result<GoldMetrics> {
        let started = Utc::now();
        let mut outcome = self.gold_inner(rebuild, run_id).await;
        if let Ok(m) = &outcome
            && let (Some(from), Some(to)) = (m.changed_dates.first(), m.changed_dates.last())
        {
            let rules = self.config.quality.rules();
            let verdict = match quality::evaluate_gold(
                &self.lake,
                &rules,
                Some(*from),
                Some(*to),
                Utc::now(),
            )
            .await
            {
                Ok(results) => self.quality_verdict(run_id, "gold", &results).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = verdict {
                outcome = Err(e);
            }
        }
        self.record(run_id, "gold", started, &outcome, |m| {
            StepCounts(
                m.changed_dates.len() as i64,
                (m.partitions_written + m.partitions_deleted) as i64,
                m.rows_written as i64,
                0,
                serde_json::to_string(m).unwrap_or_default(),
                None,
            )
        })
        .await;
        outcome
    }

    async fn gold_inner(&self, rebuild: bool, run_id: &str) -> Result<GoldMetrics> {
        let lease = self.lease("transform", run_id).await?;
        let build = GoldBuild::new().with_rebuild(rebuild);
        let plan = build.plan(&self.lake).await?;
        info!(
            dates = plan.build.len(),
            removed = plan.remove.len(),
            rebuild,
            "gold planned"
        );
        let metrics = build.execute(&self.lake, plan, Some(&lease)).await;
        lease.release().await?;
        Ok(metrics?)
    }

    /// Rescans `crypto_ops.gaps` for the dates in `[from, to]`, under the transform lease so
    /// that it never races a silver build rewriting the same partitions.
    pub async fn scan_gaps(
        &self,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> Result<GapScan> {
        let lease = self.lease("transform", &new_run_id(Utc::now())).await?;
        let scan = gaps::scan(&self.lake, from, to, Utc::now()).await;
        lease.release().await?;
        Ok(scan?)
    }

    /// Fetches again the recorded gaps worth refetching (missing or unconfirmed, still
    /// served) that `scope` selects.
    pub async fn refetch_gaps(
        &self,
        scope: &GapRefetch,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IngestMetrics>> {
        let GapRefetch {
            exchange,
            symbols,
            from,
            to,
            base_url,
        } = scope;
        let (exchange, symbols) = (*exchange, symbols.as_deref());
        let recorded = gaps::read(&self.lake, *from, *to).await?;
        let windows: Vec<(Symbol, Vec<Window>)> =
            gaps::refetch_windows(&recorded, exchange, self.config.ingest.max_refetch_windows)
                .into_iter()
                .filter(|(s, _)| symbols.is_none_or(|list| list.contains(s)))
                .collect();
        if windows.is_empty() {
            return Ok(None);
        }
        info!(%exchange, symbols = windows.len(), windows = windows.iter().map(|(_, w)| w.len()).sum::<usize>(), "refetching gaps");
        let args = IngestArgs {
            base_url: base_url.clone(),
            windows: Some(windows.clone()),
            move_cursor: false,
            ..IngestArgs::hourly(
                exchange,
                windows.into_iter().map(|(s, _)| s).collect(),
                run_id,
            )
        };
        Ok(Some(self.ingest(&args, now, &|_, _| {}).await?))
    }

    /// The hourly job: ingest every enabled exchange and refetch its gaps, then silver (with
    /// the gap report), then gold.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunSummary> {
        let run_id = new_run_id(now);
        let mut summary = RunSummary {
            run_id: run_id.clone(),
            ..Default::default()
        };
        for (exchange, symbols) in self.config.enabled_exchanges() {
            let args = IngestArgs::hourly(exchange, symbols.clone(), &run_id);
            let mut metrics = vec![self.ingest(&args, now, &|_, _| {}).await?];
            match self
                .refetch_gaps(&GapRefetch::all(exchange, Some(symbols)), &run_id, now)
                .await
            {
                Ok(Some(m)) => metrics.push(m),
                Ok(None) => {}
                Err(e) => summary
                    .ingest_errors
                    .push(format!("{exchange} gap refetch: {}", crate::one_line(&e))),
            }
            for m in metrics {
                for f in m.failures() {
                    summary.ingest_errors.push(format!(
                        "{exchange} {}: {}",
                        f.symbol,
                        f.error.as_deref().unwrap_or("")
                    ));
                }
                summary.pages += m.pages;
                summary.candles += m.rows;
            }
        }
        // Silver and gold run even when one symbol failed: what did arrive is still processed.
        summary.silver = self.silver(false, &run_id).await?;
        summary.gold = self.gold(false, &run_id).await?;
        Ok(summary)
    }
}

/// Which recorded gaps to fetch again.
#[derive(Debug, Clone)]
pub struct GapRefetch {
    pub exchange: Exchange,
    /// `None`: every symbol with gaps.
    pub symbols: Option<Vec<Symbol>>,
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
    pub base_url: Option<String>,
}

impl GapRefetch {
    pub fn all(exchange: Exchange, symbols: Option<Vec<Symbol>>) -> GapRefetch {
        GapRefetch {
            exchange,
            symbols,
            from: None,
            to: None,
            base_url: None,
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

impl Env {
    /// Works out what a backfill of `[from, to)` still has to fetch: the range minus what
    /// final bronze objects (fetched after their window closed, by any earlier run, backfill or
    /// import) already cover, in windows of the exchange's page size.
    pub async fn plan_backfill(
        &self,
        exchange: Exchange,
        symbols: &[Symbol],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BackfillSymbol>> {
        let max = ExchangeClient::max_window_minutes(exchange);
        let mut out = Vec::new();
        for symbol in symbols {
            let mut covered: Vec<Window> = Vec::new();
            for dataset in [KLINES_1M, cryptolake_lake::bronze::KLINES_1M_ARCHIVE] {
                for location in self
                    .lake
                    .list_keys(&paths::bronze_symbol(exchange, dataset, symbol))
                    .await?
                {
                    if let Some(k) = BronzeKey::parse(&location)
                        && k.fetched_at >= k.window_end
                        && k.window_end > from
                        && k.window_start < to
                    {
                        covered.push((k.window_start, k.window_end));
                    }
                }
            }
            let merged = gaps::merge_spans(covered);
            let todo = uncovered(from, to, &merged);
            let todo_minutes: i64 = todo.iter().map(|(a, b)| (*b - *a).num_minutes()).sum();
            let windows = todo
                .into_iter()
                .flat_map(|(a, b)| plan_windows(a, b, max))
                .collect();
            out.push(BackfillSymbol {
                symbol: symbol.clone(),
                windows,
                covered_minutes: (to - from).num_minutes() - todo_minutes,
            });
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
pub struct RunSummary {
    pub run_id: String,
    pub pages: usize,
    pub candles: usize,
    pub ingest_errors: Vec<String>,
    pub silver: SilverMetrics,
    pub gold: GoldMetrics,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "run {}", self.run_id)?;
        writeln!(
            f,
            "  ingest: {} pages, {} candles",
            self.pages, self.candles
        )?;
        for e in &self.ingest_errors {
            writeln!(f, "  ingest error: {e}")?;
        }
        write!(f, "{}", silver_summary(&self.silver))?;
        write!(f, "{}", gold_summary(&self.gold))
    }
}

pub fn ingest_summary(exchange: Exchange, m: &IngestMetrics) -> String {
    let mut s = format!(
        "ingest {exchange}: {} pages, {} candles, {} bytes into bronze\n",
        m.pages, m.rows, m.bytes
    );
    for o in &m.symbols {
        let next = o
            .next_open_time
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into());
        match &o.error {
            None => s.push_str(&format!(
                "  {}: {} candles, next from {next}\n",
                o.symbol, o.rows
            )),
            Some(e) => s.push_str(&format!(
                "  {}: FAILED after {} candles: {e}\n",
                o.symbol, o.rows
            )),
        }
    }
    s
}

pub fn silver_summary(m: &SilverMetrics) -> String {
    format!(
        "  silver: {} new bronze objects ({} read), {} candles, {} duplicates dropped, {} open candles skipped, {} outside their window skipped, {} bad records dropped, {} records quarantined in {} objects; {} partitions written ({} hours), {} unchanged, {} deleted\n",
        m.new_objects,
        m.objects_read,
        m.candles_read,
        m.duplicates_dropped,
        m.open_candles_skipped,
        m.outside_window_skipped,
        m.dropped_records,
        m.rejected_records,
        m.quarantined_objects,
        m.partitions_written,
        m.hours_written,
        m.partitions_unchanged,
        m.partitions_deleted
    )
}

pub fn gold_summary(m: &GoldMetrics) -> String {
    format!(
        "  gold: {} partitions written ({} rows), {} deleted\n",
        m.partitions_written, m.rows_written, m.partitions_deleted
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
