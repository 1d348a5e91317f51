//! The funding ingest: a perpetual market's funding history, as the venue pages it, appended
//! to bronze (dataset `funding_rate`).
//!
//! One range per symbol (from `since`, else the symbol's cursor, else now minus the lookback),
//! asked for whole: the venue's page says where the rest continues (Binance oldest first,
//! OKX and Bybit newest first), and each answer is stored as the part of the range it covers.
//! A year of 8-hourly funding is two requests to Binance, six to Bybit. The cursor moves only
//! once the whole range is in.

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, SharedClock, Symbol};
use cryptolake_sources::ExchangeClient;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::bronze::{
    Answer, FUNDING_RATE, Window, record_ban, refuse_if_banned, run_covers, store_answer,
};
use crate::paths;
use crate::{Error, Lake, Result, state};

/// Told of each page stored, with its events.
type OnPage<'a> = &'a (dyn Fn(&Symbol, usize) + Sync);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    /// Funding times before this are in bronze.
    next_time: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    run_id: String,
}

/// What one symbol's funding ingest did.
#[derive(Debug, Clone, PartialEq)]
pub struct FundingOutcome {
    pub symbol: Symbol,
    /// Requests answered (pages stored).
    pub pages: usize,
    pub rows: usize,
    pub error: Option<String>,
}

/// Fetches the funding of `symbols` on the perpetual `exchange` into bronze.
#[derive(Debug, Clone)]
pub struct FundingIngest {
    exchange: Exchange,
    symbols: Vec<Symbol>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    lookback: Duration,
    run_id: String,
    now: DateTime<Utc>,
    windows: Option<Vec<(Symbol, Vec<Window>)>>,
    clock: SharedClock,
    skip_done_by_run: bool,
}

impl FundingIngest {
    pub fn new(
        exchange: Exchange,
        symbols: Vec<Symbol>,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> FundingIngest {
        FundingIngest {
            exchange,
            symbols,
            since: None,
            until: None,
            lookback: Duration::days(1),
            run_id: run_id.to_string(),
            now,
            windows: None,
            clock: cryptolake_model::system_clock(),
            skip_done_by_run: false,
        }
    }

    /// Before asking for a range, look for the bronze objects this run id already wrote of
    /// it, and skip it when they cover it: a retried invocation with the same run id writes
    /// no duplicate bronze (as the candles' ingest does).
    pub fn with_skip_done_by_run(mut self, skip: bool) -> Self {
        self.skip_done_by_run = skip;
        self
    }

    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A range instead of the cursor: the cursor is left alone.
    pub fn with_range(
        mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Exact ranges per symbol (a gap refetch); the cursor is left alone.
    pub fn with_windows(mut self, windows: Vec<(Symbol, Vec<Window>)>) -> Self {
        self.symbols = windows.iter().map(|(s, _)| s.clone()).collect();
        self.windows = Some(windows);
        self
    }

    /// How far back a symbol's first ingest starts.
    pub fn with_lookback(mut self, lookback: Duration) -> Self {
        self.lookback = lookback;
        self
    }

    /// The ranges each symbol will ask for, and whether they move its cursor.
    pub async fn plan(&self, lake: &Lake) -> Result<Vec<(Symbol, Vec<Window>)>> {
        if !self.exchange.is_perpetual() {
            return Err(Error::Invalid(format!(
                "{} is not a perpetual market: it has no funding rates (the perpetual markets are binance-futures, okx-swap and bybit-linear)",
                self.exchange
            )));
        }
        if let Some(w) = &self.windows {
            return Ok(w.clone());
        }
        let end = self.until.map_or(self.now, |u| u.min(self.now));
        let mut out = Vec::new();
        for symbol in &self.symbols {
            let start = match self.since {
                Some(s) => s,
                None => match state::read::<Cursor>(lake, &self.cursor_key(symbol)).await? {
                    // An hour again: a venue may publish a funding event some seconds after
                    // its time, after the run that asked for it.
                    Some(c) => c.next_time - Duration::hours(1),
                    None => self.now - self.lookback,
                },
            };
            out.push((
                symbol.clone(),
                if start < end {
                    vec![(start, end)]
                } else {
                    Vec::new()
                },
            ));
        }
        Ok(out)
    }

    fn moves_cursor(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.windows.is_none()
    }

    fn cursor_key(&self, symbol: &Symbol) -> object_store::path::Path {
        paths::ingest_cursor(self.exchange, FUNDING_RATE, symbol)
    }

    /// Fetches the planned ranges, symbol by symbol, each page into bronze as it arrives
    /// (`on_page` hears of each, with its events).
    pub async fn execute(
        &self,
        lake: &Lake,
        client: &ExchangeClient,
        plan: Vec<(Symbol, Vec<Window>)>,
        on_page: OnPage<'_>,
    ) -> Result<Vec<FundingOutcome>> {
        refuse_if_banned(lake, self.exchange, &self.clock).await?;
        let mut out = Vec::new();
        for (symbol, ranges) in plan {
            let mut outcome = FundingOutcome {
                symbol: symbol.clone(),
                pages: 0,
                rows: 0,
                error: None,
            };
            for (start, end) in ranges {
                let written = (self.exchange, FUNDING_RATE, &symbol);
                let done = match self.skip_done_by_run {
                    false => Ok(false),
                    true => run_covers(lake, written, &self.run_id, (start, end)).await,
                };
                let fetched = match done {
                    Ok(true) => {
                        info!(exchange = %self.exchange, symbol = %symbol, range_start = %start, run_id = %self.run_id, "funding range already fetched by this run; not fetched again");
                        match self.moves_cursor() {
                            true => self.advance_cursor(lake, &symbol, end).await,
                            false => Ok(()),
                        }
                    }
                    Ok(false) => {
                        let fetch = (client, on_page);
                        self.fetch_range(lake, fetch, &symbol, (start, end), &mut outcome)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = fetched {
                    warn!(exchange = %self.exchange, symbol = %symbol, error = %e, "funding ingest stopped for symbol");
                    outcome.error = Some(e.to_string());
                    break;
                }
            }
            info!(exchange = %self.exchange, symbol = %symbol, pages = outcome.pages, rows = outcome.rows, "funding ingested");
            out.push(outcome);
        }
        record_ban(lake, client, &self.clock, &self.run_id).await?;
        Ok(out)
    }

    async fn fetch_range(
        &self,
        lake: &Lake,
        (client, on_page): (&ExchangeClient, OnPage<'_>),
        symbol: &Symbol,
        (start, end): Window,
        outcome: &mut FundingOutcome,
    ) -> Result<()> {
        let (mut from, mut to) = (start, end);
        // Every page covers at least a funding time, so this many pages is the most a range
        // can take; a venue that keeps saying "more" past it is not believed.
        let most = (end - start).num_minutes().max(1) as usize;
        for _ in 0..most {
            let page = client
                .fetch_funding(symbol, from, to)
                .await
                .map_err(|source| Error::Source {
                    exchange: self.exchange.to_string(),
                    symbol: symbol.to_string(),
                    source,
                })?;
            // The part of the range this answer covers, and what is left.
            let (part, rest) = match (page.resume_before, page.resume_after) {
                (Some(t), _) if t > from && t < to => ((t, to), Some((from, t))),
                (_, Some(t)) if t >= from && t < to => {
                    let next = t + Duration::milliseconds(1);
                    ((from, next), Some((next, to)))
                }
                _ => ((from, to), None),
            };
            outcome.pages += 1;
            outcome.rows += page.rows;
            let rows = page.rows;
            self.store(lake, symbol, part, page).await?;
            on_page(symbol, rows);
            match rest {
                Some(r) => (from, to) = r,
                None => {
                    if self.moves_cursor() {
                        self.advance_cursor(lake, symbol, end).await?;
                    }
                    return Ok(());
                }
            }
        }
        Err(Error::Invalid(format!(
            "{} kept answering more funding of {symbol} in [{start}, {end}) after {most} pages",
            self.exchange
        )))
    }

    async fn store(
        &self,
        lake: &Lake,
        symbol: &Symbol,
        window: Window,
        page: cryptolake_sources::FetchedPage,
    ) -> Result<()> {
        let answer = Answer {
            exchange: self.exchange,
            dataset: FUNDING_RATE,
            symbol,
            window,
            run_id: &self.run_id,
        };
        store_answer(lake, answer, page, self.clock.now()).await
    }

    async fn advance_cursor(&self, lake: &Lake, symbol: &Symbol, end: DateTime<Utc>) -> Result<()> {
        let key = self.cursor_key(symbol);
        let previous = state::read::<Cursor>(lake, &key).await?;
        if previous.is_none_or(|c| c.next_time < end) {
            let cursor = Cursor {
                next_time: end,
                updated_at: self.clock.now(),
                run_id: self.run_id.clone(),
            };
            state::write(lake, &key, &cursor).await?;
        }
        Ok(())
    }
}
