//! Exchange adapters and the simulated exchange.
//!
//! Each adapter has the same three parts: `client` (the transport: URLs, paging windows, retries),
//! `models` (the exchange's own wire types) and `parse` (wire types to validated domain candles).
//! Adapters return the raw response bytes with what was asked, so bronze can keep them as received.

pub mod binance;
pub mod bybit;
mod client;
pub mod coinbase;
mod error;
pub mod http;
pub mod instruments;
pub mod kraken;
pub mod limit;
pub mod okx;
pub mod sim;

pub use client::{ExchangeClient, HistoryStart, parse_funding_page, parse_mark_page, parse_page};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, CandleRule};

pub use error::{Error, Result};

/// Which prices a candle request asks for: the market's trades, or a perpetual's mark price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prices {
    Trades,
    Mark,
}

/// One response as fetched, already checked to be a complete, well-formed page.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// The request URL without query string (never carries secrets).
    pub url: String,
    /// The query parameters sent.
    pub params: Vec<(String, String)>,
    pub status: u16,
    pub fetched_at: DateTime<Utc>,
    /// The body exactly as received.
    pub body: Bytes,
    /// How many rows the body holds.
    pub rows: usize,
    /// Set when the page answered only the newest part of its window, from this open time
    /// on (a venue paging newest first, whose page is short or full before the window's
    /// start): the rest of the window is still to be asked for.
    pub resume_before: Option<DateTime<Utc>>,
    /// Set when a page that runs oldest first came back full: the rest of the range starts
    /// after this time.
    pub resume_after: Option<DateTime<Utc>>,
}

impl FetchedPage {
    /// A checked response to `url?params` holding `rows` rows.
    pub fn new(
        url: String,
        params: Vec<(String, String)>,
        resp: http::Response,
        rows: usize,
    ) -> FetchedPage {
        FetchedPage {
            url,
            params,
            status: resp.status,
            fetched_at: resp.fetched_at,
            body: resp.body,
            rows,
            resume_before: None,
            resume_after: None,
        }
    }
}

/// One record of a page after parsing: a valid candle, or a reason it was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Candle {
        candle: Candle,
        /// When the interval closes; a candle that closes after its fetch was still open.
        close_time: DateTime<Utc>,
    },
    Rejected {
        /// Position in the page.
        index: usize,
        /// The record as it appeared (re-serialised JSON).
        raw: String,
        /// The quality rule it broke; `None` when it is not a well-formed record at all.
        rule: Option<CandleRule>,
        reason: String,
    },
}

/// One funding record of a page after parsing: a valid funding event, or why it was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum FundingRecord {
    Rate(cryptolake_model::FundingRate),
    Rejected {
        /// Position in the page.
        index: usize,
        /// The record as it appeared (re-serialised JSON).
        raw: String,
        reason: String,
    },
}

/// Each JSON object of a funding page to a funding event or a rejection naming its reason:
/// `read` gives the row's instrument, funding time (ms), rate and mark price as strings.
pub(crate) fn funding_records(
    exchange: cryptolake_model::Exchange,
    symbol: &cryptolake_model::Symbol,
    instrument: &str,
    rows: Vec<serde_json::Value>,
    read: impl Fn(&serde_json::Value) -> Option<(String, i64, String, Option<String>)>,
) -> Vec<FundingRecord> {
    rows.into_iter()
        .enumerate()
        .map(|(index, row)| {
            let parsed = match read(&row) {
                None => Err("not a funding record of the venue's shape".to_string()),
                Some((id, _, _, _)) if id != instrument => {
                    Err(format!("a record of {id:?}, not {instrument}"))
                }
                Some((_, ms, rate, mark)) => {
                    let time = DateTime::from_timestamp_millis(ms)
                        .ok_or_else(|| format!("funding time {ms} is out of range"));
                    let rate = decimal("funding rate", &rate).map_err(|(_, r)| r);
                    // An empty mark price is "not given", as Binance sends for old records.
                    let mark = match mark.as_deref() {
                        None | Some("") => Ok(None),
                        Some(m) => decimal("mark price", m).map(Some).map_err(|(_, r)| r),
                    };
                    match (time, rate, mark) {
                        (Ok(t), Ok(r), Ok(m)) => {
                            cryptolake_model::FundingRate::new(exchange, symbol.clone(), t, r, m)
                                .map_err(|e| e.to_string())
                        }
                        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                    }
                }
            };
            match parsed {
                Ok(rate) => FundingRecord::Rate(rate),
                Err(reason) => FundingRecord::Rejected {
                    index,
                    raw: row.to_string(),
                    reason,
                },
            }
        })
        .collect()
}

/// The funding time (ms) of each of a page's records, read from `field` (`None` where a
/// record has none): what the page checks and continuations need.
pub(crate) fn funding_times(rows: &[serde_json::Value], field: &str) -> Vec<Option<i64>> {
    rows.iter()
        .map(|r| text_field(r, field)?.parse().ok())
        .collect()
}

/// A field of a JSON object as text: a string as it is, a number written out.
pub(crate) fn text_field(row: &serde_json::Value, name: &str) -> Option<String> {
    match row.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a row is not a candle: the quality rule it broke (`None`: not a well-formed row).
pub(crate) type RowError = (Option<CandleRule>, String);

/// A validated candle from parsed wire values; a broken invariant names its rule.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn checked_candle(
    exchange: cryptolake_model::Exchange,
    symbol: &cryptolake_model::Symbol,
    open_time: DateTime<Utc>,
    [open, high, low, close, volume]: [f64; 5],
    quote_volume: Option<f64>,
    trade_count: Option<i64>,
) -> Result<Candle, RowError> {
    Candle::new(
        exchange,
        symbol.clone(),
        open_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        trade_count,
    )
    .map_err(row_error)
}

/// The candle with its taker buy volumes, checked; a broken rule is named.
pub(crate) fn set_taker_buy(candle: &mut Candle, base: f64, quote: f64) -> Result<(), RowError> {
    candle.set_taker_buy(base, quote).map_err(row_error)
}

/// A candle's broken invariant as a row's error, naming its rule.
pub(crate) fn row_error(e: cryptolake_model::Error) -> RowError {
    match &e {
        cryptolake_model::Error::InvalidCandle { rule, .. } => (Some(*rule), e.to_string()),
        _ => (None, e.to_string()),
    }
}

/// Turns each JSON row into a candle or a rejection with its reason and position.
pub(crate) fn rows_to_records(
    rows: Vec<serde_json::Value>,
    parse_row: impl Fn(&serde_json::Value) -> Result<(Candle, DateTime<Utc>), RowError>,
) -> Vec<Record> {
    rows.into_iter()
        .enumerate()
        .map(|(index, row)| match parse_row(&row) {
            Ok((candle, close_time)) => Record::Candle { candle, close_time },
            Err((rule, reason)) => Record::Rejected {
                index,
                raw: row.to_string(),
                rule,
                reason,
            },
        })
        .collect()
}

/// A decimal carried as a JSON string (`"61130.98"`), as Binance and Kraken send prices.
pub(crate) fn decimal(name: &str, s: &str) -> Result<f64, RowError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err((None, format!("{name} {s:?} is not a decimal number"))),
    }
}

/// The close time of a one-minute candle, as Binance states it (last millisecond).
pub(crate) fn minute_close(open_time: DateTime<Utc>) -> DateTime<Utc> {
    open_time + chrono::Duration::milliseconds(59_999)
}

/// A unix time in seconds as a UTC instant.
pub(crate) fn unix_seconds(secs: i64, name: &str) -> Result<DateTime<Utc>, RowError> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| (None, format!("{name} {secs} is out of range")))
}

/// A mark price row `[open time, open, high, low, close, (confirm)]` (times and prices as
/// strings or numbers) to a candle without volume and its close time. `confirm` is the index
/// of OKX's confirm flag: `"0"` gives a close time that is never final.
pub(crate) fn mark_row(
    exchange: cryptolake_model::Exchange,
    symbol: &cryptolake_model::Symbol,
    row: &serde_json::Value,
    confirm: Option<usize>,
) -> Result<(Candle, DateTime<Utc>), RowError> {
    let field = |i: usize, name: &str| -> Result<String, RowError> {
        match row.get(i) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err((None, format!("not a mark price row: no {name} at {i}"))),
        }
    };
    let ts = field(0, "open time")?;
    let ms: i64 = ts
        .parse()
        .map_err(|_| (None, format!("open time {ts:?} is not a whole number")))?;
    let open_time = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| (None, format!("open time {ms} is out of range")))?;
    let candle = checked_candle(
        exchange,
        symbol,
        open_time,
        [
            decimal("open", &field(1, "open")?)?,
            decimal("high", &field(2, "high")?)?,
            decimal("low", &field(3, "low")?)?,
            decimal("close", &field(4, "close")?)?,
            0.0,
        ],
        None,
        None,
    )?;
    let close_time = match confirm.map(|i| field(i, "confirm")).transpose()?.as_deref() {
        None | Some("1") => minute_close(open_time),
        Some("0") => DateTime::<Utc>::MAX_UTC,
        Some(other) => {
            return Err((
                None,
                format!("confirm {other:?} is neither \"0\" nor \"1\""),
            ));
        }
    };
    Ok((candle, close_time))
}
