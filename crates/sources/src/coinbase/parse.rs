//! Coinbase wire rows to domain candles.

use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, Exchange, Symbol};
use serde::Deserialize;

use super::models::RawCandle;
use crate::{Record, RowError, checked_candle, minute_close, rows_to_records, unix_seconds};

/// `BTC-USD` is already Coinbase's product id.
pub fn product_id(symbol: &Symbol) -> String {
    symbol.as_str().to_string()
}

/// Parses a candles body (any row order). A body that is not a JSON array fails the page; a bad
/// row becomes a [`Record::Rejected`].
pub fn parse_candles(body: &[u8], symbol: &Symbol) -> Result<Vec<Record>, String> {
    // Fast path: typed rows straight from the body; a bad row sends the page down the slow
    // path, which names each one.
    if let Ok(rows) = serde_json::from_slice::<Vec<RawCandle>>(body) {
        let fast: Result<Vec<Record>, RowError> = rows
            .iter()
            .map(|c| {
                candle_of(c, symbol)
                    .map(|(candle, close_time)| Record::Candle { candle, close_time })
            })
            .collect();
        if let Ok(records) = fast {
            return Ok(records);
        }
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON array of candles: {e}"))?;
    Ok(rows_to_records(rows, |row| parse_row(row, symbol)))
}

fn parse_row(
    row: &serde_json::Value,
    symbol: &Symbol,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let c = RawCandle::deserialize(row).map_err(|e| {
        (
            None,
            format!("not a [time, low, high, open, close, volume] row of numbers: {e}"),
        )
    })?;
    candle_of(&c, symbol)
}

fn candle_of(c: &RawCandle, symbol: &Symbol) -> Result<(Candle, DateTime<Utc>), RowError> {
    let open_time = unix_seconds(c.0, "time")?;
    let candle = checked_candle(
        Exchange::Coinbase,
        symbol,
        open_time,
        [c.3, c.2, c.1, c.4, c.5],
        None,
        None,
    )?;
    Ok((candle, minute_close(open_time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/coinbase_candles_btcusd.json");

    fn btc() -> Symbol {
        Symbol::parse("BTC-USD").unwrap()
    }

    fn candles(records: &[Record]) -> Vec<&Candle> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Candle { candle, .. } => Some(candle),
                Record::Rejected { .. } => None,
            })
            .collect()
    }

    #[test]
    fn parses_documented_order_of_fields() {
        let records = parse_candles(FIXTURE, &btc()).unwrap();
        let c = candles(&records);
        assert_eq!(c.len(), 4);
        // Newest first on the wire: [1709251380, 61140.2, 61190.0, 61150.0, 61180.5, 3.25].
        assert_eq!(c[0].open_time.to_rfc3339(), "2024-03-01T00:03:00+00:00");
        assert_eq!(
            (c[0].open, c[0].high, c[0].low, c[0].close, c[0].volume),
            (61150.0, 61190.0, 61140.2, 61180.5, 3.25)
        );
        assert_eq!(c[0].quote_volume, None);
        assert_eq!(c[0].trade_count, None);
        assert_eq!(c[0].exchange, Exchange::Coinbase);
        // 00:02 had no trades: Coinbase leaves the row out rather than sending a flat candle.
        let times: Vec<String> = c
            .iter()
            .map(|c| c.open_time.format("%H:%M").to_string())
            .collect();
        assert_eq!(times, ["00:03", "00:01", "00:00", "23:59"]);
    }

    #[test]
    fn bad_rows_are_rejected_with_reason() {
        let body =
            br#"[[1709251200, 10.0, 9.0, 9.5, 9.6, 1.0], [1709251260, "1", 2, 1, 1, 1], [5]]"#;
        let records = parse_candles(body, &btc()).unwrap();
        let reasons: Vec<String> = records
            .iter()
            .map(|r| match r {
                Record::Rejected { reason, .. } => reason.clone(),
                Record::Candle { .. } => "ok".into(),
            })
            .collect();
        assert!(reasons[0].contains("high"), "{reasons:?}");
        assert!(reasons[1].contains("row of numbers"), "{reasons:?}");
        assert!(reasons[2].contains("row of numbers"), "{reasons:?}");
        assert!(parse_candles(br#"{"message":"NotFound"}"#, &btc()).is_err());
        assert!(crate::http::row_heads(b"[[1,2,3,4,5,6]").is_err());
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_candles(&body, &Symbol::parse("BTC-USD").unwrap());
            let _ = crate::http::row_heads(&body);
        }

        #[test]
        fn arbitrary_rows(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| if f.is_finite() { f.to_string() } else { "0".into() }),
                Just("null".to_string()),
                Just("\"1\"".to_string()),
            ], 0..8),
            0..8,
        )) {
            let body = format!(
                "[{}]",
                rows.iter().map(|r| format!("[{}]", r.join(","))).collect::<Vec<_>>().join(",")
            );
            if let Ok(records) = parse_candles(body.as_bytes(), &Symbol::parse("BTC-USD").unwrap()) {
                prop_assert_eq!(records.len(), rows.len());
            }
        }
    }
}
