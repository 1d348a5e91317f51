use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An exchange cryptolake has an adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    /// Binance spot.
    Binance,
    /// Binance USDⓈ-M futures (perpetuals settled in USDT/USDC): its own market and prices.
    #[serde(rename = "binance-futures")]
    BinanceFutures,
    Coinbase,
    Kraken,
}

impl Exchange {
    pub const ALL: [Exchange; 4] = [
        Exchange::Binance,
        Exchange::BinanceFutures,
        Exchange::Coinbase,
        Exchange::Kraken,
    ];

    /// The lowercase name used in keys, tables and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Binance => "binance",
            Exchange::BinanceFutures => "binance-futures",
            Exchange::Coinbase => "coinbase",
            Exchange::Kraken => "kraken",
        }
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Exchange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exchange::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| Error::UnknownExchange(s.to_string()))
    }
}
