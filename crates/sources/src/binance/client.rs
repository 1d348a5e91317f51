//! Transport for Binance klines.

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
use tracing::debug;

use super::models::ApiError;
use super::parse::exchange_symbol;
use crate::http::{BodyCheck, HttpClient, PageBounds, check_base_url, row_heads};
use crate::instruments::{check_heads, within_limit};
use crate::{Error, FetchedPage, Result};

pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";
/// USDⓈ-M futures live on their own host.
pub const FUTURES_BASE_URL: &str = "https://fapi.binance.com";
/// `GET /fapi/v1/klines` with a limit of 1000 weighs 5.
pub const FUTURES_KLINES_WEIGHT: u32 = 5;
/// Binance serves at most 1000 klines per request.
pub const MAX_LIMIT: i64 = 1000;
/// The request weight of `GET /api/v3/klines` (any limit).
pub const KLINES_WEIGHT: u32 = 2;
/// Binance's count of the weight this address used in the current minute.
pub const USED_WEIGHT_HEADER: &str = "x-mbx-used-weight-1m";

/// `GET /fapi/v1/fundingRate` answers at most 1000 records.
pub const FUNDING_LIMIT: usize = 1000;

#[derive(Debug, Clone)]
pub struct BinanceClient {
    http: HttpClient,
    base_url: String,
    exchange: Exchange,
}

impl BinanceClient {
    /// A spot client (`/api/v3/klines`).
    pub fn new(http: HttpClient, base_url: &str) -> Result<BinanceClient> {
        Ok(BinanceClient {
            http: http.with_used_weight_header(USED_WEIGHT_HEADER),
            base_url: check_base_url(base_url)?,
            exchange: Exchange::Binance,
        })
    }

    /// A USDⓈ-M futures client (`/fapi/v1/klines`, same row layout as spot).
    pub fn futures(http: HttpClient, base_url: &str) -> Result<BinanceClient> {
        Ok(BinanceClient {
            exchange: Exchange::BinanceFutures,
            ..Self::new(http, base_url)?
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
        let (path, weight) = match self.exchange {
            Exchange::BinanceFutures => ("/fapi/v1/klines", FUTURES_KLINES_WEIGHT),
            _ => ("/api/v3/klines", KLINES_WEIGHT),
        };
        self.fetch_rows_1m(path, weight, symbol, start, end).await
    }

    /// Fetches a USDⓈ-M perpetual's 1-minute mark price klines opening in `[start, end)`
    /// (`/fapi/v1/markPriceKlines`: the klines' layout, volumes zero; weight 5 at 1,000 rows).
    pub async fn fetch_mark_klines_1m(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        self.fetch_rows_1m(
            "/fapi/v1/markPriceKlines",
            FUTURES_KLINES_WEIGHT,
            symbol,
            start,
            end,
        )
        .await
    }

    async fn fetch_rows_1m(
        &self,
        path: &str,
        weight: u32,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        let minutes = (end - start).num_minutes();
        assert!(
            (1..=MAX_LIMIT).contains(&minutes),
            "window of {minutes} minutes does not fit one request"
        );
        let url = format!("{}{path}", self.base_url);
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
        let bounds = PageBounds {
            max_rows: minutes as usize,
            window: Some((start, end)),
        };
        let (resp, rows) = self
            .http
            .get(&url, &params, weight, |body| match row_heads(body) {
                Ok(heads) => match bounds.check(&heads, 1) {
                    Ok(()) => BodyCheck::Ok(heads.len()),
                    Err(reason) => BodyCheck::Retry(reason),
                },
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
        if let Some(w) = resp.headers.get(USED_WEIGHT_HEADER) {
            debug!(symbol = %symbol, used_weight_1m = ?w, "binance weight");
        }
        Ok(FetchedPage::new(url, params, resp, rows))
    }

    /// Fetches the funding rates of a USDⓈ-M perpetual with funding times in `[start, end)`,
    /// oldest first. A full page sets [`FetchedPage::resume_after`] to its last funding time.
    pub async fn fetch_funding(
        &self,
        symbol: &Symbol,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchedPage> {
        let url = format!("{}/fapi/v1/fundingRate", self.base_url);
        let params = vec![
            ("symbol".to_string(), exchange_symbol(symbol)),
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
                let found = match serde_json::from_slice::<Vec<serde_json::Value>>(body) {
                    Ok(rows) => Ok(Ok(crate::funding_times(&rows, "fundingTime"))),
                    Err(reason) => match serde_json::from_slice::<ApiError>(body) {
                        Ok(api) => Ok(Err(api)),
                        Err(_) => Err(format!("not a funding rate array: {reason}")),
                    },
                };
                check_heads(
                    found,
                    |times| within_limit(times, FUNDING_LIMIT),
                    |api| BodyCheck::Fail(format!("Binance error {}: {}", api.code, api.msg)),
                )
            })
            .await?;
        let mut page = FetchedPage::new(url, params, resp, times.len());
        if times.len() == FUNDING_LIMIT {
            page.resume_after = times
                .iter()
                .flatten()
                .max()
                .and_then(|t| DateTime::from_timestamp_millis(*t));
        }
        Ok(page)
    }
}
