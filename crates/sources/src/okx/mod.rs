//! OKX `GET /api/v5/market/history-candles` and `/market/candles` with `bar=1m`, for spot
//! (`okx`, instrument `BTC-USDT`) and USDT-margined perpetual swaps (`okx-swap`, instrument
//! `BTC-USDT-SWAP`).
//!
//! Quirks handled here: the body is `{"code":"0","msg":"","data":[rows]}` and errors arrive
//! with `code != "0"` on HTTP 200 (50011 is rate limiting, also sent as HTTP 429); rows are
//! strings, `[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`, newest first; `after` and
//! `before` are exclusive cursors (records older than `after`, newer than `before`); a page
//! holds at most 100 rows, and may hold fewer while older rows exist; a candle is final only
//! with `confirm = "1"`, which OKX sets a moment after the minute closes; `vol` is in contracts
//! for swaps, so the base volume of a swap is `volCcy`; there is no trade count.

mod client;
pub mod models;
pub mod parse;

pub use client::{CANDLES_SERVED_MINUTES, DEFAULT_BASE_URL, MAX_ROWS, OkxClient, instruments_url};
pub use parse::{
    check_body, inst_id, inst_type, parse_candles, parse_funding, parse_instruments, parse_mark,
};
