//! Exchange adapters and the simulated exchange.
//!
//! Each adapter has the same three parts: `client` (the transport: URLs, paging windows, retries),
//! `models` (the exchange's own wire types) and `parse` (wire types to validated domain candles).
//! Adapters return the raw response bytes with what was asked, so bronze can keep them as received.

pub mod binance;
mod error;
pub mod http;
pub mod sim;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cryptolake_model::{Candle, CandleRule};

pub use error::{Error, Result};

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
