//! Data-quality rules and their results (`crypto_ops.quality_results`).
//!
//! Record rules (`ohlc`, `amounts`, `alignment`) are applied to every candle as silver reads
//! bronze: a broken candle is dropped, quarantined with its reason, or fails the run. Table rules
//! (`duplicates`, `completeness`, `freshness`, `price_jump`) are evaluated after silver and gold
//! and by `cryptolake check`, and `consistency` (`ohlcv_1h` against `ohlcv_1m`) by `check`:
//! they warn or fail, and never change data. The perpetual tables' rules ([`perpetual`]) are
//! evaluated after their build and by `check`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{
    CandleRule, DailyCandle, Exchange, HourlyCandle, MinuteCandle, Step, Symbol, schema,
};
use serde::{Deserialize, Serialize};

use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;

use crate::columns::Builder;
use crate::parquet_io::{put_whole, writer_properties};
use crate::{Lake, Result, daily_from_batch, paths, read_parquet};

mod perpetual;
pub use perpetual::{
    MarkChecks, check_funding_days, check_marks, check_rates, evaluate_perpetual,
    evaluate_perpetual_on,
};

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
    /// `ohlcv_1h` against `ohlcv_1m` aggregated.
    pub consistency: Action,
    pub min_minutes_per_hour: i32,
    pub min_hours_per_day: i32,
    pub completeness: Action,
    pub max_age_minutes: i64,
    pub freshness: Action,
    /// Largest allowed |close / previous close - 1| between consecutive hours.
    pub max_price_change: f64,
    pub price_jump: Action,
    /// A closed day of `funding_1d` that is not complete.
    pub funding_completeness: Action,
    /// How long past its interval a symbol's newest funding slot may be.
    pub funding_max_late_minutes: i64,
    pub funding_freshness: Action,
    /// Largest allowed |rate| of one funding event.
    pub max_funding_rate: f64,
    pub funding_rate: Action,
    /// A closed hour of mark prices short of minutes (`min_minutes_per_hour`).
    pub mark_completeness: Action,
    /// A symbol's newest mark minute older than `max_age_minutes`.
    pub mark_freshness: Action,
}

impl Default for QualityRules {
    fn default() -> Self {
        QualityRules {
            ohlc: Action::Quarantine,
            amounts: Action::Quarantine,
            alignment: Action::Quarantine,
            duplicates: Action::Warn,
            consistency: Action::Fail,
            min_minutes_per_hour: 60,
            min_hours_per_day: 24,
            completeness: Action::Warn,
            max_age_minutes: 180,
            freshness: Action::Warn,
            max_price_change: 0.2,
            price_jump: Action::Warn,
            funding_completeness: Action::Warn,
            funding_max_late_minutes: 120,
            funding_freshness: Action::Warn,
            max_funding_rate: 0.02,
            funding_rate: Action::Warn,
            mark_completeness: Action::Warn,
            mark_freshness: Action::Warn,
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
            ("consistency", self.consistency),
            ("completeness", self.completeness),
            ("freshness", self.freshness),
            ("price_jump", self.price_jump),
            ("funding_completeness", self.funding_completeness),
            ("funding_freshness", self.funding_freshness),
            ("funding_rate", self.funding_rate),
            ("mark_completeness", self.mark_completeness),
            ("mark_freshness", self.mark_freshness),
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
        if self.funding_max_late_minutes < 0
            || self.max_funding_rate.is_nan()
            || self.max_funding_rate <= 0.0
        {
            return Err("quality.funding_freshness.max_late_minutes must not be negative and quality.funding_rate.max_abs must be positive".into());
        }
        Ok(())
    }
}

/// A table rule, as `crypto_ops.quality_results` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Completeness,
    PriceJump,
    Freshness,
    Duplicates,
    Consistency,
    FundingCompleteness,
    FundingFreshness,
    FundingRate,
    MarkCompleteness,
    MarkFreshness,
}

impl Rule {
    pub const ALL: [Rule; 10] = [
        Rule::Completeness,
        Rule::PriceJump,
        Rule::Freshness,
        Rule::Duplicates,
        Rule::Consistency,
        Rule::FundingCompleteness,
        Rule::FundingFreshness,
        Rule::FundingRate,
        Rule::MarkCompleteness,
        Rule::MarkFreshness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Completeness => "completeness",
            Rule::PriceJump => "price_jump",
            Rule::Freshness => "freshness",
            Rule::Duplicates => "duplicates",
            Rule::Consistency => "consistency",
            Rule::FundingCompleteness => "funding_completeness",
            Rule::FundingFreshness => "funding_freshness",
            Rule::FundingRate => "funding_rate",
            Rule::MarkCompleteness => "mark_completeness",
            Rule::MarkFreshness => "mark_freshness",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an evaluation of a rule found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Violation,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Violation => "violation",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Pass, Status::Violation]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        [Action::Warn, Action::Drop, Action::Quarantine, Action::Fail]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// One finding, or the pass of a rule with nothing to report.
///
/// A pass either sums up the whole evaluation (no exchange, no subject), or says that one
/// exchange and symbol had nothing to report over one scope: its hours of one date (subject
/// the ISO 8601 interval of that date), one closed day (subject the date), or its freshness
/// (no subject). These scoped passes are what lets a later evaluation resolve an earlier
/// violation: the current state of a rule for a subject is its latest evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityResult {
    pub rule: Rule,
    pub action: Action,
    pub status: Status,
    pub exchange: Option<Exchange>,
    pub symbol: Option<Symbol>,
    /// The hour, day or object concerned.
    pub subject: Option<String>,
    pub observed: Option<f64>,
    pub threshold: Option<f64>,
    pub message: String,
}

impl QualityResult {
    pub fn is_violation(&self) -> bool {
        self.status == Status::Violation
    }

    pub fn fails(&self) -> bool {
        self.is_violation() && self.action == Action::Fail
    }

    fn pass(rule: Rule, action: Action, message: String) -> QualityResult {
        QualityResult {
            rule,
            action,
            status: Status::Pass,
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
            Rule::Duplicates,
            rules.duplicates,
            "no conflicting duplicate minutes".into(),
        );
    }
    QualityResult {
        rule: Rule::Duplicates,
        action: rules.duplicates,
        status: Status::Violation,
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
    /// The exchanges, symbols and dates of the hours judged in the current `feed`, with
    /// whether each broke completeness and price jumps.
    judged: BTreeMap<(Exchange, Symbol, NaiveDate), (bool, bool)>,
}

/// The ISO 8601 interval of a date's hours: the subject of a pass over them.
pub fn hours_of(date: NaiveDate) -> String {
    let start = date.and_time(chrono::NaiveTime::MIN).and_utc();
    format!(
        "{}/{}",
        start.to_rfc3339(),
        (start + Duration::days(1)).to_rfc3339()
    )
}

/// A pass of `rule` for one exchange and symbol over `subject`.
fn scoped_pass(
    rule: Rule,
    action: Action,
    exchange: Exchange,
    symbol: &Symbol,
    subject: Option<String>,
    message: String,
) -> QualityResult {
    QualityResult {
        exchange: Some(exchange),
        symbol: Some(symbol.clone()),
        subject,
        ..QualityResult::pass(rule, action, message)
    }
}

fn violation(
    rule: Rule,
    action: Action,
    h: &HourlyCandle,
    observed: f64,
    threshold: f64,
    message: String,
) -> QualityResult {
    let pair = (h.exchange, h.symbol.clone());
    let subject = h.open_time.to_rfc3339();
    finding(
        rule,
        action,
        &pair,
        subject,
        observed,
        Some(threshold),
        message,
    )
}

/// A violation of `rule` by one exchange and symbol over `subject`.
fn finding(
    rule: Rule,
    action: Action,
    (exchange, symbol): &(Exchange, Symbol),
    subject: String,
    observed: f64,
    threshold: Option<f64>,
    message: String,
) -> QualityResult {
    QualityResult {
        rule,
        action,
        status: Status::Violation,
        exchange: Some(*exchange),
        symbol: Some(symbol.clone()),
        subject: Some(subject),
        observed: Some(observed),
        threshold,
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
            judged: BTreeMap::new(),
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
                let judged = self
                    .judged
                    .entry((h.exchange, h.symbol.clone(), h.open_time.date_naive()))
                    .or_default();
                // Minutes confirmed empty count as complete data, as in gold's is_complete.
                let covered = h.minutes_covered();
                if covered < rules.min_minutes_per_hour {
                    self.incomplete += 1;
                    judged.0 = true;
                    self.out.push(violation(
                        Rule::Completeness,
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
                        judged.1 = true;
                        self.out.push(violation(
                            Rule::PriceJump,
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
        // Each exchange, symbol and date judged here without a finding passes, so that the
        // current state of an earlier finding over those hours is resolved.
        for ((exchange, symbol, date), (incomplete, jumped)) in std::mem::take(&mut self.judged) {
            for (rule, action, broken, message) in [
                (
                    Rule::Completeness,
                    rules.completeness,
                    incomplete,
                    "every hour complete",
                ),
                (
                    Rule::PriceJump,
                    rules.price_jump,
                    jumped,
                    "every hour within the threshold",
                ),
            ] {
                if !broken {
                    self.out.push(scoped_pass(
                        rule,
                        action,
                        exchange,
                        &symbol,
                        Some(hours_of(date)),
                        message.into(),
                    ));
                }
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
                Rule::Completeness,
                rules.completeness,
                format!("{} hours complete", self.hours),
            ));
        }
        if self.jumps == 0 {
            self.out.push(QualityResult::pass(
                Rule::PriceJump,
                rules.price_jump,
                format!("{} hours within the threshold", self.hours),
            ));
        }
        // Freshness: the newest hour of each exchange and symbol.
        let mut stale = 0;
        for h in self.newest.values() {
            let age = (self.now - (h.open_time + Duration::hours(1))).num_minutes();
            if age <= rules.max_age_minutes {
                self.out.push(scoped_pass(
                    Rule::Freshness,
                    rules.freshness,
                    h.exchange,
                    &h.symbol,
                    None,
                    format!("newest closed hour ended {age} minutes ago"),
                ));
            }
            if age > rules.max_age_minutes {
                stale += 1;
                self.out.push(violation(
                    Rule::Freshness,
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
                Rule::Freshness,
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
            rule: Rule::Completeness,
            action: rules.completeness,
            status: Status::Violation,
            exchange: Some(d.exchange),
            symbol: Some(d.symbol.clone()),
            subject: Some(d.date.to_string()),
            observed: Some(f64::from(d.hours_present)),
            threshold: Some(f64::from(rules.min_hours_per_day)),
            message: format!("day has {} of 24 hours", d.hours_present),
        })
        .collect();
    let broken = out.len();
    out.extend(
        days.iter()
            .filter(|d| d.date < today && d.hours_present >= rules.min_hours_per_day)
            .map(|d| {
                scoped_pass(
                    Rule::Completeness,
                    rules.completeness,
                    d.exchange,
                    &d.symbol,
                    Some(d.date.to_string()),
                    format!("day has {} of 24 hours", d.hours_present),
                )
            }),
    );
    if broken == 0 {
        out.push(QualityResult::pass(
            Rule::Completeness,
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

/// Evaluates the table rules over silver and gold, the perpetual tables among them: all
/// dates, or those in `[from, to]`.
pub async fn evaluate(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let mut results = evaluate_silver(lake, rules, from, to, now).await?;
    results.extend(evaluate_gold(lake, rules, from, to, now).await?);
    results.extend(evaluate_perpetual(lake, rules, from, to, now).await?);
    Ok(results)
}

fn in_range(d: &NaiveDate, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    from.is_none_or(|f| *d >= f) && to.is_none_or(|t| *d <= t)
}

/// Completeness, price jumps and freshness of silver hours in `[from, to]`, and their
/// consistency with `ohlcv_1m`.
pub async fn evaluate_silver(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let mut results = Vec::new();
    evaluate_silver_into(lake, rules, from, to, now, true, |r| results.push(r)).await?;
    Ok(results)
}

/// [`evaluate_silver`], each result handed to `found` as soon as its date is checked: memory
/// holds a few dates' hours and one date's findings, whatever the range. With `minutes`, each
/// date's `ohlcv_1m` is read too and checked against its hours ([`check_consistency`]): what
/// `check` does. A silver build leaves it out: it has just written both from the same minutes.
pub async fn evaluate_silver_into(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
    minutes: bool,
    mut found: impl FnMut(QualityResult),
) -> Result<()> {
    let hour_dates = dates_between(lake, &paths::silver_table(), from, to).await?;
    let minute_dates = if minutes {
        dates_between(lake, &paths::minute_table(), from, to).await?
    } else {
        BTreeSet::new()
    };
    let dates: BTreeSet<NaiveDate> = hour_dates.union(&minute_dates).copied().collect();
    let first = hour_dates.iter().copied().find(|d| in_range(d, from, to));
    let mut checks = HourChecks::new(rules, now);
    let (mut agreeing, mut disagreeing) = (0usize, 0usize);
    // Date by date, in order, the next ones read while one is checked; the day before the
    // range too, for the first hour's previous close. Each date is decoded and sorted on the
    // blocking pool, so the dates in flight decode on every core while this task checks.
    use futures::StreamExt;
    let (hour_dates, minute_dates) = (&hour_dates, &minute_dates);
    let reads = dates
        .iter()
        .filter(|d| in_range(d, from, to) || d.succ_opt() == first)
        .map(|d| async move {
            let mut hours = Vec::new();
            if hour_dates.contains(d) {
                let key = paths::silver_partition_file(*d);
                let what = key.clone();
                hours = lake
                    .get_with(&key, move |bytes| {
                        let mut hours = crate::parquet_io::decode_hours(&what, bytes)?;
                        hours.sort_by(HourlyCandle::row_order);
                        Ok(hours)
                    })
                    .await?;
            }
            let mut rows = None;
            if minutes && in_range(d, from, to) && minute_dates.contains(d) {
                let key = paths::minute_partition_file(*d);
                let what = key.clone();
                rows = Some(
                    lake.get_with(&key, move |bytes| {
                        crate::parquet_io::decode_minutes(&what, bytes)
                    })
                    .await?,
                );
            }
            Ok::<_, crate::Error>((*d, hours, rows))
        });
    let mut reads = futures::stream::iter(reads).buffered(crate::dates_in_flight(lake, 4));
    while let Some(read) = reads.next().await {
        let (d, hours, rows) = read?;
        checks.feed(&hours, !in_range(&d, from, to));
        checks.take_findings().into_iter().for_each(&mut found);
        if minutes && in_range(&d, from, to) {
            for r in check_consistency(rules, d, &hours, rows.as_deref()) {
                if r.is_violation() {
                    disagreeing += 1;
                } else {
                    agreeing += 1;
                }
                found(r);
            }
        }
    }
    checks.finish().into_iter().for_each(&mut found);
    if minutes && disagreeing == 0 {
        found(QualityResult::pass(
            Rule::Consistency,
            rules.consistency,
            format!("the hours of {agreeing} symbol-dates agree with their minutes"),
        ));
    }
    Ok(())
}

/// Whether a date's `ohlcv_1h` agrees with its `ohlcv_1m`: each hour is its minutes
/// aggregated (open, high, low, close, amounts, minutes present and which), no minute lies
/// outside an hour of `ohlcv_1h`, no hour is without its minutes, and no minute is there twice.
/// One result per exchange and symbol of the date: a violation counting the hours that
/// disagree and naming the first, or a pass. `minutes` is `None` when the date has no
/// `ohlcv_1m` partition.
pub fn check_consistency(
    rules: &QualityRules,
    date: NaiveDate,
    hours: &[HourlyCandle],
    minutes: Option<&[MinuteCandle]>,
) -> Vec<QualityResult> {
    type Pair = (Exchange, Symbol);
    let mut stored: BTreeMap<Pair, BTreeMap<DateTime<Utc>, &HourlyCandle>> = BTreeMap::new();
    for h in hours {
        stored
            .entry((h.exchange, h.symbol.clone()))
            .or_default()
            .insert(h.open_time, h);
    }
    let mut rows: BTreeMap<Pair, Vec<&MinuteCandle>> = BTreeMap::new();
    for m in minutes.unwrap_or_default() {
        rows.entry((m.candle.exchange, m.candle.symbol.clone()))
            .or_default()
            .push(m);
    }
    let pairs: BTreeSet<Pair> = stored.keys().chain(rows.keys()).cloned().collect();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for pair in pairs {
        let hours = stored.get(&pair).unwrap_or(&empty);
        let mut problems: Vec<String> = Vec::new();
        if minutes.is_none() {
            problems.push(format!(
                "the date has no ohlcv_1m partition ({} hours without their minutes; the next silver build fills it in)",
                hours.len()
            ));
        }
        let mut mine = rows.remove(&pair).unwrap_or_default();
        mine.sort_by_key(|m| m.candle.open_time);
        let before = mine.len();
        mine.dedup_by_key(|m| m.candle.open_time);
        if mine.len() < before {
            problems.push(format!(
                "{} minutes are in ohlcv_1m more than once",
                before - mine.len()
            ));
        }
        if let Some(m) = mine
            .iter()
            .find(|m| m.candle.open_time.date_naive() != date)
        {
            problems.push(format!(
                "minute {} is in the partition of {date}",
                m.candle.open_time.to_rfc3339()
            ));
        }
        let built = crate::silver::aggregate::hours_of_rows(mine.iter().copied());
        let mut seen = BTreeSet::new();
        for b in &built {
            seen.insert(b.open_time);
            let at = b.open_time.to_rfc3339();
            match hours.get(&b.open_time) {
                None => problems.push(format!("hour {at} has minutes but no row in ohlcv_1h")),
                Some(h) => {
                    if let Some(field) = disagreement(h, b) {
                        problems.push(format!(
                            "hour {at}: {field} differs from its minutes aggregated"
                        ));
                    }
                }
            }
        }
        for (t, h) in hours {
            if minutes.is_some() && !seen.contains(t) && h.minutes_present > 0 {
                problems.push(format!(
                    "hour {} has {} minutes present but none in ohlcv_1m",
                    t.to_rfc3339(),
                    h.minutes_present
                ));
            }
        }
        let (exchange, symbol) = pair;
        out.push(match problems.first() {
            None => scoped_pass(
                Rule::Consistency,
                rules.consistency,
                exchange,
                &symbol,
                Some(hours_of(date)),
                "every hour agrees with its minutes".into(),
            ),
            Some(first) => QualityResult {
                rule: Rule::Consistency,
                action: rules.consistency,
                status: Status::Violation,
                exchange: Some(exchange),
                symbol: Some(symbol),
                subject: Some(hours_of(date)),
                observed: Some(problems.len() as f64),
                threshold: Some(0.0),
                message: format!(
                    "ohlcv_1h and ohlcv_1m disagree ({} findings); first: {first}",
                    problems.len()
                ),
            },
        });
    }
    out
}

/// The first field in which a stored hour differs from the hour its minutes make.
fn disagreement(stored: &HourlyCandle, built: &HourlyCandle) -> Option<&'static str> {
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || a == b;
    [
        ("open", same(stored.open, built.open)),
        ("high", same(stored.high, built.high)),
        ("low", same(stored.low, built.low)),
        ("close", same(stored.close, built.close)),
        ("volume", same(stored.volume, built.volume)),
        (
            "quote_volume",
            match (stored.quote_volume, built.quote_volume) {
                (Some(a), Some(b)) => same(a, b),
                (a, b) => a.is_none() && b.is_none(),
            },
        ),
        ("trade_count", stored.trade_count == built.trade_count),
        (
            "minutes_present",
            stored.minutes_present == built.minutes_present,
        ),
        ("minute_mask", stored.minute_mask == built.minute_mask),
    ]
    .into_iter()
    .find(|(_, ok)| !ok)
    .map(|(name, _)| name)
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

/// One row of `crypto_ops.quality_results`: a result as a step recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedResult {
    pub run_id: String,
    pub step: Step,
    pub checked_at: DateTime<Utc>,
    pub result: QualityResult,
}

/// What a result is about, for its current state: a later result of the same rule, exchange,
/// symbol and scope supersedes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The whole evaluation (no exchange): a rule's summary, or the duplicates of a build.
    Evaluation,
    /// One exchange and symbol as a whole (freshness).
    Pair,
    /// The hours of one date (completeness and price jumps of silver).
    Hours(NaiveDate),
    /// One closed day (completeness of gold).
    Day(NaiveDate),
    /// A subject of another shape, kept as it is.
    Other(String),
}

impl Scope {
    pub fn of(r: &QualityResult) -> Scope {
        if r.exchange.is_none() {
            return Scope::Evaluation;
        }
        let Some(subject) = r.subject.as_deref() else {
            return Scope::Pair;
        };
        if matches!(
            r.rule,
            Rule::Freshness | Rule::FundingFreshness | Rule::MarkFreshness
        ) {
            return Scope::Pair;
        }
        if let Ok(d) = NaiveDate::parse_from_str(subject, "%Y-%m-%d") {
            return Scope::Day(d);
        }
        // An hour (`2024-03-01T05:00:00+00:00`), or the interval of a date's hours.
        let start = subject.split('/').next().unwrap_or(subject);
        match DateTime::parse_from_rfc3339(start) {
            Ok(t) => Scope::Hours(t.with_timezone(&Utc).date_naive()),
            Err(_) => Scope::Other(subject.to_string()),
        }
    }
}

/// The key of a result's current state.
pub type StateKey = (Rule, Option<Exchange>, Option<Symbol>, Scope);

/// When an evaluation happened: its `checked_at`, then the order its file was written in
/// (two evaluations on a clock stepped by hand can share an instant).
pub type EvaluationOrder = (DateTime<Utc>, u64);

/// The current state of every rule and subject: of each (rule, exchange, symbol, scope), the
/// violations of its latest evaluation. A violation a later evaluation did not find again is
/// resolved; results may be added in any order.
#[derive(Debug, Clone, Default)]
pub struct CurrentState {
    latest: std::collections::HashMap<StateKey, (EvaluationOrder, Vec<RecordedResult>)>,
}

impl CurrentState {
    /// Adds a result of the evaluation written `written`-th (results of one file share it).
    pub fn add(&mut self, r: RecordedResult, written: u64) {
        use std::collections::hash_map::Entry;
        let key = (
            r.result.rule,
            r.result.exchange,
            r.result.symbol.clone(),
            Scope::of(&r.result),
        );
        let violation = r.result.is_violation();
        let when = (r.checked_at, written);
        match self.latest.entry(key) {
            Entry::Vacant(v) => {
                v.insert((when, if violation { vec![r] } else { Vec::new() }));
            }
            Entry::Occupied(mut o) => {
                let (at, open) = o.get_mut();
                if when > *at {
                    *at = when;
                    open.clear();
                }
                if when == *at && violation {
                    open.push(r);
                }
            }
        }
    }

    /// The violations still open, in no particular order.
    pub fn open(&self) -> impl Iterator<Item = &RecordedResult> {
        self.latest.values().flat_map(|(_, open)| open.iter())
    }
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
    pub violations: BTreeMap<Rule, usize>,
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
        let n = self.violations.entry(r.rule).or_default();
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
    step: Step,
    checked_at: DateTime<Utc>,
    pending: Vec<QualityResult>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    /// The first encoding error; later results are dropped and `finish` reports it.
    failed: Option<crate::Error>,
    summary: Summary,
}

impl ResultsFile {
    pub fn new(run_id: &str, step: Step, checked_at: DateTime<Utc>) -> ResultsFile {
        ResultsFile {
            key: paths::quality_results(checked_at, run_id, step.as_str(), rand::random()),
            run_id: run_id.to_string(),
            step,
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
            .text_opt(|r| r.exchange.map(Exchange::as_str))
            .text_opt(|r| r.symbol.as_ref().map(Symbol::as_str))
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
    use chrono::Timelike;
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
                Rule::Completeness
            } else {
                Rule::PriceJump
            },
            action,
            status: Status::Violation,
            exchange: Some(Exchange::Binance),
            symbol: Some(Symbol::parse("BTC-USDT").unwrap()),
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
        let mut file = ResultsFile::new("run-1", Step::Silver, at);
        for i in 0..n {
            file.push(finding(i, if i == 5 { Action::Fail } else { Action::Warn }));
            // Never more than a row group's results wait in memory.
            assert!(file.pending.len() < RESULTS_PER_ROW_GROUP);
        }
        let summary = file.finish(&lake).await.unwrap();
        assert_eq!(summary.results, n);
        assert_eq!(summary.violations[&Rule::Completeness], n.div_ceil(2));
        assert_eq!(summary.violations[&Rule::PriceJump], n / 2);
        assert_eq!(summary.examples.len(), 2 * EXAMPLES_PER_RULE);
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.failed_examples[0].message, "finding 5");

        let written = lake
            .list(&Path::from(paths::OPS_QUALITY_RESULTS))
            .await
            .unwrap();
        assert_eq!(written.len(), 1);
        let bytes = lake.get(&written[0].location).await.unwrap();
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
        let summary = ResultsFile::new("run-1", Step::Gold, at)
            .finish(&lake)
            .await
            .unwrap();
        assert_eq!(summary, Summary::default());
        let written = lake
            .list(&Path::from(paths::OPS_QUALITY_RESULTS))
            .await
            .unwrap();
        assert!(written.is_empty(), "{written:?}");
    }

    fn recorded(minute: i64, r: QualityResult) -> RecordedResult {
        RecordedResult {
            run_id: format!("run-{minute}"),
            step: Step::Silver,
            checked_at: parse_time("2024-03-01T00:00:00Z").unwrap() + Duration::minutes(minute),
            result: r,
        }
    }

    fn hours_result(hour: &str, minutes: i32, at: i64) -> Vec<RecordedResult> {
        let rules = QualityRules::default();
        let h = hour_of(hour, minutes);
        let mut checks = HourChecks::new(&rules, h.open_time + Duration::hours(2));
        checks.feed(std::slice::from_ref(&h), false);
        checks
            .take_findings()
            .into_iter()
            .map(|r| recorded(at, r))
            .collect()
    }

    fn hour_of(t: &str, minutes: i32) -> HourlyCandle {
        hour(t, 100.0, minutes)
    }

    #[test]
    fn a_later_evaluation_of_the_same_hours_resolves_a_violation() {
        let mut state = CurrentState::default();
        // First evaluation: the hour is missing minutes.
        for r in hours_result("2024-03-01T05:00:00Z", 50, 0) {
            state.add(r, 0);
        }
        let open: Vec<_> = state.open().map(|r| r.result.rule).collect();
        assert_eq!(open, vec![Rule::Completeness]);
        // A later evaluation of the same date finds it complete: the date's pass resolves it.
        for r in hours_result("2024-03-01T05:00:00Z", 60, 10) {
            state.add(r, 1);
        }
        assert_eq!(state.open().count(), 0);
        // At the same instant, the evaluation written later is the later one.
        let mut same = CurrentState::default();
        for r in hours_result("2024-03-01T05:00:00Z", 50, 0) {
            same.add(r, 0);
        }
        for r in hours_result("2024-03-01T05:00:00Z", 60, 0) {
            same.add(r, 1);
        }
        assert_eq!(same.open().count(), 0);
        // Another date's evaluation resolves nothing of this one.
        let mut other = CurrentState::default();
        for r in hours_result("2024-03-01T05:00:00Z", 50, 0)
            .into_iter()
            .chain(hours_result("2024-03-02T05:00:00Z", 60, 10))
        {
            other.add(r, 0);
        }
        assert_eq!(other.open().count(), 1);
    }

    #[test]
    fn a_gold_day_pass_does_not_resolve_an_hour_of_silver() {
        let rules = QualityRules::default();
        let mut state = CurrentState::default();
        for r in hours_result("2024-03-01T05:00:00Z", 50, 0) {
            state.add(r, 0);
        }
        let day = DailyCandle {
            exchange: Exchange::Binance,
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
            quote_volume: None,
            trade_count: None,
            hours_present: 24,
            is_complete: false,
        };
        let today = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        let days = check_days(&rules, &[day], today);
        assert!(
            days.iter()
                .any(|r| r.exchange.is_some() && !r.is_violation())
        );
        for r in days {
            state.add(recorded(10, r), 1);
        }
        assert_eq!(
            state.open().count(),
            1,
            "the day has every hour, not every minute"
        );
    }

    proptest::proptest! {
        /// The current state does not depend on the order results arrive in: each
        /// (rule, pair, scope) shows exactly the violations of its latest evaluation.
        #[test]
        fn the_current_state_is_the_latest_evaluation_whatever_the_order(
            evals in proptest::collection::vec((0i64..6, 0usize..3, 40i32..=60), 1..12),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let hours = ["2024-03-01T05:00:00Z", "2024-03-01T06:00:00Z", "2024-03-02T01:00:00Z"];
            let mut all = Vec::new();
            for (at, which, minutes) in &evals {
                all.extend(hours_result(hours[*which], *minutes, *at));
            }
            // The expectation, worked out directly: per date, the latest evaluation of it;
            // within that evaluation, the hours it found incomplete.
            let mut latest: BTreeMap<NaiveDate, i64> = BTreeMap::new();
            for (at, which, _) in &evals {
                let d = parse_time(hours[*which]).unwrap().date_naive();
                let e = latest.entry(d).or_insert(*at);
                *e = (*e).max(*at);
            }
            let mut want: Vec<(i64, String)> = Vec::new();
            for (at, which, minutes) in &evals {
                let d = parse_time(hours[*which]).unwrap().date_naive();
                if latest[&d] == *at && *minutes < 60 {
                    want.push((*at, parse_time(hours[*which]).unwrap().to_rfc3339()));
                }
            }
            want.sort();
            // Shuffled arrival.
            let mut order: Vec<usize> = (0..all.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut state = CurrentState::default();
            for i in order {
                state.add(all[i].clone(), 0);
            }
            let mut got: Vec<(i64, String)> = state
                .open()
                .filter(|r| r.result.rule == Rule::Completeness)
                .map(|r| {
                    let minute = (r.checked_at - parse_time("2024-03-01T00:00:00Z").unwrap()).num_minutes();
                    (minute, r.result.subject.clone().unwrap())
                })
                .collect();
            got.sort();
            want.dedup();
            got.dedup();
            proptest::prop_assert_eq!(got, want);
        }
    }

    fn minute(t: DateTime<Utc>, price: f64) -> MinuteCandle {
        MinuteCandle {
            candle: cryptolake_model::Candle::new(
                Exchange::Binance,
                Symbol::parse("BTC-USDT").unwrap(),
                t,
                price,
                price + 1.0,
                price - 1.0,
                price + 0.5,
                2.0,
                Some(3.0),
                Some(4),
            )
            .unwrap(),
            fetched_at: t + Duration::minutes(5),
        }
    }

    /// Two hours of minutes and the hours a silver build makes of them.
    fn agreeing() -> (NaiveDate, Vec<HourlyCandle>, Vec<MinuteCandle>) {
        let start = parse_time("2024-03-01T00:00:00Z").unwrap();
        let minutes: Vec<MinuteCandle> = (0..120)
            .filter(|m| m % 7 != 3)
            .map(|m| minute(start + Duration::minutes(m), 100.0 + m as f64))
            .collect();
        let hours = crate::silver::aggregate::hours_of_rows(&minutes);
        assert_eq!(hours.len(), 2);
        (start.date_naive(), hours, minutes)
    }

    fn consistency_violations(
        d: NaiveDate,
        hours: &[HourlyCandle],
        minutes: Option<&[MinuteCandle]>,
    ) -> Vec<String> {
        let results = check_consistency(&QualityRules::default(), d, hours, minutes);
        assert!(results.iter().all(|r| r.rule == Rule::Consistency
            && r.action == Action::Fail
            && r.subject.as_deref() == Some(hours_of(d).as_str())));
        results
            .into_iter()
            .filter(|r| r.is_violation())
            .map(|r| r.message)
            .collect()
    }

    #[test]
    fn hours_that_are_their_minutes_aggregated_pass() {
        let (d, hours, minutes) = agreeing();
        let results = check_consistency(&QualityRules::default(), d, &hours, Some(&minutes));
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status, Status::Pass);
        // Order does not matter.
        let mut shuffled = minutes.clone();
        shuffled.reverse();
        assert!(consistency_violations(d, &hours, Some(&shuffled)).is_empty());
    }

    #[test]
    fn each_kind_of_disagreement_is_found_and_named() {
        let (d, hours, minutes) = agreeing();
        let broken = |f: &dyn Fn(&mut Vec<HourlyCandle>, &mut Vec<MinuteCandle>)| {
            let (mut h, mut m) = (hours.clone(), minutes.clone());
            f(&mut h, &mut m);
            consistency_violations(d, &h, Some(&m))
        };
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("close differs", broken(&|h, _| h[1].close += 0.01)),
            ("volume differs", broken(&|_, m| m[70].candle.volume = 9.0)),
            (
                "volume differs",
                broken(&|_, m| {
                    m.remove(3);
                }),
            ),
            (
                "more than once",
                broken(&|_, m| {
                    let again = m[10].clone();
                    m.push(again)
                }),
            ),
            (
                "no row in ohlcv_1h",
                broken(&|h, _| {
                    h.remove(0);
                }),
            ),
            (
                "none in ohlcv_1m",
                broken(&|_, m| m.retain(|m| m.candle.open_time.hour() != 1)),
            ),
            (
                "in the partition of",
                broken(&|_, m| {
                    let mut late = m[0].clone();
                    late.candle.open_time += Duration::days(1);
                    m.push(late)
                }),
            ),
        ];
        for (needle, found) in cases {
            assert_eq!(found.len(), 1, "{needle}: {found:?}");
            assert!(found[0].contains(needle), "{needle}: {found:?}");
        }
        let missing = consistency_violations(d, &hours, None);
        assert_eq!(missing.len(), 1);
        assert!(missing[0].contains("no ohlcv_1m partition"), "{missing:?}");
    }
}
