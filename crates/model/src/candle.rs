use chrono::{DateTime, NaiveDate, Utc};

use crate::{CandleRule, Error, Exchange, Symbol, time::minute_aligned};

/// One closed one-minute candle from an exchange, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub open_time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Traded amount in the base currency.
    pub volume: f64,
    /// Traded amount in the quote currency, where the exchange reports it.
    pub quote_volume: Option<f64>,
    pub trade_count: Option<i64>,
    /// Base volume of trades whose taker bought, where the exchange reports it (Binance).
    pub taker_buy_volume: Option<f64>,
    /// Quote volume of those trades.
    pub taker_buy_quote_volume: Option<f64>,
}

impl Candle {
    /// The checked constructor: rejects non-finite or non-positive prices, `high` below any other
    /// price, `low` above any other price, negative amounts and open times off the minute grid.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn new(
        exchange: Exchange,
        symbol: Symbol,
        open_time: DateTime<Utc>,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        quote_volume: Option<f64>,
        trade_count: Option<i64>,
    ) -> Result<Candle, Error> {
        Candle::check(
            &symbol,
            open_time,
            [open, high, low, close, volume],
            quote_volume,
            trade_count,
        )?;
        Ok(Candle {
            exchange,
            symbol,
            open_time,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            trade_count,
            taker_buy_volume: None,
            taker_buy_quote_volume: None,
        })
    }

    /// The checks of [`Candle::new`] alone, for a parser that checks a whole page before it
    /// builds any candle, and then builds each in place: a candle is larger than the moves the
    /// compiler makes without a call, and each layer of `Result` it passed through copied it.
    #[inline]
    pub fn check(
        symbol: &Symbol,
        open_time: DateTime<Utc>,
        [open, high, low, close, volume]: [f64; 5],
        quote_volume: Option<f64>,
        trade_count: Option<i64>,
    ) -> Result<(), Error> {
        let fail = |rule: CandleRule, reason: String| Error::InvalidCandle {
            symbol: symbol.to_string(),
            open_time,
            rule,
            reason,
        };
        if !minute_aligned(open_time) {
            return Err(fail(
                CandleRule::Alignment,
                "open_time is not aligned to a whole minute".into(),
            ));
        }
        for (name, v) in [
            ("open", open),
            ("high", high),
            ("low", low),
            ("close", close),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(fail(
                    CandleRule::Ohlc,
                    format!("{name} price {v} is not a positive number"),
                ));
            }
        }
        if high < open.max(close).max(low) {
            return Err(fail(
                CandleRule::Ohlc,
                format!("high {high} is below open {open}, close {close} or low {low}"),
            ));
        }
        if low > open.min(close) {
            return Err(fail(
                CandleRule::Ohlc,
                format!("low {low} is above open {open} or close {close}"),
            ));
        }
        if !volume.is_finite() || volume < 0.0 {
            return Err(fail(
                CandleRule::Amounts,
                format!("volume {volume} is negative or not a number"),
            ));
        }
        if let Some(q) = quote_volume
            && (!q.is_finite() || q < 0.0)
        {
            return Err(fail(
                CandleRule::Amounts,
                format!("quote_volume {q} is negative or not a number"),
            ));
        }
        if let Some(n) = trade_count
            && n < 0
        {
            return Err(fail(
                CandleRule::Amounts,
                format!("trade_count {n} is negative"),
            ));
        }
        Ok(())
    }

    /// Sets the volumes of taker buys (base and quote), checked like the other amounts:
    /// finite, not negative, and the base part not above the candle's volume. In place: a
    /// build sets them on millions of candles, and moving each one in and out again cost more
    /// than the checks.
    #[inline]
    pub fn set_taker_buy(&mut self, base: f64, quote: f64) -> Result<(), Error> {
        Candle::check_taker_buy(&self.symbol, self.open_time, self.volume, base, quote)?;
        self.taker_buy_volume = Some(base);
        self.taker_buy_quote_volume = Some(quote);
        Ok(())
    }

    /// The checks of [`Candle::set_taker_buy`] alone, for a candle of `volume` not built yet.
    #[inline]
    pub fn check_taker_buy(
        symbol: &Symbol,
        open_time: DateTime<Utc>,
        volume: f64,
        base: f64,
        quote: f64,
    ) -> Result<(), Error> {
        for (name, v) in [
            ("taker_buy_volume", base),
            ("taker_buy_quote_volume", quote),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidCandle {
                    symbol: symbol.to_string(),
                    open_time,
                    rule: CandleRule::Amounts,
                    reason: format!("{name} {v} is negative or not a number"),
                });
            }
        }
        // Decimal strings of the same trades: allow the last digit's rounding.
        if base > volume * (1.0 + 1e-9) + 1e-12 {
            return Err(Error::InvalidCandle {
                symbol: symbol.to_string(),
                open_time,
                rule: CandleRule::Amounts,
                reason: format!("taker_buy_volume {base} is above the candle's volume {volume}"),
            });
        }
        Ok(())
    }
}

/// A row of silver `ohlcv_1m`: one closed exchange minute as the lake keeps it, with the fetch
/// time of the bronze object it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteCandle {
    pub candle: Candle,
    /// When the bronze object holding the kept copy was fetched.
    pub fetched_at: DateTime<Utc>,
}

impl MinuteCandle {
    /// The order of `ohlcv_1m` rows: exchange, symbol, open time.
    pub fn row_order(a: &MinuteCandle, b: &MinuteCandle) -> std::cmp::Ordering {
        let (a, b) = (&a.candle, &b.candle);
        (a.exchange, &a.symbol, a.open_time).cmp(&(b.exchange, &b.symbol, b.open_time))
    }
}

/// A row of silver `ohlcv_1h`: one exchange, symbol and UTC hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyCandle {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub open_time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: Option<f64>,
    pub trade_count: Option<i64>,
    /// How many one-minute candles made this hour (0..=60).
    pub minutes_present: i32,
    /// Which minutes made it: bit `m` set when the candle opening at minute `m` of the hour
    /// was present. The gap report reads missing minutes from here.
    pub minute_mask: i64,
    /// Which missing minutes are confirmed empty: bit `m` set when the minute `m` has no
    /// candle although two or more fetches asked for it after it closed (the exchange has
    /// none: Coinbase leaves out minutes without trades). Such a minute is complete data.
    pub empty_mask: i64,
    /// When the newest bronze object that contributed to this hour was fetched.
    pub ingested_at: DateTime<Utc>,
}

impl HourlyCandle {
    /// The order of silver rows: exchange, symbol, open time.
    pub fn row_order(a: &HourlyCandle, b: &HourlyCandle) -> std::cmp::Ordering {
        (a.exchange, &a.symbol, a.open_time).cmp(&(b.exchange, &b.symbol, b.open_time))
    }

    /// Whether every minute of the hour is accounted for: present, or confirmed empty.
    pub fn is_complete(&self) -> bool {
        self.minutes_covered() == 60
    }

    /// Minutes present plus minutes confirmed empty (0..=60).
    pub fn minutes_covered(&self) -> i32 {
        self.minutes_present + (self.empty_mask & !self.minute_mask).count_ones() as i32
    }
}

/// A row of gold `ohlcv_1d`: one exchange, symbol and UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyCandle {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub date: NaiveDate,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: Option<f64>,
    pub trade_count: Option<i64>,
    pub hours_present: i32,
    /// All 24 hours present, each with all 60 minutes.
    pub is_complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_time;

    fn make(o: f64, h: f64, l: f64, c: f64, v: f64) -> Result<Candle, Error> {
        Candle::new(
            Exchange::Binance,
            Symbol::parse("BTC-USDT").unwrap(),
            parse_time("2024-01-01T00:01:00Z").unwrap(),
            o,
            h,
            l,
            c,
            v,
            Some(1.0),
            Some(1),
        )
    }

    #[test]
    fn accepts_valid_and_zero_volume() {
        assert!(make(10.0, 12.0, 9.0, 11.0, 3.0).is_ok());
        assert!(make(10.0, 10.0, 10.0, 10.0, 0.0).is_ok());
    }

    #[test]
    fn rejects_broken_invariants() {
        let cases = [
            (make(10.0, 9.0, 8.0, 9.5, 1.0), "high"),
            (make(10.0, 12.0, 10.5, 11.0, 1.0), "low"),
            (make(10.0, 12.0, 9.0, 11.0, -1.0), "volume"),
            (make(f64::NAN, 12.0, 9.0, 11.0, 1.0), "open"),
            (make(0.0, 12.0, 0.0, 11.0, 1.0), "open"),
        ];
        for (res, word) in cases {
            let msg = res.unwrap_err().to_string();
            assert!(msg.contains(word), "{msg} should mention {word}");
        }
    }

    #[test]
    fn taker_buys_are_checked() {
        let c = make(10.0, 12.0, 9.0, 11.0, 3.0).unwrap();
        let mut ok = c.clone();
        ok.set_taker_buy(1.5, 16.0).unwrap();
        assert_eq!(
            (ok.taker_buy_volume, ok.taker_buy_quote_volume),
            (Some(1.5), Some(16.0))
        );
        for (base, quote, word) in [
            (-1.0, 1.0, "taker_buy_volume"),
            (1.0, f64::NAN, "taker_buy_quote_volume"),
            (3.5, 1.0, "above"),
        ] {
            let msg = c
                .clone()
                .set_taker_buy(base, quote)
                .unwrap_err()
                .to_string();
            assert!(msg.contains(word), "{msg} should mention {word}");
        }
    }

    #[test]
    fn rejects_unaligned_open_time() {
        let err = Candle::new(
            Exchange::Binance,
            Symbol::parse("BTC-USDT").unwrap(),
            parse_time("2024-01-01T00:01:30Z").unwrap(),
            1.0,
            1.0,
            1.0,
            1.0,
            0.0,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("aligned"));
    }
}
