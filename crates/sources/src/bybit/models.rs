//! Bybit's own wire types.

use serde::Deserialize;

/// Every Bybit v5 answer: `{"retCode": 0, "retMsg": "OK", "result": {...}}`; an error has
/// another `retCode`, on HTTP 200.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    pub ret_code: i64,
    #[serde(default)]
    pub ret_msg: String,
    pub result: Option<T>,
}

/// The `result` of `GET /v5/market/kline`.
#[derive(Debug, Deserialize)]
pub struct KlineResult {
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub symbol: String,
    #[serde(default)]
    pub list: Vec<serde_json::Value>,
}

/// One kline: `[startTime, open, high, low, close, volume, turnover]`, all strings.
#[derive(Debug, Deserialize)]
pub struct RawKline(
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
);

/// The `result` of `GET /v5/market/instruments-info`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentsResult {
    #[serde(default)]
    pub list: Vec<Instrument>,
    #[serde(default)]
    pub next_page_cursor: String,
}

/// One instrument (the fields read).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instrument {
    pub symbol: String,
    #[serde(default)]
    pub status: String,
    /// Milliseconds, as a string; linear instruments give it, spot ones do not.
    #[serde(default)]
    pub launch_time: String,
}
