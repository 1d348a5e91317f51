//! One client type over every adapter, so ingestion treats all exchanges the same way.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol};

use crate::binance::{self, BinanceClient};
use crate::bybit::{self, BybitClient};
use crate::coinbase::{self, CoinbaseClient};
use crate::http::{HttpClient, RequestStats, RetryPolicy};
use crate::kraken::{self, KrakenClient};
use crate::limit::{Budget, Limiter};
use crate::okx::{self, OkxClient};
use crate::{FetchedPage, Record, Result};

#[derive(Debug, Clone)]
enum Adapter {
    Binance(BinanceClient),
    Coinbase(CoinbaseClient),
    Kraken(KrakenClient),
    Okx(OkxClient),
    Bybit(BybitClient),
}

/// Where a symbol's history starts within a range, as a venue serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryStart {
    /// The range's first window already has candles.
    AtStart,
    /// The first candle opens at this minute, later than the range's start.
    From(DateTime<Utc>),
    /// No candle at all in the range.
    Nothing,
}

/// A client for one exchange with its shared request budget.
#[derive(Debug, Clone)]
pub struct ExchangeClient {
    exchange: Exchange,
    adapter: Adapter,
    limiter: Arc<Limiter>,
}

impl ExchangeClient {
    /// `base_url`: the exchange's REST root (default: the real API); `budget`: default the
    /// exchange's published limit.
    pub fn new(
        exchange: Exchange,
        base_url: Option<&str>,
        policy: RetryPolicy,
        budget: Option<Budget>,
    ) -> Result<ExchangeClient> {
        Self::counted(exchange, base_url, policy, budget, RequestStats::default())
    }

    /// [`ExchangeClient::new`], counting its requests in `stats`.
    pub fn counted(
        exchange: Exchange,
        base_url: Option<&str>,
        policy: RetryPolicy,
        budget: Option<Budget>,
        stats: RequestStats,
    ) -> Result<ExchangeClient> {
        let limiter = Arc::new(Limiter::new(
            budget.unwrap_or_else(|| Self::default_budget(exchange)),
        ));
        let http = HttpClient::new(policy)?
            .with_stats(stats)
            .with_limiter(limiter.clone())
            .with_label(exchange.as_str());
        let url = base_url.unwrap_or_else(|| Self::default_base_url(exchange));
        let adapter = match exchange {
            Exchange::Binance => Adapter::Binance(BinanceClient::new(http, url)?),
            Exchange::BinanceFutures => Adapter::Binance(BinanceClient::futures(http, url)?),
            Exchange::Coinbase => Adapter::Coinbase(CoinbaseClient::new(http, url)?),
            Exchange::Kraken => Adapter::Kraken(KrakenClient::new(http, url)?),
            Exchange::Okx | Exchange::OkxSwap => Adapter::Okx(OkxClient::new(http, url, exchange)?),
            Exchange::Bybit | Exchange::BybitLinear => {
                Adapter::Bybit(BybitClient::new(http, url, exchange)?)
            }
        };
        Ok(ExchangeClient {
            exchange,
            adapter,
            limiter,
        })
    }

    pub fn default_base_url(exchange: Exchange) -> &'static str {
        match exchange {
            Exchange::Binance => binance::DEFAULT_BASE_URL,
            Exchange::BinanceFutures => binance::FUTURES_BASE_URL,
            Exchange::Coinbase => coinbase::DEFAULT_BASE_URL,
            Exchange::Kraken => kraken::DEFAULT_BASE_URL,
            Exchange::Okx | Exchange::OkxSwap => okx::DEFAULT_BASE_URL,
            Exchange::Bybit | Exchange::BybitLinear => bybit::DEFAULT_BASE_URL,
        }
    }

    pub fn default_budget(exchange: Exchange) -> Budget {
        match exchange {
            Exchange::Binance => Budget::BINANCE,
            Exchange::BinanceFutures => Budget::BINANCE_FUTURES,
            Exchange::Coinbase => Budget::COINBASE,
            Exchange::Kraken => Budget::KRAKEN,
            Exchange::Okx | Exchange::OkxSwap => Budget::OKX,
            Exchange::Bybit | Exchange::BybitLinear => Budget::BYBIT,
        }
    }

    /// The longest window of minutes one request answers whole.
    pub fn max_window_minutes(exchange: Exchange) -> i64 {
        match exchange {
            Exchange::Binance | Exchange::BinanceFutures => binance::MAX_LIMIT,
            Exchange::Coinbase => coinbase::MAX_ROWS,
            Exchange::Kraken => kraken::SERVED_MINUTES,
            Exchange::Okx | Exchange::OkxSwap => okx::MAX_ROWS,
            Exchange::Bybit | Exchange::BybitLinear => bybit::MAX_ROWS,
        }
    }

    /// The earliest open time the exchange still serves at `now`; `None` when it serves all
    /// of its history. Kraken serves the latest 720 minutes; a few minutes of margin keep a
    /// window planned now servable when its request goes out a little later.
    pub fn served_from(exchange: Exchange, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match exchange {
            Exchange::Kraken => {
                let minute = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0)?;
                Some(minute - Duration::minutes(kraken::SERVED_MINUTES - 5))
            }
            _ => None,
        }
    }

    pub fn exchange(&self) -> Exchange {
        self.exchange
    }

    pub fn base_url(&self) -> &str {
        match &self.adapter {
            Adapter::Binance(c) => c.base_url(),
            Adapter::Coinbase(c) => c.base_url(),
            Adapter::Kraken(c) => c.base_url(),
            Adapter::Okx(c) => c.base_url(),
            Adapter::Bybit(c) => c.base_url(),
        }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Fetches the 1-minute candles opening in `[start, end)`, a window of at most
    /// [`ExchangeClient::max_window_minutes`]. The page may hold rows outside the window
    /// (Coinbase, Kraken); those are the reader's to leave out.
    pub async fn fetch_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        match &self.adapter {
            Adapter::Binance(c) => c.fetch_klines_1m(symbol, start, end).await,
            Adapter::Coinbase(c) => c.fetch_candles_1m(symbol, start, end).await,
            Adapter::Kraken(c) => c.fetch_ohlc_1m(symbol, start).await,
            Adapter::Okx(c) => c.fetch_candles_1m(symbol, start, end).await,
            Adapter::Bybit(c) => c.fetch_kline_1m(symbol, start, end).await,
        }
    }

    /// Fetches the 1-minute mark price candles of a perpetual market opening in `[start,
    /// end)`, a window of at most [`ExchangeClient::max_mark_window_minutes`]; paged as the
    /// venue's trade candles are (see [`FetchedPage::resume_before`]).
    pub async fn fetch_mark_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        match (&self.adapter, self.exchange) {
            (Adapter::Binance(c), Exchange::BinanceFutures) => {
                c.fetch_mark_klines_1m(symbol, start, end).await
            }
            (Adapter::Okx(c), Exchange::OkxSwap) => {
                c.fetch_rows_1m(symbol, start, end, crate::Prices::Mark)
                    .await
            }
            (Adapter::Bybit(c), Exchange::BybitLinear) => {
                c.fetch_rows_1m(symbol, start, end, crate::Prices::Mark)
                    .await
            }
            (_, other) => Err(crate::Error::NotListed(format!(
                "{other} is not a perpetual market: it has no mark price"
            ))),
        }
    }

    /// The longest window one mark price request answers: OKX's mark pages hold 100 rows,
    /// the others as many as their trade candles.
    pub fn max_mark_window_minutes(exchange: Exchange) -> i64 {
        ExchangeClient::max_window_minutes(exchange)
    }

    /// The earliest open time among the candles of `[start, end)`, all of its parts asked for
    /// (a newest-first venue may answer only the newest part). `None` when it holds none.
    async fn earliest_in(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        requests: &mut usize,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut part_end = end;
        let mut earliest: Option<DateTime<Utc>> = None;
        for _ in 0..=(end - start).num_minutes() {
            let page = self.fetch_1m(symbol, start, part_end).await?;
            *requests += 1;
            let parsed = parse_page(self.exchange, &page.body, symbol).map_err(|reason| {
                crate::Error::Malformed {
                    url: page.url.clone(),
                    reason,
                }
            })?;
            let first = parsed
                .iter()
                .filter_map(|r| match r {
                    Record::Candle { candle, .. } => Some(candle.open_time),
                    Record::Rejected { .. } => None,
                })
                .filter(|t| *t >= start && *t < part_end)
                .min();
            earliest = match (earliest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match page.resume_before {
                Some(t) if t > start && t < part_end => part_end = t,
                _ => break,
            }
        }
        Ok(earliest)
    }

    /// Where `symbol`'s history starts within `[from, to)`: a binary search over the
    /// range's windows (one request each, and one more for the older part of the window the
    /// history starts in, on a venue paging newest first), so at most log2(windows) + 3
    /// requests whatever the range, never a walk over years of empty pages. It takes history to run
    /// unbroken from its first candle on. Returns the start and the requests it sent.
    pub async fn history_start(
        &self,
        symbol: &Symbol,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(HistoryStart, usize)> {
        let step = Duration::minutes(Self::max_window_minutes(self.exchange));
        let minutes = (to - from).num_minutes().max(0);
        let windows = (minutes + step.num_minutes() - 1) / step.num_minutes();
        let mut requests = 0;
        if windows == 0 {
            return Ok((HistoryStart::Nothing, requests));
        }
        let window = |i: i64| {
            let s = from + step * i as i32;
            (s, (s + step).min(to))
        };
        let (s, e) = window(0);
        if let Some(first) = self.earliest_in(symbol, s, e, &mut requests).await? {
            let start = if first <= from {
                HistoryStart::AtStart
            } else {
                HistoryStart::From(first)
            };
            return Ok((start, requests));
        }
        // Window `lo` has no candle; window `hi` has (or there is none at all).
        let (mut lo, mut hi) = (0, windows - 1);
        let (s, e) = window(hi);
        let Some(mut first) = self.earliest_in(symbol, s, e, &mut requests).await? else {
            return Ok((HistoryStart::Nothing, requests));
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let (s, e) = window(mid);
            match self.earliest_in(symbol, s, e, &mut requests).await? {
                Some(t) => {
                    hi = mid;
                    first = t;
                }
                None => lo = mid,
            }
        }
        Ok((HistoryStart::From(first), requests))
    }

    /// Fetches the funding rates of a perpetual market with funding times in `[start, end)`.
    /// A full page says where the rest of the range continues ([`FetchedPage::resume_after`]
    /// for Binance, oldest first; [`FetchedPage::resume_before`] for OKX and Bybit).
    pub async fn fetch_funding(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        match (&self.adapter, self.exchange) {
            (Adapter::Binance(c), Exchange::BinanceFutures) => {
                c.fetch_funding(symbol, start, end).await
            }
            (Adapter::Okx(c), Exchange::OkxSwap) => c.fetch_funding(symbol, start, end).await,
            (Adapter::Bybit(c), Exchange::BybitLinear) => c.fetch_funding(symbol, start, end).await,
            (_, other) => Err(crate::Error::NotListed(format!(
                "{other} is not a perpetual market: it has no funding rates"
            ))),
        }
    }

    /// When the venue listed `symbol`, for the venues that say (OKX, Bybit linear) and
    /// refuse a symbol they do not list; `None` for the others.
    pub async fn listed_since(&self, symbol: &Symbol) -> Result<Option<DateTime<Utc>>> {
        match &self.adapter {
            Adapter::Okx(c) => c.listed_since(symbol).await,
            Adapter::Bybit(c) => c.listed_since(symbol).await,
            Adapter::Binance(_) | Adapter::Coinbase(_) | Adapter::Kraken(_) => Ok(None),
        }
    }
}

/// Parses a page of funding rates from the perpetual market `exchange`.
pub fn parse_funding_page(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<crate::FundingRecord>, String> {
    match exchange {
        Exchange::BinanceFutures => binance::parse_funding(body, symbol),
        Exchange::OkxSwap => okx::parse_funding(body, symbol),
        Exchange::BybitLinear => bybit::parse_funding(body, symbol),
        other => Err(format!(
            "{other} is not a perpetual market: it has no funding"
        )),
    }
}

/// Parses a page of 1-minute mark price candles of the perpetual market `exchange`: candles
/// without volume, each with its close time.
pub fn parse_mark_page(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<Record>, String> {
    match exchange {
        Exchange::BinanceFutures => {
            let rows: Vec<serde_json::Value> = serde_json::from_slice(body)
                .map_err(|e| format!("not a JSON array of mark price klines: {e}"))?;
            Ok(crate::rows_to_records(rows, |row| {
                crate::mark_row(exchange, symbol, row, None)
            }))
        }
        Exchange::OkxSwap => okx::parse_mark(body, symbol),
        Exchange::BybitLinear => bybit::parse_mark(body, symbol),
        other => Err(format!(
            "{other} is not a perpetual market: it has no mark price"
        )),
    }
}

/// Parses a page of 1-minute candles from `exchange` with that exchange's parser.
pub fn parse_page(exchange: Exchange, body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    match exchange {
        Exchange::Binance | Exchange::BinanceFutures => {
            binance::parse_klines_of(exchange, body, symbol)
        }
        Exchange::Coinbase => coinbase::parse_candles(body, symbol),
        Exchange::Kraken => kraken::parse_ohlc(body, symbol),
        Exchange::Okx | Exchange::OkxSwap => okx::parse_candles(exchange, body, symbol),
        Exchange::Bybit | Exchange::BybitLinear => bybit::parse_kline(exchange, body, symbol),
    }
}
