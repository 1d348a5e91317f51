//! Bybit wire rows to domain candles, and Bybit's instrument names.

use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, Exchange, Symbol};
use serde::Deserialize;

use super::models::{Envelope, InstrumentsResult, KlineResult, RawKline};
use crate::instruments::{InstrumentList, PageHeads};
use crate::{
    FundingRecord, Record, RowError, checked_candle, decimal, funding_records, minute_close,
    rows_to_records, text_field,
};

/// `BTC-USDT` is `BTCUSDT` on both Bybit markets.
pub fn instrument(symbol: &Symbol) -> String {
    format!("{}{}", symbol.base(), symbol.quote())
}

/// The `category` of a market: `spot` or `linear`.
pub fn category(exchange: Exchange) -> &'static str {
    match exchange {
        Exchange::BybitLinear => "linear",
        _ => "spot",
    }
}

type Split = Result<Result<KlineResult, (i64, String)>, String>;

fn split(body: &[u8]) -> Split {
    let env: Envelope<KlineResult> =
        serde_json::from_slice(body).map_err(|e| format!("not a Bybit kline response: {e}"))?;
    if env.ret_code != 0 {
        return Ok(Err((env.ret_code, env.ret_msg)));
    }
    env.result
        .map(Ok)
        .ok_or_else(|| "Bybit response has retCode 0 and no result".to_string())
}

/// Checks a body is a whole kline answer: `Ok(Ok(open times))` (each row's start in ms where
/// it is one), `Ok(Err((retCode, retMsg)))` Bybit's own error, `Err` not a Bybit response.
pub fn check_body(body: &[u8]) -> PageHeads<(i64, String)> {
    Ok(split(body)?.map(|r| {
        r.list
            .iter()
            .map(|row| {
                row.get(0)
                    .and_then(|t| t.as_str())
                    .and_then(|t| t.parse().ok())
            })
            .collect()
    }))
}

/// Parses a kline body of `exchange` (`bybit` or `bybit-linear`), in any row order. An error
/// code, another symbol or category than asked, or a body that is not a Bybit response fails
/// the page; a bad row becomes a [`Record::Rejected`]. With no confirm flag, a candle's close
/// time is its minute's end: it is final only if that is before the fetch.
pub fn parse_kline(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<Record>, String> {
    let list = checked_list(exchange, body, symbol)?;
    Ok(rows_to_records(list, |row| {
        parse_row(exchange, row, symbol)
    }))
}

/// Parses a `mark-price-kline` body of `bybit-linear`: rows `[start, open, high, low,
/// close]`, newest first, checked like a kline body.
pub fn parse_mark(body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    let list = checked_list(Exchange::BybitLinear, body, symbol)?;
    Ok(rows_to_records(list, |row| {
        crate::mark_row(Exchange::BybitLinear, symbol, row, None)
    }))
}

/// The rows of a kline-shaped body, once its code, symbol and category are the ones asked.
fn checked_list(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<serde_json::Value>, String> {
    let result = match split(body)? {
        Ok(r) => r,
        Err((code, msg)) => return Err(format!("Bybit error {code}: {msg}")),
    };
    let want = instrument(symbol);
    if result.symbol != want {
        return Err(format!(
            "Bybit answered for symbol {:?}, not {want}",
            result.symbol
        ));
    }
    if result.category != category(exchange) {
        return Err(format!(
            "Bybit answered for category {:?}, not {}",
            result.category,
            category(exchange)
        ));
    }
    Ok(result.list)
}

fn parse_row(
    exchange: Exchange,
    row: &serde_json::Value,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let k = RawKline::deserialize(row).map_err(|e| {
        (
            None,
            format!("not a [start, open, high, low, close, volume, turnover] row of strings: {e}"),
        )
    })?;
    let ms: i64 =
        k.0.parse()
            .map_err(|_| (None, format!("start {:?} is not a whole number", k.0)))?;
    let open_time = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| (None, format!("start {ms} is out of range")))?;
    let candle = checked_candle(
        exchange,
        symbol,
        open_time,
        [
            decimal("open", &k.1)?,
            decimal("high", &k.2)?,
            decimal("low", &k.3)?,
            decimal("close", &k.4)?,
            decimal("volume", &k.5)?,
        ],
        Some(decimal("turnover", &k.6)?),
        None,
    )?;
    Ok((candle, minute_close(open_time)))
}

/// One page of instruments and the cursor of the next (empty at the end).
pub type InstrumentPage = (InstrumentList, String);

/// The trading instruments of an instruments body with their launch times where given, and
/// the cursor of the next page (empty at the end).
pub fn parse_instruments(body: &[u8]) -> Result<Result<InstrumentPage, (i64, String)>, String> {
    let env: Envelope<InstrumentsResult> = serde_json::from_slice(body)
        .map_err(|e| format!("not a Bybit instruments response: {e}"))?;
    if env.ret_code != 0 {
        return Ok(Err((env.ret_code, env.ret_msg)));
    }
    let result = env
        .result
        .ok_or_else(|| "Bybit instruments response has no result".to_string())?;
    let list = result
        .list
        .into_iter()
        .filter(|i| i.status.is_empty() || i.status == "Trading")
        .map(|i| {
            let launched = i
                .launch_time
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis);
            (i.symbol, launched)
        })
        .collect();
    Ok(Ok((list, result.next_page_cursor)))
}

/// Checks a body is a whole funding answer: the funding time of each record, as
/// [`check_body`] gives open times.
pub fn check_funding_body(body: &[u8]) -> PageHeads<(i64, String)> {
    Ok(split(body)?.map(|r| crate::funding_times(&r.list, "fundingRateTimestamp")))
}

/// Parses a `GET /v5/market/funding/history` body of `bybit-linear`: `result.list` of
/// `{"symbol", "fundingRate", "fundingRateTimestamp"}`, newest first, no mark price. An error
/// code or a body that is not a Bybit response fails the page.
pub fn parse_funding(body: &[u8], symbol: &Symbol) -> Result<Vec<FundingRecord>, String> {
    let result = match split(body)? {
        Ok(r) => r,
        Err((code, msg)) => return Err(format!("Bybit error {code}: {msg}")),
    };
    if result.category != "linear" {
        return Err(format!(
            "Bybit answered for category {:?}, not linear",
            result.category
        ));
    }
    Ok(funding_records(
        Exchange::BybitLinear,
        symbol,
        &instrument(symbol),
        result.list,
        |row| {
            Some((
                text_field(row, "symbol")?,
                text_field(row, "fundingRateTimestamp")?.parse().ok()?,
                text_field(row, "fundingRate")?,
                None,
            ))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym() -> Symbol {
        Symbol::parse("BTC-USDT").unwrap()
    }

    #[test]
    fn rows_newest_first_with_turnover() {
        let body = br#"{"retCode":0,"retMsg":"OK","result":{"category":"linear","symbol":"BTCUSDT","list":[
            ["1709251260000","101","102","100","101.5","7","710"],
            ["1709251200000","100","101","99","100.5","5","500"]]},"retExtInfo":{},"time":1709251300000}"#;
        let recs = parse_kline(Exchange::BybitLinear, body, &sym()).unwrap();
        let Record::Candle { candle, close_time } = &recs[1] else {
            panic!("{recs:?}")
        };
        assert_eq!(candle.open_time.timestamp_millis(), 1_709_251_200_000);
        assert_eq!((candle.volume, candle.quote_volume), (5.0, Some(500.0)));
        assert_eq!(*close_time, minute_close(candle.open_time));
        assert_eq!(candle.exchange, Exchange::BybitLinear);
        let err = parse_kline(Exchange::Bybit, body, &sym()).unwrap_err();
        assert!(err.contains("category \"linear\""), "{err}");
        let err = parse_kline(
            Exchange::BybitLinear,
            body,
            &Symbol::parse("ETH-USDT").unwrap(),
        )
        .unwrap_err();
        assert!(err.contains("BTCUSDT"), "{err}");
    }

    #[test]
    fn errors_on_http_200_are_named() {
        let err = parse_kline(
            Exchange::Bybit,
            br#"{"retCode":10001,"retMsg":"params error: symbol invalid","result":{},"retExtInfo":{},"time":1}"#,
            &sym(),
        )
        .unwrap_err();
        assert!(
            err.contains("10001") && err.contains("symbol invalid"),
            "{err}"
        );
        assert!(parse_kline(Exchange::Bybit, b"{\"retCode\":0", &sym()).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_kline(Exchange::Bybit, &body, &sym());
            let _ = check_body(&body);
            let _ = parse_instruments(&body);
            let _ = parse_funding(&body, &sym());
        }

        /// Rows of any strings, numbers and nulls: one record per row, whatever they hold.
        #[test]
        fn arbitrary_rows(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|n| format!("\"{n}\"")),
                any::<f64>().prop_map(|f| format!("\"{f}\"")),
                "[0-9a-z.-]{0,6}".prop_map(|s| format!("\"{s}\"")),
                Just("null".to_string()),
            ], 0..11),
            0..8,
        )) {
            let body = format!(
                "{{\"retCode\":0,\"retMsg\":\"OK\",\"result\":{{\"category\":\"spot\",\"symbol\":\"BTCUSDT\",\"list\":[{}]}}}}",
                rows.iter().map(|r| format!("[{}]", r.join(","))).collect::<Vec<_>>().join(",")
            );
            let records = parse_kline(Exchange::Bybit, body.as_bytes(), &sym()).unwrap();
            prop_assert_eq!(records.len(), rows.len());
        }
    }
}
