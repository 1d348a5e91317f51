//! data.binance.vision kline files: CSV, one kline per line, the same twelve fields as the REST
//! API (`open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,
//! taker_buy_quote_volume,ignore`). Spot files have no header; futures files start with one.
//! Timestamps are milliseconds, except spot files from 2025-01-01 on, which use microseconds:
//! the unit is detected per file from its first kline.

use chrono::{DateTime, Utc};
use cryptolake_model::{CandleRule, Exchange, Symbol};

use super::parse::millis;
use crate::{Record, checked_candle, decimal};

/// The unit of a file's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
}

/// Microsecond timestamps of our era are above this; millisecond ones are far below.
const MICROS_THRESHOLD: i64 = 100_000_000_000_000;

impl TimeUnit {
    pub fn detect(open_time: i64) -> TimeUnit {
        if open_time.abs() >= MICROS_THRESHOLD {
            TimeUnit::Micros
        } else {
            TimeUnit::Millis
        }
    }

    fn to_time(self, v: i64, name: &str) -> Result<DateTime<Utc>, String> {
        match self {
            TimeUnit::Millis => millis(v, name),
            TimeUnit::Micros => DateTime::from_timestamp_micros(v)
                .ok_or_else(|| format!("{name} {v} is out of range")),
        }
    }
}

/// Whether a line is a header (its first field is not a number).
pub fn is_header(line: &str) -> bool {
    line.split(',')
        .next()
        .is_some_and(|f| f.trim().parse::<i64>().is_err())
}

/// The first field of a data line, as a number.
pub fn open_time_field(line: &str) -> Option<i64> {
    line.split(',').next()?.trim().parse().ok()
}

/// Parses a kline CSV body. A header line is skipped; blank lines are ignored; a line that is
/// not a kline, or whose timestamps are in another unit than the file's, becomes a
/// [`Record::Rejected`] naming its line number.
pub fn parse_csv(exchange: Exchange, body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("kline CSV is not UTF-8: {e}"))?;
    let mut unit = None;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (n == 0 && is_header(line)) {
            continue;
        }
        let reject = |rule: Option<CandleRule>, reason: String| Record::Rejected {
            index: n,
            raw: line.to_string(),
            rule,
            reason: format!("line {}: {reason}", n + 1),
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 12 {
            out.push(reject(
                None,
                format!("expected 12 comma-separated fields, found {}", fields.len()),
            ));
            continue;
        }
        let int = |i: usize, name: &str| {
            fields[i]
                .parse::<i64>()
                .map_err(|_| format!("{name} {:?} is not an integer", fields[i]))
        };
        let (open_ms, close_ms, count) =
            match (int(0, "open_time"), int(6, "close_time"), int(8, "count")) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    out.push(reject(None, e));
                    continue;
                }
            };
        let file_unit = *unit.get_or_insert(TimeUnit::detect(open_ms));
        if TimeUnit::detect(open_ms) != file_unit || TimeUnit::detect(close_ms) != file_unit {
            out.push(reject(
                None,
                format!(
                    "timestamps {open_ms}/{close_ms} are not in the file's unit ({file_unit:?})"
                ),
            ));
            continue;
        }
        let times = (
            file_unit.to_time(open_ms, "open_time"),
            file_unit.to_time(close_ms, "close_time"),
        );
        let (open_time, close_time) = match times {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                out.push(reject(None, e));
                continue;
            }
        };
        let values = (|| {
            Ok::<_, (Option<CandleRule>, String)>((
                [
                    decimal("open", fields[1])?,
                    decimal("high", fields[2])?,
                    decimal("low", fields[3])?,
                    decimal("close", fields[4])?,
                    decimal("volume", fields[5])?,
                ],
                decimal("quote_volume", fields[7])?,
                [
                    decimal("taker_buy_volume", fields[9])?,
                    decimal("taker_buy_quote_volume", fields[10])?,
                ],
            ))
        })();
        let candle = values.and_then(|(ohlcv, qv, [tb, tq])| {
            checked_candle(exchange, symbol, open_time, ohlcv, Some(qv), Some(count))
                .and_then(|mut c| crate::set_taker_buy(&mut c, tb, tq).map(|()| c))
        });
        match candle {
            Ok(_) if close_time <= open_time => out.push(reject(
                Some(CandleRule::Alignment),
                format!("close_time {close_time} is not after open_time {open_time}"),
            )),
            Ok(candle) => out.push(Record::Candle { candle, close_time }),
            Err((rule, reason)) => out.push(reject(rule, reason)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPOT_MS: &str = "1709251200000,61130.98000000,61200.00000000,61100.50000000,61150.01000000,12.50000000,1709251259999,764000.25000000,812,6.20000000,379000.10000000,0\n\
1709251260000,61150.01000000,61150.01000000,61150.01000000,61150.01000000,0.00000000,1709251319999,0.00000000,0,0.00000000,0.00000000,0\n";
    const SPOT_US: &str = "1735689600000000,93576.00000000,93610.93000000,93537.50000000,93610.93000000,8.21827000,1735689659999999,768978.70470550,1753,4.94101000,462328.15290000,0\n";
    const FUTURES: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\r\n\
1709251200000,61120.1,61190.0,61090.0,61140.0,120.554,1709251259999,7369780.12,2310,60.1,3674000.5,0\r\n";

    fn btc() -> Symbol {
        Symbol::parse("BTC-USDT").unwrap()
    }

    fn candles(r: &[Record]) -> Vec<(DateTime<Utc>, f64, DateTime<Utc>)> {
        r.iter()
            .filter_map(|r| match r {
                Record::Candle { candle, close_time } => {
                    Some((candle.open_time, candle.close, *close_time))
                }
                Record::Rejected { .. } => None,
            })
            .collect()
    }

    #[test]
    fn spot_milliseconds_without_header() {
        let r = parse_csv(Exchange::Binance, SPOT_MS.as_bytes(), &btc()).unwrap();
        let c = candles(&r);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert_eq!(c[0].1, 61150.01);
        assert_eq!(c[1].2.timestamp_millis(), 1709251319999);
    }

    #[test]
    fn spot_microseconds_from_2025() {
        let r = parse_csv(Exchange::Binance, SPOT_US.as_bytes(), &btc()).unwrap();
        let c = candles(&r);
        assert_eq!(c[0].0.to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert_eq!(c[0].2.timestamp_micros(), 1735689659999999);
    }

    #[test]
    fn futures_header_and_crlf() {
        let r = parse_csv(Exchange::BinanceFutures, FUTURES.as_bytes(), &btc()).unwrap();
        let Record::Candle { candle, .. } = &r[0] else {
            panic!("{r:?}");
        };
        assert_eq!(r.len(), 1);
        assert_eq!(candle.exchange, Exchange::BinanceFutures);
        assert_eq!((candle.volume, candle.trade_count), (120.554, Some(2310)));
    }

    #[test]
    fn bad_lines_name_their_line_and_mixed_units_are_caught() {
        let body = format!("{SPOT_MS}1709251320000,1,1\n{SPOT_US}");
        let r = parse_csv(Exchange::Binance, body.as_bytes(), &btc()).unwrap();
        let reasons: Vec<&str> = r
            .iter()
            .filter_map(|r| match r {
                Record::Rejected { reason, .. } => Some(reason.as_str()),
                Record::Candle { .. } => None,
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with("line 3: expected 12"), "{reasons:?}");
        assert!(reasons[1].starts_with("line 4: timestamps"), "{reasons:?}");
        assert!(parse_csv(Exchange::Binance, b"\xff\xfe", &btc()).is_err());
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_lines(lines in proptest::collection::vec(
            proptest::collection::vec("[0-9.a-z\\-]{0,18}", 0..14), 0..8)) {
            let body = lines.iter().map(|l| l.join(",")).collect::<Vec<_>>().join("\n");
            let r = parse_csv(Exchange::Binance, body.as_bytes(), &Symbol::parse("BTC-USDT").unwrap());
            prop_assert!(r.is_ok());
        }

        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_csv(Exchange::Binance, &body, &Symbol::parse("BTC-USDT").unwrap());
        }
    }
}
