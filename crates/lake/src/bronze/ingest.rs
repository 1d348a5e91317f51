//! The ingest step: fetch closed candles from an exchange and append them to bronze.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, SharedClock, Symbol, date_of, day_start, hour_start};
use cryptolake_sources::ExchangeClient;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Envelope, FORMAT_VERSION, KLINES_1M, MARK_KLINES_1M, RequestInfo, encode, write_object_at,
};
use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result, state};
use cryptolake_sources::Prices;

/// Where the next ingest of a symbol starts.
/// A 418 ban, kept so that later runs leave the exchange alone until it expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ban {
    until: DateTime<Utc>,
    noticed_at: DateTime<Utc>,
    run_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    next_open_time: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    run_id: String,
}

/// Splits `[start, end)` into request windows of at most `max_minutes` that never cross a UTC
/// midnight, so every bronze object belongs to exactly one date.
pub fn plan_windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max_minutes: i64,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut t = start;
    while t < end {
        let midnight = day_start(date_of(t)) + Duration::days(1);
        let w_end = (t + Duration::minutes(max_minutes)).min(midnight).min(end);
        out.push((t, w_end));
        t = w_end;
    }
    out
}

pub(crate) fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).expect("in range")
}

/// The ingest operation: configure with `with_*`, [`Ingest::plan`], then [`Ingest::execute`].
#[derive(Debug, Clone)]
pub struct Ingest {
    exchange: Exchange,
    symbols: Vec<Symbol>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    lookback: Duration,
    run_id: String,
    now: DateTime<Utc>,
    concurrency: usize,
    /// Explicit windows per symbol (gap refetches) instead of a range.
    windows: Option<Vec<(Symbol, Vec<Window>)>>,
    move_cursor: bool,
    skip_done_by_run: bool,
    /// Dates manifest entries and ban checks (the system clock unless set).
    clock: SharedClock,
    /// Trade candles, or a perpetual's mark price candles.
    prices: Prices,
}

/// A request window of open times, `[start, end)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The windows each symbol will fetch.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    pub symbols: Vec<(Symbol, Vec<Window>)>,
    /// Asked for but no longer served by the exchange (Kraken keeps 720 minutes), per symbol.
    pub unservable: Vec<(Symbol, Window)>,
}

impl IngestPlan {
    pub fn pages(&self) -> usize {
        self.symbols.iter().map(|(_, w)| w.len()).sum()
    }
}

/// What happened to one symbol.
#[derive(Debug, Clone)]
pub struct SymbolOutcome {
    pub symbol: Symbol,
    pub pages: usize,
    pub rows: usize,
    pub bytes: u64,
    /// Where the next ingest continues.
    pub next_open_time: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Asked for but no longer served by the exchange.
    pub unservable: Vec<Window>,
}

#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub pages: usize,
    pub rows: usize,
    pub bytes: u64,
    pub symbols: Vec<SymbolOutcome>,
}

impl IngestMetrics {
    pub fn failures(&self) -> impl Iterator<Item = &SymbolOutcome> {
        self.symbols.iter().filter(|s| s.error.is_some())
    }
}

impl Ingest {
    pub fn new(
        exchange: Exchange,
        symbols: Vec<Symbol>,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Ingest {
        Ingest {
            exchange,
            symbols,
            since: None,
            until: None,
            lookback: Duration::days(1),
            run_id: run_id.to_string(),
            now,
            concurrency: 4,
            windows: None,
            move_cursor: true,
            skip_done_by_run: false,
            clock: cryptolake_model::system_clock(),
            prices: Prices::Trades,
        }
    }

    /// Fetch a perpetual's mark price candles (dataset `mark_klines_1m`, a cursor of their
    /// own) instead of its trade candles.
    pub fn with_prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    fn dataset(&self) -> &'static str {
        match self.prices {
            Prices::Trades => KLINES_1M,
            Prices::Mark => MARK_KLINES_1M,
        }
    }

    /// The clock that dates manifest entries, cursors and bans.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Before fetching a window, look for a bronze object this run id already wrote for it and
    /// skip the fetch if there is one: a retried invocation with the same run id (the Lambda
    /// derives it from the scheduled time) writes no duplicate bronze, even when the first
    /// attempt died between writing an object and moving the cursor.
    pub fn with_skip_done_by_run(mut self, skip: bool) -> Self {
        self.skip_done_by_run = skip;
        self
    }

    /// Whether this run already wrote the window.
    async fn done_by_run(
        &self,
        lake: &Lake,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<bool> {
        let written = (self.exchange, self.dataset(), symbol);
        run_covers(lake, written, &self.run_id, (start, end)).await
    }

    /// Fetch exactly these windows (each split to fit one request) instead of a range; the
    /// cursor is left alone.
    pub fn with_windows(mut self, windows: Vec<(Symbol, Vec<Window>)>) -> Self {
        self.symbols = windows.iter().map(|(s, _)| s.clone()).collect();
        self.windows = Some(windows);
        self.move_cursor = false;
        self
    }

    /// Whether fetched windows move the symbol's cursor (the hourly ingest's resume point).
    /// A backfill of old history leaves it alone.
    pub fn with_cursor(mut self, move_cursor: bool) -> Self {
        self.move_cursor = move_cursor;
        self
    }

    pub fn with_since(mut self, since: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self
    }

    pub fn with_until(mut self, until: Option<DateTime<Utc>>) -> Self {
        self.until = until;
        self
    }

    /// How far back the first ingest of a symbol starts.
    pub fn with_lookback(mut self, lookback: Duration) -> Self {
        self.lookback = lookback;
        self
    }

    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Works out each symbol's windows: from `since`, else the stored cursor, else `now -
    /// lookback`; up to `until`, but never past the last closed minute. What the exchange no
    /// longer serves is set apart in [`IngestPlan::unservable`], never silently dropped.
    pub async fn plan(&self, lake: &Lake) -> Result<IngestPlan> {
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s >= u
        {
            return Err(Error::Invalid(format!(
                "--since {s} is not before --until {u}"
            )));
        }
        let max = ExchangeClient::max_window_minutes(self.exchange);
        let closed_end = floor_minute(self.now);
        let served_from = ExchangeClient::served_from(self.exchange, self.now);
        let mut plan = IngestPlan {
            symbols: Vec::new(),
            unservable: Vec::new(),
        };
        let mut ranges: Vec<(Symbol, Vec<Window>)> = Vec::new();
        if let Some(windows) = &self.windows {
            ranges.clone_from(windows);
        } else {
            let end = self.until.map_or(closed_end, |u| u.min(closed_end));
            for symbol in &self.symbols {
                let start = match self.since {
                    Some(s) => s,
                    None => {
                        let key = paths::ingest_cursor(self.exchange, self.dataset(), symbol);
                        match state::read::<Cursor>(lake, &key).await? {
                            Some(c) => c.next_open_time,
                            // Whole hours, so the first silver hour is not cut short.
                            None => hour_start(self.now - self.lookback),
                        }
                    }
                };
                // Round up to a whole minute: a partial minute is never requested.
                let start = floor_minute(start + Duration::seconds(59));
                let start = if start > self.now { closed_end } else { start };
                ranges.push((symbol.clone(), vec![(start, end)]));
            }
        }
        for (symbol, windows) in ranges {
            let mut planned = Vec::new();
            for (start, end) in windows {
                let end = end.min(closed_end);
                let start = match served_from {
                    Some(from) if start < from => {
                        plan.unservable
                            .push((symbol.clone(), (start, from.min(end))));
                        from
                    }
                    _ => start,
                };
                planned.extend(plan_windows(start, end, max));
            }
            plan.symbols.push((symbol, planned));
        }
        Ok(plan)
    }

    /// Fetches the plan's windows into bronze, symbols concurrently, every request within
    /// the client's budget. Refuses to start while the exchange's 418 ban lasts, and records a
    /// new ban so later runs wait for it too.
    pub async fn execute(
        &self,
        lake: &Lake,
        client: &ExchangeClient,
        plan: IngestPlan,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> Result<IngestMetrics> {
        refuse_if_banned(lake, self.exchange, &self.clock).await?;
        let mut unservable: BTreeMap<Symbol, Vec<Window>> = BTreeMap::new();
        for (symbol, w) in &plan.unservable {
            warn!(exchange = %self.exchange, symbol = %symbol, from = %w.0, to = %w.1, "the exchange no longer serves this range");
            unservable.entry(symbol.clone()).or_default().push(*w);
        }
        for (symbol, windows) in &unservable {
            crate::gaps::record_unservable(lake, self.exchange, symbol, windows).await?;
        }
        let mut outcomes: Vec<SymbolOutcome> = futures::stream::iter(plan.symbols)
            .map(|(symbol, windows)| self.ingest_symbol(lake, client, symbol, windows, on_page))
            .buffered(self.concurrency)
            .collect()
            .await;
        record_ban(lake, client, &self.clock, &self.run_id).await?;
        let mut metrics = IngestMetrics::default();
        for o in &mut outcomes {
            o.unservable = unservable.remove(&o.symbol).unwrap_or_default();
            metrics.pages += o.pages;
            metrics.rows += o.rows;
            metrics.bytes += o.bytes;
        }
        metrics.symbols = outcomes;
        Ok(metrics)
    }

    async fn ingest_symbol(
        &self,
        lake: &Lake,
        client: &ExchangeClient,
        symbol: Symbol,
        windows: Vec<Window>,
        on_page: &(dyn Fn(&Symbol, usize) + Sync),
    ) -> SymbolOutcome {
        let mut outcome = SymbolOutcome {
            symbol: symbol.clone(),
            pages: 0,
            rows: 0,
            bytes: 0,
            next_open_time: None,
            error: None,
            unservable: Vec::new(),
        };
        for (start, end) in windows {
            if self.skip_done_by_run {
                match self.done_by_run(lake, &symbol, start, end).await {
                    Ok(true) => {
                        info!(exchange = %self.exchange, symbol = %symbol, window_start = %start, run_id = %self.run_id, "window already fetched by this run; not fetched again");
                        if let Err(e) = self.advance_cursor(lake, &symbol, end).await {
                            outcome.error = Some(e.to_string());
                            break;
                        }
                        outcome.next_open_time = Some(end);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        outcome.error = Some(e.to_string());
                        break;
                    }
                }
            }
            match self.ingest_window(lake, client, &symbol, start, end).await {
                Ok((pages, rows, bytes)) => {
                    outcome.pages += pages;
                    outcome.rows += rows;
                    outcome.bytes += bytes;
                    outcome.next_open_time = Some(end);
                    on_page(&symbol, rows);
                }
                Err(e) => {
                    warn!(exchange = %self.exchange, symbol = %symbol, window_start = %start, error = %e, "ingest stopped for symbol");
                    outcome.error = Some(e.to_string());
                    break;
                }
            }
        }
        info!(exchange = %self.exchange, symbol = %symbol, pages = outcome.pages, rows = outcome.rows, "ingested");
        outcome
    }

    async fn ingest_window(
        &self,
        lake: &Lake,
        client: &ExchangeClient,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(usize, usize, u64)> {
        // A venue that pages newest first may answer only the newest part of the window (a
        // short page is not the end of its data): the rest is asked for until the window is
        // covered or a page says nothing is older. Each answer is its own object, keyed by the
        // part it covers, so a crash between them leaves no claim on minutes not fetched.
        let (mut pages, mut rows, mut bytes) = (0, 0, 0);
        let mut part_end = end;
        for _ in 0..=(end - start).num_minutes() {
            let page = match self.prices {
                Prices::Trades => client.fetch_1m(symbol, start, part_end).await,
                Prices::Mark => client.fetch_mark_1m(symbol, start, part_end).await,
            }
            .map_err(|source| Error::Source {
                exchange: self.exchange.to_string(),
                symbol: symbol.to_string(),
                source,
            })?;
            let from = match page.resume_before {
                Some(t) if t > start && t < part_end => t,
                _ => start,
            };
            pages += 1;
            rows += page.rows;
            bytes += page.body.len() as u64;
            self.store_page(lake, symbol, from, part_end, page).await?;
            if from == start {
                break;
            }
            part_end = from;
        }
        self.advance_cursor(lake, symbol, end).await?;
        Ok((pages, rows, bytes))
    }

    /// Writes one answer to bronze as the part `[start, end)` of its window.
    async fn store_page(
        &self,
        lake: &Lake,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page: cryptolake_sources::FetchedPage,
    ) -> Result<()> {
        let answer = Answer {
            exchange: self.exchange,
            dataset: self.dataset(),
            symbol,
            window: (start, end),
            run_id: &self.run_id,
        };
        store_answer(lake, answer, page, self.clock.now()).await
    }

    /// Moves the symbol's cursor to `end` (if this ingest moves cursors), never backwards. Called
    /// only once the data it describes is durable.
    async fn advance_cursor(&self, lake: &Lake, symbol: &Symbol, end: DateTime<Utc>) -> Result<()> {
        if !self.move_cursor {
            return Ok(());
        }
        let cursor_key = paths::ingest_cursor(self.exchange, self.dataset(), symbol);
        let previous = state::read::<Cursor>(lake, &cursor_key).await?;
        if previous.as_ref().is_none_or(|c| c.next_open_time < end) {
            let cursor = Cursor {
                next_open_time: end,
                updated_at: self.clock.now(),
                run_id: self.run_id.clone(),
            };
            state::write(lake, &cursor_key, &cursor).await?;
        }
        Ok(())
    }
}

/// What one stored answer is: whose, which dataset, the part of its window it covers, and
/// which run fetched it.
pub(crate) struct Answer<'a> {
    pub(crate) exchange: Exchange,
    pub(crate) dataset: &'a str,
    pub(crate) symbol: &'a Symbol,
    pub(crate) window: Window,
    pub(crate) run_id: &'a str,
}

/// Writes an exchange's answer to bronze under a fresh key, with its envelope; refuses to
/// overwrite (bronze is never rewritten).
pub(crate) async fn store_answer(
    lake: &Lake,
    answer: Answer<'_>,
    page: cryptolake_sources::FetchedPage,
    written_at: DateTime<Utc>,
) -> Result<()> {
    let (start, end) = answer.window;
    let envelope = Envelope {
        format: FORMAT_VERSION,
        source: answer.exchange,
        dataset: answer.dataset.to_string(),
        symbol: answer.symbol.clone(),
        request: RequestInfo {
            method: "GET".into(),
            url: page.url.clone(),
            params: page.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        },
        window_start: start,
        window_end: end,
        fetched_at: page.fetched_at,
        http_status: page.status,
        run_id: answer.run_id.to_string(),
        payload_bytes: page.body.len() as u64,
        rows: page.rows as u64,
    };
    let key = BronzeKey {
        source: answer.exchange,
        dataset: answer.dataset.to_string(),
        symbol: answer.symbol.clone(),
        date: date_of(start),
        fetched_at: page.fetched_at,
        window_start: start,
        window_end: end,
        run_id: answer.run_id.to_string(),
    };
    if !write_object_at(lake, &key, encode(&envelope, &page.body), written_at).await? {
        return Err(Error::Invalid(format!(
            "bronze object {} already exists; refusing to overwrite",
            key.path()
        )));
    }
    Ok(())
}

/// Refuses with [`Error::Banned`] while a recorded ban of `exchange` lasts; an expired record
/// is removed.
pub(crate) async fn refuse_if_banned(
    lake: &Lake,
    exchange: Exchange,
    clock: &SharedClock,
) -> Result<()> {
    let ban_key = paths::exchange_ban(exchange);
    if let Some(ban) = state::read::<Ban>(lake, &ban_key).await? {
        let now = clock.now();
        // A recorded ban lasts at most the longest the exchange documents from when it
        // was noticed, whatever wrote it.
        let until = ban.until.min(
            ban.noticed_at
                + chrono::Duration::from_std(cryptolake_sources::http::MAX_BAN).unwrap_or_default(),
        );
        if until > now {
            return Err(Error::Banned {
                exchange: exchange.to_string(),
                until,
                state: ban_key.to_string(),
            });
        }
        lake.delete(&ban_key).await?;
    }
    Ok(())
}

/// Records the ban `client` met, if any, so later runs leave the exchange alone until it ends.
pub(crate) async fn record_ban(
    lake: &Lake,
    client: &ExchangeClient,
    clock: &SharedClock,
    run_id: &str,
) -> Result<()> {
    if let Some(until) = client.limiter().banned_until() {
        let ban = Ban {
            until,
            noticed_at: clock.now(),
            run_id: run_id.to_string(),
        };
        state::write(lake, &paths::exchange_ban(client.exchange()), &ban).await?;
    }
    Ok(())
}

/// Whether the bronze objects `run_id` wrote of an exchange's dataset and symbol cover
/// `[start, end)` whole. A range may have been answered in parts (a venue that pages newest
/// first answers its newest part first), and may span dates: each date's partition is listed.
pub(crate) async fn run_covers(
    lake: &Lake,
    (exchange, dataset, symbol): (Exchange, &str, &Symbol),
    run_id: &str,
    (start, end): Window,
) -> Result<bool> {
    let mut parts: Vec<Window> = Vec::new();
    // Objects are filed under the date their window starts: one that began the day before
    // may cover the start of this range.
    let first = date_of(start).pred_opt().unwrap_or(date_of(start));
    let last = date_of(end - Duration::microseconds(1)).max(date_of(start));
    for day in first.iter_days().take_while(|d| *d <= last) {
        let partition = paths::bronze_partition(exchange, dataset, symbol, day);
        parts.extend(
            lake.list(&partition)
                .await?
                .iter()
                .filter_map(|m| BronzeKey::parse(&m.location))
                .filter(|k| k.run_id == run_id)
                .map(|k| (k.window_start, k.window_end)),
        );
    }
    parts.sort();
    let mut reached = start;
    for (s, e) in parts {
        if s <= reached && e > reached {
            reached = e;
        }
    }
    Ok(reached >= end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    #[test]
    fn windows_split_at_limit_and_midnight() {
        let s = parse_time("2024-03-01T20:00:00Z").unwrap();
        let e = parse_time("2024-03-03T01:00:00Z").unwrap();
        let w = plan_windows(s, e, 1000);
        // 20:00..24:00 (240 min), then 1000 + 440 for Mar 2, then 60 min on Mar 3.
        let minutes: Vec<i64> = w.iter().map(|(a, b)| (*b - *a).num_minutes()).collect();
        assert_eq!(minutes, vec![240, 1000, 440, 60]);
        for (a, b) in &w {
            assert_eq!(date_of(*a), date_of(*b - Duration::milliseconds(1)));
        }
        assert_eq!(w.first().unwrap().0, s);
        assert_eq!(w.last().unwrap().1, e);
        assert!(plan_windows(e, s, 1000).is_empty());
        let coinbase: Vec<i64> = plan_windows(s, s + Duration::hours(11), 300)
            .iter()
            .map(|(a, b)| (*b - *a).num_minutes())
            .collect();
        assert_eq!(coinbase, vec![240, 300, 120]);
    }
}
