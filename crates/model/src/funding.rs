//! Funding of perpetual futures: what a position paid or earned at each funding time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Exchange, Symbol};

/// The largest funding rate taken as real: 100% of the position in one interval. Venues cap
/// theirs at a few percent; anything past this is a broken record.
pub const MAX_ABS_RATE: f64 = 1.0;

/// One funding event of a perpetual market, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FundingRate {
    pub exchange: Exchange,
    pub symbol: Symbol,
    /// The funding time exactly as the venue gives it (Binance's is a few milliseconds after
    /// the slot).
    pub funding_time: DateTime<Utc>,
    /// The funding slot: the funding time to the nearest whole minute, so one event has one
    /// key whatever the venue's jitter.
    pub slot: DateTime<Utc>,
    /// The rate paid by longs to shorts (negative: shorts pay longs), as a fraction.
    pub rate: f64,
    /// The mark price at funding, where the venue gives it.
    pub mark_price: Option<f64>,
}

impl FundingRate {
    /// A funding event: the rate finite and within [`MAX_ABS_RATE`], the mark price (if any)
    /// finite and positive, and the market a perpetual one.
    pub fn new(
        exchange: Exchange,
        symbol: Symbol,
        funding_time: DateTime<Utc>,
        rate: f64,
        mark_price: Option<f64>,
    ) -> Result<FundingRate, Error> {
        let bad = |reason: String| Error::InvalidFunding {
            symbol: symbol.to_string(),
            funding_time,
            reason,
        };
        if !exchange.is_perpetual() {
            return Err(bad(format!("{exchange} is not a perpetual market")));
        }
        if !rate.is_finite() || rate.abs() > MAX_ABS_RATE {
            return Err(bad(format!(
                "rate {rate} is not a number within ±{MAX_ABS_RATE}"
            )));
        }
        if let Some(p) = mark_price
            && (!p.is_finite() || p <= 0.0)
        {
            return Err(bad(format!("mark price {p} is not a positive number")));
        }
        let ms = funding_time.timestamp_millis();
        let slot_ms = (ms + 30_000).div_euclid(60_000) * 60_000;
        let slot = DateTime::from_timestamp_millis(slot_ms)
            .ok_or_else(|| bad("funding time out of range".to_string()))?;
        Ok(FundingRate {
            exchange,
            symbol,
            funding_time,
            slot,
            rate,
            mark_price,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn the_slot_takes_off_the_jitter_and_bad_values_are_named() {
        let s = Symbol::parse("BTC-USDT").unwrap();
        let hour = 1_709_251_200_000;
        for jitter in [0, 3, 999, -2] {
            let f = FundingRate::new(
                Exchange::BinanceFutures,
                s.clone(),
                at(hour + jitter),
                1e-4,
                None,
            )
            .unwrap();
            assert_eq!(f.slot, at(hour), "{jitter}");
            assert_eq!(f.funding_time, at(hour + jitter));
        }
        let e = FundingRate::new(Exchange::Binance, s.clone(), at(hour), 1e-4, None).unwrap_err();
        assert!(e.to_string().contains("not a perpetual"), "{e}");
        let e =
            FundingRate::new(Exchange::OkxSwap, s.clone(), at(hour), f64::NAN, None).unwrap_err();
        assert!(e.to_string().contains("rate NaN"), "{e}");
        let e = FundingRate::new(Exchange::BybitLinear, s, at(hour), 1e-4, Some(-1.0)).unwrap_err();
        assert!(e.to_string().contains("mark price -1"), "{e}");
    }
}
