//! Coinbase Exchange `GET /products/{product_id}/candles` with `granularity=60`.
//!
//! Quirks handled here: rows are `[time, low, high, open, close, volume]` with the time in
//! seconds and every value a JSON number; they come newest first; at most 300 per request;
//! minutes without trades are simply left out (a gap Coinbase has, not one we lost); rows
//! before `start` can appear and are filtered out downstream as outside the window. There is
//! no quote volume or trade count.

mod client;
pub mod models;
pub mod parse;

pub use client::{CoinbaseClient, DEFAULT_BASE_URL, MAX_ROWS};
pub use parse::{parse_candles, product_id};
