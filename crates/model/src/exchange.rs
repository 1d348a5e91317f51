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
    /// OKX spot.
    Okx,
    /// OKX USDT-margined perpetual swaps (`BTC-USDT-SWAP`): their own market and prices.
    #[serde(rename = "okx-swap")]
    OkxSwap,
    /// Bybit spot.
    Bybit,
    /// Bybit USDT perpetuals (category `linear`): their own market and prices.
    #[serde(rename = "bybit-linear")]
    BybitLinear,
}

impl Exchange {
    pub const ALL: [Exchange; 8] = [
        Exchange::Binance,
        Exchange::BinanceFutures,
        Exchange::Coinbase,
        Exchange::Kraken,
        Exchange::Okx,
        Exchange::OkxSwap,
        Exchange::Bybit,
        Exchange::BybitLinear,
    ];

    /// The lowercase name used in keys, tables and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Binance => "binance",
            Exchange::BinanceFutures => "binance-futures",
            Exchange::Coinbase => "coinbase",
            Exchange::Kraken => "kraken",
            Exchange::Okx => "okx",
            Exchange::OkxSwap => "okx-swap",
            Exchange::Bybit => "bybit",
            Exchange::BybitLinear => "bybit-linear",
        }
    }

    /// Whether this market trades perpetual futures rather than spot.
    pub fn is_perpetual(self) -> bool {
        matches!(
            self,
            Exchange::BinanceFutures | Exchange::OkxSwap | Exchange::BybitLinear
        )
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
