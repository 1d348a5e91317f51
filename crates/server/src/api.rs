//! The HTTP API, `/api/v1`: JSON by default, `?format=csv` for CSV and `?format=arrow` for an
//! Arrow IPC stream. Every answer is a typed answer of the pipeline's read model (from memory),
//! or for `POST /api/v1/sql` the user's own statement on a read-only SQL session with its
//! limits; errors are JSON `{"error": ...}` with a fitting status.

// A handler's error is the response it answers with; a rejected parameter is rare and small
// next to the request, so it is not boxed.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_pipeline::query::QueryEngine;
use cryptolake_pipeline::reads::{self, Encoding, Interval, Status};

use crate::AppState;
use crate::metrics::LakeGauges;

type Params = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/symbols", get(symbols))
        .route("/api/v1/candles", get(candles))
        .route("/api/v1/freshness", get(freshness))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/gaps", get(gaps))
        .route("/api/v1/funding", get(funding))
        .route("/api/v1/funding/latest", get(latest_funding))
        .route("/api/v1/mark", get(mark))
        .route("/api/v1/quality", get(quality))
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/openapi.json", get(openapi))
}

/// A JSON error with `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, &message)
}

/// The status a query error deserves.
fn query_error(e: cryptolake_pipeline::query::Error) -> Response {
    use cryptolake_pipeline::query::Error as Q;
    let status = match &e {
        Q::ReadOnly(_) => StatusCode::FORBIDDEN,
        Q::Limit(_) | Q::Timeout(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Q::Query(_) => StatusCode::BAD_REQUEST,
        Q::Output(_) | Q::Table { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

fn pipeline_error(e: cryptolake_pipeline::Error) -> Response {
    match e {
        cryptolake_pipeline::Error::Query(q) => query_error(q),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

fn format_of(p: &HashMap<String, String>) -> Result<Encoding, Response> {
    match p.get("format").map(String::as_str) {
        None | Some("json") => Ok(Encoding::Json),
        Some("csv") => Ok(Encoding::Csv),
        Some("arrow") => Ok(Encoding::Arrow),
        Some(other) => Err(bad_request(format!(
            "format {other:?}: expected json, csv or arrow"
        ))),
    }
}

/// An encoded answer, with its entity tag (the ETag layer uses it rather than hashing again).
fn encoded(e: &reads::Encoded) -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, e.encoding.content_type())],
        e.body.clone(),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&e.tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `batches` in `format`.
fn table(schema: &SchemaRef, batches: &[RecordBatch], format: Encoding) -> Response {
    match reads::encode(schema, batches, format) {
        Ok(e) => encoded(&e),
        Err(e) => pipeline_error(e),
    }
}

async fn answer_on(
    engine: &QueryEngine,
    state: &AppState,
    sql: &str,
    p: &HashMap<String, String>,
) -> Response {
    let format = match format_of(p) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match engine.query_table(sql, Some(state.max_rows)).await {
        Ok((schema, batches)) => table(&schema, &batches, format),
        Err(e) => query_error(e),
    }
}

fn exchange_param(p: &HashMap<String, String>) -> Result<Option<Exchange>, Response> {
    p.get("exchange")
        .map(|e| {
            e.parse::<Exchange>()
                .map_err(|err| bad_request(format!("exchange: {err}")))
        })
        .transpose()
}

fn symbol_param(p: &HashMap<String, String>) -> Result<Option<Symbol>, Response> {
    p.get("symbol")
        .map(|s| Symbol::parse(s).map_err(|err| bad_request(format!("symbol: {err}"))))
        .transpose()
}

fn time_param(p: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, Response> {
    p.get(name)
        .map(|t| parse_time(t).map_err(|err| bad_request(format!("{name}: {err}"))))
        .transpose()
}

fn limit_param(p: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Response> {
    match p.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_request(format!(
                "limit {v:?}: expected a whole number from 1 to {max}"
            ))),
        },
    }
}

/// A typed answer of the read model as a table in `format`.
fn rows(batch: Result<RecordBatch, cryptolake_pipeline::Error>, format: Encoding) -> Response {
    match batch {
        Ok(b) => table(&b.schema(), std::slice::from_ref(&b), format),
        Err(e) => pipeline_error(e),
    }
}

async fn symbols(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let format = match format_of(&p) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let answer = state.pipeline.reads().symbols().await;
    rows(answer.and_then(|r| reads::symbols_batch(&r)), format)
}

/// Candles of one exchange and symbol at any interval from `1m` to `1M`, oldest first, those
/// starting in `[from, to)`. Without `from`, the `limit` periods before `to` (default: now),
/// which is how the chart loads older candles as it is scrolled back.
async fn candles(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        let format = format_of(&p)?;
        let exchange = exchange_param(&p)?
            .ok_or_else(|| bad_request("exchange: required (binance, coinbase, …)".into()))?;
        let symbol = symbol_param(&p)?
            .ok_or_else(|| bad_request("symbol: required (BTC-USDT, …)".into()))?;
        let interval = match p.get("interval") {
            None => Interval::H1,
            Some(i) => Interval::parse(i).ok_or_else(|| {
                bad_request(format!(
                    "interval {i:?}: expected one of {}",
                    Interval::names()
                ))
            })?,
        };
        let step = interval.nominal();
        let limit = limit_param(&p, 2000, 20_000)?;
        let to = time_param(&p, "to")?.unwrap_or_else(|| state.pipeline.now() + step);
        let from = match time_param(&p, "from")? {
            Some(f) => f,
            None => to - step * i32::try_from(limit).unwrap_or(i32::MAX),
        };
        if from >= to {
            return Err(bad_request("from: must be before to".into()));
        }
        Ok((format, exchange, symbol, interval, limit, from, to))
    })();
    let (format, exchange, symbol, interval, limit, from, to) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answer = state
        .pipeline
        .reads()
        .candles_encoded(exchange, &symbol, interval, from, to, limit, format)
        .await;
    match answer {
        Ok(e) => encoded(&e),
        Err(e) => pipeline_error(e),
    }
}

async fn freshness(State(state): State<Arc<AppState>>) -> Response {
    match state.pipeline.reads().freshness().await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => pipeline_error(e),
    }
}

/// One row per exchange and symbol: what the overview page shows.
async fn overview(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    if let Err(r) = format_of(&p).and_then(|f| match f {
        Encoding::Json => Ok(()),
        _ => Err(bad_request("the overview is JSON only".into())),
    }) {
        return r;
    }
    match state.pipeline.reads().overview().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => pipeline_error(e),
    }
}

async fn runs(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (format, limit) = match (format_of(&p), limit_param(&p, 100, 10_000)) {
        (Ok(f), Ok(l)) => (f, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let answer = state.pipeline.reads().runs(limit).await;
    rows(answer.and_then(|r| reads::runs_batch(&r)), format)
}

async fn gaps(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        Ok::<_, Response>((
            format_of(&p)?,
            reads::GapFilter {
                exchange: exchange_param(&p)?,
                symbol: symbol_param(&p)?,
                limit: Some(limit_param(&p, 1000, 100_000)?),
                ..reads::GapFilter::default()
            },
        ))
    })();
    let (format, filter) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answer = state.pipeline.reads().gaps(&filter).await;
    rows(answer.and_then(|g| reads::gaps_batch(&g)), format)
}

/// Funding events of one perpetual market's symbol, oldest first, with slots in `[from, to)`
/// (default: the 30 days before now).
async fn funding(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        let format = format_of(&p)?;
        let (exchange, symbol) = perpetual_params(&p)?;
        let to = time_param(&p, "to")?.unwrap_or_else(|| state.pipeline.now());
        let from = time_param(&p, "from")?.unwrap_or(to - chrono::Duration::days(30));
        Ok::<_, Response>((format, exchange, symbol, from, to))
    })();
    let (format, exchange, symbol, from, to) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state
        .pipeline
        .reads()
        .funding(exchange, &symbol, from, to)
        .await
    {
        Ok(f) => rows(reads::funding_batch(&f), format),
        Err(e @ cryptolake_pipeline::Error::Invalid(_)) => bad_request(e.to_string()),
        Err(e) => pipeline_error(e),
    }
}

/// The newest funding event of every perpetual market and symbol.
async fn latest_funding(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let format = match format_of(&p) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let answer = state.pipeline.reads().latest_funding().await;
    rows(answer.and_then(|f| reads::funding_batch(&f)), format)
}

/// A perpetual's mark price as bars of `interval` (default 1h) starting in `[from, to)`
/// (default: the week before now).
async fn mark(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        let format = format_of(&p)?;
        let (exchange, symbol) = perpetual_params(&p)?;
        let interval = match p.get("interval") {
            None => Interval::H1,
            Some(i) => Interval::parse(i).ok_or_else(|| {
                bad_request(format!(
                    "interval {i:?}: expected one of {}",
                    Interval::names()
                ))
            })?,
        };
        let to = time_param(&p, "to")?.unwrap_or_else(|| state.pipeline.now());
        let from = time_param(&p, "from")?.unwrap_or(to - chrono::Duration::days(7));
        Ok::<_, Response>((format, exchange, symbol, interval, from, to))
    })();
    let (format, exchange, symbol, interval, from, to) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answer = state
        .pipeline
        .reads()
        .mark_bars(exchange, &symbol, interval, (from, to))
        .await;
    match answer {
        Ok(b) => rows(reads::mark_batch(&b), format),
        Err(e @ cryptolake_pipeline::Error::Invalid(_)) => bad_request(e.to_string()),
        Err(e) => pipeline_error(e),
    }
}

/// The `exchange` (a perpetual market) and `symbol` parameters, both required.
fn perpetual_params(p: &HashMap<String, String>) -> Result<(Exchange, Symbol), Response> {
    let need = |name: &str| {
        bad_request(format!(
            "{name} is required (e.g. exchange=binance-futures&symbol=BTC-USDT)"
        ))
    };
    let exchange = exchange_param(p)?.ok_or_else(|| need("exchange"))?;
    if !exchange.is_perpetual() {
        return Err(bad_request(format!(
            "exchange {exchange} is not a perpetual market: funding and mark prices are on binance-futures, okx-swap and bybit-linear"
        )));
    }
    let symbol = symbol_param(p)?.ok_or_else(|| need("symbol"))?;
    Ok((exchange, symbol))
}

/// Quality results, newest first: the history (`status=violation|pass` narrows it), or with
/// `open=true` the violations whose latest evaluation still finds them.
async fn quality(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        let status =
            match p.get("status").map(String::as_str) {
                None => None,
                Some(s) => Some(Status::parse(s).ok_or_else(|| {
                    bad_request(format!("status {s:?}: expected violation or pass"))
                })?),
            };
        let open_only = match p.get("open").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad_request(format!(
                    "open {other:?}: expected true or false"
                )));
            }
        };
        Ok((
            format_of(&p)?,
            reads::QualityFilter {
                status,
                open_only,
                limit: limit_param(&p, 200, 10_000)?,
            },
        ))
    })();
    let (format, filter) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answer = state.pipeline.reads().quality(&filter).await;
    rows(answer.and_then(|q| reads::quality_batch(&q)), format)
}

/// `POST /api/v1/sql`: the body is one read-only statement (text, or JSON `{"sql": "…"}`).
async fn sql(State(state): State<Arc<AppState>>, Query(p): Params, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let statement = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => match v.get("sql").and_then(|s| s.as_str()) {
            Some(s) => s.to_string(),
            None => {
                return bad_request(
                    "expected {\"sql\": \"SELECT …\"} or the statement as text".into(),
                );
            }
        },
        Err(_) => text,
    };
    if statement.trim().is_empty() {
        return bad_request("the statement is empty".into());
    }
    // A statement of its own session: its memory pool is its own, so a hostile one cannot take
    // the memory the API's reads need.
    let engine = match state.pipeline.served_query_engine().await {
        Ok(e) => e,
        Err(e) => return pipeline_error(e),
    };
    answer_on(&engine, &state, statement.trim().trim_end_matches(';'), &p).await
}

/// `/metrics`: counters from this process, and what the lake says now.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let reads = state.pipeline.reads();
    let mut lake = LakeGauges {
        exchanges: state.pipeline.exchange_requests(),
        ..LakeGauges::default()
    };
    if let Ok(rows) = reads.freshness().await {
        for f in rows {
            if let Some(lag) = f.lag {
                lake.freshness.push((
                    "ohlcv_1h".into(),
                    f.exchange.to_string(),
                    f.symbol.to_string(),
                    lag.as_secs_f64(),
                ));
            }
        }
    }
    if let Ok(minutes) = reads.gap_minutes().await {
        for (exchange, symbol, status, n) in minutes {
            lake.gap_minutes.push((
                exchange.to_string(),
                symbol.to_string(),
                status.as_str().to_string(),
                n as f64,
            ));
        }
    }
    if let Ok(open) = reads.open_violations().await {
        for (rule, n) in open {
            lake.violations.push((rule.as_str().to_string(), n as f64));
        }
    }
    let cache = reads.cache_stats();
    lake.read_cache = Some((cache.bytes as f64, cache.capacity as f64));
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(lake),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../assets/openapi.json"),
    )
        .into_response()
}
