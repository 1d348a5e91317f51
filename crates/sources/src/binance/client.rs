//! Transport for Binance klines.

use chrono::{DateTime, Utc};
use cryptolake_model::Symbol;
use tracing::debug;

use super::models::ApiError;
use super::parse::{count_rows, exchange_symbol};
use crate::http::{BodyCheck, HttpClient};
use crate::{Error, FetchedPage, Result};

pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";
/// Binance serves at most 1000 klines per request.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone)]
pub struct BinanceClient {
    http: HttpClient,
    base_url: String,
}

impl BinanceClient {
    pub fn new(http: HttpClient, base_url: &str) -> Result<BinanceClient> {
        let trimmed = base_url.trim_end_matches('/');
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(Error::BaseUrl {
                url: base_url.to_string(),
                reason: "must start with http:// or https://".into(),
            });
        }
        if trimmed.contains('?') || trimmed.contains('#') {
            return Err(Error::BaseUrl {
                url: base_url.to_string(),
                reason: "must not carry a query or fragment".into(),
            });
        }
        Ok(BinanceClient {
            http,
            base_url: trimmed.to_string(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Fetches the 1-minute klines whose open time lies in `[start, end)`. The window must hold
    /// at most [`MAX_LIMIT`] minutes, so one request answers it whole.
    pub async fn fetch_klines_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        let minutes = (end - start).num_minutes();
        assert!(
            (1..=MAX_LIMIT).contains(&minutes),
            "window of {minutes} minutes does not fit one request"
        );
        let url = format!("{}/api/v3/klines", self.base_url);
        let params = vec![
            ("symbol".to_string(), exchange_symbol(symbol)),
            ("interval".to_string(), "1m".to_string()),
            (
                "startTime".to_string(),
                start.timestamp_millis().to_string(),
            ),
            // endTime is inclusive and applies to open times.
            (
                "endTime".to_string(),
                (end.timestamp_millis() - 1).to_string(),
            ),
            ("limit".to_string(), MAX_LIMIT.to_string()),
        ];
        let (resp, rows) = self
            .http
            .get(&url, &params, |body| match count_rows(body) {
                Ok(n) => BodyCheck::Ok(n),
                Err(reason) => match serde_json::from_slice::<ApiError>(body) {
                    Ok(api) => BodyCheck::Fail(format!("Binance error {}: {}", api.code, api.msg)),
                    Err(_) => BodyCheck::Retry(reason),
                },
            })
            .await
            .map_err(|e| match e {
                Error::Http {
                    url,
                    status,
                    message,
                } => {
                    let message = match serde_json::from_str::<ApiError>(&message) {
                        Ok(api) => format!("Binance error {}: {}", api.code, api.msg),
                        Err(_) => message,
                    };
                    Error::Http {
                        url,
                        status,
                        message,
                    }
                }
                other => other,
            })?;
        if let Some(w) = resp.headers.get("x-mbx-used-weight-1m") {
            debug!(symbol = %symbol, used_weight_1m = ?w, "binance weight");
        }
        Ok(FetchedPage {
            url,
            params,
            status: resp.status,
            fetched_at: resp.fetched_at,
            body: resp.body,
            rows,
        })
    }
}
