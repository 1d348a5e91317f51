use chrono::{DateTime, Utc};

/// Which data-quality rule a candle broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandleRule {
    /// Prices positive and finite, high and low consistent with open and close.
    Ohlc,
    /// Volume, quote volume and trade count not negative.
    Amounts,
    /// Open time on the interval grid.
    Alignment,
}

impl CandleRule {
    pub fn as_str(self) -> &'static str {
        match self {
            CandleRule::Ohlc => "ohlc",
            CandleRule::Amounts => "amounts",
            CandleRule::Alignment => "alignment",
        }
    }
}

/// Errors raised when a domain value fails validation. Each message names the value and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid symbol {input:?}: {reason}")]
    InvalidSymbol { input: String, reason: &'static str },
    #[error(
        "unknown exchange {0:?} (known: binance, binance-futures, bybit, bybit-linear, coinbase, kraken, okx, okx-swap)"
    )]
    UnknownExchange(String),
    #[error("invalid candle {symbol} at {open_time}: {reason}")]
    InvalidCandle {
        symbol: String,
        open_time: DateTime<Utc>,
        rule: CandleRule,
        reason: String,
    },
    #[error("invalid funding rate {symbol} at {funding_time}: {reason}")]
    InvalidFunding {
        symbol: String,
        funding_time: DateTime<Utc>,
        reason: String,
    },
    #[error(
        "invalid time {input:?}: expected an RFC 3339 timestamp (2024-01-02T03:04:05Z) or a date (2024-01-02)"
    )]
    InvalidTime { input: String },
    #[error("time {input:?} is outside 1970-01-01 to 9999-12-31")]
    TimeOutOfRange { input: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
