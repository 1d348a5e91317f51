//! Transport for Bybit klines and instruments.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol};

use super::parse::{category, check_body, check_funding_body, instrument, parse_instruments};
use crate::http::{BodyCheck, HttpClient, PageBounds, check_base_url};
use crate::instruments::{Instruments, Listing, check_heads, resume_before, within_limit};
use crate::{Error, FetchedPage, Prices, Result};

pub const DEFAULT_BASE_URL: &str = "https://api.bybit.com";
/// A kline page holds at most 1,000 rows.
pub const MAX_ROWS: i64 = 1_000;
/// A 403 "access too frequent" means waiting at least this long.
pub const ACCESS_TOO_FREQUENT_BAN: StdDuration = StdDuration::from_secs(600);
/// `funding/history` answers at most 200 records.
pub const FUNDING_LIMIT: usize = 200;
/// Instrument pages followed at most (linear lists page by 1,000).
const MAX_INSTRUMENT_PAGES: usize = 50;

#[derive(Debug, Clone)]
pub struct BybitClient {
    http: HttpClient,
    base_url: String,
    exchange: Exchange,
    instruments: Instruments,
}

/// What a Bybit `retCode` means for the retry loop: 10006 (too many visits) pauses every
/// request, 10000 and 10016 (server timeout and error) are retried, anything else (10001:
/// params error, such as an unknown symbol) fails.
fn on_error<T>(code: i64, msg: &str) -> BodyCheck<T> {
    let what = format!("Bybit error {code}: {msg}");
    match code {
        10006 | 10018 => BodyCheck::Throttled(what),
        10000 | 10016 => BodyCheck::Retry(what),
        _ => BodyCheck::Fail(what),
    }
}

impl BybitClient {
    /// A client of `exchange`: `bybit` (spot) or `bybit-linear`.
    pub fn new(http: HttpClient, base_url: &str, exchange: Exchange) -> Result<BybitClient> {
        Ok(BybitClient {
            http: http.with_ban_status(403, ACCESS_TOO_FREQUENT_BAN),
            base_url: check_base_url(base_url)?,
            exchange,
            instruments: Instruments::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The trading instruments of this market and their launch times, every page of them.
    pub async fn instruments(&self) -> Result<Listing> {
        let url = format!("{}/v5/market/instruments-info", self.base_url);
        let mut listing = Listing::new();
        let mut cursor = String::new();
        for _ in 0..MAX_INSTRUMENT_PAGES {
            let mut params = vec![
                ("category".to_string(), category(self.exchange).to_string()),
                ("limit".to_string(), "1000".to_string()),
            ];
            if !cursor.is_empty() {
                params.push(("cursor".to_string(), cursor.clone()));
            }
            let (_, (list, next)) = self
                .http
                .get(&url, &params, 1, |body| match parse_instruments(body) {
                    Ok(Ok(v)) => BodyCheck::Ok(v),
                    Ok(Err((code, msg))) => on_error(code, &msg),
                    Err(reason) => BodyCheck::Retry(reason),
                })
                .await?;
            listing.extend(list);
            if next.is_empty() || next == cursor {
                return Ok(listing);
            }
            cursor = next;
        }
        Err(Error::Malformed {
            url,
            reason: format!("more than {MAX_INSTRUMENT_PAGES} pages of instruments"),
        })
    }

    /// When Bybit launched `symbol` on this market (`None` if it does not say); an error
    /// naming the symbol when it does not list it.
    pub async fn listed_since(&self, symbol: &Symbol) -> Result<Option<DateTime<Utc>>> {
        let id = instrument(symbol);
        self.instruments
            .require(self.exchange, symbol, &id, || self.instruments())
            .await
    }

    /// Fetches the 1-minute klines opening in `[start, end)`, at most [`MAX_ROWS`] minutes.
    /// The page may answer only the newest part of the window: see
    /// [`FetchedPage::resume_before`].
    pub async fn fetch_kline_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        self.fetch_rows_1m(symbol, start, end, Prices::Trades).await
    }

    /// [`BybitClient::fetch_kline_1m`] of trade candles, or of a linear perpetual's mark price
    /// candles (`mark-price-kline`).
    pub async fn fetch_rows_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        prices: Prices,
    ) -> Result<FetchedPage> {
        let minutes = (end - start).num_minutes();
        assert!(
            (1..=MAX_ROWS).contains(&minutes),
            "window of {minutes} minutes does not fit one request"
        );
        self.listed_since(symbol).await?;
        let path = match prices {
            Prices::Trades => "kline",
            Prices::Mark => "mark-price-kline",
        };
        let url = format!("{}/v5/market/{path}", self.base_url);
        // Both bounds are inclusive: the last minute asked for opens at end - 1m.
        let last = end - Duration::minutes(1);
        let params = vec![
            ("category".to_string(), category(self.exchange).to_string()),
            ("symbol".to_string(), instrument(symbol)),
            ("interval".to_string(), "1".to_string()),
            ("start".to_string(), start.timestamp_millis().to_string()),
            ("end".to_string(), last.timestamp_millis().to_string()),
            ("limit".to_string(), minutes.to_string()),
        ];
        let bounds = PageBounds {
            max_rows: minutes as usize,
            window: Some((start, end)),
        };
        let (resp, heads) = self
            .http
            .get(&url, &params, 1, |body| {
                check_heads(
                    check_body(body),
                    |heads| bounds.check(&heads, 1).map(|()| heads),
                    |(code, msg)| on_error(code, &msg),
                )
            })
            .await?;
        let mut page = FetchedPage::new(url, params, resp, heads.len());
        page.resume_before = resume_before(&heads, start, end);
        Ok(page)
    }

    /// Fetches the funding rates of `bybit-linear` with funding times in `[start, end)`,
    /// newest first (the latest of the range). A page with records after `start` sets
    /// [`FetchedPage::resume_before`] to its oldest funding time.
    pub async fn fetch_funding(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        self.listed_since(symbol).await?;
        let url = format!("{}/v5/market/funding/history", self.base_url);
        // Both bounds inclusive; Bybit refuses a start without an end.
        let params = vec![
            ("category".to_string(), category(self.exchange).to_string()),
            ("symbol".to_string(), instrument(symbol)),
            (
                "startTime".to_string(),
                start.timestamp_millis().to_string(),
            ),
            (
                "endTime".to_string(),
                (end.timestamp_millis() - 1).to_string(),
            ),
            ("limit".to_string(), FUNDING_LIMIT.to_string()),
        ];
        let (resp, times) = self
            .http
            .get(&url, &params, 1, |body| {
                check_heads(
                    check_funding_body(body),
                    |times| within_limit(times, FUNDING_LIMIT),
                    |(code, msg)| on_error(code, &msg),
                )
            })
            .await?;
        // Newest first, and a page may be short while older records exist: whatever came
        // back, the part of the range before its oldest record is still to be asked for.
        let mut page = FetchedPage::new(url, params, resp, times.len());
        page.resume_before = resume_before(&times, start, end);
        Ok(page)
    }
}
