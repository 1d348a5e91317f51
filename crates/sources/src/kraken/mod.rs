//! Kraken `GET /0/public/OHLC` with `interval=1`.
//!
//! Quirks handled here: the body is `{"error":[...],"result":{PAIR:[rows],"last":N}}`, and
//! errors arrive in `error` with HTTP 200; rows are
//! `[time, "open", "high", "low", "close", "vwap", "volume", count]` with the time in seconds
//! and prices as strings; only the latest 720 candles are ever served, whatever `since` says;
//! the last row is the still-open candle and is never final; `last` is where the next poll
//! continues. Pair names differ from ours (`XBTUSD` asked, `XXBTZUSD` answered for BTC-USD).

mod client;
pub mod models;
pub mod parse;

pub use client::{DEFAULT_BASE_URL, KrakenClient, SERVED_MINUTES};
pub use parse::{check_body, pair_name, parse_ohlc, symbol_for_pair};
