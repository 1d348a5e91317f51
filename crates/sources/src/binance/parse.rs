//! Binance wire types to domain candles.

use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, CandleRule, Exchange, Symbol};

use serde::Deserialize;

use super::models::RawKline;
use super::scan::ScannedKline;
use crate::{
    FundingRecord, Record, RowError, decimal, funding_records, rows_to_records, text_field,
};

/// `BTC-USDT` -> `BTCUSDT`.
pub fn exchange_symbol(symbol: &Symbol) -> String {
    format!("{}{}", symbol.base(), symbol.quote())
}

/// Parses a klines body. A body that is not a JSON array is an error for the whole page; a row
/// that is malformed or breaks a candle invariant becomes a [`Record::Rejected`] with its reason.
pub fn parse_klines(body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    parse_klines_of(Exchange::Binance, body, symbol)
}

/// [`parse_klines`] for spot or USDⓈ-M futures, whose klines share one layout.
pub fn parse_klines_of(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<Record>, String> {
    // Fastest path: the plain form Binance sends, scanned byte by byte. Anything the scanner
    // does not take, and any row that breaks an invariant, goes down the paths below.
    if let Some(rows) = super::scan::scan_klines(body) {
        // Every row is checked before any candle is built; each is then built once, in its
        // place in the vector (sized once: growing it would copy every record again).
        let times: Result<Vec<_>, RowError> = rows.iter().map(|k| kline_times(symbol, k)).collect();
        let Ok(times) = times else {
            return parse_slow(exchange, body, symbol);
        };
        let mut records = Vec::with_capacity(rows.len());
        records.extend(
            rows.iter()
                .zip(&times)
                .map(|(k, &(open_time, close_time))| Record::Candle {
                    candle: kline_candle_of(exchange, symbol, open_time, k),
                    close_time,
                }),
        );
        return Ok(records);
    }
    // Fast path: the whole page as borrowed rows, no intermediate JSON tree. Any row that is
    // malformed or invalid sends the page down the slow path, which names each bad row.
    if let Ok(rows) = serde_json::from_slice::<Vec<RawKline<&str>>>(body) {
        let fast: Result<Vec<Record>, RowError> = rows
            .iter()
            .map(|k| {
                kline_candle(exchange, k, symbol)
                    .map(|(candle, close_time)| Record::Candle { candle, close_time })
            })
            .collect();
        if let Ok(records) = fast {
            return Ok(records);
        }
    }
    parse_slow(exchange, body, symbol)
}

/// Row by row through a JSON tree, so that each bad row is rejected with its own reason.
fn parse_slow(exchange: Exchange, body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON array of klines: {e}"))?;
    Ok(rows_to_records(rows, |row| {
        parse_row(exchange, row, symbol)
    }))
}

fn parse_row(
    exchange: Exchange,
    row: &serde_json::Value,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let k = RawKline::<String>::deserialize(row)
        .map_err(|e| (None, format!("not a 12-field kline array: {e}")))?;
    kline_candle(exchange, &k, symbol)
}

/// One well-formed kline to a validated candle and its close time.
fn kline_candle<S: AsRef<str>>(
    exchange: Exchange,
    k: &RawKline<S>,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    millis(k.0, "open_time").map_err(|e| (None, e))?;
    millis(k.6, "close_time").map_err(|e| (None, e))?;
    let prices = [
        decimal("open", k.1.as_ref())?,
        decimal("high", k.2.as_ref())?,
        decimal("low", k.3.as_ref())?,
        decimal("close", k.4.as_ref())?,
        decimal("volume", k.5.as_ref())?,
    ];
    let quote_volume = decimal("quote_volume", k.7.as_ref())?;
    let taker_buy = [
        decimal("taker_buy_volume", k.9.as_ref())?,
        decimal("taker_buy_quote_volume", k.10.as_ref())?,
    ];
    let k = ScannedKline {
        open_ms: k.0,
        prices,
        close_ms: k.6,
        quote_volume,
        trades: k.8,
        taker_buy,
    };
    let (open_time, close_time) = kline_times(symbol, &k)?;
    Ok((kline_candle_of(exchange, symbol, open_time, &k), close_time))
}

/// The checks a kline's values must pass (those of [`Candle::new`] and
/// [`Candle::set_taker_buy`], and a close after the open), without building the candle: its
/// open and close times when it passes.
#[inline]
fn kline_times(
    symbol: &Symbol,
    k: &ScannedKline,
) -> Result<(DateTime<Utc>, DateTime<Utc>), RowError> {
    let open_time = millis(k.open_ms, "open_time").map_err(|e| (None, e))?;
    let close_time = millis(k.close_ms, "close_time").map_err(|e| (None, e))?;
    let [taker_base, taker_quote] = k.taker_buy;
    Candle::check(
        symbol,
        open_time,
        k.prices,
        Some(k.quote_volume),
        Some(k.trades),
    )
    .map_err(crate::row_error)?;
    Candle::check_taker_buy(symbol, open_time, k.prices[4], taker_base, taker_quote)
        .map_err(crate::row_error)?;
    if close_time <= open_time {
        return Err((
            Some(CandleRule::Alignment),
            format!("close_time {close_time} is not after open_time {open_time}"),
        ));
    }
    Ok((open_time, close_time))
}

/// The candle of a kline that [`kline_times`] passed.
#[inline]
fn kline_candle_of(
    exchange: Exchange,
    symbol: &Symbol,
    open_time: DateTime<Utc>,
    k: &ScannedKline,
) -> Candle {
    let [open, high, low, close, volume] = k.prices;
    let [taker_base, taker_quote] = k.taker_buy;
    Candle {
        exchange,
        symbol: symbol.clone(),
        open_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume: Some(k.quote_volume),
        trade_count: Some(k.trades),
        taker_buy_volume: Some(taker_base),
        taker_buy_quote_volume: Some(taker_quote),
    }
}

pub(crate) fn millis(ms: i64, name: &str) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("{name} {ms} is out of range"))
}

/// Parses a `GET /fapi/v1/fundingRate` body: `[{"symbol", "fundingRate", "fundingTime",
/// "markPrice"}]`, oldest first; an empty `markPrice` (old records) is no mark price. A body
/// that is not such an array fails the page; a bad record becomes a rejection.
pub fn parse_funding(body: &[u8], symbol: &Symbol) -> Result<Vec<FundingRecord>, String> {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| format!("not a Binance funding rate array: {e}"))?;
    Ok(funding_records(
        Exchange::BinanceFutures,
        symbol,
        &exchange_symbol(symbol),
        rows,
        |row| {
            Some((
                text_field(row, "symbol")?,
                row.get("fundingTime")?.as_i64()?,
                text_field(row, "fundingRate")?,
                text_field(row, "markPrice"),
            ))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/binance_klines_btcusdt.json");

    fn btc() -> Symbol {
        Symbol::parse("BTC-USDT").unwrap()
    }

    #[test]
    fn parses_documented_format() {
        let records = parse_klines(FIXTURE, &btc()).unwrap();
        assert_eq!(records.len(), 4);
        let Record::Candle { candle, close_time } = &records[0] else {
            panic!("first row should parse: {:?}", records[0]);
        };
        assert_eq!(candle.open_time.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert_eq!(close_time.timestamp_millis(), 1709251259999);
        assert_eq!(candle.open, 61130.98);
        assert_eq!(candle.high, 61200.0);
        assert_eq!(candle.low, 61100.5);
        assert_eq!(candle.close, 61150.01);
        assert_eq!(candle.volume, 12.5);
        assert_eq!(candle.quote_volume, Some(764_000.25));
        assert_eq!(candle.trade_count, Some(812));
    }

    #[test]
    fn zero_trade_candle_is_valid() {
        let records = parse_klines(FIXTURE, &btc()).unwrap();
        let Record::Candle { candle, .. } = &records[1] else {
            panic!("zero-trade row should parse");
        };
        assert_eq!(candle.volume, 0.0);
        assert_eq!(candle.trade_count, Some(0));
        assert_eq!(candle.open, candle.close);
    }

    #[test]
    fn open_last_candle_keeps_its_future_close_time() {
        let records = parse_klines(FIXTURE, &btc()).unwrap();
        let Record::Candle { close_time, .. } = &records[3] else {
            panic!("last row should parse");
        };
        // Fetched at 00:03:30, this last candle would still be open: its close_time says so.
        assert_eq!(close_time.to_rfc3339(), "2024-03-01T00:03:59.999+00:00");
    }

    #[test]
    fn bad_rows_are_rejected_with_reason_not_dropped() {
        let body =
            br#"[[1709251200000,"1.0","0.5","0.9","1.0","1",1709251259999,"1",1,"0","0","0"],
                        [1709251260000,"x","1","1","1","1",1709251319999,"1",1,"0","0","0"],
                        [1]]"#;
        let records = parse_klines(body, &btc()).unwrap();
        let reasons: Vec<_> = records
            .iter()
            .map(|r| match r {
                Record::Rejected { reason, .. } => reason.clone(),
                Record::Candle { .. } => "ok".into(),
            })
            .collect();
        assert!(reasons[0].contains("high"), "{reasons:?}");
        assert!(reasons[1].contains("open \"x\""), "{reasons:?}");
        assert!(reasons[2].contains("12-field"), "{reasons:?}");
    }

    /// Taker buys are checked against the candle's own volume, on the fast path (a page of
    /// good rows) as on the others: 2.5 of 2.0 is rejected, 2.0 of 2.0 is not.
    #[test]
    fn taker_buys_above_the_volume_are_rejected() {
        for (taker, ok) in [("2.0", true), ("2.5", false)] {
            let body = format!(
                r#"[[1709251200000,"1.0","1.2","0.9","1.1","2.0",1709251259999,"2.1",3,"{taker}","2.0","0"]]"#
            );
            let records = parse_klines(body.as_bytes(), &btc()).unwrap();
            match &records[0] {
                Record::Candle { candle, .. } => {
                    assert!(ok, "{taker} taken");
                    assert_eq!(candle.taker_buy_volume, Some(2.0));
                    assert_eq!(candle.volume, 2.0);
                }
                Record::Rejected { rule, reason, .. } => {
                    assert!(!ok, "{taker}: {reason}");
                    assert_eq!(*rule, Some(CandleRule::Amounts));
                    assert!(reason.contains("above the candle's volume 2"), "{reason}");
                }
            }
        }
    }

    #[test]
    fn whole_page_garbage_is_an_error() {
        assert!(parse_klines(b"{\"code\":-1121}", &btc()).is_err());
        assert!(parse_klines(b"[[1709251200000,\"1.0\"", &btc()).is_err());
        assert!(crate::http::row_heads(b"[[1],[2]").is_err());
        assert_eq!(
            crate::http::row_heads(b"[[1],[2],[\"x\"],{}]").unwrap(),
            vec![Some(1), Some(2), None, None]
        );
    }

    #[test]
    fn maps_symbols() {
        assert_eq!(exchange_symbol(&btc()), "BTCUSDT");
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    fn btc() -> Symbol {
        Symbol::parse("BTC-USDT").unwrap()
    }

    proptest! {
        /// Whatever arrives, parsing returns an error or records; it never panics.
        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_klines(&body, &btc());
            let _ = crate::http::row_heads(&body);
            let _ = parse_funding(&body, &btc());
        }

        /// The fast path gives exactly what the row-by-row path gives, for good and bad pages.
        #[test]
        fn fast_path_equals_slow_path(rows in proptest::collection::vec(
            (0i64..4_000_000, 1.0f64..100.0, 1.0f64..100.0, 0.0f64..5.0, 0.5f64..1.0, 0.0f64..10.0, 0i64..500, 0u8..20, 0.0f64..1.03),
            0..20,
        )) {
            // Valid rows by construction; one in twenty broken (high below the open), and now
            // and then a taker buy volume above the candle's volume.
            let body = format!("[{}]", rows.iter().map(|(m, o, c, up, down, v, n, broken, taker)| {
                let t = 1_709_251_200_000 + m * 60_000;
                let h = if *broken == 0 { o.min(*c) / 2.0 } else { o.max(*c) + up };
                let l = o.min(*c) * down;
                let (tb, tq) = (v * taker + if *taker > 1.0 { 1.0 } else { 0.0 }, v * taker * o);
                format!("[{t},\"{o}\",\"{h}\",\"{l}\",\"{c}\",\"{v}\",{},\"{}\",{n},\"{tb}\",\"{tq}\",\"0\"]", t + 59_999, v * o)
            }).collect::<Vec<_>>().join(","));
            let fast = parse_klines(body.as_bytes(), &btc()).unwrap();
            let slow = parse_slow(Exchange::Binance, body.as_bytes(), &btc()).unwrap();
            prop_assert_eq!(fast, slow);
        }

        /// Rows that look almost right: every field any JSON scalar.
        #[test]
        fn arbitrary_rows(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| format!("\"{f}\"")),
                "[a-z0-9.\\-]{0,8}".prop_map(|s| format!("\"{s}\"")),
                Just("null".to_string()),
            ], 0..14),
            0..8,
        )) {
            let body = format!(
                "[{}]",
                rows.iter().map(|r| format!("[{}]", r.join(","))).collect::<Vec<_>>().join(",")
            );
            if let Ok(records) = parse_klines(body.as_bytes(), &btc()) {
                prop_assert_eq!(records.len(), rows.len());
            }
        }
    }
}
