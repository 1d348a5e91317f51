//! Data-quality rules and their results (`crypto_ops.quality_results`).
//!
//! Record rules (`ohlc`, `amounts`, `alignment`) are applied to every candle as silver reads
//! bronze: a broken candle is dropped, quarantined with its reason, or fails the run. Table rules
//! (`duplicates`, `completeness`, `freshness`, `price_jump`) are evaluated after silver and gold
//! and by `cryptolake check`: they warn or fail, and never change data.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{CandleRule, DailyCandle, HourlyCandle, schema};
use serde::{Deserialize, Serialize};

use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;

use crate::columns::Builder;
use crate::parquet_io::{put_whole, writer_properties};
use crate::{Lake, Result, daily_from_batch, paths, read_parquet};

/// What a rule does when it is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report it; keep the data.
    Warn,
    /// Leave the record out and count it.
    Drop,
    /// Leave the record out and keep it under `quarantine/` with its reason.
    Quarantine,
    /// Fail the run (exit non-zero), naming the rows.
    Fail,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Drop => "drop",
            Action::Quarantine => "quarantine",
            Action::Fail => "fail",
        }
    }
}

/// The rules, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRules {
    pub ohlc: Action,
    pub amounts: Action,
    pub alignment: Action,
    pub duplicates: Action,
    pub min_minutes_per_hour: i32,
    pub min_hours_per_day: i32,
    pub completeness: Action,
    pub max_age_minutes: i64,
    pub freshness: Action,
    /// Largest allowed |close / previous close - 1| between consecutive hours.
    pub max_price_change: f64,
    pub price_jump: Action,
}

impl Default for QualityRules {
    fn default() -> Self {
        QualityRules {
            ohlc: Action::Quarantine,
            amounts: Action::Quarantine,
            alignment: Action::Quarantine,
            duplicates: Action::Warn,
            min_minutes_per_hour: 60,
            min_hours_per_day: 24,
            completeness: Action::Warn,
            max_age_minutes: 180,
            freshness: Action::Warn,
            max_price_change: 0.2,
            price_jump: Action::Warn,
        }
    }
}

impl QualityRules {
    pub fn record_action(&self, rule: CandleRule) -> Action {
        match rule {
            CandleRule::Ohlc => self.ohlc,
            CandleRule::Amounts => self.amounts,
            CandleRule::Alignment => self.alignment,
        }
    }

    /// Checks the actions fit the rules; the error names the rule.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, a) in [
            ("ohlc", self.ohlc),
            ("amounts", self.amounts),
            ("alignment", self.alignment),
        ] {
            if a == Action::Warn {
                return Err(format!(
                    "quality.{name}: a candle that breaks {name} cannot be kept; use drop, quarantine or fail"
                ));
            }
        }
        for (name, a) in [
            ("duplicates", self.duplicates),
            ("completeness", self.completeness),
            ("freshness", self.freshness),
            ("price_jump", self.price_jump),
        ] {
            if matches!(a, Action::Drop | Action::Quarantine) {
                return Err(format!(
                    "quality.{name}: a table rule only reports; use warn or fail"
                ));
            }
        }
        if !(0..=60).contains(&self.min_minutes_per_hour)
            || !(0..=24).contains(&self.min_hours_per_day)
        {
            return Err(
                "quality.completeness: minutes per hour must be 0..=60 and hours per day 0..=24"
                    .into(),
            );
        }
        if self.max_age_minutes < 1
            || self.max_price_change.is_nan()
            || self.max_price_change <= 0.0
        {
            return Err("quality.freshness.max_age_minutes and quality.price_jump.max_change must be positive".into());
        }
        Ok(())
    }
}

/// One finding, or the pass of a rule with nothing to report.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityResult {
    pub rule: String,
    pub action: Action,
    /// `pass` or `violation`.
    pub status: String,
    pub exchange: Option<String>,
    pub symbol: Option<String>,
    /// The hour, day or object concerned.
    pub subject: Option<String>,
    pub observed: Option<f64>,
    pub threshold: Option<f64>,
    pub message: String,
}

impl QualityResult {
    pub fn is_violation(&self) -> bool {
        self.status == "violation"
    }

    pub fn fails(&self) -> bool {
        self.is_violation() && self.action == Action::Fail
    }

    fn pass(rule: &str, action: Action, message: String) -> QualityResult {
        QualityResult {
            rule: rule.into(),
            action,
            status: "pass".into(),
            exchange: None,
            symbol: None,
            subject: None,
            observed: None,
            threshold: None,
            message,
        }
    }
}

/// Duplicates found while building silver that disagree with the copy kept. Identical copies
/// (overlapping windows, gap refetches) are expected and not findings.
pub fn duplicates_result(rules: &QualityRules, dropped: usize) -> QualityResult {
    if dropped == 0 {
        return QualityResult::pass(
            "duplicates",
            rules.duplicates,
            "no conflicting duplicate minutes".into(),
        );
    }
    QualityResult {
        rule: "duplicates".into(),
        action: rules.duplicates,
        status: "violation".into(),
        exchange: None,
        symbol: None,
        subject: None,
        observed: Some(dropped as f64),
        threshold: Some(0.0),
        message: format!(
            "{dropped} minutes arrived more than once with different values; the latest fetch of each was kept"
        ),
    }
}

/// The hour rules (completeness, price jumps, freshness) over hours sorted by exchange, symbol
/// and open time.
pub fn check_hours(
    rules: &QualityRules,
    hours: &[HourlyCandle],
    now: DateTime<Utc>,
) -> Vec<QualityResult> {
    let mut checks = HourChecks::new(rules, now);
    checks.feed(hours, false);
    checks.finish()
}

/// [`check_hours`] over a stream of dates, so memory holds one date's hours (plus one hour per
/// symbol), not the range's: feed each date's hours, sorted by exchange, symbol and open time,
/// in date order, then `finish`.
pub struct HourChecks<'a> {
    rules: &'a QualityRules,
    now: DateTime<Utc>,
    out: Vec<QualityResult>,
    hours: usize,
    incomplete: usize,
    jumps: usize,
    /// The newest hour seen of each exchange and symbol.
    newest: BTreeMap<(String, String), HourlyCandle>,
}

fn violation(
    rule: &str,
    action: Action,
    h: &HourlyCandle,
    observed: f64,
    threshold: f64,
    message: String,
) -> QualityResult {
    QualityResult {
        rule: rule.into(),
        action,
        status: "violation".into(),
        exchange: Some(h.exchange.to_string()),
        symbol: Some(h.symbol.to_string()),
        subject: Some(h.open_time.to_rfc3339()),
        observed: Some(observed),
        threshold: Some(threshold),
        message,
    }
}

impl<'a> HourChecks<'a> {
    pub fn new(rules: &'a QualityRules, now: DateTime<Utc>) -> Self {
        HourChecks {
            rules,
            now,
            out: Vec::new(),
            hours: 0,
            incomplete: 0,
            jumps: 0,
            newest: BTreeMap::new(),
        }
    }

    /// One date's hours. With `context`, they are not judged: they only give the next date's
    /// first hour its previous close, and count for freshness.
    pub fn feed(&mut self, hours: &[HourlyCandle], context: bool) {
        let rules = self.rules;
        for h in hours {
            let key = (h.exchange.to_string(), h.symbol.to_string());
            let previous = self.newest.get(&key);
            if !context {
                self.hours += 1;
                // Minutes confirmed empty count as complete data, as in gold's is_complete.
                let covered = h.minutes_covered();
                if covered < rules.min_minutes_per_hour {
                    self.incomplete += 1;
                    self.out.push(violation(
                        "completeness",
                        rules.completeness,
                        h,
                        f64::from(covered),
                        f64::from(rules.min_minutes_per_hour),
                        format!(
                            "hour has {covered} of 60 minutes ({} present, {} confirmed empty)",
                            h.minutes_present,
                            covered - h.minutes_present
                        ),
                    ));
                }
                if let Some(p) = previous
                    && p.open_time + Duration::hours(1) == h.open_time
                {
                    let change = (h.close / p.close - 1.0).abs();
                    if change > rules.max_price_change {
                        self.jumps += 1;
                        self.out.push(violation(
                            "price_jump",
                            rules.price_jump,
                            h,
                            change,
                            rules.max_price_change,
                            format!(
                                "close {} moved {:.1}% from the previous hour's close {}",
                                h.close,
                                change * 100.0,
                                p.close
                            ),
                        ));
                    }
                }
            }
            if previous.is_none_or(|p| p.open_time < h.open_time) {
                self.newest.insert(key, h.clone());
            }
        }
    }

    /// The findings so far, taken out of the checks (so that a caller can write them as they
    /// come); `finish` returns the rest.
    pub fn take_findings(&mut self) -> Vec<QualityResult> {
        std::mem::take(&mut self.out)
    }

    pub fn finish(mut self) -> Vec<QualityResult> {
        let rules = self.rules;
        if self.incomplete == 0 {
            self.out.push(QualityResult::pass(
                "completeness",
                rules.completeness,
                format!("{} hours complete", self.hours),
            ));
        }
        if self.jumps == 0 {
            self.out.push(QualityResult::pass(
                "price_jump",
                rules.price_jump,
                format!("{} hours within the threshold", self.hours),
            ));
        }
        // Freshness: the newest hour of each exchange and symbol.
        let mut stale = 0;
        for h in self.newest.values() {
            let age = (self.now - (h.open_time + Duration::hours(1))).num_minutes();
            if age > rules.max_age_minutes {
                stale += 1;
                self.out.push(violation(
                    "freshness",
                    rules.freshness,
                    h,
                    age as f64,
                    rules.max_age_minutes as f64,
                    format!("newest closed hour ended {age} minutes ago"),
                ));
            }
        }
        if stale == 0 {
            self.out.push(QualityResult::pass(
                "freshness",
                rules.freshness,
                format!("{} symbols fresh", self.newest.len()),
            ));
        }
        self.out
    }
}

/// Completeness of gold days; the current UTC day is not closed and is not judged.
pub fn check_days(
    rules: &QualityRules,
    days: &[DailyCandle],
    today: NaiveDate,
) -> Vec<QualityResult> {
    let mut out: Vec<QualityResult> = days
        .iter()
        .filter(|d| d.date < today && d.hours_present < rules.min_hours_per_day)
        .map(|d| QualityResult {
            rule: "completeness".into(),
            action: rules.completeness,
            status: "violation".into(),
            exchange: Some(d.exchange.to_string()),
            symbol: Some(d.symbol.to_string()),
            subject: Some(d.date.to_string()),
            observed: Some(f64::from(d.hours_present)),
            threshold: Some(f64::from(rules.min_hours_per_day)),
            message: format!("day has {} of 24 hours", d.hours_present),
        })
        .collect();
    if out.is_empty() {
        out.push(QualityResult::pass(
            "completeness",
            rules.completeness,
            format!(
                "{} closed days complete",
                days.iter().filter(|d| d.date < today).count()
            ),
        ));
    }
    out
}

async fn table_dates(lake: &Lake, table: &object_store::path::Path) -> Result<BTreeSet<NaiveDate>> {
    Ok(lake
        .list_keys(table)
        .await?
        .iter()
        .filter_map(|k| paths::partition_file_date(table, k))
        .collect())
}

/// The dates of `table` in `[from - 1 day, to]`. A short range (an hourly run's is one date)
/// is looked up partition by partition, at once; listing the table would read a directory per
/// date of history. A longer one, or an open one, comes from one listing.
async fn dates_between(
    lake: &Lake,
    table: &object_store::path::Path,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<BTreeSet<NaiveDate>> {
    let (Some(from), Some(to)) = (from, to) else {
        return table_dates(lake, table).await;
    };
    let first = from.pred_opt().unwrap_or(from);
    if (to - first).num_days() >= LOOKUPS_INSTEAD_OF_A_LISTING as i64 {
        let mut all = table_dates(lake, table).await?;
        all.retain(|d| (first..=to).contains(d));
        return Ok(all);
    }
    let dates: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= to).collect();
    use futures::StreamExt;
    let found: Vec<Result<Option<NaiveDate>>> = futures::stream::iter(dates)
        .map(|d| async move {
            let head = lake.head(&paths::partition_file(table, d)).await?;
            Ok(head.map(|_| d))
        })
        .buffered(LOOKUPS_INSTEAD_OF_A_LISTING)
        .collect()
        .await;
    found.into_iter().filter_map(Result::transpose).collect()
}

/// Up to how many dates are looked up one by one rather than listed.
const LOOKUPS_INSTEAD_OF_A_LISTING: usize = 8;

/// Evaluates the table rules over silver and gold: all dates, or those in `[from, to]`.
pub async fn evaluate(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let mut results = evaluate_silver(lake, rules, from, to, now).await?;
    results.extend(evaluate_gold(lake, rules, from, to, now).await?);
    Ok(results)
}

fn in_range(d: &NaiveDate, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    from.is_none_or(|f| *d >= f) && to.is_none_or(|t| *d <= t)
}

/// Completeness, price jumps and freshness of silver hours in `[from, to]`.
pub async fn evaluate_silver(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let mut results = Vec::new();
    evaluate_silver_into(lake, rules, from, to, now, |r| results.push(r)).await?;
    Ok(results)
}

/// [`evaluate_silver`], each result handed to `found` as soon as its date is checked: memory
/// holds a few dates' hours and one date's findings, whatever the range.
pub async fn evaluate_silver_into(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
    mut found: impl FnMut(QualityResult),
) -> Result<()> {
    let dates = dates_between(lake, &paths::silver_table(), from, to).await?;
    let first = dates.iter().copied().find(|d| in_range(d, from, to));
    let mut checks = HourChecks::new(rules, now);
    // Date by date, in order, the next ones read while one is checked; the day before the
    // range too, for the first hour's previous close. Each date is decoded and sorted on the
    // blocking pool, so the dates in flight decode on every core while this task checks.
    use futures::StreamExt;
    let reads = dates
        .iter()
        .filter(|d| in_range(d, from, to) || d.succ_opt() == first)
        .map(|d| async move {
            let key = paths::silver_partition_file(*d);
            let what = key.clone();
            let hours = lake
                .get_with(&key, move |bytes| {
                    let mut hours = crate::parquet_io::decode_hours(&what, bytes)?;
                    hours.sort_by(crate::silver::row_order);
                    Ok(hours)
                })
                .await?;
            Ok::<_, crate::Error>((*d, hours))
        });
    let mut reads = futures::stream::iter(reads).buffered(crate::dates_in_flight(lake, 4));
    while let Some(read) = reads.next().await {
        let (d, hours) = read?;
        checks.feed(&hours, !in_range(&d, from, to));
        checks.take_findings().into_iter().for_each(&mut found);
    }
    checks.finish().into_iter().for_each(found);
    Ok(())
}

/// Completeness of the closed gold days in `[from, to]`.
pub async fn evaluate_gold(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    use futures::StreamExt;
    let dates = dates_between(lake, &paths::gold_table(), from, to).await?;
    let reads = dates
        .into_iter()
        .filter(|d| in_range(d, from, to))
        .map(|d| async move {
            let key = paths::gold_partition_file(d);
            let mut days = Vec::new();
            for b in read_parquet(lake, &key).await? {
                days.extend(daily_from_batch(&b, d, key.as_ref())?);
            }
            Ok::<_, crate::Error>(days)
        });
    let mut days = Vec::new();
    let mut reads = futures::stream::iter(reads).buffered(crate::dates_in_flight(lake, 4));
    while let Some(read) = reads.next().await {
        days.extend(read?);
    }
    Ok(check_days(rules, &days, now.date_naive()))
}

/// How many results are held before they are encoded as the next row group of their file.
const RESULTS_PER_ROW_GROUP: usize = 4096;

/// Violations of each rule kept as examples for the log; the rest are counted.
pub const EXAMPLES_PER_RULE: usize = 3;

/// Violations of `fail` rules kept to be named in the run's error.
const FAILED_EXAMPLES: usize = 5;

/// What a step's quality results came to, whatever their number: violations per rule, the first
/// few of each as examples, and the violations of `fail` rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Results, passes included.
    pub results: usize,
    /// Violations per rule.
    pub violations: BTreeMap<String, usize>,
    /// The first violations of each rule, in the order they were found.
    pub examples: Vec<QualityResult>,
    /// Violations of rules whose action is `fail`.
    pub failed: usize,
    /// The first of those, in the order they were found.
    pub failed_examples: Vec<QualityResult>,
}

impl Summary {
    /// The summary of results held in memory.
    pub fn of(results: &[QualityResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            s.add(r);
        }
        s
    }

    /// Counts one result.
    pub fn add(&mut self, r: &QualityResult) {
        self.results += 1;
        if !r.is_violation() {
            return;
        }
        let n = self.violations.entry(r.rule.clone()).or_default();
        *n += 1;
        if *n <= EXAMPLES_PER_RULE {
            self.examples.push(r.clone());
        }
        if r.fails() {
            self.failed += 1;
            if self.failed_examples.len() < FAILED_EXAMPLES {
                self.failed_examples.push(r.clone());
            }
        }
    }
}

/// The quality results of one step of one run, written as one Parquet file of
/// `crypto_ops.quality_results` as they are found: memory holds one row group's results and
/// the compressed file so far, not every result, so a first build over years of hours with
/// many findings stays in the memory of a short one. The file appears whole when it is
/// finished, and not at all when no result was added.
pub struct ResultsFile {
    key: Path,
    run_id: String,
    step: String,
    checked_at: DateTime<Utc>,
    pending: Vec<QualityResult>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    /// The first encoding error; later results are dropped and `finish` reports it.
    failed: Option<crate::Error>,
    summary: Summary,
}

impl ResultsFile {
    pub fn new(run_id: &str, step: &str, checked_at: DateTime<Utc>) -> ResultsFile {
        ResultsFile {
            key: paths::quality_results(checked_at, run_id, step),
            run_id: run_id.to_string(),
            step: step.to_string(),
            checked_at,
            pending: Vec::new(),
            writer: None,
            failed: None,
            summary: Summary::default(),
        }
    }

    /// Adds one result; a full row group's worth is encoded at once.
    pub fn push(&mut self, r: QualityResult) {
        if self.failed.is_some() {
            return;
        }
        self.summary.add(&r);
        self.pending.push(r);
        if self.pending.len() >= RESULTS_PER_ROW_GROUP
            && let Err(e) = self.encode_pending()
        {
            self.failed = Some(e);
        }
    }

    /// Encodes the pending results as a row group of the file.
    fn encode_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = Builder::new(&self.pending)
            .text(|_| self.run_id.as_str())
            .text(|_| self.step.as_str())
            .time(|_| self.checked_at)
            .text(|r| r.rule.as_str())
            .text(|r| r.action.as_str())
            .text(|r| r.status.as_str())
            .text_opt(|r| r.exchange.as_deref())
            .text_opt(|r| r.symbol.as_deref())
            .text_opt(|r| r.subject.as_deref())
            .float64_opt(|r| r.observed)
            .float64_opt(|r| r.threshold)
            .text(|r| r.message.as_str())
            .finish(schema::quality_results())?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let props = writer_properties(&self.key, &batch.schema(), &[])?;
                let w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))
                    .map_err(|e| crate::Error::parquet(&self.key, e))?;
                self.writer.insert(w)
            }
        };
        writer
            .write(&batch)
            .map_err(|e| crate::Error::parquet(&self.key, e))?;
        writer
            .flush()
            .map_err(|e| crate::Error::parquet(&self.key, e))?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the file (when it holds any result) and returns what the results came to.
    pub async fn finish(mut self, lake: &Lake) -> Result<Summary> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.encode_pending()?;
        if let Some(writer) = self.writer.take() {
            let bytes = writer
                .into_inner()
                .map_err(|e| crate::Error::parquet(&self.key, e))?;
            put_whole(lake, &self.key, Bytes::from(bytes)).await?;
        }
        Ok(self.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::{Exchange, Symbol, parse_time};

    fn hour(t: &str, close: f64, minutes: i32) -> HourlyCandle {
        HourlyCandle {
            exchange: Exchange::Binance,
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            open_time: parse_time(t).unwrap(),
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
            quote_volume: None,
            trade_count: None,
            minutes_present: minutes,
            minute_mask: (1i64 << minutes) - 1,
            empty_mask: 0,
            ingested_at: parse_time(t).unwrap(),
        }
    }

    #[test]
    fn finds_gaps_jumps_and_staleness() {
        let rules = QualityRules::default();
        let hours = vec![
            hour("2024-03-01T00:00:00Z", 100.0, 60),
            hour("2024-03-01T01:00:00Z", 130.0, 60),
            hour("2024-03-01T02:00:00Z", 131.0, 42),
        ];
        let now = parse_time("2024-03-01T08:00:00Z").unwrap();
        let v: Vec<_> = check_hours(&rules, &hours, now)
            .into_iter()
            .filter(|r| r.is_violation())
            .collect();
        let rules_hit: Vec<_> = v
            .iter()
            .map(|r| (r.rule.as_str(), r.subject.clone().unwrap()))
            .collect();
        assert!(
            rules_hit.contains(&("price_jump", "2024-03-01T01:00:00+00:00".into())),
            "{v:?}"
        );
        assert!(
            rules_hit.contains(&("completeness", "2024-03-01T02:00:00+00:00".into())),
            "{v:?}"
        );
        assert!(
            rules_hit.contains(&("freshness", "2024-03-01T02:00:00+00:00".into())),
            "{v:?}"
        );
        assert_eq!(v.len(), 3);
        // Fresh and smooth: only passes.
        let calm = vec![
            hour("2024-03-01T06:00:00Z", 100.0, 60),
            hour("2024-03-01T07:00:00Z", 101.0, 60),
        ];
        assert!(
            check_hours(&rules, &calm, now)
                .iter()
                .all(|r| !r.is_violation())
        );
    }

    #[test]
    fn actions_must_fit_rules() {
        assert!(QualityRules::default().validate().is_ok());
        let r = QualityRules {
            ohlc: Action::Warn,
            ..QualityRules::default()
        };
        assert!(r.validate().unwrap_err().contains("quality.ohlc"));
        let r = QualityRules {
            freshness: Action::Drop,
            ..QualityRules::default()
        };
        assert!(r.validate().unwrap_err().contains("quality.freshness"));
    }

    fn finding(i: usize, action: Action) -> QualityResult {
        QualityResult {
            rule: if i.is_multiple_of(2) {
                "completeness"
            } else {
                "price_jump"
            }
            .into(),
            action,
            status: "violation".into(),
            exchange: Some("binance".into()),
            symbol: Some("BTC-USDT".into()),
            subject: Some(format!("hour {i}")),
            observed: Some(i as f64),
            threshold: Some(60.0),
            message: format!("finding {i}"),
        }
    }

    #[tokio::test]
    async fn results_are_written_a_row_group_at_a_time_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let at = parse_time("2024-03-01T05:00:00Z").unwrap();
        let n = 2 * RESULTS_PER_ROW_GROUP + 7;
        let mut file = ResultsFile::new("run-1", "silver", at);
        for i in 0..n {
            file.push(finding(i, if i == 5 { Action::Fail } else { Action::Warn }));
            // Never more than a row group's results wait in memory.
            assert!(file.pending.len() < RESULTS_PER_ROW_GROUP);
        }
        let summary = file.finish(&lake).await.unwrap();
        assert_eq!(summary.results, n);
        assert_eq!(summary.violations["completeness"], n.div_ceil(2));
        assert_eq!(summary.violations["price_jump"], n / 2);
        assert_eq!(summary.examples.len(), 2 * EXAMPLES_PER_RULE);
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.failed_examples[0].message, "finding 5");

        let bytes = lake
            .get(&paths::quality_results(at, "run-1", "silver"))
            .await
            .unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 3);
        let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
        let messages: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let col = b
                    .column_by_name("message")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap()
                    .clone();
                col.iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let expected: Vec<String> = (0..n).map(|i| format!("finding {i}")).collect();
        assert_eq!(messages, expected);
    }

    #[tokio::test]
    async fn no_results_write_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let at = parse_time("2024-03-01T05:00:00Z").unwrap();
        let summary = ResultsFile::new("run-1", "gold", at)
            .finish(&lake)
            .await
            .unwrap();
        assert_eq!(summary, Summary::default());
        let key = paths::quality_results(at, "run-1", "gold");
        assert!(lake.head(&key).await.unwrap().is_none());
    }
}
