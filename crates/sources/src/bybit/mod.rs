//! Bybit `GET /v5/market/kline` with `interval=1`, for spot (`bybit`, category `spot`) and
//! USDT perpetuals (`bybit-linear`, category `linear`); instrument `BTCUSDT` in both.
//!
//! Quirks handled here: the body is `{"retCode":0,"retMsg":"OK","result":{"category",
//! "symbol","list":[rows]}}` and errors arrive with `retCode != 0` on HTTP 200 (10006 is rate
//! limiting); a 403 "access too frequent" bans the address for at least ten minutes; rows are
//! strings, `[start, o, h, l, c, volume, turnover]`, newest first; `start` and `end` are both
//! inclusive; a page holds at most 1,000 rows, the latest of the range, so a window is walked
//! backwards from its end; there is no confirm flag, so a candle is final only when its minute
//! closed before the fetch; `turnover` is the quote volume; there is no trade count.

mod client;
pub mod models;
pub mod parse;

pub use client::{ACCESS_TOO_FREQUENT_BAN, BybitClient, DEFAULT_BASE_URL, MAX_ROWS};
pub use parse::{
    category, check_body, instrument, parse_funding, parse_instruments, parse_kline, parse_mark,
};
