//! Transport for Kraken OHLC.

use chrono::{DateTime, Utc};
use cryptolake_model::Symbol;

use super::parse::{check_body, pair_name};
use crate::http::{BodyCheck, HttpClient, PageBounds, check_base_url};
use crate::{FetchedPage, Result};

pub const DEFAULT_BASE_URL: &str = "https://api.kraken.com";
/// Kraken serves only the latest 720 one-minute candles.
pub const SERVED_MINUTES: i64 = 720;

#[derive(Debug, Clone)]
pub struct KrakenClient {
    http: HttpClient,
    base_url: String,
}

impl KrakenClient {
    pub fn new(http: HttpClient, base_url: &str) -> Result<KrakenClient> {
        Ok(KrakenClient {
            http,
            base_url: check_base_url(base_url)?,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Fetches the 1-minute candles after `start - 1s`: everything Kraken still serves from
    /// `start` on, up to the open candle. Rows outside the caller's window are the caller's to
    /// drop. Kraken's advice is to poll again with `since = last` (the last committed candle);
    /// the ingest cursor is the first minute not yet closed, which asks for exactly the same
    /// rows, and it also survives between processes.
    pub async fn fetch_ohlc_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        let url = format!("{}/0/public/OHLC", self.base_url);
        // `since` is exclusive: candles with time > since come back.
        let params = vec![
            ("pair".to_string(), pair_name(symbol)),
            ("interval".to_string(), "1".to_string()),
            ("since".to_string(), (start.timestamp() - 1).to_string()),
        ];
        // Kraken answers everything it still serves from `start` on: its 720 closed minutes
        // and the open one, whatever the caller's window.
        let bounds = PageBounds {
            max_rows: SERVED_MINUTES as usize + 1,
            window: None,
        };
        let (resp, rows) = self
            .http
            .get(&url, &params, 1, |body| match check_body(body) {
                Ok(Ok(n)) => match bounds.check_rows(n) {
                    Ok(()) => BodyCheck::Ok(n),
                    Err(reason) => BodyCheck::Retry(reason),
                },
                // Kraken's own error list: EService:* (unavailable, busy), EGeneral:Temporary
                // lockdown and EAPI:Rate limit exceeded are worth retrying; EQuery:Unknown
                // asset pair is not.
                Ok(Err(errors))
                    if errors.iter().any(|e| {
                        e.starts_with("EService")
                            || e.contains("Temporary")
                            || e.contains("Rate limit")
                            || e.contains("Too many requests")
                    }) =>
                {
                    BodyCheck::Retry(format!("Kraken error: {}", errors.join(", ")))
                }
                Ok(Err(errors)) => BodyCheck::Fail(format!("Kraken error: {}", errors.join(", "))),
                Err(reason) => BodyCheck::Retry(reason),
            })
            .await?;
        Ok(FetchedPage::new(url, params, resp, rows))
    }
}
