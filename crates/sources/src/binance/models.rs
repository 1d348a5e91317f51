//! Binance's own wire types.

use serde::Deserialize;

/// One kline as Binance sends it:
/// `[open_time_ms, "open", "high", "low", "close", "volume", close_time_ms, "quote_volume",
///   trades, "taker_buy_base", "taker_buy_quote", "ignore"]`.
///
/// `S` is `String`, or `&str` to borrow from the body when no field needs unescaping.
#[derive(Debug, Deserialize)]
pub struct RawKline<S>(
    pub i64,
    pub S,
    pub S,
    pub S,
    pub S,
    pub S,
    pub i64,
    pub S,
    pub i64,
    pub S,
    pub S,
    pub serde::de::IgnoredAny,
);

/// Binance's error body: `{"code": -1121, "msg": "Invalid symbol."}`.
#[derive(Debug, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}
