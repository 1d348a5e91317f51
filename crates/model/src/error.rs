use chrono::{DateTime, Utc};

/// Errors raised when a domain value fails validation. Each message names the value and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid symbol {input:?}: {reason}")]
    InvalidSymbol { input: String, reason: &'static str },
    #[error("unknown exchange {0:?} (known: binance)")]
    UnknownExchange(String),
    #[error("invalid candle {symbol} at {open_time}: {reason}")]
    InvalidCandle {
        symbol: String,
        open_time: DateTime<Utc>,
        reason: String,
    },
    #[error(
        "invalid time {input:?}: expected an RFC 3339 timestamp (2024-01-02T03:04:05Z) or a date (2024-01-02)"
    )]
    InvalidTime { input: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
