//! Bronze: raw exchange responses, append-only.
//!
//! A bronze object is one response exactly as received, preceded by its envelope:
//!
//! ```text
//! {"format":1,"source":"binance","dataset":"klines_1m",...}\n
//! <payload bytes as received>
//! ```
//!
//! The first line is the envelope as one line of JSON; everything after the first newline is the
//! payload, byte for byte. Objects are written once under a fresh key and never rewritten.

pub mod archive;
mod ingest;

pub(crate) use ingest::{Answer, record_ban, refuse_if_banned, run_covers, store_answer};

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::{Record, parse_page};
use serde::{Deserialize, Serialize};

pub use archive::KLINES_1M_ARCHIVE;
pub use ingest::{Ingest, IngestMetrics, IngestPlan, SymbolOutcome, Window, plan_windows};

use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result};
use object_store::path::Path;

/// One-minute candles as the exchange's REST API serves them.
pub const KLINES_1M: &str = "klines_1m";
pub const FORMAT_VERSION: u32 = 1;
/// One-minute mark price candles of a perpetual market.
pub const MARK_KLINES_1M: &str = "mark_klines_1m";
/// Funding rates of a perpetual market as the venue's REST API serves them.
pub const FUNDING_RATE: &str = "funding_rate";

/// Whether `dataset` holds candles (silver's `ohlcv_1h` and `ohlcv_1m` are built from these);
/// the others have builds of their own.
pub fn is_candle_dataset(dataset: &str) -> bool {
    dataset == KLINES_1M || dataset == KLINES_1M_ARCHIVE
}

/// What was asked, without secrets (public endpoints take none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInfo {
    pub method: String,
    pub url: String,
    pub params: BTreeMap<String, String>,
}

/// The ingestion metadata stored with every raw payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: u32,
    pub source: Exchange,
    pub dataset: String,
    pub symbol: Symbol,
    pub request: RequestInfo,
    /// The requested interval of open times, `[window_start, window_end)`.
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub fetched_at: DateTime<Utc>,
    pub http_status: u16,
    pub run_id: String,
    pub payload_bytes: u64,
    pub rows: u64,
}

/// Writes a bronze object under its fresh key: first the manifest entry that lets silver find
/// it without listing all of bronze, then the object itself, created only if absent (`false`
/// when it already exists). An entry whose object never arrived (a crash in between) is
/// ignored by silver.
pub async fn write_object(lake: &Lake, key: &BronzeKey, bytes: Bytes) -> Result<bool> {
    write_object_at(lake, key, bytes, Utc::now()).await
}

/// [`write_object`] with the manifest entry dated `written_at`: for tools that lay down
/// history as if it had been written when it was fetched (the benchmark generator).
pub async fn write_object_at(
    lake: &Lake,
    key: &BronzeKey,
    bytes: Bytes,
    written_at: DateTime<Utc>,
) -> Result<bool> {
    let path = key.path();
    lake.put(&paths::manifest_entry(written_at, &path), Bytes::new())
        .await?;
    lake.put_new(&path, bytes).await
}

pub fn encode(envelope: &Envelope, payload: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(envelope).expect("envelope serialises");
    out.push(b'\n');
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Splits a bronze object into its envelope and payload, checking the payload is whole.
pub fn decode(key: &str, bytes: &Bytes) -> Result<(Envelope, Bytes)> {
    let bad = |reason: String| Error::Bronze {
        key: key.to_string(),
        reason,
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no envelope line".into()))?;
    let envelope: Envelope = serde_json::from_slice(&bytes[..nl])
        .map_err(|e| bad(format!("envelope is not valid: {e}")))?;
    if envelope.format != FORMAT_VERSION {
        return Err(bad(format!("unknown format version {}", envelope.format)));
    }
    let payload = bytes.slice(nl + 1..);
    if payload.len() as u64 != envelope.payload_bytes {
        return Err(bad(format!(
            "payload has {} bytes, envelope says {}",
            payload.len(),
            envelope.payload_bytes
        )));
    }
    Ok((envelope, payload))
}

/// Reads and decodes the bronze object at `path`; `None` when it is gone.
pub(crate) async fn read_decoded(lake: &Lake, path: &Path) -> Result<Option<(Envelope, Bytes)>> {
    let Some(bytes) = lake.get_opt(path).await? else {
        return Ok(None);
    };
    decode(path.as_ref(), &bytes).map(Some)
}

/// Writes the records of the bronze object `bronze` that a build rejected, with their reasons,
/// to the quarantine document `to`.
pub(crate) async fn quarantine(
    lake: &Lake,
    to: &Path,
    bronze: &Path,
    rejected: Vec<serde_json::Value>,
) -> Result<()> {
    let doc = serde_json::json!({ "bronze": bronze.as_ref(), "rejected": rejected });
    lake.put(
        to,
        Bytes::from(serde_json::to_vec_pretty(&doc).expect("json serialises")),
    )
    .await
}

/// Parses a payload into records with the parser of its source and dataset.
pub fn parse_payload(
    envelope: &Envelope,
    payload: &[u8],
) -> std::result::Result<Vec<Record>, String> {
    match envelope.dataset.as_str() {
        KLINES_1M => parse_page(envelope.source, payload, &envelope.symbol),
        KLINES_1M_ARCHIVE
            if matches!(
                envelope.source,
                Exchange::Binance | Exchange::BinanceFutures
            ) =>
        {
            cryptolake_sources::binance::archive::parse_csv(
                envelope.source,
                payload,
                &envelope.symbol,
            )
        }
        dataset => Err(format!(
            "no parser for {} dataset {dataset}",
            envelope.source
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    fn envelope(payload: &[u8]) -> Envelope {
        Envelope {
            format: FORMAT_VERSION,
            source: Exchange::Binance,
            dataset: KLINES_1M.into(),
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            request: RequestInfo {
                method: "GET".into(),
                url: "http://127.0.0.1:1/api/v3/klines".into(),
                params: BTreeMap::from([("symbol".into(), "BTCUSDT".into())]),
            },
            window_start: parse_time("2024-03-01T00:00:00Z").unwrap(),
            window_end: parse_time("2024-03-01T00:04:00Z").unwrap(),
            fetched_at: parse_time("2024-03-01T01:00:00Z").unwrap(),
            http_status: 200,
            run_id: "r1".into(),
            payload_bytes: payload.len() as u64,
            rows: 0,
        }
    }

    #[test]
    fn round_trip_keeps_payload_bytes_exactly() {
        let payload = b"[\n  [1, \"2\"]\n]\n\xff";
        let env = envelope(payload);
        let bytes = encode(&env, payload);
        let (back, body) = decode("k", &bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(&body[..], payload);
    }

    #[test]
    fn truncated_object_is_detected() {
        let payload = b"[[1,2,3]]";
        let bytes = encode(&envelope(payload), payload);
        let cut = bytes.slice(..bytes.len() - 2);
        let err = decode("bronze/x.bronze", &cut).unwrap_err().to_string();
        assert!(
            err.contains("bronze/x.bronze") && err.contains("payload has"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A bronze reader given any bytes returns an error naming the key, or an envelope and
        /// payload; it never panics.
        #[test]
        fn arbitrary_objects(head in "[ -~]{0,200}", tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = head.into_bytes();
            bytes.push(b'\n');
            bytes.extend(tail);
            if let Err(e) = decode("bronze/k.bronze", &Bytes::from(bytes)) {
                prop_assert!(e.to_string().contains("bronze/k.bronze"));
            }
        }
    }
}
