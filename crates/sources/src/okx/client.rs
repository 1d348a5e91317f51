//! Transport for OKX candles and instruments.

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol};

use super::parse::{check_body, check_funding_body, inst_id, inst_type, parse_instruments};
use crate::http::{BodyCheck, HttpClient, PageBounds, check_base_url};
use crate::instruments::{Instruments, Listing, check_heads, resume_before, within_limit};
use crate::{FetchedPage, Prices, Result};

pub const DEFAULT_BASE_URL: &str = "https://www.okx.com";
/// `history-candles` serves at most 100 rows per request.
pub const MAX_ROWS: i64 = 100;
/// `market/candles` serves only the newest 1,440 candles.
pub const CANDLES_SERVED_MINUTES: i64 = 1_440;

/// `funding-rate-history` answers at most 100 records.
pub const FUNDING_LIMIT: usize = 100;

/// The instruments endpoint of a market.
pub fn instruments_url(base_url: &str) -> String {
    format!("{base_url}/api/v5/public/instruments")
}

#[derive(Debug, Clone)]
pub struct OkxClient {
    http: HttpClient,
    base_url: String,
    exchange: Exchange,
    instruments: Instruments,
}

/// What an OKX error code means for the retry loop: 50011 (too many requests) pauses every
/// request, service errors are retried, anything else (51001: no such instrument) fails.
fn on_error<T>(code: &str, msg: &str) -> BodyCheck<T> {
    let what = format!("OKX error {code}: {msg}");
    match code {
        "50011" | "50040" | "50061" => BodyCheck::Throttled(what),
        "50001" | "50004" | "50013" | "50026" => BodyCheck::Retry(what),
        _ => BodyCheck::Fail(what),
    }
}

impl OkxClient {
    /// A client of `exchange`: `okx` (spot) or `okx-swap`.
    pub fn new(http: HttpClient, base_url: &str, exchange: Exchange) -> Result<OkxClient> {
        Ok(OkxClient {
            http,
            base_url: check_base_url(base_url)?,
            exchange,
            instruments: Instruments::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The live instruments of this market and their listing times.
    pub async fn instruments(&self) -> Result<Listing> {
        let url = instruments_url(&self.base_url);
        let params = vec![("instType".to_string(), inst_type(self.exchange).to_string())];
        let (_, listing) = self
            .http
            .get(&url, &params, 1, |body| match check_body(body) {
                Ok(Ok(_)) => match parse_instruments(body) {
                    Ok(list) => BodyCheck::Ok(list.into_iter().collect::<Listing>()),
                    Err(reason) => BodyCheck::Retry(reason),
                },
                Ok(Err((code, msg))) => on_error(&code, &msg),
                Err(reason) => BodyCheck::Retry(reason),
            })
            .await?;
        Ok(listing)
    }

    /// When OKX listed `symbol` on this market (`None` if it does not say); an error naming
    /// the symbol when it does not list it.
    pub async fn listed_since(&self, symbol: &Symbol) -> Result<Option<DateTime<Utc>>> {
        let id = inst_id(self.exchange, symbol);
        self.instruments
            .require(self.exchange, symbol, &id, || self.instruments())
            .await
    }

    /// Fetches the 1-minute candles opening in `[start, end)`, at most [`MAX_ROWS`] minutes.
    /// The page may answer only the newest part of the window: see
    /// [`FetchedPage::resume_before`].
    pub async fn fetch_candles_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        self.fetch_rows_1m(symbol, start, end, Prices::Trades).await
    }

    /// [`OkxClient::fetch_candles_1m`] of trade candles, or of a swap's mark price candles
    /// (`mark-price-candles`, `history-mark-price-candles`: 100 rows either way).
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
        // The newest day comes from `market/candles` (an hour of margin for the request's
        // way out); everything older from `history-candles`.
        let recent = start >= Utc::now() - Duration::minutes(CANDLES_SERVED_MINUTES - 60);
        let path = match (prices, recent) {
            (Prices::Trades, true) => "candles",
            (Prices::Trades, false) => "history-candles",
            (Prices::Mark, true) => "mark-price-candles",
            (Prices::Mark, false) => "history-mark-price-candles",
        };
        let url = format!("{}/api/v5/market/{path}", self.base_url);
        // Both cursors are exclusive: rows older than `after` and newer than `before`.
        let before = start - Duration::minutes(1);
        let params = vec![
            ("instId".to_string(), inst_id(self.exchange, symbol)),
            ("bar".to_string(), "1m".to_string()),
            ("after".to_string(), end.timestamp_millis().to_string()),
            ("before".to_string(), before.timestamp_millis().to_string()),
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
                    |(code, msg)| on_error(&code, &msg),
                )
            })
            .await?;
        let mut page = FetchedPage::new(url, params, resp, heads.len());
        page.resume_before = resume_before(&heads, start, end);
        Ok(page)
    }

    /// Fetches the funding rates of `okx-swap` with funding times in `[start, end)`, newest
    /// first (OKX keeps about three months). A page with records after `start` sets
    /// [`FetchedPage::resume_before`] to its oldest funding time.
    pub async fn fetch_funding(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        self.listed_since(symbol).await?;
        let url = format!("{}/api/v5/public/funding-rate-history", self.base_url);
        // Exclusive cursors on the funding time.
        let params = vec![
            ("instId".to_string(), inst_id(self.exchange, symbol)),
            ("after".to_string(), end.timestamp_millis().to_string()),
            (
                "before".to_string(),
                (start.timestamp_millis() - 1).to_string(),
            ),
            ("limit".to_string(), FUNDING_LIMIT.to_string()),
        ];
        let (resp, times) = self
            .http
            .get(&url, &params, 1, |body| {
                check_heads(
                    check_funding_body(body),
                    |times| within_limit(times, FUNDING_LIMIT),
                    |(code, msg)| on_error(&code, &msg),
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
