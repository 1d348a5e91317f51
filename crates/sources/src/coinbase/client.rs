//! Transport for Coinbase candles.

use chrono::{DateTime, SecondsFormat, Utc};
use cryptolake_model::Symbol;

use super::models::ApiError;
use super::parse::product_id;
use crate::http::{BodyCheck, HttpClient, PageBounds, check_base_url, row_heads};
use crate::{Error, FetchedPage, Result};

pub const DEFAULT_BASE_URL: &str = "https://api.exchange.coinbase.com";
/// Coinbase serves at most 300 candles per request.
pub const MAX_ROWS: i64 = 300;

#[derive(Debug, Clone)]
pub struct CoinbaseClient {
    http: HttpClient,
    base_url: String,
}

fn api_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ApiError>(body)
        .ok()
        .map(|e| format!("Coinbase error: {}", e.message))
}

impl CoinbaseClient {
    pub fn new(http: HttpClient, base_url: &str) -> Result<CoinbaseClient> {
        Ok(CoinbaseClient {
            http,
            base_url: check_base_url(base_url)?,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Fetches the 1-minute candles opening in `[start, end)`, at most [`MAX_ROWS`] minutes.
    pub async fn fetch_candles_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        let minutes = (end - start).num_minutes();
        assert!(
            (1..=MAX_ROWS).contains(&minutes),
            "window of {minutes} minutes does not fit one request"
        );
        let url = format!("{}/products/{}/candles", self.base_url, product_id(symbol));
        // Both bounds are inclusive: the last minute asked for is the one opening at end - 1m.
        let last = end - chrono::Duration::minutes(1);
        let params = vec![
            ("granularity".to_string(), "60".to_string()),
            (
                "start".to_string(),
                start.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            (
                "end".to_string(),
                last.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ];
        let bounds = PageBounds {
            max_rows: minutes as usize,
            window: Some((start, end)),
        };
        let (resp, rows) = self
            .http
            .get(&url, &params, 1, |body| match row_heads(body) {
                Ok(heads) => match bounds.check(&heads, 1000) {
                    Ok(()) => BodyCheck::Ok(heads.len()),
                    Err(reason) => BodyCheck::Retry(reason),
                },
                Err(reason) => match api_message(body) {
                    Some(m) => BodyCheck::Fail(m),
                    None => BodyCheck::Retry(reason),
                },
            })
            .await
            .map_err(|e| match e {
                Error::Http {
                    url,
                    status,
                    message,
                } => Error::Http {
                    url,
                    status,
                    message: api_message(message.as_bytes()).unwrap_or(message),
                },
                other => other,
            })?;
        Ok(FetchedPage::new(url, params, resp, rows))
    }
}
