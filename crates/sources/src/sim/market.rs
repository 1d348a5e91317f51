//! A deterministic market: every candle is a pure function of (seed, symbol, minute), so any
//! page can be served in any order and is always the same.

use chrono::{DateTime, Utc};
use cryptolake_model::Symbol;

/// One simulated one-minute candle.
#[derive(Debug, Clone, PartialEq)]
pub struct SimCandle {
    pub open_time: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: f64,
    pub trades: i64,
}

#[derive(Debug, Clone)]
pub struct SimMarket {
    seed: u64,
    symbols: Vec<(Symbol, f64)>,
}

/// The default demo market.
pub const DEFAULT_SYMBOLS: [(&str, f64); 4] = [
    ("BTC-USDT", 60_000.0),
    ("ETH-USDT", 3_000.0),
    ("SOL-USDT", 150.0),
    ("DOGE-USDT", 0.15),
];

impl SimMarket {
    pub fn new(seed: u64, symbols: Vec<(Symbol, f64)>) -> SimMarket {
        SimMarket { seed, symbols }
    }

    pub fn default_market(seed: u64) -> SimMarket {
        let symbols = DEFAULT_SYMBOLS
            .iter()
            .map(|(s, p)| (Symbol::parse(s).expect("valid"), *p))
            .collect();
        SimMarket::new(seed, symbols)
    }

    pub fn symbols(&self) -> impl Iterator<Item = &Symbol> {
        self.symbols.iter().map(|(s, _)| s)
    }

    /// Finds a symbol by its exchange name (`BTCUSDT`).
    pub fn by_exchange_name(&self, name: &str) -> Option<&Symbol> {
        self.symbols
            .iter()
            .map(|(s, _)| s)
            .find(|s| format!("{}{}", s.base(), s.quote()) == name)
    }

    fn base_price(&self, symbol: &Symbol) -> Option<f64> {
        self.symbols
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, p)| *p)
    }

    fn key(&self, symbol: &Symbol) -> u64 {
        symbol
            .as_str()
            .bytes()
            .fold(self.seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
                splitmix(h ^ u64::from(b))
            })
    }

    /// Price at the start of a minute (minutes since the Unix epoch).
    fn price(&self, key: u64, base: f64, minute: i64) -> f64 {
        let mut log = 0.0;
        for level in 0..14u32 {
            let scale = 1i64 << level;
            let cell = minute.div_euclid(scale);
            let frac = minute.rem_euclid(scale) as f64 / scale as f64;
            let a = unit(splitmix(key ^ (u64::from(level) << 56) ^ cell as u64));
            let b = unit(splitmix(key ^ (u64::from(level) << 56) ^ (cell + 1) as u64));
            let amp = 0.0006 * (scale as f64).sqrt();
            log += amp * ((a + (b - a) * frac) - 0.5);
        }
        base * log.exp()
    }

    /// The candle of `symbol` opening at `open_time` (must be minute-aligned). `None` for an
    /// unknown symbol.
    pub fn candle(&self, symbol: &Symbol, open_time: DateTime<Utc>) -> Option<SimCandle> {
        let base = self.base_price(symbol)?;
        let key = self.key(symbol);
        let minute = open_time.timestamp().div_euclid(60);
        let h = splitmix(key ^ 0xC0FF_EE00 ^ minute as u64);
        let open = round8(self.price(key, base, minute));
        // About 3% of minutes see no trade: Binance still serves them, flat and with zero volume.
        if unit(h) < 0.03 {
            return Some(SimCandle {
                open_time,
                open,
                high: open,
                low: open,
                close: open,
                volume: 0.0,
                quote_volume: 0.0,
                trades: 0,
            });
        }
        let close = round8(self.price(key, base, minute + 1));
        let wiggle = 1.0 + 0.0008 * unit(splitmix(h ^ 1));
        let high = round8(open.max(close) * wiggle);
        let low = round8(open.min(close) / (1.0 + 0.0008 * unit(splitmix(h ^ 2))));
        let volume = round8((0.5 + 4.0 * unit(splitmix(h ^ 3))) * 60_000.0 / base.max(1.0));
        let quote_volume = round8(volume * (open + close) / 2.0);
        let trades = 1 + (splitmix(h ^ 4) % 400) as i64;
        Some(SimCandle {
            open_time,
            open,
            high: high.max(open.max(close)),
            low: low.min(open.min(close)),
            close,
            volume,
            quote_volume,
            trades,
        })
    }
}

impl SimMarket {
    /// A Binance klines body for the minutes opening in `[first_open_ms, last_open_ms]`, at most
    /// `limit` of them, as the exchange would answer at `now`: nothing after `now`, and the
    /// candle containing `now` still open (its close time in the future, part of its volume).
    pub fn binance_klines(
        &self,
        symbol: &Symbol,
        first_open_ms: i64,
        last_open_ms: i64,
        limit: usize,
        now: DateTime<Utc>,
    ) -> String {
        let now_ms = now.timestamp_millis();
        let mut rows = Vec::new();
        let mut t = first_open_ms.div_euclid(60_000) * 60_000;
        while t <= last_open_ms.min(now_ms) && rows.len() < limit {
            let Some(open_time) = DateTime::from_timestamp_millis(t) else {
                break;
            };
            if let Some(c) = self.candle(symbol, open_time) {
                let close_ms = t + 59_999;
                let share = if close_ms > now_ms {
                    (now_ms - t) as f64 / 60_000.0
                } else {
                    1.0
                };
                rows.push(serde_json::json!([
                    t,
                    format!("{:.8}", c.open),
                    format!("{:.8}", c.high),
                    format!("{:.8}", c.low),
                    format!("{:.8}", c.close),
                    format!("{:.8}", c.volume * share),
                    close_ms,
                    format!("{:.8}", c.quote_volume * share),
                    (c.trades as f64 * share).round() as i64,
                    format!("{:.8}", c.volume * share / 2.0),
                    format!("{:.8}", c.quote_volume * share / 2.0),
                    "0"
                ]));
            }
            t += 60_000;
        }
        serde_json::Value::Array(rows).to_string()
    }
}

fn round8(x: f64) -> f64 {
    (x * 1e8).round() / 1e8
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::{Candle, Exchange, parse_time};

    #[test]
    fn deterministic_and_valid() {
        let m = SimMarket::default_market(7);
        let t0 = parse_time("2024-05-01T00:00:00Z").unwrap();
        let mut zero = 0;
        for sym in m.symbols().cloned().collect::<Vec<_>>() {
            for i in 0..2000 {
                let t = t0 + chrono::Duration::minutes(i);
                let c = m.candle(&sym, t).unwrap();
                assert_eq!(Some(c.clone()), m.candle(&sym, t));
                if c.volume == 0.0 {
                    zero += 1;
                }
                Candle::new(
                    Exchange::Binance,
                    sym.clone(),
                    t,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    Some(c.quote_volume),
                    Some(c.trades),
                )
                .unwrap();
            }
        }
        assert!(zero > 0, "some zero-trade minutes expected");
        assert_ne!(
            SimMarket::default_market(7).candle(&Symbol::parse("BTC-USDT").unwrap(), t0),
            SimMarket::default_market(8).candle(&Symbol::parse("BTC-USDT").unwrap(), t0)
        );
    }
}
