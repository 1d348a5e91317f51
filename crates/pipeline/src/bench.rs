//! `cryptolake bench generate`: a realistic bronze layer at a chosen scale, written exactly as
//! ingestion writes it (envelope line + Binance klines page, 1000-minute windows split at UTC
//! midnight), from the simulated market, with occasional gaps (rows missing from a page, as in
//! an exchange outage) and duplicate pages (a window fetched twice). The input of the
//! benchmark runner in `bench/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use cryptolake_lake::Lake;
use cryptolake_lake::bronze::{
    Envelope, FORMAT_VERSION, KLINES_1M, RequestInfo, encode, plan_windows, write_object_at,
};
use cryptolake_lake::paths::{self, BronzeKey};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::binance::{MAX_LIMIT, exchange_symbol};
use cryptolake_sources::sim::SimMarket;
use futures::StreamExt;

use crate::{Error, Pipeline, Result};

/// What was generated.
#[derive(Debug, Default, serde::Serialize)]
pub struct Generated {
    pub symbols: usize,
    pub minutes: i64,
    pub objects: u64,
    pub candles: u64,
    pub bytes: u64,
    pub duplicate_pages: u64,
    pub gap_rows: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `N` symbols named `S0001-USDT`…, with base prices spread over four orders of magnitude.
pub fn bench_market(symbols: usize, seed: u64) -> Result<SimMarket> {
    let list = (0..symbols)
        .map(|i| {
            let price = 10f64.powf((splitmix(seed ^ i as u64) % 4000) as f64 / 1000.0 - 1.0);
            Ok((Symbol::parse(&format!("S{:04}-USDT", i + 1))?, price))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SimMarket::new(seed, list))
}

/// When the manifest says each generated object was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenAt {
    /// When it was fetched: a lake that ingestion filled over time (history).
    Fetched,
    /// Now, as ingestion writes: new bronze the next build must pick up.
    Now,
}

/// Removes everything built from bronze: silver, gold, quarantine, the ops tables and the
/// builds' state, so that the next build is a first build. Bronze, its manifest and the
/// ingest cursors stay. Returns how many objects were deleted.
async fn reset(lake: &Lake) -> Result<usize> {
    let mut deleted = 0;
    for prefix in paths::DERIVED {
        deleted += lake.delete_prefix(prefix).await?;
    }
    Ok(deleted)
}

/// Writes the bronze layer for `symbols` over `[start, end)`.
async fn generate(
    lake: &Lake,
    symbols: usize,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    seed: u64,
    window_minutes: i64,
    written_at: WrittenAt,
    now: DateTime<Utc>,
) -> Result<Generated> {
    if symbols == 0 || symbols > 9999 || end <= start {
        return Err(Error::Invalid(
            "--symbols must be 1..=9999 and the range not empty".into(),
        ));
    }
    if !(1..=MAX_LIMIT).contains(&window_minutes) {
        return Err(Error::Invalid(format!(
            "--window-minutes must be 1..={MAX_LIMIT} (a klines page holds at most {MAX_LIMIT} minutes)"
        )));
    }
    let market = Arc::new(bench_market(symbols, seed)?);
    let windows = plan_windows(start, end, window_minutes);
    let jobs: Vec<(Symbol, DateTime<Utc>, DateTime<Utc>)> = market
        .symbols()
        .flat_map(|s| windows.iter().map(move |(a, b)| (s.clone(), *a, *b)))
        .collect();
    let (objects, candles, bytes, dups, gaps) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let results: Vec<Result<()>> = futures::stream::iter(jobs)
        .map(|(symbol, a, b)| {
            let market = market.clone();
            let (objects, candles, bytes, dups, gaps) = (&objects, &candles, &bytes, &dups, &gaps);
            async move {
                let h = splitmix(
                    seed ^ splitmix(a.timestamp() as u64)
                        ^ splitmix(
                            symbol.as_str().len() as u64
                                ^ symbol
                                    .as_str()
                                    .bytes()
                                    .fold(0u64, |x, c| x.wrapping_mul(31) ^ u64::from(c)),
                        ),
                );
                // About one window in fifty was fetched twice; the second fetch, an hour
                // later, finds the exchange past any outage and gets the whole page. (Rows
                // missing from two fetches would be minutes confirmed empty.)
                let copies: i64 = if h % 50 == 7 { 2 } else { 1 };
                let bodies = tokio::task::spawn_blocking({
                    let market = market.clone();
                    let symbol = symbol.clone();
                    move || {
                        (0..copies)
                            .map(|copy| page(&market, &symbol, a, b, h, copy == 0))
                            .collect::<Vec<_>>()
                    }
                })
                .await
                .map_err(|e| Error::Invalid(format!("generating pages: {e}")))?;
                gaps.fetch_add(bodies[0].2, Ordering::Relaxed);
                for (copy, (payload, rows, _)) in (0i64..).zip(bodies) {
                    let fetched_at = b + Duration::minutes(5 + copy * 60);
                    let run_id = format!("bench-{}", fetched_at.format("%Y%m%dT%H%M"));
                    let envelope = Envelope {
                        format: FORMAT_VERSION,
                        source: Exchange::Binance,
                        dataset: KLINES_1M.to_string(),
                        symbol: symbol.clone(),
                        request: RequestInfo {
                            method: "GET".into(),
                            url: "https://api.binance.com/api/v3/klines".into(),
                            params: BTreeMap::from([
                                ("symbol".to_string(), exchange_symbol(&symbol)),
                                ("interval".to_string(), "1m".to_string()),
                                ("startTime".to_string(), a.timestamp_millis().to_string()),
                                (
                                    "endTime".to_string(),
                                    (b.timestamp_millis() - 1).to_string(),
                                ),
                                ("limit".to_string(), window_minutes.to_string()),
                            ]),
                        },
                        window_start: a,
                        window_end: b,
                        fetched_at,
                        http_status: 200,
                        run_id: run_id.clone(),
                        payload_bytes: payload.len() as u64,
                        rows: rows as u64,
                    };
                    let key = BronzeKey {
                        source: Exchange::Binance,
                        dataset: KLINES_1M.to_string(),
                        symbol: symbol.clone(),
                        date: a.date_naive(),
                        fetched_at,
                        window_start: a,
                        window_end: b,
                        run_id,
                    };
                    let object = encode(&envelope, payload.as_bytes());
                    bytes.fetch_add(object.len() as u64, Ordering::Relaxed);
                    let at = match written_at {
                        WrittenAt::Fetched => fetched_at,
                        WrittenAt::Now => now,
                    };
                    write_object_at(lake, &key, object, at).await?;
                    objects.fetch_add(1, Ordering::Relaxed);
                    if copy == 0 {
                        candles.fetch_add(rows as u64, Ordering::Relaxed);
                    } else {
                        dups.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(Generated {
        symbols,
        minutes: (end - start).num_minutes(),
        objects: objects.into_inner(),
        candles: candles.into_inner(),
        bytes: bytes.into_inner(),
        duplicate_pages: dups.into_inner(),
        gap_rows: gaps.into_inner(),
    })
}

/// One klines page for `[a, b)` as served after the window closed; about one page in fifty
/// lacks a run of rows (an outage at the exchange). Returns the body, its rows, and
/// the rows left out.
fn page(
    market: &SimMarket,
    symbol: &Symbol,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    h: u64,
    with_gaps: bool,
) -> (String, usize, u64) {
    let later = b + Duration::hours(1);
    let body = market.binance_klines(
        symbol,
        a.timestamp_millis(),
        b.timestamp_millis() - 1,
        MAX_LIMIT as usize,
        later,
    );
    if !with_gaps || (h >> 8) % 50 != 3 {
        let rows = body.matches("],[").count() + usize::from(body.len() > 2);
        return (body, rows, 0);
    }
    let mut rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    let n = rows.len();
    let cut = (h as usize / 7) % n.max(1);
    let len = 1 + (h as usize / 13) % 30;
    let end = (cut + len).min(n);
    rows.drain(cut..end);
    let kept = rows.len();
    (
        serde_json::Value::Array(rows).to_string(),
        kept,
        (n - kept) as u64,
    )
}

/// What `bench generate` makes.
#[derive(Debug, Clone, Copy)]
pub struct GenerateRequest {
    pub symbols: usize,
    pub range: (DateTime<Utc>, DateTime<Utc>),
    pub seed: u64,
    pub window_minutes: i64,
    pub written_at: WrittenAt,
}

impl Pipeline {
    /// `bench generate`: the benchmark's bronze layer, written as ingestion writes it.
    pub async fn bench_generate(&self, r: GenerateRequest) -> Result<Generated> {
        let g = generate(
            self.lake(),
            r.symbols,
            r.range,
            r.seed,
            r.window_minutes,
            r.written_at,
            self.now(),
        )
        .await;
        self.reads().changed();
        g
    }

    /// `bench reset`: deletes everything built from bronze; returns how many objects.
    pub async fn bench_reset(&self) -> Result<usize> {
        let n = reset(self.lake()).await;
        self.reads().changed();
        n
    }
}

/// Marks a lake as made by the demo, so the demo never mixes simulated data into a real lake.
#[derive(serde::Serialize, serde::Deserialize)]
struct DemoMarker {
    seed: u64,
    created_at: DateTime<Utc>,
}

impl Pipeline {
    /// Claims the lake for the demo made with `seed`: `true` when an earlier demo with that
    /// seed made it (the demo continues it), `false` for a lake without bronze; an error naming
    /// the lake for one that holds other data, or a demo of another seed.
    pub async fn claim_demo(&self, seed: u64) -> Result<bool> {
        let lake = self.lake();
        let previous =
            cryptolake_lake::state::read::<DemoMarker>(lake, &paths::demo_marker()).await?;
        if previous.is_none() && !lake.list(&paths::bronze_root()).await?.is_empty() {
            return Err(Error::Invalid(format!(
                "the lake at {} already holds data that is not from a demo; pass --lake to run the demo in another directory",
                lake.root_url()
            )));
        }
        if let Some(prev) = &previous
            && prev.seed != seed
        {
            return Err(Error::Invalid(format!(
                "the demo lake at {} was made with seed {}; use that seed or another --lake",
                lake.root_url(),
                prev.seed
            )));
        }
        let marker = DemoMarker {
            seed,
            created_at: previous.as_ref().map_or_else(Utc::now, |p| p.created_at),
        };
        cryptolake_lake::state::write(lake, &paths::demo_marker(), &marker).await?;
        Ok(previous.is_some())
    }

    /// The lake's URL, as messages name it.
    pub fn lake_url(&self) -> &str {
        self.lake().root_url()
    }
}
