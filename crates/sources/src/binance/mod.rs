//! Binance spot `GET /api/v3/klines`.
//!
//! Quirks handled here: klines are 12-field arrays with prices as strings; the last kline of a
//! range reaching "now" is still open; minutes without trades come back as zero-volume candles.

mod client;
pub mod models;
pub mod parse;

pub use client::{BinanceClient, DEFAULT_BASE_URL, MAX_LIMIT};
pub use parse::{exchange_symbol, parse_klines};
