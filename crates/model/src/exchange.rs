use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An exchange cryptolake has an adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    // In the order of their names: files claim to be sorted by the name, and rows are sorted
    // by this type's order (a test holds the two together).
    /// Binance spot.
    Binance,
    /// Binance USDⓈ-M futures (perpetuals settled in USDT/USDC): its own market and prices.
    #[serde(rename = "binance-futures")]
    BinanceFutures,
    /// Bybit spot.
    Bybit,
    /// Bybit USDT perpetuals (category `linear`): their own market and prices.
    #[serde(rename = "bybit-linear")]
    BybitLinear,
    Coinbase,
    Kraken,
    /// OKX spot.
    Okx,
    /// OKX USDT-margined perpetual swaps (`BTC-USDT-SWAP`): their own market and prices.
    #[serde(rename = "okx-swap")]
    OkxSwap,
}

impl Exchange {
    pub const ALL: [Exchange; 8] = [
        Exchange::Binance,
        Exchange::BinanceFutures,
        Exchange::Bybit,
        Exchange::BybitLinear,
        Exchange::Coinbase,
        Exchange::Kraken,
        Exchange::Okx,
        Exchange::OkxSwap,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_order_of_names_and_names_round_trip() {
        // Tables are sorted by `Exchange` and their files say they are sorted by its name: a
        // variant out of place would make a reader trust an order the rows are not in.
        for pair in Exchange::ALL.windows(2) {
            assert!(pair[0] < pair[1], "ALL in order: {pair:?}");
            assert!(pair[0].as_str() < pair[1].as_str(), "{pair:?}");
        }
        for e in Exchange::ALL {
            assert_eq!(e.as_str().parse::<Exchange>().unwrap(), e);
            assert_eq!(serde_json::to_string(&e).unwrap(), format!("\"{e}\""));
        }
    }
}
