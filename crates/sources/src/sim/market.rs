//! A deterministic market: every candle is a pure function of (seed, symbol, minute), so any
//! page can be served in any order and is always the same.

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};

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
    /// Volumes of the trades whose taker bought (Binance serves them).
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
}

#[derive(Debug, Clone)]
pub struct SimMarket {
    seed: u64,
    symbols: Vec<(Symbol, f64)>,
    /// When a venue listed a symbol: before it, the venue has no candle of it.
    listings: Vec<(Exchange, Symbol, DateTime<Utc>)>,
    /// Every venue trades at the same prices (one market seen through several APIs).
    shared_prices: bool,
    /// Funding interval changes: from this time on, funding every this many hours.
    funding_changes: Vec<(Exchange, Symbol, DateTime<Utc>, i64)>,
    /// Funding slots the venue never published (ms).
    missing_funding: Vec<(Exchange, Symbol, i64)>,
}

/// The funding interval of a perpetual until a change says otherwise.
pub const DEFAULT_FUNDING_HOURS: i64 = 8;
/// How far back OKX serves funding history: about three months.
pub const OKX_FUNDING_DAYS: i64 = 92;

/// One simulated funding event.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFunding {
    /// The funding slot (a whole hour), in milliseconds.
    pub slot_ms: i64,
    /// The funding time the venue states: Binance's comes a few milliseconds after the slot.
    pub time_ms: i64,
    pub rate: f64,
    /// The mark price at funding (the minute's open).
    pub mark_price: f64,
}

/// How long after a minute closes OKX still serves its candle with `confirm = "0"`, the last
/// trades not yet in it.
pub const OKX_CONFIRM_DELAY_MS: i64 = 5_000;
/// The share of a closed minute's volume an unconfirmed OKX candle holds.
pub const UNCONFIRMED_SHARE: f64 = 0.9;
/// The listing time the simulated instruments report when none was set.
pub const DEFAULT_LISTING_MS: i64 = 1_548_133_413_000;

/// Each exchange trades at its own, slightly different prices: its candles are drawn with this
/// salt (Binance's is zero, so [`SimMarket::candle`] is Binance's market).
fn venue_salt(exchange: Exchange) -> u64 {
    match exchange {
        Exchange::Binance => 0,
        Exchange::BinanceFutures => 0xF0_7E5,
        Exchange::Coinbase => 0xC0_1BA5E,
        Exchange::Kraken => 0x4B_4A4E,
        Exchange::Okx => 0x0C_5B07,
        Exchange::OkxSwap => 0x0C_5F4A,
        Exchange::Bybit => 0xB1_B170,
        Exchange::BybitLinear => 0xB1_11EA,
    }
}

/// The default demo market.
pub const DEFAULT_SYMBOLS: [(&str, f64); 7] = [
    ("BTC-USDT", 60_000.0),
    ("ETH-USDT", 3_000.0),
    ("SOL-USDT", 150.0),
    ("DOGE-USDT", 0.15),
    ("BTC-USD", 60_010.0),
    ("ETH-USD", 3_001.0),
    ("SOL-USD", 150.05),
];

impl SimMarket {
    pub fn new(seed: u64, symbols: Vec<(Symbol, f64)>) -> SimMarket {
        SimMarket {
            seed,
            symbols,
            listings: Vec::new(),
            shared_prices: false,
            funding_changes: Vec::new(),
            missing_funding: Vec::new(),
        }
    }

    /// The market without `symbol`'s funding event at `slot` on `exchange`: the venue never
    /// published one there, however often it is asked.
    pub fn without_funding(
        mut self,
        exchange: Exchange,
        symbol: &Symbol,
        slot: DateTime<Utc>,
    ) -> Self {
        self.missing_funding
            .push((exchange, symbol.clone(), slot.timestamp_millis()));
        self
    }

    /// The market with `symbol`'s funding on `exchange` every `hours` hours from `from` on.
    pub fn with_funding_interval(
        mut self,
        exchange: Exchange,
        symbol: &Symbol,
        from: DateTime<Utc>,
        hours: i64,
    ) -> Self {
        self.funding_changes
            .push((exchange, symbol.clone(), from, hours.max(1)));
        self.funding_changes.sort_by_key(|c| c.2);
        self
    }

    /// The funding interval in hours of `symbol` on `exchange` at `t_ms`.
    pub fn funding_hours_at(&self, exchange: Exchange, symbol: &Symbol, t_ms: i64) -> i64 {
        self.funding_changes
            .iter()
            .rfind(|(e, s, from, _)| {
                *e == exchange && s == symbol && from.timestamp_millis() <= t_ms
            })
            .map_or(DEFAULT_FUNDING_HOURS, |c| c.3)
    }

    /// The funding event of the hour starting at `hour_ms`, if that hour is a funding slot of
    /// `symbol` on the perpetual `exchange` (slots are aligned to UTC midnight).
    pub fn funding_at(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        hour_ms: i64,
    ) -> Option<SimFunding> {
        const HOUR: i64 = 3_600_000;
        if !exchange.is_perpetual() || hour_ms.rem_euclid(HOUR) != 0 {
            return None;
        }
        let hours = self.funding_hours_at(exchange, symbol, hour_ms);
        if hour_ms.div_euclid(HOUR).rem_euclid(hours) != 0
            || self
                .missing_funding
                .iter()
                .any(|(e, s, at)| *e == exchange && s == symbol && *at == hour_ms)
        {
            return None;
        }
        let open_time = DateTime::from_timestamp_millis(hour_ms)?;
        let mark_price = self.candle_on(exchange, symbol, open_time)?.open;
        let h = splitmix(self.key(exchange, symbol) ^ 0xF0_4D1E ^ hour_ms as u64);
        let rate = round8((unit(h) - 0.45) * 0.0004);
        let jitter = if exchange == Exchange::BinanceFutures {
            (splitmix(h) % 9) as i64
        } else {
            0
        };
        Some(SimFunding {
            slot_ms: hour_ms,
            time_ms: hour_ms + jitter,
            rate,
            mark_price,
        })
    }

    /// The funding events with slots in `[first_ms, last_ms]`, at most `limit`: the newest
    /// ones, newest first (`newest`), or the oldest ones, oldest first. Never before the
    /// listing (or the simulated instruments' listing time).
    pub fn funding(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        first_ms: i64,
        last_ms: i64,
        limit: usize,
        newest: bool,
    ) -> Vec<SimFunding> {
        const HOUR: i64 = 3_600_000;
        let floor = self.listing_ms(exchange, symbol);
        let first = first_ms.max(floor);
        let (lo, hi) = (
            (first + HOUR - 1).div_euclid(HOUR),
            last_ms.div_euclid(HOUR),
        );
        let mut out = Vec::new();
        let hours: Box<dyn Iterator<Item = i64>> = if newest {
            Box::new((lo..=hi).rev())
        } else {
            Box::new(lo..=hi)
        };
        for h in hours {
            if out.len() >= limit {
                break;
            }
            if let Some(f) = self.funding_at(exchange, symbol, h * HOUR) {
                out.push(f);
            }
        }
        out
    }

    /// The market with `symbol` listed on `exchange` only from `from` (a whole minute).
    pub fn with_listing(
        mut self,
        exchange: Exchange,
        symbol: &Symbol,
        from: DateTime<Utc>,
    ) -> Self {
        self.listings
            .retain(|(e, s, _)| !(*e == exchange && s == symbol));
        self.listings.push((exchange, symbol.clone(), from));
        self
    }

    /// The market with every venue trading at the same prices.
    pub fn with_shared_prices(mut self) -> Self {
        self.shared_prices = true;
        self
    }

    /// When `exchange` listed `symbol`, if it was set.
    pub fn listed_from(&self, exchange: Exchange, symbol: &Symbol) -> Option<DateTime<Utc>> {
        self.listings
            .iter()
            .find(|(e, s, _)| *e == exchange && s == symbol)
            .map(|(_, _, t)| *t)
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

    /// The symbols an exchange lists: Binance the USDT pairs, Coinbase and Kraken the USD ones.
    pub fn listed(&self, exchange: Exchange) -> Vec<Symbol> {
        let quote = match exchange {
            Exchange::Coinbase | Exchange::Kraken => "USD",
            _ => "USDT",
        };
        self.symbols()
            .filter(|s| s.quote() == quote)
            .cloned()
            .collect()
    }

    pub fn is_listed(&self, exchange: Exchange, symbol: &Symbol) -> bool {
        self.listed(exchange).contains(symbol)
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

    fn key(&self, exchange: Exchange, symbol: &Symbol) -> u64 {
        let salt = if self.shared_prices {
            0
        } else {
            venue_salt(exchange)
        };
        symbol
            .as_str()
            .bytes()
            .fold(self.seed ^ 0x9E37_79B9_7F4A_7C15 ^ salt, |h, b| {
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

    /// The Binance candle of `symbol` opening at `open_time` (must be minute-aligned). `None`
    /// for an unknown symbol.
    pub fn candle(&self, symbol: &Symbol, open_time: DateTime<Utc>) -> Option<SimCandle> {
        self.candle_on(Exchange::Binance, symbol, open_time)
    }

    /// The candle of `symbol` on `exchange` opening at `open_time`. A candle with zero volume
    /// is a minute without trades (Binance and Kraken serve it flat; Coinbase leaves it out).
    pub fn candle_on(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        open_time: DateTime<Utc>,
    ) -> Option<SimCandle> {
        let base = self.base_price(symbol)?;
        if self
            .listed_from(exchange, symbol)
            .is_some_and(|from| open_time < from)
        {
            return None;
        }
        let key = self.key(exchange, symbol);
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
                taker_buy_volume: 0.0,
                taker_buy_quote_volume: 0.0,
            });
        }
        let close = round8(self.price(key, base, minute + 1));
        let wiggle = 1.0 + 0.0008 * unit(splitmix(h ^ 1));
        let high = round8(open.max(close) * wiggle);
        let low = round8(open.min(close) / (1.0 + 0.0008 * unit(splitmix(h ^ 2))));
        let volume = round8((0.5 + 4.0 * unit(splitmix(h ^ 3))) * 60_000.0 / base.max(1.0));
        let quote_volume = round8(volume * (open + close) / 2.0);
        let trades = 1 + (splitmix(h ^ 4) % 400) as i64;
        let taker_share = unit(splitmix(h ^ 5));
        Some(SimCandle {
            open_time,
            open,
            high: high.max(open.max(close)),
            low: low.min(open.min(close)),
            close,
            volume,
            quote_volume,
            trades,
            taker_buy_volume: round8(volume * taker_share),
            taker_buy_quote_volume: round8(quote_volume * taker_share),
        })
    }
}

/// A candle as an exchange serves it at some instant: the one containing "now" is still open
/// and holds only part of its minute's trading.
struct Served {
    open_ms: i64,
    candle: SimCandle,
    open: bool,
}

impl SimMarket {
    /// The candles opening in `[first_open_ms, last_open_ms]`, at most `limit`, as `exchange`
    /// would serve them at `now`: nothing after `now`, the current minute partial.
    fn served(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        first_open_ms: i64,
        last_open_ms: i64,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Vec<Served> {
        let now_ms = now.timestamp_millis();
        let mut out = Vec::new();
        let mut t = first_open_ms.div_euclid(60_000) * 60_000;
        while t <= last_open_ms.min(now_ms) && out.len() < limit {
            let Some(open_time) = DateTime::from_timestamp_millis(t) else {
                break;
            };
            if let Some(mut c) = self.candle_on(exchange, symbol, open_time) {
                let open = t + 60_000 > now_ms;
                if open {
                    let share = (now_ms - t) as f64 / 60_000.0;
                    c.volume = round8(c.volume * share);
                    c.quote_volume = round8(c.quote_volume * share);
                    c.trades = (c.trades as f64 * share).round() as i64;
                    c.taker_buy_volume = round8(c.taker_buy_volume * share).min(c.volume);
                    c.taker_buy_quote_volume = round8(c.taker_buy_quote_volume * share);
                }
                out.push(Served {
                    open_ms: t,
                    candle: c,
                    open,
                });
            }
            t += 60_000;
        }
        out
    }

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
        self.klines_of(
            Exchange::Binance,
            symbol,
            first_open_ms,
            last_open_ms,
            limit,
            now,
        )
    }

    /// [`SimMarket::binance_klines`] for spot or USDⓈ-M futures (same layout).
    pub fn klines_of(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        first_open_ms: i64,
        last_open_ms: i64,
        limit: usize,
        now: DateTime<Utc>,
    ) -> String {
        let rows: Vec<serde_json::Value> = self
            .served(exchange, symbol, first_open_ms, last_open_ms, limit, now)
            .into_iter()
            .map(|s| {
                let c = s.candle;
                serde_json::json!([
                    s.open_ms,
                    format!("{:.8}", c.open),
                    format!("{:.8}", c.high),
                    format!("{:.8}", c.low),
                    format!("{:.8}", c.close),
                    format!("{:.8}", c.volume),
                    s.open_ms + 59_999,
                    format!("{:.8}", c.quote_volume),
                    c.trades,
                    format!("{:.8}", c.taker_buy_volume),
                    format!("{:.8}", c.taker_buy_quote_volume),
                    "0"
                ])
            })
            .collect();
        serde_json::Value::Array(rows).to_string()
    }

    /// A Coinbase candles body for the minutes opening in `[start_s, end_s]` (both inclusive,
    /// seconds), newest first, with minutes without trades left out, as served at `now`.
    pub fn coinbase_candles(
        &self,
        symbol: &Symbol,
        start_s: i64,
        end_s: i64,
        now: DateTime<Utc>,
    ) -> String {
        let mut rows: Vec<serde_json::Value> = self
            .served(
                Exchange::Coinbase,
                symbol,
                start_s * 1000,
                end_s * 1000,
                usize::MAX,
                now,
            )
            .into_iter()
            .filter(|s| s.candle.volume > 0.0)
            .map(|s| {
                let c = s.candle;
                serde_json::json!([s.open_ms / 1000, c.low, c.high, c.open, c.close, c.volume])
            })
            .collect();
        rows.reverse();
        serde_json::Value::Array(rows).to_string()
    }

    /// A Kraken OHLC body as served at `now`: of the latest 720 minutes (the last one still
    /// open and always present), those opening after `since` (seconds).
    pub fn kraken_ohlc(
        &self,
        symbol: &Symbol,
        result_key: &str,
        since: Option<i64>,
        now: DateTime<Utc>,
    ) -> String {
        let now_minute = now.timestamp().div_euclid(60) * 60;
        let oldest = now_minute - 719 * 60;
        let served = self.served(
            Exchange::Kraken,
            symbol,
            oldest * 1000,
            now_minute * 1000,
            720,
            now,
        );
        let last_committed = served
            .iter()
            .rev()
            .find(|s| !s.open)
            .map_or(oldest, |s| s.open_ms / 1000);
        let rows: Vec<serde_json::Value> = served
            .into_iter()
            .filter(|s| s.open || since.is_none_or(|since| s.open_ms / 1000 > since))
            .map(|s| {
                let c = s.candle;
                let vwap = if c.volume > 0.0 {
                    c.quote_volume / c.volume
                } else {
                    c.close
                };
                serde_json::json!([
                    s.open_ms / 1000,
                    format!("{:.8}", c.open),
                    format!("{:.8}", c.high),
                    format!("{:.8}", c.low),
                    format!("{:.8}", c.close),
                    format!("{:.8}", vwap),
                    format!("{:.8}", c.volume),
                    c.trades
                ])
            })
            .collect();
        let mut result = serde_json::Map::new();
        result.insert(result_key.to_string(), serde_json::Value::Array(rows));
        result.insert("last".to_string(), serde_json::json!(last_committed));
        serde_json::json!({ "error": [], "result": result }).to_string()
    }
}

/// Which rows of a newest-first venue's page: open times in `[first_ms, last_ms]` (both
/// inclusive, milliseconds), the newest `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct NewestFirst {
    pub first_ms: i64,
    pub last_ms: i64,
    pub limit: usize,
}

impl NewestFirst {
    /// The first and last open time (ms) such a page can hold at `now`: never further back
    /// than the page can hold, since the range may reach back years.
    fn minutes(&self, now: DateTime<Utc>) -> (i64, i64) {
        let now_minute = now.timestamp_millis().div_euclid(60_000) * 60_000;
        let last = self.last_ms.min(now_minute).div_euclid(60_000) * 60_000;
        let first = self.first_ms.max(last - (self.limit as i64 - 1) * 60_000);
        ((first + 59_999).div_euclid(60_000) * 60_000, last)
    }
}

impl SimMarket {
    /// The candles a newest-first page holds, newest first: the latest `limit` of the range.
    fn newest(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> Vec<Served> {
        let (first, last) = range.minutes(now);
        let mut rows = self.served(exchange, symbol, first, last, usize::MAX, now);
        rows.reverse();
        rows.truncate(range.limit);
        rows
    }

    /// An OKX candles body (`okx` or `okx-swap`), newest first, as served at `now`: the
    /// candle containing `now` and one that closed less than [`OKX_CONFIRM_DELAY_MS`] ago have
    /// `confirm = "0"` (the latter still without its last trades).
    pub fn okx_candles(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> String {
        let now_ms = now.timestamp_millis();
        let rows: Vec<serde_json::Value> = self
            .newest(exchange, symbol, range, now)
            .into_iter()
            .map(|s| {
                let mut c = s.candle;
                let confirmed = !s.open && s.open_ms + 60_000 + OKX_CONFIRM_DELAY_MS <= now_ms;
                if !s.open && !confirmed {
                    c.volume = round8(c.volume * UNCONFIRMED_SHARE);
                    c.quote_volume = round8(c.quote_volume * UNCONFIRMED_SHARE);
                }
                // A swap counts `vol` in contracts of 0.01 of the base currency.
                let vol = if exchange == Exchange::OkxSwap {
                    c.volume * 100.0
                } else {
                    c.volume
                };
                serde_json::json!([
                    s.open_ms.to_string(),
                    format!("{:.8}", c.open),
                    format!("{:.8}", c.high),
                    format!("{:.8}", c.low),
                    format!("{:.8}", c.close),
                    format!("{vol:.8}"),
                    format!("{:.8}", c.volume),
                    format!("{:.8}", c.quote_volume),
                    if confirmed { "1" } else { "0" }
                ])
            })
            .collect();
        serde_json::json!({ "code": "0", "msg": "", "data": rows }).to_string()
    }

    /// A Bybit kline body (`bybit` or `bybit-linear`), newest first, as served at `now`: the
    /// candle containing `now` is there, partial, with nothing to say it is still open.
    pub fn bybit_kline(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> String {
        let list: Vec<serde_json::Value> = self
            .newest(exchange, symbol, range, now)
            .into_iter()
            .map(|s| {
                let c = s.candle;
                serde_json::json!([
                    s.open_ms.to_string(),
                    format!("{:.8}", c.open),
                    format!("{:.8}", c.high),
                    format!("{:.8}", c.low),
                    format!("{:.8}", c.close),
                    format!("{:.8}", c.volume),
                    format!("{:.8}", c.quote_volume)
                ])
            })
            .collect();
        let category = if exchange == Exchange::BybitLinear {
            "linear"
        } else {
            "spot"
        };
        serde_json::json!({
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": category,
                "symbol": format!("{}{}", symbol.base(), symbol.quote()),
                "list": list
            },
            "retExtInfo": {},
            "time": now.timestamp_millis()
        })
        .to_string()
    }

    /// The listing time the simulated instruments endpoints report for `symbol`.
    pub fn listing_ms(&self, exchange: Exchange, symbol: &Symbol) -> i64 {
        self.listed_from(exchange, symbol)
            .map_or(DEFAULT_LISTING_MS, |t| t.timestamp_millis())
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

/// A mark price candle: what a perpetual market marks positions at, minute by minute. It has
/// no volume: it is an index, not trades.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimMark {
    pub open_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Still open at the time it was served.
    pub partial: bool,
}

impl SimMark {
    /// Open, high, low and close as the venues write them: decimal strings.
    fn prices(&self) -> [serde_json::Value; 4] {
        [self.open, self.high, self.low, self.close].map(|p| format!("{p:.8}").into())
    }
}

impl SimMarket {
    /// The mark price candle of `symbol` on the perpetual `exchange` opening at `open_time`:
    /// its trade candle's prices moved by a small basis of the minute (every price by the same
    /// factor, so high stays the highest). `None` off perpetual markets and where no candle is.
    pub fn mark_candle(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        open_time: DateTime<Utc>,
    ) -> Option<SimMark> {
        if !exchange.is_perpetual() {
            return None;
        }
        let c = self.candle_on(exchange, symbol, open_time)?;
        let minute = open_time.timestamp().div_euclid(60);
        let basis = 1.0
            + (unit(splitmix(
                self.key(exchange, symbol) ^ 0x3A_4B ^ minute as u64,
            )) - 0.5)
                * 0.0004;
        Some(SimMark {
            open_ms: open_time.timestamp_millis(),
            open: round8(c.open * basis),
            high: round8(c.high * basis),
            low: round8(c.low * basis),
            close: round8(c.close * basis),
            partial: false,
        })
    }

    /// The mark candles opening in `[first_ms, last_ms]` as served at `now`, oldest first, at
    /// most `limit`: the minute containing `now` partial (its close the open so far).
    fn marks(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        first_ms: i64,
        last_ms: i64,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Vec<SimMark> {
        self.served(exchange, symbol, first_ms, last_ms, limit, now)
            .into_iter()
            .filter_map(|s| self.mark_of(exchange, symbol, &s))
            .collect()
    }

    /// The mark candle of a served minute: partial (its close the open so far) while open.
    fn mark_of(&self, exchange: Exchange, symbol: &Symbol, s: &Served) -> Option<SimMark> {
        let mut m = self.mark_candle(exchange, symbol, s.candle.open_time)?;
        if s.open {
            m.partial = true;
            (m.high, m.low, m.close) = (m.open, m.open, m.open);
        }
        Some(m)
    }

    /// A Binance `markPriceKlines` body, oldest first: volumes are zero, and the count field
    /// holds the minute's number of mark updates.
    pub fn binance_mark_klines(
        &self,
        symbol: &Symbol,
        first_open_ms: i64,
        last_open_ms: i64,
        limit: usize,
        now: DateTime<Utc>,
    ) -> String {
        let rows: Vec<serde_json::Value> = self
            .marks(
                Exchange::BinanceFutures,
                symbol,
                first_open_ms,
                last_open_ms,
                limit,
                now,
            )
            .into_iter()
            .map(|m| {
                let [o, h, l, c] = m.prices();
                serde_json::json!([
                    m.open_ms,
                    o,
                    h,
                    l,
                    c,
                    "0",
                    m.open_ms + 59_999,
                    "0",
                    60,
                    "0",
                    "0",
                    "0"
                ])
            })
            .collect();
        serde_json::Value::Array(rows).to_string()
    }

    /// The newest `range.limit` mark candles of the range, newest first.
    fn newest_marks(
        &self,
        exchange: Exchange,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> Vec<SimMark> {
        self.newest(exchange, symbol, range, now)
            .iter()
            .filter_map(|s| self.mark_of(exchange, symbol, s))
            .collect()
    }

    /// An OKX `mark-price-candles` body, newest first: `[ts, o, h, l, c, confirm]`.
    pub fn okx_mark_candles(
        &self,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> String {
        let rows: Vec<serde_json::Value> = self
            .newest_marks(Exchange::OkxSwap, symbol, range, now)
            .into_iter()
            .map(|m| {
                let [o, h, l, c] = m.prices();
                let confirm = if m.partial { "0" } else { "1" };
                serde_json::json!([m.open_ms.to_string(), o, h, l, c, confirm])
            })
            .collect();
        serde_json::json!({ "code": "0", "msg": "", "data": rows }).to_string()
    }

    /// A Bybit `mark-price-kline` body (linear), newest first: `[start, o, h, l, c]`.
    pub fn bybit_mark_kline(
        &self,
        symbol: &Symbol,
        range: NewestFirst,
        now: DateTime<Utc>,
    ) -> String {
        let list: Vec<serde_json::Value> = self
            .newest_marks(Exchange::BybitLinear, symbol, range, now)
            .into_iter()
            .map(|m| {
                let [o, h, l, c] = m.prices();
                serde_json::json!([m.open_ms.to_string(), o, h, l, c])
            })
            .collect();
        serde_json::json!({
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "linear",
                "symbol": format!("{}{}", symbol.base(), symbol.quote()),
                "list": list
            },
            "retExtInfo": {},
            "time": now.timestamp_millis()
        })
        .to_string()
    }
}
