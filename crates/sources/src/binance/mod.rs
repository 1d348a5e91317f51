//! Binance spot `GET /api/v3/klines`.
//!
//! Quirks handled here: klines are 12-field arrays with prices as strings; the last kline of a
//! range reaching "now" is still open; minutes without trades come back as zero-volume candles.

pub mod archive;
mod client;
pub mod models;
pub mod parse;
mod scan;

pub use client::{
    BinanceClient, DEFAULT_BASE_URL, FUTURES_BASE_URL, FUTURES_KLINES_WEIGHT, KLINES_WEIGHT,
    MAX_LIMIT, USED_WEIGHT_HEADER,
};
pub use parse::{exchange_symbol, parse_funding, parse_klines, parse_klines_of};
