//! The table rules of the perpetual tables: `funding_rates`, `funding_1d` and
//! `mark_ohlcv_1m`. Like the candle table rules they report (warn or fail) and never change
//! data. Their results share `crypto_ops.quality_results` and its scopes: a closed day for
//! `funding_completeness`, the hours of a date for `funding_rate` and `mark_completeness`,
//! the exchange and symbol for the two freshness rules.
//!
//! - `funding_completeness`: a closed day of `funding_1d` that is not complete.
//! - `funding_freshness`: a symbol's newest funding slot older than its interval plus
//!   `quality.funding_freshness.max_late_minutes`.
//! - `funding_rate`: a rate outside `±quality.funding_rate.max_abs` (or not finite).
//! - `mark_completeness`: a closed hour of mark prices with fewer minutes, present or
//!   confirmed empty, than `quality.completeness.min_minutes_per_hour`.
//! - `mark_freshness`: a symbol's newest mark minute ended longer ago than
//!   `quality.freshness.max_age_minutes`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol};
use futures::StreamExt;

use super::{
    Action, QualityResult, QualityRules, Rule, dates_between, finding, hours_of, in_range,
    scoped_pass,
};
use crate::funding::{FundingDay, FundingRow, funding_days_from_batch, funding_from_batch};
use crate::gaps::{GapStatus, gaps_from_batch};
use crate::mark::{MarkRow, marks_from_batch};
use crate::{Lake, Result, decode_parquet, paths};

type Pair = (Exchange, Symbol);

/// The longest funding interval a venue uses: the bound of a symbol's first slot, whose
/// interval the data cannot tell yet.
const LONGEST_INTERVAL_HOURS: f64 = 8.0;

/// The perpetual rules over `[from, to]` (all dates when open). A lake without perpetual
/// tables in the range gives no results. Freshness is judged only when the range reaches
/// today: the newest row of an older range says nothing of the symbol now.
pub async fn evaluate_perpetual(
    lake: &Lake,
    rules: &QualityRules,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let fresh = to.is_none_or(|t| t >= now.date_naive());
    evaluate_in(lake, rules, (from, to), &|_| true, fresh, now).await
}

/// The perpetual rules over exactly `dates` (those a build changed), not the span between
/// them: a gap refetched far back does not make every date since then read again.
pub async fn evaluate_perpetual_on(
    lake: &Lake,
    rules: &QualityRules,
    dates: &BTreeSet<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let (Some(from), Some(to)) = (dates.first().copied(), dates.last().copied()) else {
        return Ok(Vec::new());
    };
    let fresh = to >= now.date_naive();
    let keep = |d: &NaiveDate| dates.contains(d);
    evaluate_in(lake, rules, (Some(from), Some(to)), &keep, fresh, now).await
}

async fn evaluate_in(
    lake: &Lake,
    rules: &QualityRules,
    (from, to): (Option<NaiveDate>, Option<NaiveDate>),
    keep: &(dyn Fn(&NaiveDate) -> bool + Sync),
    fresh: bool,
    now: DateTime<Utc>,
) -> Result<Vec<QualityResult>> {
    let dates_of = async |table: &object_store::path::Path| -> Result<Vec<NaiveDate>> {
        Ok(dates_between(lake, table, from, to)
            .await?
            .into_iter()
            .filter(|d| in_range(d, from, to) && keep(d))
            .collect())
    };
    let mut out = Vec::new();
    let (rates_table, days_table) = (paths::silver_funding_table(), paths::gold_funding_table());
    let mut rates: Vec<FundingRow> = Vec::new();
    let dates = dates_of(&rates_table).await?;
    read_each(
        lake,
        &rates_table,
        dates,
        |b, _, what| funding_from_batch(b, what),
        |r| rates.extend(r),
    )
    .await?;
    let mut days = Vec::new();
    let dates = dates_of(&days_table).await?;
    read_each(lake, &days_table, dates, funding_days_from_batch, |d| {
        days.extend(d)
    })
    .await?;
    if !rates.is_empty() {
        out.extend(check_rates(rules, &rates, fresh, now));
    }
    if !days.is_empty() {
        out.extend(check_funding_days(rules, &days, now.date_naive()));
    }
    // Mark prices are a row a minute: checked date by date, so memory holds a few dates of
    // them whatever the range.
    let table = paths::mark_table();
    let dates = dates_of(&table).await?;
    if !dates.is_empty() {
        let confirmed = confirmed_mark_minutes(lake, &dates).await?;
        let mut checks = MarkChecks::new(rules, &confirmed, fresh, now);
        read_each(
            lake,
            &table,
            dates,
            |b, _, what| marks_from_batch(b, what),
            |rows| checks.feed(&rows),
        )
        .await?;
        out.extend(checks.finish());
    }
    Ok(out)
}

/// The rows of each of `dates`' partitions of `table`, handed to `each` a date at a time in
/// date order, the next few dates read meanwhile.
async fn read_each<T: Send + 'static>(
    lake: &Lake,
    table: &object_store::path::Path,
    dates: Vec<NaiveDate>,
    decode: fn(&arrow::array::RecordBatch, NaiveDate, &str) -> Result<Vec<T>>,
    mut each: impl FnMut(Vec<T>),
) -> Result<()> {
    let reads = dates.into_iter().map(|d| async move {
        let key = paths::partition_file(table, d);
        let what = key.clone();
        lake.get_with(&key, move |bytes| {
            let mut rows = Vec::new();
            for b in decode_parquet(&what, bytes)? {
                rows.extend(decode(&b, d, what.as_ref())?);
            }
            Ok(rows)
        })
        .await
    });
    let mut reads = futures::stream::iter(reads).buffered(crate::dates_in_flight(lake, 4));
    while let Some(rows) = reads.next().await {
        each(rows?);
    }
    Ok(())
}

/// Scoped passes of `rule` over the hours of each judged (exchange, symbol, date) without a
/// finding, and the summary pass when nothing at all was found.
fn passes_by_date(
    out: &mut Vec<QualityResult>,
    rule: Rule,
    action: Action,
    judged: BTreeMap<(Pair, NaiveDate), bool>,
    message: &str,
    summary: String,
) {
    let mut broken = false;
    for (((exchange, symbol), date), found) in judged {
        broken |= found;
        if !found {
            out.push(scoped_pass(
                rule,
                action,
                exchange,
                &symbol,
                Some(hours_of(date)),
                message.into(),
            ));
        }
    }
    if !broken {
        out.push(QualityResult::pass(rule, action, summary));
    }
}

/// Freshness of each exchange and symbol from its newest row (its time, its age and the age
/// allowed, in minutes, and what to say): a violation when older than allowed, a scoped pass
/// otherwise, and the summary pass when none is stale.
fn freshness<'p>(
    out: &mut Vec<QualityResult>,
    rule: Rule,
    action: Action,
    judged: impl Iterator<Item = (&'p Pair, DateTime<Utc>, i64, i64, String)>,
    what: &str,
) {
    let (mut symbols, mut stale) = (0, 0);
    for (pair, newest, age, allowed, message) in judged {
        symbols += 1;
        if age > allowed {
            stale += 1;
            let subject = newest.to_rfc3339();
            let threshold = Some(allowed as f64);
            out.push(finding(
                rule, action, pair, subject, age as f64, threshold, message,
            ));
        } else {
            out.push(scoped_pass(rule, action, pair.0, &pair.1, None, message));
        }
    }
    if stale == 0 {
        out.push(QualityResult::pass(
            rule,
            action,
            format!("{symbols} {what}"),
        ));
    }
}

/// `funding_rate` over every row, and (with `fresh`) `funding_freshness` of each symbol's
/// newest slot.
pub fn check_rates(
    rules: &QualityRules,
    rows: &[FundingRow],
    fresh: bool,
    now: DateTime<Utc>,
) -> Vec<QualityResult> {
    let mut out = Vec::new();
    let mut judged: BTreeMap<(Pair, NaiveDate), bool> = BTreeMap::new();
    let mut newest: BTreeMap<Pair, &FundingRow> = BTreeMap::new();
    for r in rows {
        let pair = (r.exchange, r.symbol.clone());
        let outside = !r.rate.is_finite() || r.rate.abs() > rules.max_funding_rate;
        *judged
            .entry((pair.clone(), r.slot.date_naive()))
            .or_default() |= outside;
        if outside {
            out.push(finding(
                Rule::FundingRate,
                rules.funding_rate,
                &pair,
                r.slot.to_rfc3339(),
                r.rate,
                Some(rules.max_funding_rate),
                format!(
                    "funding rate {} at {} is outside ±{}",
                    r.rate,
                    r.slot.to_rfc3339(),
                    rules.max_funding_rate
                ),
            ));
        }
        let slot = newest.entry(pair).or_insert(r);
        if slot.slot < r.slot {
            *slot = r;
        }
    }
    passes_by_date(
        &mut out,
        Rule::FundingRate,
        rules.funding_rate,
        judged,
        "every rate within the threshold",
        format!("{} funding rates within the threshold", rows.len()),
    );
    if !fresh {
        return out;
    }
    let judged = newest.iter().map(|(pair, r)| {
        let interval = r.interval_hours.unwrap_or(LONGEST_INTERVAL_HOURS);
        let allowed = (interval * 60.0) as i64 + rules.funding_max_late_minutes;
        let age = (now - r.slot).num_minutes();
        let message = format!(
            "newest funding slot {} is {age} minutes old (interval {interval}h)",
            r.slot.to_rfc3339()
        );
        (pair, r.slot, age, allowed, message)
    });
    let (rule, action) = (Rule::FundingFreshness, rules.funding_freshness);
    freshness(&mut out, rule, action, judged, "symbols' funding fresh");
    out
}

/// `funding_completeness` of the closed days of `funding_1d`; the current UTC day is not
/// closed and is not judged.
pub fn check_funding_days(
    rules: &QualityRules,
    days: &[FundingDay],
    today: NaiveDate,
) -> Vec<QualityResult> {
    let (rule, action) = (Rule::FundingCompleteness, rules.funding_completeness);
    let closed: Vec<&FundingDay> = days.iter().filter(|d| d.date < today).collect();
    let mut out = Vec::new();
    for d in &closed {
        let message = format!("day has {} funding events", d.events);
        if d.is_complete {
            out.push(scoped_pass(
                rule,
                action,
                d.exchange,
                &d.symbol,
                Some(d.date.to_string()),
                message,
            ));
        } else {
            out.push(finding(
                rule,
                action,
                &(d.exchange, d.symbol.clone()),
                d.date.to_string(),
                f64::from(d.events),
                None,
                format!(
                    "{message} and a slot of its interval is missing (crypto_ops.funding_gaps names it)"
                ),
            ));
        }
    }
    if closed.iter().all(|d| d.is_complete) {
        out.push(QualityResult::pass(
            rule,
            action,
            format!("{} closed funding days complete", closed.len()),
        ));
    }
    out
}

/// The minutes of recorded mark gaps confirmed empty, per exchange and symbol, on `dates`
/// (the gap report has a partition per date, and a gap never crosses midnight in it).
async fn confirmed_mark_minutes(
    lake: &Lake,
    dates: &[NaiveDate],
) -> Result<BTreeMap<Pair, BTreeSet<DateTime<Utc>>>> {
    let mut out: BTreeMap<Pair, BTreeSet<DateTime<Utc>>> = BTreeMap::new();
    let table = paths::mark_gaps_table();
    let reads = dates.iter().map(|d| {
        let key = paths::partition_file(&table, *d);
        async move {
            let Some(bytes) = lake.get_opt(&key).await? else {
                return Ok(Vec::new());
            };
            let mut gaps = Vec::new();
            for b in decode_parquet(&key, bytes)? {
                gaps.extend(gaps_from_batch(&b, key.as_ref())?);
            }
            Ok::<_, crate::Error>(gaps)
        }
    });
    let mut reads = futures::stream::iter(reads).buffered(crate::dates_in_flight(lake, 4));
    while let Some(gaps) = reads.next().await {
        for g in gaps? {
            if g.status != GapStatus::Confirmed {
                continue;
            }
            let minutes = out.entry((g.exchange, g.symbol.clone())).or_default();
            let mut t = g.start;
            while t < g.end {
                minutes.insert(t);
                t += Duration::minutes(1);
            }
        }
    }
    Ok(out)
}

/// `mark_completeness` of each closed hour that has mark minutes, and `mark_freshness` of
/// each symbol's newest minute.
pub fn check_marks(
    rules: &QualityRules,
    rows: &[MarkRow],
    confirmed: &BTreeMap<Pair, BTreeSet<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Vec<QualityResult> {
    let mut checks = MarkChecks::new(rules, confirmed, true, now);
    checks.feed(rows);
    checks.finish()
}

/// [`check_marks`] over a stream of dates: feed each date's rows, then `finish`.
pub struct MarkChecks<'a> {
    rules: &'a QualityRules,
    confirmed: &'a BTreeMap<Pair, BTreeSet<DateTime<Utc>>>,
    /// Whether freshness is judged (the rows reach today).
    fresh: bool,
    now: DateTime<Utc>,
    out: Vec<QualityResult>,
    /// Each exchange, symbol and date judged, with whether an hour of it broke the rule.
    judged: BTreeMap<(Pair, NaiveDate), bool>,
    judged_hours: usize,
    newest: BTreeMap<Pair, DateTime<Utc>>,
}

impl<'a> MarkChecks<'a> {
    pub fn new(
        rules: &'a QualityRules,
        confirmed: &'a BTreeMap<Pair, BTreeSet<DateTime<Utc>>>,
        fresh: bool,
        now: DateTime<Utc>,
    ) -> Self {
        MarkChecks {
            rules,
            confirmed,
            fresh,
            now,
            out: Vec::new(),
            judged: BTreeMap::new(),
            judged_hours: 0,
            newest: BTreeMap::new(),
        }
    }

    /// Rows of whole hours (a date's partition holds its hours whole).
    pub fn feed(&mut self, rows: &[MarkRow]) {
        let mut hours: BTreeMap<(Pair, DateTime<Utc>), i32> = BTreeMap::new();
        for r in rows {
            let pair = (r.exchange, r.symbol.clone());
            let hour = r
                .open_time
                .duration_trunc(Duration::hours(1))
                .unwrap_or(r.open_time);
            *hours.entry((pair.clone(), hour)).or_default() += 1;
            let t = self.newest.entry(pair).or_insert(r.open_time);
            *t = (*t).max(r.open_time);
        }
        let (rules, (rule, action)) = (
            self.rules,
            (Rule::MarkCompleteness, self.rules.mark_completeness),
        );
        for ((pair, hour), present) in hours {
            if hour + Duration::hours(1) > self.now {
                continue;
            }
            self.judged_hours += 1;
            let empty = self.confirmed.get(&pair).map_or(0, |m| {
                m.range(hour..hour + Duration::hours(1)).count() as i32
            });
            let covered = present + empty;
            let broken = covered < rules.min_minutes_per_hour;
            *self
                .judged
                .entry((pair.clone(), hour.date_naive()))
                .or_default() |= broken;
            if broken {
                self.out.push(finding(
                    rule,
                    action,
                    &pair,
                    hour.to_rfc3339(),
                    f64::from(covered),
                    Some(f64::from(rules.min_minutes_per_hour)),
                    format!(
                        "hour has {covered} of 60 mark price minutes ({present} present, {empty} confirmed empty)"
                    ),
                ));
            }
        }
    }

    pub fn finish(mut self) -> Vec<QualityResult> {
        let rules = self.rules;
        passes_by_date(
            &mut self.out,
            Rule::MarkCompleteness,
            rules.mark_completeness,
            std::mem::take(&mut self.judged),
            "every hour of mark prices complete",
            format!("{} hours of mark prices complete", self.judged_hours),
        );
        if !self.fresh {
            return self.out;
        }
        let (now, max_age) = (self.now, rules.max_age_minutes);
        let judged = self.newest.iter().map(|(pair, t)| {
            let age = (now - (*t + Duration::minutes(1))).num_minutes();
            let message = format!("newest mark price minute ended {age} minutes ago");
            (pair, *t, age, max_age, message)
        });
        let (rule, action) = (Rule::MarkFreshness, rules.mark_freshness);
        freshness(
            &mut self.out,
            rule,
            action,
            judged,
            "symbols' mark prices fresh",
        );
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{Scope, Status};
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    fn rate(h: u32, rate: f64, interval: Option<f64>) -> FundingRow {
        FundingRow {
            exchange: Exchange::BinanceFutures,
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            slot: t(2, h, 0),
            funding_time: t(2, h, 0),
            rate,
            interval_hours: interval,
            mark_price: None,
            fetched_at: t(2, h, 1),
        }
    }

    fn mark(d: u32, h: u32, m: u32) -> MarkRow {
        MarkRow {
            exchange: Exchange::BybitLinear,
            symbol: Symbol::parse("ETH-USDT").unwrap(),
            open_time: t(d, h, m),
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            fetched_at: t(d, h, m) + Duration::minutes(1),
        }
    }

    fn violations(results: &[QualityResult], rule: Rule) -> Vec<&QualityResult> {
        results
            .iter()
            .filter(|r| r.rule == rule && r.status == Status::Violation)
            .collect()
    }

    #[test]
    fn a_rate_outside_the_bound_is_named_and_its_date_does_not_pass() {
        let rules = QualityRules::default();
        let rows = [
            rate(0, 0.0001, Some(8.0)),
            rate(8, 0.031, Some(8.0)),
            rate(16, f64::NAN, Some(8.0)),
        ];
        let out = check_rates(&rules, &rows, true, t(2, 17, 0));
        let bad = violations(&out, Rule::FundingRate);
        assert_eq!(bad.len(), 2, "{out:#?}");
        assert_eq!(bad[0].subject.as_deref(), Some("2026-03-02T08:00:00+00:00"));
        assert_eq!(Scope::of(bad[0]), Scope::Hours(t(2, 0, 0).date_naive()));
        assert!(
            !out.iter()
                .any(|r| r.rule == Rule::FundingRate && r.status == Status::Pass)
        );
        let fine = check_rates(&rules, &rows[..1], true, t(2, 1, 0));
        assert!(violations(&fine, Rule::FundingRate).is_empty());
        assert_eq!(
            fine.iter()
                .filter(|r| r.rule == Rule::FundingRate && r.exchange.is_some())
                .count(),
            1
        );
    }

    #[test]
    fn funding_is_stale_after_its_own_interval_and_the_allowance() {
        let rules = QualityRules::default();
        let late = rules.funding_max_late_minutes;
        // Hourly funding: stale an hour and the allowance after its newest slot.
        let hourly = [rate(5, 0.0, Some(1.0))];
        let at = |m: i64| t(2, 5, 0) + Duration::minutes(m);
        assert!(
            violations(
                &check_rates(&rules, &hourly, true, at(60 + late)),
                Rule::FundingFreshness
            )
            .is_empty()
        );
        let stale = check_rates(&rules, &hourly, true, at(61 + late));
        let v = violations(&stale, Rule::FundingFreshness);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].threshold, Some((60 + late) as f64));
        assert_eq!(Scope::of(v[0]), Scope::Pair);
        // Eight-hourly funding is fresh at the same age.
        let eight = [rate(5, 0.0, Some(8.0))];
        assert!(
            violations(
                &check_rates(&rules, &eight, true, at(61 + late)),
                Rule::FundingFreshness
            )
            .is_empty()
        );
    }

    #[test]
    fn only_closed_incomplete_funding_days_are_violations() {
        let rules = QualityRules::default();
        let day = |d: u32, complete: bool| FundingDay {
            exchange: Exchange::OkxSwap,
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            date: t(d, 0, 0).date_naive(),
            rate_sum: 0.0,
            events: 2,
            rate_min: 0.0,
            rate_max: 0.0,
            is_complete: complete,
        };
        let out = check_funding_days(
            &rules,
            &[day(1, true), day(2, false), day(3, false)],
            t(3, 0, 0).date_naive(),
        );
        let v = violations(&out, Rule::FundingCompleteness);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].subject.as_deref(), Some("2026-03-02"));
        assert_eq!(Scope::of(v[0]), Scope::Day(t(2, 0, 0).date_naive()));
        assert!(
            out.iter()
                .any(|r| r.status == Status::Pass && r.subject.as_deref() == Some("2026-03-01"))
        );
    }

    #[test]
    fn a_later_pass_resolves_a_perpetual_violation_and_old_ranges_judge_no_freshness() {
        use crate::quality::{CurrentState, RecordedResult};
        let rules = QualityRules::default();
        let none = BTreeMap::new();
        let record =
            |results: Vec<QualityResult>, at: DateTime<Utc>, state: &mut CurrentState, n| {
                for result in results {
                    let r = RecordedResult {
                        run_id: format!("run-{n}"),
                        step: cryptolake_model::Step::Funding,
                        checked_at: at,
                        result,
                    };
                    state.add(r, n);
                }
            };
        let mut state = CurrentState::default();
        // Hour 10 short of minutes, and a rate outside the bound: two open violations.
        let short: Vec<MarkRow> = (0..50).map(|m| mark(4, 10, m)).collect();
        let now = t(4, 12, 0);
        record(check_marks(&rules, &short, &none, now), now, &mut state, 1);
        let big = [rate(8, 0.05, Some(8.0))];
        let (rated, rated_later) = (t(2, 9, 0), t(2, 10, 0));
        record(check_rates(&rules, &big, true, rated), rated, &mut state, 1);
        let open: Vec<Rule> = state.open().map(|r| r.result.rule).collect();
        assert_eq!(open.len(), 2, "{open:?}");
        // The same hour whole, and the rate revised: both resolved by the later passes.
        let whole: Vec<MarkRow> = (0..60).map(|m| mark(4, 10, m)).collect();
        let later = t(4, 13, 0);
        record(
            check_marks(&rules, &whole, &none, later),
            later,
            &mut state,
            2,
        );
        let fine = [rate(8, 0.0001, Some(8.0))];
        record(
            check_rates(&rules, &fine, true, rated_later),
            rated_later,
            &mut state,
            2,
        );
        assert_eq!(state.open().count(), 0);
        // A range that does not reach today judges no freshness.
        let stale = check_rates(&rules, &fine, false, t(9, 0, 0));
        assert!(stale.iter().all(|r| r.rule != Rule::FundingFreshness));
        let mut checks = MarkChecks::new(&rules, &none, false, t(9, 0, 0));
        checks.feed(&whole);
        assert!(
            checks
                .finish()
                .iter()
                .all(|r| r.rule != Rule::MarkFreshness)
        );
    }

    #[test]
    fn mark_checks_fed_a_date_at_a_time_find_what_they_find_over_all_rows() {
        let rules = QualityRules::default();
        // Two dates, each with a short hour; the newest minute on the second.
        let rows: Vec<MarkRow> = (0..60)
            .filter(|m| m % 7 != 0)
            .map(|m| mark(4, 3, m))
            .chain((0..60).map(|m| mark(4, 4, m)))
            .chain((0..50).map(|m| mark(5, 9, m)))
            .collect();
        let now = t(5, 12, 0);
        let none = BTreeMap::new();
        let whole = check_marks(&rules, &rows, &none, now);
        let mut checks = MarkChecks::new(&rules, &none, true, now);
        let (first, second): (Vec<MarkRow>, Vec<MarkRow>) =
            rows.iter().cloned().partition(|r| r.open_time < t(5, 0, 0));
        checks.feed(&first);
        checks.feed(&second);
        assert_eq!(checks.finish(), whole);
        assert_eq!(violations(&whole, Rule::MarkCompleteness).len(), 2);
    }

    #[test]
    fn a_closed_mark_hour_short_of_minutes_is_reported_unless_they_are_confirmed_empty() {
        let rules = QualityRules::default();
        // Hour 10 lacks minutes 10:20 to 10:24; hour 11 is open at 11:30.
        let rows: Vec<MarkRow> = (0..60)
            .filter(|m| !(20..25).contains(m))
            .map(|m| mark(4, 10, m))
            .chain((0..30).map(|m| mark(4, 11, m)))
            .collect();
        let now = t(4, 11, 31);
        let none = BTreeMap::new();
        let out = check_marks(&rules, &rows, &none, now);
        let v = violations(&out, Rule::MarkCompleteness);
        assert_eq!(v.len(), 1, "{out:#?}");
        assert_eq!(v[0].subject.as_deref(), Some("2026-03-04T10:00:00+00:00"));
        assert_eq!(v[0].observed, Some(55.0));
        let pair = (Exchange::BybitLinear, Symbol::parse("ETH-USDT").unwrap());
        let confirmed =
            BTreeMap::from([(pair, (20..25).map(|m| t(4, 10, m)).collect::<BTreeSet<_>>())]);
        let out = check_marks(&rules, &rows, &confirmed, now);
        assert!(violations(&out, Rule::MarkCompleteness).is_empty());
        assert!(violations(&out, Rule::MarkFreshness).is_empty());
        // Three hours later with nothing new, the symbol's mark prices are stale.
        let later = t(4, 11, 30) + Duration::minutes(rules.max_age_minutes + 2);
        let v = violations(
            &check_marks(&rules, &rows, &confirmed, later),
            Rule::MarkFreshness,
        )
        .len();
        assert_eq!(v, 1);
    }
}
