//! Kraken wire types to domain candles, and Kraken's pair names.

use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, Exchange, Symbol};
use serde::Deserialize;

use super::models::{Envelope, RawOhlc};
use crate::{
    Record, RowError, checked_candle, decimal, minute_close, rows_to_records, unix_seconds,
};

/// Kraken's names for assets that differ from the usual tickers.
const ASSET_ALIASES: [(&str, &str); 2] = [("BTC", "XBT"), ("DOGE", "XDG")];
/// Quote currencies, longest first, for splitting names like `SOLUSDT`.
const QUOTES: [&str; 13] = [
    "USDT", "USDC", "DAI", "PYUSD", "USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD", "XBT", "ETH",
];

fn to_kraken(asset: &str) -> &str {
    ASSET_ALIASES
        .iter()
        .find(|(ours, _)| *ours == asset)
        .map_or(asset, |(_, theirs)| theirs)
}

fn from_kraken(asset: &str) -> &str {
    ASSET_ALIASES
        .iter()
        .find(|(_, theirs)| *theirs == asset)
        .map_or(asset, |(ours, _)| ours)
}

/// `BTC-USD` -> `XBTUSD`, the name Kraken accepts in requests.
pub fn pair_name(symbol: &Symbol) -> String {
    format!("{}{}", to_kraken(symbol.base()), to_kraken(symbol.quote()))
}

/// The symbol a Kraken pair name stands for: `XBTUSD`, `XXBTZUSD` and `XBT/USD` all give
/// `BTC-USD`. `None` when the name cannot be split into base and quote.
pub fn symbol_for_pair(name: &str) -> Option<Symbol> {
    let (base, quote) = if let Some((b, q)) = name.split_once('/') {
        (b.to_string(), q.to_string())
    } else if name.len() == 8
        && name.starts_with(['X', 'Z'])
        && matches!(name.as_bytes()[4], b'X' | b'Z')
    {
        // The legacy eight-letter form: X + base + Z/X + quote (XXBTZUSD, XETHZEUR).
        (name[1..4].to_string(), name[5..8].to_string())
    } else {
        let quote = QUOTES
            .iter()
            .find(|q| name.len() > q.len() && name.ends_with(*q))?;
        (
            name[..name.len() - quote.len()].to_string(),
            quote.to_string(),
        )
    };
    Symbol::parse(&format!("{}-{}", from_kraken(&base), from_kraken(&quote))).ok()
}

/// The close time given to the last row, which Kraken says is still open whatever the clock
/// says: it is never final.
pub const STILL_OPEN: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

/// A well-formed answer: the pair's name, its rows and `last`.
type PairRows = (String, Vec<serde_json::Value>, i64);

/// `Ok(Ok(..))` an answer, `Ok(Err(errors))` Kraken's errors, `Err` not a Kraken response.
fn split(body: &[u8]) -> Result<Result<PairRows, Vec<String>>, String> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a Kraken response: {e}"))?;
    if !env.error.is_empty() {
        return Ok(Err(env.error));
    }
    let result = env
        .result
        .ok_or_else(|| "Kraken response has neither errors nor a result".to_string())?;
    let last = result
        .get("last")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| "Kraken result has no numeric \"last\"".to_string())?;
    let mut pairs = result.into_iter().filter(|(k, _)| k != "last");
    let (pair, rows) = pairs
        .next()
        .ok_or_else(|| "Kraken result holds no pair".to_string())?;
    if pairs.next().is_some() {
        return Err("Kraken result holds more than one pair".into());
    }
    let serde_json::Value::Array(rows) = rows else {
        return Err(format!("Kraken result for {pair} is not an array"));
    };
    Ok(Ok((pair, rows, last)))
}

/// Checks a body is a whole OHLC response: `Ok(Ok(rows))`, `Ok(Err(kraken_errors))`, or `Err`
/// when it is not a Kraken response at all (truncated, malformed).
pub fn check_body(body: &[u8]) -> Result<Result<usize, Vec<String>>, String> {
    Ok(split(body)?.map(|(_, rows, _)| rows.len()))
}

/// Parses an OHLC body. Errors in `error`, another pair than asked, or a body that is not a
/// Kraken response fail the page; a bad row becomes a [`Record::Rejected`]. The last row is
/// the still-open candle: its close time is [`STILL_OPEN`].
pub fn parse_ohlc(body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    let (pair, rows, _last) = match split(body)? {
        Ok(v) => v,
        Err(errors) => return Err(format!("Kraken error: {}", errors.join(", "))),
    };
    match symbol_for_pair(&pair) {
        Some(s) if &s == symbol => {}
        _ => return Err(format!("Kraken answered for pair {pair}, not {symbol}")),
    }
    let n = rows.len();
    let mut records = rows_to_records(rows, |row| parse_row(row, symbol));
    if let Some(Record::Candle { close_time, .. }) = records.last_mut()
        && n > 0
    {
        *close_time = STILL_OPEN;
    }
    Ok(records)
}

fn parse_row(
    row: &serde_json::Value,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let k = RawOhlc::deserialize(row).map_err(|e| {
        (
            None,
            format!("not a [time, open, high, low, close, vwap, volume, count] row: {e}"),
        )
    })?;
    let open_time = unix_seconds(k.0, "time")?;
    let volume = decimal("volume", &k.6)?;
    let vwap = decimal("vwap", &k.5)?;
    let candle = checked_candle(
        Exchange::Kraken,
        symbol,
        open_time,
        [
            decimal("open", &k.1)?,
            decimal("high", &k.2)?,
            decimal("low", &k.3)?,
            decimal("close", &k.4)?,
            volume,
        ],
        // The volume-weighted average price times the volume is the quote volume.
        Some(vwap * volume),
        Some(k.7),
    )?;
    Ok((candle, minute_close(open_time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/kraken_ohlc_xbtusd.json");

    fn btc() -> Symbol {
        Symbol::parse("BTC-USD").unwrap()
    }

    #[test]
    fn pair_names_both_ways() {
        assert_eq!(pair_name(&btc()), "XBTUSD");
        assert_eq!(pair_name(&Symbol::parse("DOGE-USD").unwrap()), "XDGUSD");
        assert_eq!(pair_name(&Symbol::parse("SOL-EUR").unwrap()), "SOLEUR");
        for name in ["XBTUSD", "XXBTZUSD", "XBT/USD"] {
            assert_eq!(symbol_for_pair(name), Some(btc()), "{name}");
        }
        assert_eq!(symbol_for_pair("XETHZEUR").unwrap().as_str(), "ETH-EUR");
        assert_eq!(symbol_for_pair("SOLUSDT").unwrap().as_str(), "SOL-USDT");
        assert_eq!(symbol_for_pair("XDGUSD").unwrap().as_str(), "DOGE-USD");
        assert_eq!(symbol_for_pair("../x"), None);
    }

    #[test]
    fn parses_documented_format_and_marks_the_last_row_open() {
        let records = parse_ohlc(FIXTURE, &btc()).unwrap();
        assert_eq!(records.len(), 3);
        let Record::Candle { candle, close_time } = &records[0] else {
            panic!("{:?}", records[0]);
        };
        assert_eq!(candle.open_time.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert_eq!(
            (
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.volume
            ),
            (61130.9, 61200.0, 61100.5, 61150.0, 12.5)
        );
        assert_eq!(candle.trade_count, Some(812));
        assert!((candle.quote_volume.unwrap() - 61160.1 * 12.5).abs() < 1e-6);
        assert_eq!(close_time.timestamp(), 1709251259);
        let Record::Candle { close_time, .. } = &records[2] else {
            panic!("{:?}", records[2]);
        };
        assert_eq!(*close_time, STILL_OPEN);
    }

    #[test]
    fn errors_in_the_body_fail_the_page() {
        let body = br#"{"error":["EQuery:Unknown asset pair"]}"#;
        let err = parse_ohlc(body, &btc()).unwrap_err();
        assert!(err.contains("EQuery:Unknown asset pair"), "{err}");
        assert_eq!(
            check_body(body).unwrap(),
            Err(vec!["EQuery:Unknown asset pair".to_string()])
        );
        let other = br#"{"error":[],"result":{"XETHZUSD":[],"last":1}}"#;
        assert!(parse_ohlc(other, &btc()).unwrap_err().contains("XETHZUSD"));
        assert!(check_body(br#"{"error":[],"result":{"XXBTZUSD":[[1,"#).is_err());
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_ohlc(&body, &Symbol::parse("BTC-USD").unwrap());
            let _ = check_body(&body);
        }

        #[test]
        fn arbitrary_rows(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| format!("\"{f}\"")),
                Just("null".to_string()),
            ], 0..10),
            0..8,
        ), name in "[A-Z/]{0,9}") {
            let body = format!(
                "{{\"error\":[],\"result\":{{\"{name}\":[{}],\"last\":1}}}}",
                rows.iter().map(|r| format!("[{}]", r.join(","))).collect::<Vec<_>>().join(",")
            );
            let _ = symbol_for_pair(&name);
            if let Ok(records) = parse_ohlc(body.as_bytes(), &Symbol::parse("BTC-USD").unwrap()) {
                prop_assert_eq!(records.len(), rows.len());
            }
        }
    }
}
