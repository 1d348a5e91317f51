//! Kraken's own wire types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Every Kraken response: `{"error": [...], "result": {...}}`; errors come with HTTP 200.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub error: Vec<String>,
    #[serde(default)]
    pub result: Option<BTreeMap<String, serde_json::Value>>,
}

/// One OHLC row: `[time, "open", "high", "low", "close", "vwap", "volume", count]`.
#[derive(Debug, Deserialize)]
pub struct RawOhlc(
    pub i64,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub i64,
);
