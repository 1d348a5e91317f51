//! OKX wire rows to domain candles, and OKX's instrument ids.

use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, Exchange, Symbol};
use serde::Deserialize;

use super::models::{Envelope, Instrument, RawCandle};
use crate::instruments::{InstrumentList, PageHeads};
use crate::{
    FundingRecord, Record, RowError, checked_candle, decimal, funding_records, minute_close,
    rows_to_records, text_field,
};

/// The close time given to a candle OKX has not confirmed (`confirm = "0"`): never final,
/// whatever the clock says.
pub const UNCONFIRMED: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

/// `BTC-USDT` on `okx` is `BTC-USDT`; on `okx-swap` it is `BTC-USDT-SWAP`.
pub fn inst_id(exchange: Exchange, symbol: &Symbol) -> String {
    match exchange {
        Exchange::OkxSwap => format!("{symbol}-SWAP"),
        _ => symbol.as_str().to_string(),
    }
}

/// The `instType` of a market: `SPOT` or `SWAP`.
pub fn inst_type(exchange: Exchange) -> &'static str {
    match exchange {
        Exchange::OkxSwap => "SWAP",
        _ => "SPOT",
    }
}

/// `Ok(Ok(rows))` an answer, `Ok(Err((code, msg)))` OKX's error, `Err` not an OKX response.
type Split = Result<Result<Vec<serde_json::Value>, (String, String)>, String>;

fn split(body: &[u8]) -> Split {
    let env: Envelope<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not an OKX response: {e}"))?;
    if env.code != "0" {
        return Ok(Err((env.code, env.msg)));
    }
    Ok(Ok(env.data))
}

/// Checks a body is a whole OKX answer: `Ok(Ok(open times))` (each row's `ts` in ms where it
/// is one), `Ok(Err((code, msg)))` OKX's own error, or `Err` when it is not an OKX response.
pub fn check_body(body: &[u8]) -> PageHeads<(String, String)> {
    Ok(split(body)?.map(|rows| {
        rows.iter()
            .map(|r| {
                r.get(0)
                    .and_then(|t| t.as_str())
                    .and_then(|t| t.parse().ok())
            })
            .collect()
    }))
}

/// Parses a candles body of `exchange` (`okx` or `okx-swap`), in any row order. An error
/// code or a body that is not an OKX response fails the page; a bad row becomes a
/// [`Record::Rejected`]; a candle with `confirm = "0"` gets the close time [`UNCONFIRMED`].
pub fn parse_candles(
    exchange: Exchange,
    body: &[u8],
    symbol: &Symbol,
) -> Result<Vec<Record>, String> {
    let rows = match split(body)? {
        Ok(rows) => rows,
        Err((code, msg)) => return Err(format!("OKX error {code}: {msg}")),
    };
    Ok(rows_to_records(rows, |row| {
        parse_row(exchange, row, symbol)
    }))
}

fn parse_row(
    exchange: Exchange,
    row: &serde_json::Value,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let c = RawCandle::deserialize(row).map_err(|e| {
        (
            None,
            format!(
                "not a [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm] row of strings: {e}"
            ),
        )
    })?;
    let ms: i64 =
        c.0.parse()
            .map_err(|_| (None, format!("ts {:?} is not a whole number", c.0)))?;
    let open_time = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| (None, format!("ts {ms} is out of range")))?;
    // Spot counts `vol` in the base currency; a swap counts it in contracts and gives the
    // base amount in `volCcy`.
    let base_volume = match exchange {
        Exchange::OkxSwap => decimal("volCcy", &c.6)?,
        _ => decimal("vol", &c.5)?,
    };
    let candle = checked_candle(
        exchange,
        symbol,
        open_time,
        [
            decimal("o", &c.1)?,
            decimal("h", &c.2)?,
            decimal("l", &c.3)?,
            decimal("c", &c.4)?,
            base_volume,
        ],
        Some(decimal("volCcyQuote", &c.7)?),
        None,
    )?;
    let close_time = match c.8.as_str() {
        "1" => minute_close(open_time),
        "0" => UNCONFIRMED,
        other => {
            return Err((
                None,
                format!("confirm {other:?} is neither \"0\" nor \"1\""),
            ));
        }
    };
    Ok((candle, close_time))
}

/// Parses a `mark-price-candles` body of `okx-swap`: rows `[ts, o, h, l, c, confirm]`, newest
/// first; `confirm = "0"` is never final.
pub fn parse_mark(body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    let rows = match split(body)? {
        Ok(rows) => rows,
        Err((code, msg)) => return Err(format!("OKX error {code}: {msg}")),
    };
    Ok(rows_to_records(rows, |row| {
        crate::mark_row(Exchange::OkxSwap, symbol, row, Some(5))
    }))
}

/// The live instruments of an instruments body, with their listing times where given.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentList, String> {
    let env: Envelope<Instrument> = serde_json::from_slice(body)
        .map_err(|e| format!("not an OKX instruments response: {e}"))?;
    if env.code != "0" {
        return Err(format!("OKX error {}: {}", env.code, env.msg));
    }
    Ok(env
        .data
        .into_iter()
        .filter(|i| i.state.is_empty() || i.state == "live")
        .map(|i| {
            let listed = i
                .list_time
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis);
            (i.inst_id, listed)
        })
        .collect())
}

/// Checks a body is a whole funding answer: the funding time of each record, as
/// [`check_body`] gives open times.
pub fn check_funding_body(body: &[u8]) -> PageHeads<(String, String)> {
    Ok(split(body)?.map(|rows| crate::funding_times(&rows, "fundingTime")))
}

/// Parses a `GET /api/v5/public/funding-rate-history` body of `okx-swap`: records
/// `{"instId", "fundingRate", "fundingTime", "realizedRate", ...}`, newest first. OKX gives no
/// mark price here. An error code or a body that is not an OKX response fails the page.
pub fn parse_funding(body: &[u8], symbol: &Symbol) -> Result<Vec<FundingRecord>, String> {
    let rows = match split(body)? {
        Ok(rows) => rows,
        Err((code, msg)) => return Err(format!("OKX error {code}: {msg}")),
    };
    Ok(funding_records(
        Exchange::OkxSwap,
        symbol,
        &inst_id(Exchange::OkxSwap, symbol),
        rows,
        |row| {
            Some((
                text_field(row, "instId")?,
                text_field(row, "fundingTime")?.parse().ok()?,
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
    fn rows_newest_first_confirm_and_swap_volume() {
        let body = br#"{"code":"0","msg":"","data":[
            ["1709251260000","101","102","100","101.5","7","0.7","71","0"],
            ["1709251200000","100","101","99","100.5","5","0.5","50","1"]]}"#;
        let spot = parse_candles(Exchange::Okx, body, &sym()).unwrap();
        let Record::Candle { candle, close_time } = &spot[1] else {
            panic!("{spot:?}")
        };
        assert_eq!(candle.open_time.timestamp_millis(), 1_709_251_200_000);
        assert_eq!(*close_time, minute_close(candle.open_time));
        assert_eq!((candle.volume, candle.quote_volume), (5.0, Some(50.0)));
        assert_eq!(candle.trade_count, None);
        let Record::Candle { close_time, .. } = &spot[0] else {
            panic!("{spot:?}")
        };
        assert_eq!(*close_time, UNCONFIRMED, "confirm = 0 is never final");
        let swap = parse_candles(Exchange::OkxSwap, body, &sym()).unwrap();
        let Record::Candle { candle, .. } = &swap[1] else {
            panic!("{swap:?}")
        };
        assert_eq!(candle.volume, 0.5, "a swap's base volume is volCcy");
        assert_eq!(candle.exchange, Exchange::OkxSwap);
    }

    #[test]
    fn errors_and_bad_rows_are_named() {
        let err = parse_candles(
            Exchange::Okx,
            br#"{"code":"51001","msg":"Instrument ID does not exist","data":[]}"#,
            &sym(),
        )
        .unwrap_err();
        assert!(
            err.contains("51001") && err.contains("Instrument ID"),
            "{err}"
        );
        let recs = parse_candles(
            Exchange::Okx,
            br#"{"code":"0","msg":"","data":[["x","1","1","1","1","1","1","1","1"],["1709251200000","1","1","1","1","1","1","1","2"],["1709251200000","1","2","1","1","1","1","1","1"]]}"#,
            &sym(),
        )
        .unwrap();
        let reasons: Vec<String> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Rejected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{recs:?}");
        assert!(reasons[0].contains("ts \"x\""), "{reasons:?}");
        assert!(reasons[1].contains("confirm \"2\""), "{reasons:?}");
        assert!(parse_candles(Exchange::Okx, b"[1,2", &sym()).is_err());
    }

    #[test]
    fn instruments_keep_live_ones() {
        let body = br#"{"code":"0","msg":"","data":[
            {"instId":"BTC-USDT","instType":"SPOT","state":"live","listTime":"1548133413000"},
            {"instId":"OLD-USDT","instType":"SPOT","state":"suspend","listTime":""}]}"#;
        let got = parse_instruments(body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "BTC-USDT");
        assert_eq!(got[0].1.unwrap().timestamp_millis(), 1_548_133_413_000);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_candles(Exchange::OkxSwap, &body, &sym());
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
                "{{\"code\":\"0\",\"msg\":\"\",\"data\":[{}]}}",
                rows.iter().map(|r| format!("[{}]", r.join(","))).collect::<Vec<_>>().join(",")
            );
            let records = parse_candles(Exchange::OkxSwap, body.as_bytes(), &sym()).unwrap();
            prop_assert_eq!(records.len(), rows.len());
        }
    }
}
