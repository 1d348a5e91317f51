//! The HTTP API, `/api/v1`: JSON by default, `?format=csv` for CSV and `?format=arrow` for an
//! Arrow IPC stream. Every answer is a query of the pipeline's read-only SQL session (with its
//! limits), or a pipeline call; errors are JSON `{"error": ...}` with a fitting status.

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
use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_query::{OutputFormat, QueryEngine, render};
use serde_json::Value;

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
fn query_error(e: cryptolake_query::Error) -> Response {
    use cryptolake_query::Error as Q;
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

/// The response format asked for.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

fn format_of(p: &HashMap<String, String>) -> Result<Format, Response> {
    match p.get("format").map(String::as_str) {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some("arrow") => Ok(Format::Arrow),
        Some(other) => Err(bad_request(format!(
            "format {other:?}: expected json, csv or arrow"
        ))),
    }
}

/// `batches` in `format`.
fn table(schema: &SchemaRef, batches: &[RecordBatch], format: Format) -> Response {
    let rendered = match format {
        Format::Json => render(batches, OutputFormat::Json)
            .map(|t| ("application/json", Bytes::from(t.into_bytes()))),
        Format::Csv => render(batches, OutputFormat::Csv)
            .map(|t| ("text/csv; charset=utf-8", Bytes::from(t.into_bytes()))),
        Format::Arrow => {
            let mut buf = Vec::new();
            let written = (|| {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
                for b in batches {
                    w.write(b)?;
                }
                w.finish()
            })();
            written
                .map(|_| ("application/vnd.apache.arrow.stream", Bytes::from(buf)))
                .map_err(cryptolake_query::Error::Output)
        }
    };
    match rendered {
        Ok((kind, body)) => ([(header::CONTENT_TYPE, kind)], body).into_response(),
        Err(e) => query_error(e),
    }
}

/// Runs `sql` on the API's shared session and answers with its rows in the asked format.
async fn answer(state: &AppState, sql: &str, p: &HashMap<String, String>) -> Response {
    answer_on(&state.api_engine, state, sql, p).await
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

/// `AND exchange = '…' AND symbol = '…'` for the filters given (both are validated names:
/// an exchange from the known list, a symbol of letters, digits and one dash).
fn pair_filter(exchange: Option<Exchange>, symbol: Option<&Symbol>) -> String {
    let mut f = String::new();
    if let Some(e) = exchange {
        f.push_str(&format!(" AND exchange = '{e}'"));
    }
    if let Some(s) = symbol {
        f.push_str(&format!(" AND symbol = '{s}'"));
    }
    f
}

fn micros(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Every exchange and symbol silver holds, with its first and last hour.
const SYMBOLS_SQL: &str = "SELECT exchange, symbol, min(open_time) AS first_hour, max(open_time) AS last_hour, count(*) AS hours \
     FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol";

async fn symbols(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    answer(&state, SYMBOLS_SQL, &p).await
}

/// Candles of one exchange and symbol, oldest first: hourly from silver, daily from gold, in
/// `[from, to)`. Without `from`, the `limit` periods before `to` (default: now), which is how
/// the chart loads older candles as it is scrolled back.
async fn candles(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let parsed = (|| {
        let exchange = exchange_param(&p)?
            .ok_or_else(|| bad_request("exchange: required (binance, coinbase, …)".into()))?;
        let symbol = symbol_param(&p)?
            .ok_or_else(|| bad_request("symbol: required (BTC-USDT, …)".into()))?;
        let interval = match p.get("interval").map(String::as_str) {
            None | Some("1h") => Duration::hours(1),
            Some("1d") => Duration::days(1),
            Some(other) => {
                return Err(bad_request(format!(
                    "interval {other:?}: expected 1h or 1d"
                )));
            }
        };
        let limit = limit_param(&p, 2000, 20_000)?;
        let to = time_param(&p, "to")?.unwrap_or_else(|| state.pipeline.now() + interval);
        let from = match time_param(&p, "from")? {
            Some(f) => f,
            None => to - interval * i32::try_from(limit).unwrap_or(i32::MAX),
        };
        if from >= to {
            return Err(bad_request("from: must be before to".into()));
        }
        Ok((exchange, symbol, interval, limit, from, to))
    })();
    let (exchange, symbol, interval, limit, from, to) = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let filter = pair_filter(Some(exchange), Some(&symbol));
    let (d0, d1) = (from.date_naive(), to.date_naive());
    let sql = if interval == Duration::hours(1) {
        format!(
            "SELECT open_time AS time, open, high, low, close, volume, minutes_present, \
             (minute_mask | empty_mask) = {full} AS complete \
             FROM crypto_analytics.ohlcv_1h \
             WHERE date >= DATE '{d0}' AND date <= DATE '{d1}' \
             AND open_time >= TIMESTAMP '{f}' AND open_time < TIMESTAMP '{t}'{filter} \
             ORDER BY open_time LIMIT {limit}",
            full = (1i64 << 60) - 1,
            f = micros(from),
            t = micros(to),
        )
    } else {
        format!(
            "SELECT arrow_cast(date, 'Timestamp(Microsecond, Some(\"UTC\"))') AS time, open, high, low, close, volume, hours_present, \
             is_complete AS complete \
             FROM crypto_gold.ohlcv_1d \
             WHERE date >= DATE '{d0}' AND date < DATE '{d1}'{filter} \
             ORDER BY date LIMIT {limit}"
        )
    };
    answer(&state, &sql, &p).await
}

/// Freshness of every pair silver holds: its newest complete hour and how long ago it ended.
pub(crate) async fn freshness_rows(
    state: &AppState,
) -> Result<Vec<cryptolake_pipeline::Freshness>, Response> {
    let batches = state
        .api_engine
        .query("SELECT DISTINCT exchange, symbol FROM crypto_analytics.ohlcv_1h ORDER BY 1, 2")
        .await
        .map_err(query_error)?;
    let mut pairs = Vec::new();
    for b in &batches {
        let (e, s) = (b.column(0), b.column(1));
        let text = |a: &arrow::array::ArrayRef, i: usize| {
            arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
        };
        for i in 0..b.num_rows() {
            if let (Ok(ex), Ok(sym)) = (text(e, i).parse::<Exchange>(), Symbol::parse(&text(s, i)))
            {
                pairs.push((ex, sym));
            }
        }
    }
    state
        .pipeline
        .freshness_of(&pairs)
        .await
        .map_err(pipeline_error)
}

async fn freshness(State(state): State<Arc<AppState>>) -> Response {
    match freshness_rows(&state).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => r,
    }
}

/// One row per exchange and symbol: what the overview page shows. Computed at most every few
/// seconds, whoever asks.
async fn overview(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    if let Err(r) = format_of(&p).and_then(|f| match f {
        Format::Json => Ok(()),
        _ => Err(bad_request("the overview is JSON only".into())),
    }) {
        return r;
    }
    let cached = state
        .overview
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < crate::OVERVIEW_TTL)
        .map(|(_, v)| v.clone());
    if let Some(v) = cached {
        return axum::Json(v).into_response();
    }
    match compute_overview(&state).await {
        Ok(v) => {
            *state.overview.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((std::time::Instant::now(), v.clone()));
            axum::Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn compute_overview(state: &AppState) -> Result<Value, Response> {
    let now = state.pipeline.now();
    let day_ago = micros(now - Duration::hours(24));
    let sql = format!(
        "WITH s AS (SELECT exchange, symbol FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol), \
         d AS (SELECT exchange, symbol, count(*) AS days_covered, \
                      sum(CASE WHEN is_complete THEN 1 ELSE 0 END) AS days_complete \
               FROM crypto_gold.ohlcv_1d GROUP BY exchange, symbol), \
         g AS (SELECT exchange, symbol, \
                      sum(CASE WHEN status = 'missing' THEN minutes ELSE 0 END) AS missing_minutes, \
                      sum(CASE WHEN status = 'unconfirmed' THEN minutes ELSE 0 END) AS unconfirmed_minutes, \
                      sum(CASE WHEN status = 'confirmed' THEN minutes ELSE 0 END) AS confirmed_minutes, \
                      sum(CASE WHEN status = 'unservable' THEN minutes ELSE 0 END) AS unservable_minutes \
               FROM crypto_ops.gaps GROUP BY exchange, symbol), \
         q AS (SELECT exchange, symbol, count(*) AS violations_24h FROM crypto_ops.quality_results \
               WHERE status = 'violation' AND checked_at >= TIMESTAMP '{day_ago}' GROUP BY exchange, symbol) \
         SELECT s.exchange, s.symbol, coalesce(d.days_covered, 0) AS days_covered, \
                coalesce(d.days_complete, 0) AS days_complete, \
                coalesce(g.missing_minutes, 0) AS missing_minutes, \
                coalesce(g.unconfirmed_minutes, 0) AS unconfirmed_minutes, \
                coalesce(g.confirmed_minutes, 0) AS confirmed_minutes, \
                coalesce(g.unservable_minutes, 0) AS unservable_minutes, \
                coalesce(q.violations_24h, 0) AS violations_24h \
         FROM s LEFT JOIN d ON s.exchange = d.exchange AND s.symbol = d.symbol \
         LEFT JOIN g ON s.exchange = g.exchange AND s.symbol = g.symbol \
         LEFT JOIN q ON s.exchange = q.exchange AND s.symbol = q.symbol \
         ORDER BY s.exchange, s.symbol"
    );
    let engine = &state.api_engine;
    let rows = engine.query(&sql).await.map_err(query_error)?;
    let mut out: Vec<serde_json::Map<String, serde_json::Value>> =
        render(&rows, OutputFormat::Json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let fresh = freshness_rows(state).await?;
    let last = last_runs(engine).await;
    let threshold = state.pipeline.settings().quality.max_age_minutes * 60;
    for row in &mut out {
        let ex = row
            .get("exchange")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let sym = row
            .get("symbol")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let f = fresh
            .iter()
            .find(|f| f.exchange.as_str() == ex && f.symbol.as_str() == sym);
        let lag = f.and_then(|f| f.lag).map(|d| d.as_secs_f64());
        row.insert(
            "last_complete_hour".into(),
            f.and_then(|f| f.newest_complete_hour)
                .map(|t| serde_json::Value::from(t.to_rfc3339()))
                .unwrap_or(serde_json::Value::Null),
        );
        row.insert("lag_seconds".into(), lag.into());
        row.insert(
            "stale".into(),
            lag.is_none_or(|l| l > threshold as f64).into(),
        );
        // The exchange's last ingest, else the last silver build (a lake filled by import or
        // by the benchmark's generator has no ingest runs).
        let run = last
            .get(&format!("ingest:{ex}"))
            .or_else(|| last.get("silver"))
            .cloned();
        row.insert(
            "last_run_status".into(),
            run.map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null),
        );
    }
    Ok(serde_json::json!({
        "generated_at": now.to_rfc3339(),
        "freshness_threshold_seconds": threshold,
        "rows": out,
    }))
}

/// The status of the newest record of each step (`ingest:binance`, `silver`, …).
async fn last_runs(engine: &QueryEngine) -> HashMap<String, String> {
    let sql = "SELECT step, status FROM (SELECT step, status, \
               row_number() OVER (PARTITION BY step ORDER BY started_at DESC) AS n \
               FROM crypto_ops.runs) WHERE n = 1";
    let mut out = HashMap::new();
    if let Ok(batches) = engine.query(sql).await {
        for b in &batches {
            for i in 0..b.num_rows() {
                let text = |c: usize| {
                    arrow::util::display::array_value_to_string(b.column(c), i).unwrap_or_default()
                };
                out.insert(text(0), text(1));
            }
        }
    }
    out
}

async fn runs(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let limit = match limit_param(&p, 100, 10_000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let sql = format!(
        "SELECT run_id, step, started_at, finished_at, \
         round(extract(epoch FROM finished_at - started_at), 3) AS seconds, status, inputs, outputs, \
         rows, quarantined, error FROM crypto_ops.runs ORDER BY started_at DESC, step LIMIT {limit}"
    );
    answer(&state, &sql, &p).await
}

async fn gaps(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (exchange, symbol) = match (exchange_param(&p), symbol_param(&p)) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let limit = match limit_param(&p, 1000, 100_000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let sql = format!(
        "SELECT exchange, symbol, gap_start, gap_end, minutes, status, fetches FROM crypto_ops.gaps \
         WHERE true{} ORDER BY exchange, symbol, gap_start LIMIT {limit}",
        pair_filter(exchange, symbol.as_ref())
    );
    answer(&state, &sql, &p).await
}

async fn quality(State(state): State<Arc<AppState>>, Query(p): Params) -> Response {
    let limit = match limit_param(&p, 200, 10_000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let only = match p.get("status").map(String::as_str) {
        None => String::new(),
        Some(s @ ("violation" | "pass")) => format!(" AND status = '{s}'"),
        Some(other) => {
            return bad_request(format!("status {other:?}: expected violation or pass"));
        }
    };
    let sql = format!(
        "SELECT checked_at, run_id, step, rule, action, status, exchange, symbol, subject, observed, \
         threshold, message FROM crypto_ops.quality_results WHERE true{only} \
         ORDER BY checked_at DESC, rule LIMIT {limit}"
    );
    answer(&state, &sql, &p).await
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
    let Ok(_slot) = state.sql_slots.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    // A statement of its own session: its memory pool is its own, so a hostile one cannot take
    // the memory the API's reads need.
    let engine = match state.pipeline.query_engine().await {
        Ok(e) => e,
        Err(e) => return pipeline_error(e),
    };
    answer_on(&engine, &state, statement.trim().trim_end_matches(';'), &p).await
}

/// `/metrics`: counters from this process, and what the lake says now.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut lake = LakeGauges::default();
    if let Ok(rows) = freshness_rows(&state).await {
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
    {
        let engine = &state.api_engine;
        let day_ago = micros(state.pipeline.now() - Duration::hours(24));
        let text = |b: &RecordBatch, c: usize, i: usize| {
            arrow::util::display::array_value_to_string(b.column(c), i).unwrap_or_default()
        };
        if let Ok(batches) = engine
            .query("SELECT exchange, symbol, status, sum(minutes) FROM crypto_ops.gaps GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
            .await
        {
            for b in &batches {
                for i in 0..b.num_rows() {
                    lake.gap_minutes.push((
                        text(b, 0, i),
                        text(b, 1, i),
                        text(b, 2, i),
                        text(b, 3, i).parse().unwrap_or(0.0),
                    ));
                }
            }
        }
        if let Ok(batches) = engine
            .query(&format!(
                "SELECT rule, count(*) FROM crypto_ops.quality_results WHERE status = 'violation' \
                 AND checked_at >= TIMESTAMP '{day_ago}' GROUP BY rule ORDER BY rule"
            ))
            .await
        {
            for b in &batches {
                for i in 0..b.num_rows() {
                    lake.violations
                        .push((text(b, 0, i), text(b, 1, i).parse().unwrap_or(0.0)));
                }
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&lake),
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
