//! The simulated exchange's HTTP server: Binance, Coinbase and Kraken candle endpoints on one
//! port, each in its exchange's real format, with request-weight accounting per client and
//! faults injected on demand.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use super::market::SimMarket;
use crate::binance::{FUTURES_KLINES_WEIGHT, KLINES_WEIGHT, exchange_symbol};
use crate::kraken::symbol_for_pair;
use crate::limit::Budget;
use crate::{Error, Result};

/// What "now" is for the simulated exchange: candles after it do not exist yet, and the candle
/// containing it is still open.
#[derive(Debug, Clone, Copy)]
pub enum SimClock {
    Real,
    Fixed(DateTime<Utc>),
}

impl SimClock {
    fn now(self) -> DateTime<Utc> {
        match self {
            SimClock::Real => Utc::now(),
            SimClock::Fixed(t) => t,
        }
    }
}

/// A fault the simulated exchange can inject into a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: 1`.
    TooManyRequests,
    /// HTTP 418 with `Retry-After`: the client is banned for a while.
    Banned,
    /// HTTP 500, 502 or 503.
    ServerError,
    /// The answer comes only after the client's timeout.
    Timeout,
    /// Headers and part of the body, then the connection is dropped.
    Reset,
    /// HTTP 200 with only the first part of the body (well framed, so only parsing notices).
    Truncated,
    /// HTTP 200 with a body that is not the exchange's format at all.
    Malformed,
    /// A correct page with some candles repeated.
    Duplicates,
    /// A correct page with the candles shuffled.
    OutOfOrder,
    /// HTTP 418 with a `Retry-After` of ten years.
    LongBan,
    /// HTTP 200 with a body of 2 GiB, streamed (rows repeated, never a valid page).
    Oversized,
    /// HTTP 200 with 20,000 well-formed rows, whatever the window asked for.
    Overlong,
    /// A correct page holding only its newest third (venues that page newest first: OKX,
    /// Bybit); older rows of the range still exist. Other venues serve the page whole.
    ShortPage,
}

/// How many bytes an [`Fault::Oversized`] body has.
pub const OVERSIZED_BYTES: u64 = 2 << 30;
/// How many rows an [`Fault::Overlong`] page has.
pub const OVERLONG_ROWS: usize = 20_000;

impl Fault {
    /// The faults drawn by a random fault rate: everything but the 418 ban, which stops an
    /// exchange and is injected on its own.
    pub const RANDOM: [Fault; 9] = [
        Fault::TooManyRequests,
        Fault::ServerError,
        Fault::Timeout,
        Fault::Reset,
        Fault::Truncated,
        Fault::Malformed,
        Fault::Duplicates,
        Fault::OutOfOrder,
        Fault::ShortPage,
    ];

    /// Whether `exchange` can get this fault: a short page only where pages run newest first.
    pub fn applies_to(self, exchange: Exchange) -> bool {
        self != Fault::ShortPage || newest_first(exchange)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::TooManyRequests => "429",
            Fault::Banned => "418",
            Fault::ServerError => "5xx",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Truncated => "truncated",
            Fault::Malformed => "malformed",
            Fault::Duplicates => "duplicates",
            Fault::OutOfOrder => "out-of-order",
            Fault::LongBan => "long-ban",
            Fault::Oversized => "oversized",
            Fault::Overlong => "overlong",
            Fault::ShortPage => "short-page",
        }
    }

    /// The hostile faults, injected only when asked for by name.
    pub const HOSTILE: [Fault; 4] = [
        Fault::Banned,
        Fault::LongBan,
        Fault::Oversized,
        Fault::Overlong,
    ];

    pub fn parse(text: &str) -> Option<Fault> {
        Fault::HOSTILE
            .into_iter()
            .chain(Fault::RANDOM)
            .find(|f| f.as_str() == text)
    }
}

/// Which faults to inject and how often.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Share of requests that get a fault, 0.0 to 1.0.
    pub rate: f64,
    /// The faults to use, taken in turn so that every kind shows up.
    pub kinds: Vec<Fault>,
    pub seed: u64,
    /// How long a `Timeout` answer is held back.
    pub delay: Duration,
}

impl FaultPlan {
    pub fn none() -> FaultPlan {
        FaultPlan {
            rate: 0.0,
            kinds: Vec::new(),
            seed: 0,
            delay: Duration::from_secs(3),
        }
    }

    pub fn random(rate: f64, seed: u64) -> FaultPlan {
        FaultPlan {
            rate,
            kinds: Fault::RANDOM.to_vec(),
            seed,
            delay: Duration::from_secs(3),
        }
    }
}

/// How the simulated exchange behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub clock: SimClock,
    pub faults: FaultPlan,
    /// The weight budgets the exchange enforces per client address: past them it answers 429.
    pub budgets: HashMap<Exchange, Budget>,
}

impl SimOptions {
    pub fn new(clock: SimClock) -> SimOptions {
        SimOptions {
            clock,
            faults: FaultPlan::none(),
            budgets: Exchange::ALL
                .into_iter()
                .map(|e| (e, crate::ExchangeClient::default_budget(e)))
                .collect(),
        }
    }
}

/// What the simulated exchange saw of one exchange's endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeStats {
    pub requests: u64,
    /// The most weight one client spent in one budget window.
    pub max_window_weight: u32,
    /// Requests refused because the client was over its budget.
    pub over_budget: u64,
    pub faults: HashMap<&'static str, u64>,
}

struct Faults {
    plan: FaultPlan,
    rng: StdRng,
    next_kind: usize,
}

struct SimState {
    market: SimMarket,
    clock: SimClock,
    budgets: HashMap<Exchange, Budget>,
    faults: Mutex<Faults>,
    /// Weight per (client, exchange, window index).
    weights: Mutex<HashMap<(IpAddr, Exchange, i64), u32>>,
    stats: Mutex<HashMap<Exchange, ExchangeStats>>,
}

/// A running simulated exchange on 127.0.0.1.
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// Starts on `127.0.0.1:port` (0 picks a free port) with no faults.
    pub async fn start(market: SimMarket, clock: SimClock, port: u16) -> Result<SimServer> {
        Self::start_with(market, SimOptions::new(clock), port).await
    }

    pub async fn start_with(
        market: SimMarket,
        options: SimOptions,
        port: u16,
    ) -> Result<SimServer> {
        let state = Arc::new(SimState {
            market,
            clock: options.clock,
            budgets: options.budgets,
            faults: Mutex::new(Faults {
                rng: StdRng::seed_from_u64(options.faults.seed),
                plan: options.faults,
                next_kind: 0,
            }),
            weights: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/api/v3/ping", get(|| async { "{}" }))
            .route("/api/v3/klines", get(binance_spot_klines))
            .route("/fapi/v1/klines", get(binance_futures_klines))
            .route("/fapi/v1/markPriceKlines", get(binance_mark_klines))
            .route(
                "/api/v5/market/history-mark-price-candles",
                get(okx_history_mark_candles),
            )
            .route(
                "/api/v5/market/mark-price-candles",
                get(okx_recent_mark_candles),
            )
            .route("/v5/market/mark-price-kline", get(bybit_mark_kline))
            .route("/products/{product}/candles", get(coinbase_candles))
            .route("/0/public/OHLC", get(kraken_ohlc))
            .route("/api/v5/market/history-candles", get(okx_history_candles))
            .route("/api/v5/market/candles", get(okx_recent_candles))
            .route("/api/v5/public/instruments", get(okx_instruments))
            .route("/v5/market/kline", get(bybit_kline))
            .route("/v5/market/instruments-info", get(bybit_instruments))
            .route("/fapi/v1/fundingRate", get(binance_funding))
            .route("/api/v5/public/funding-rate-history", get(okx_funding))
            .route("/v5/market/funding/history", get(bybit_funding))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::Sim(format!("binding 127.0.0.1:{port}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Sim(e.to_string()))?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(SimServer {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far, all exchanges.
    pub fn requests(&self) -> u64 {
        let stats = self.state.stats.lock().expect("stats lock");
        stats.values().map(|s| s.requests).sum()
    }

    pub fn stats(&self, exchange: Exchange) -> ExchangeStats {
        let stats = self.state.stats.lock().expect("stats lock");
        stats.get(&exchange).cloned().unwrap_or_default()
    }

    /// Changes the faults from the next request on.
    pub fn set_faults(&self, plan: FaultPlan) {
        let mut f = self.state.faults.lock().expect("faults lock");
        f.rng = StdRng::seed_from_u64(plan.seed);
        f.plan = plan;
        f.next_kind = 0;
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What the accounting decided for one request.
enum Admission {
    /// Go ahead; the client's weight used so far in this window.
    Ok(u32),
    /// Over budget: answer 429 with this many seconds to wait.
    OverBudget(u64),
}

impl SimState {
    fn admit(&self, client: IpAddr, exchange: Exchange, weight: u32) -> Admission {
        let budget = self.budgets.get(&exchange).copied();
        let interval_ms = budget.map_or(60_000, |b| b.interval.as_millis().max(1) as i64);
        let now_ms = Utc::now().timestamp_millis();
        let window = now_ms.div_euclid(interval_ms);
        let used = {
            let mut w = self.weights.lock().expect("weights lock");
            w.retain(|(_, _, win), _| *win >= window - 1);
            let used = w.entry((client, exchange, window)).or_default();
            *used += weight;
            *used
        };
        let mut stats = self.stats.lock().expect("stats lock");
        let s = stats.entry(exchange).or_default();
        s.requests += 1;
        s.max_window_weight = s.max_window_weight.max(used);
        match budget {
            Some(b) if used > b.weight => {
                s.over_budget += 1;
                let wait_ms = (window + 1) * interval_ms - now_ms;
                Admission::OverBudget((wait_ms as u64).div_ceil(1000).max(1))
            }
            _ => Admission::Ok(used),
        }
    }

    fn draw_fault(&self, exchange: Exchange) -> Option<(Fault, Duration, u64)> {
        let mut f = self.faults.lock().expect("faults lock");
        if f.plan.kinds.is_empty() || f.plan.rate <= 0.0 {
            return None;
        }
        let rate = f.plan.rate;
        if !f.rng.random_bool(rate.min(1.0)) {
            return None;
        }
        let n = f.plan.kinds.len();
        let mut kind = f.plan.kinds[f.next_kind % n];
        f.next_kind += 1;
        // A kind this venue cannot get gives way to the next one (if any can apply).
        for _ in 0..n {
            if kind.applies_to(exchange) {
                break;
            }
            kind = f.plan.kinds[f.next_kind % n];
            f.next_kind += 1;
        }
        if !kind.applies_to(exchange) {
            return None;
        }
        let salt = f.rng.random::<u64>();
        let delay = f.plan.delay;
        drop(f);
        let mut stats = self.stats.lock().expect("stats lock");
        *stats
            .entry(exchange)
            .or_default()
            .faults
            .entry(kind.as_str())
            .or_default() += 1;
        Some((kind, delay, salt))
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

fn with_header(mut resp: Response, name: &'static str, value: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// Shuffles or repeats the rows of a JSON array body (Binance, Coinbase) or of the pair's array
/// in a Kraken result.
fn rework_rows(body: &str, fault: Fault, salt: u64) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let rows = match &mut value {
        serde_json::Value::Array(rows) => Some(rows),
        // OKX: `data`; Bybit: `result.list`; Kraken: the pair's array in `result`.
        serde_json::Value::Object(o) if o.contains_key("data") => {
            o.get_mut("data").and_then(|d| d.as_array_mut())
        }
        serde_json::Value::Object(o) if o.contains_key("retCode") => o
            .get_mut("result")
            .and_then(|r| r.get_mut("list"))
            .and_then(|l| l.as_array_mut()),
        serde_json::Value::Object(o) => o
            .get_mut("result")
            .and_then(|r| r.as_object_mut())
            .and_then(|r| r.iter_mut().find(|(k, _)| *k != "last"))
            .and_then(|(_, v)| v.as_array_mut()),
        _ => None,
    };
    if let Some(rows) = rows
        && rows.len() > 1
    {
        let mut rng = StdRng::seed_from_u64(salt);
        match fault {
            // Newest first: the page keeps its newest third.
            Fault::ShortPage => rows.truncate(rows.len().div_ceil(3)),
            Fault::Duplicates => {
                for _ in 0..rows.len().div_ceil(4) {
                    let i = rng.random_range(0..rows.len());
                    let j = rng.random_range(0..=rows.len());
                    let row = rows[i].clone();
                    rows.insert(j, row);
                }
            }
            _ => {
                // Fisher-Yates with the seeded generator.
                for i in (1..rows.len()).rev() {
                    let j = rng.random_range(0..=i);
                    rows.swap(i, j);
                }
            }
        }
    }
    value.to_string()
}

/// Serves `body` (a correct answer) through the fault drawn for this request, if any.
async fn deliver(
    state: &SimState,
    exchange: Exchange,
    client: IpAddr,
    weight: u32,
    body: String,
) -> Response {
    let used = match state.admit(client, exchange, weight) {
        Admission::Ok(used) => used,
        Admission::OverBudget(secs) => {
            if let Some(resp) = venue_throttled(exchange, true) {
                return with_header(resp, "retry-after", secs.to_string());
            }
            let resp = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"code":-1003,"msg":"Too much request weight used; please use the websocket for live updates to avoid polling the API."}"#.to_string(),
            );
            return with_header(resp, "retry-after", secs.to_string());
        }
    };
    let fault = state.draw_fault(exchange);
    let weight_header = |resp: Response| {
        if matches!(exchange, Exchange::Binance | Exchange::BinanceFutures) {
            with_header(resp, "x-mbx-used-weight-1m", used.to_string())
        } else {
            resp
        }
    };
    let Some((fault, delay, salt)) = fault else {
        return weight_header(json_response(StatusCode::OK, body));
    };
    match fault {
        Fault::TooManyRequests if venue_throttled(exchange, false).is_some() => {
            venue_throttled(exchange, false).unwrap_or_else(|| banned(1))
        }
        Fault::Banned | Fault::LongBan if exchange_is_bybit(exchange) => {
            json_response(StatusCode::FORBIDDEN, "access too frequent".into())
        }
        Fault::TooManyRequests => with_header(
            json_response(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"code":-1003,"msg":"Too many requests."}"#.into(),
            ),
            "retry-after",
            "1".into(),
        ),
        Fault::Banned => banned(120),
        Fault::ServerError => {
            let status = [
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ][(salt % 3) as usize];
            (status, "<html><body>upstream error</body></html>").into_response()
        }
        Fault::Timeout => {
            tokio::time::sleep(delay).await;
            weight_header(json_response(StatusCode::OK, body))
        }
        Fault::Reset => {
            let bytes = Bytes::from(body.into_bytes());
            let half = bytes.slice(..bytes.len() / 2);
            let chunks: Vec<std::result::Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                )),
            ];
            let stream = futures::stream::iter(chunks);
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            resp
        }
        Fault::Truncated => {
            let cut = (body.len() / 2).max(1).min(body.len());
            let truncated = String::from_utf8_lossy(&body.as_bytes()[..cut]).into_owned();
            weight_header(json_response(StatusCode::OK, truncated))
        }
        Fault::Malformed => json_response(
            StatusCode::OK,
            "<html><head><title>502 Bad Gateway</title></head></html>".into(),
        ),
        Fault::Duplicates | Fault::OutOfOrder | Fault::ShortPage => weight_header(json_response(
            StatusCode::OK,
            rework_rows(&body, fault, salt),
        )),
        Fault::LongBan => banned(10 * 365 * 86_400),
        Fault::Oversized => {
            let row = Bytes::from(body.trim_start_matches('[').to_string() + ",");
            let chunk = Bytes::from(row.repeat((65_536 / row.len().max(1)).max(1)));
            let chunks = OVERSIZED_BYTES / chunk.len() as u64;
            let stream = futures::stream::iter(
                std::iter::once(Bytes::from_static(b"["))
                    .chain(std::iter::repeat_n(chunk, chunks as usize))
                    .map(Ok::<_, std::io::Error>),
            );
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            weight_header(resp)
        }
        Fault::Overlong => weight_header(json_response(StatusCode::OK, overlong(&body, exchange))),
    }
}

/// Whether `exchange` pages newest first (OKX, Bybit).
fn newest_first(exchange: Exchange) -> bool {
    matches!(
        exchange,
        Exchange::Okx | Exchange::OkxSwap | Exchange::Bybit | Exchange::BybitLinear
    )
}

fn exchange_is_bybit(exchange: Exchange) -> bool {
    matches!(exchange, Exchange::Bybit | Exchange::BybitLinear)
}

/// How OKX and Bybit say "too many requests": OKX code 50011 (HTTP 429 past the budget, HTTP
/// 200 otherwise), Bybit retCode 10006 on HTTP 200. `None` for the other venues.
fn venue_throttled(exchange: Exchange, over_budget: bool) -> Option<Response> {
    match exchange {
        Exchange::Okx | Exchange::OkxSwap => Some(okx_error(
            if over_budget {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            },
            "50011",
            "Too Many Requests",
        )),
        Exchange::Bybit | Exchange::BybitLinear => Some(bybit_error(10006, "Too many visits!")),
        _ => None,
    }
}

/// Binance's 418: this address is banned for `seconds`.
fn banned(seconds: u64) -> Response {
    with_header(
        json_response(
            StatusCode::IM_A_TEAPOT,
            r#"{"code":-1003,"msg":"Way too many requests; IP banned."}"#.into(),
        ),
        "retry-after",
        seconds.to_string(),
    )
}

/// [`OVERLONG_ROWS`] rows a minute apart from the page's first, in the page's own format.
fn overlong(body: &str, exchange: Exchange) -> String {
    let Ok(rows) = serde_json::from_str::<Vec<serde_json::Value>>(body) else {
        return body.to_string();
    };
    let Some(first) = rows.first() else {
        return body.to_string();
    };
    let step = match exchange {
        Exchange::Coinbase => 60,
        _ => 60_000,
    };
    let start = first[0].as_i64().unwrap_or(0);
    let out: Vec<serde_json::Value> = (0..OVERLONG_ROWS as i64)
        .map(|i| {
            let mut row = first.clone();
            row[0] = serde_json::Value::from(start + i * step);
            row
        })
        .collect();
    serde_json::Value::Array(out).to_string()
}

fn binance_error(code: i64, msg: &str) -> Response {
    let body = serde_json::json!({ "code": code, "msg": msg }).to_string();
    json_response(StatusCode::BAD_REQUEST, body)
}

/// A numeric query parameter; `Err` holds the parameter's name.
fn param_i64<'a>(
    q: &HashMap<String, String>,
    name: &'a str,
) -> std::result::Result<Option<i64>, &'a str> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| name),
    }
}

async fn binance_spot_klines(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    binance_klines(&state, Exchange::Binance, peer, &q, false).await
}

async fn binance_futures_klines(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    binance_klines(&state, Exchange::BinanceFutures, peer, &q, false).await
}

async fn binance_mark_klines(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    binance_klines(&state, Exchange::BinanceFutures, peer, &q, true).await
}

/// Klines, or with `mark` the mark price klines of a USDⓈ-M perpetual.
async fn binance_klines(
    state: &SimState,
    exchange: Exchange,
    peer: SocketAddr,
    q: &HashMap<String, String>,
    mark: bool,
) -> Response {
    let Some(name) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return binance_error(
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    let Some(symbol) = state
        .market
        .listed(exchange)
        .into_iter()
        .find(|s| exchange_symbol(s) == *name)
    else {
        return binance_error(-1121, "Invalid symbol.");
    };
    if q.get("interval").map(String::as_str) != Some("1m") {
        return binance_error(-1120, "Invalid interval.");
    }
    let (start, end, limit) = match (
        param_i64(q, "startTime"),
        param_i64(q, "endTime"),
        param_i64(q, "limit"),
    ) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l.unwrap_or(500)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return binance_error(
                -1100,
                &format!(
                    "Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
                ),
            );
        }
    };
    let max_limit = if exchange == Exchange::BinanceFutures {
        1500
    } else {
        1000
    };
    if !(1..=max_limit).contains(&limit) {
        return binance_error(-1130, "Data sent for parameter 'limit' is not valid.");
    }
    let now = state.clock.now();
    let now_minute = now.timestamp_millis().div_euclid(60_000) * 60_000;
    let last_open = end
        .map_or(now_minute, |e| e.min(now_minute))
        .div_euclid(60_000)
        * 60_000;
    let first_open = match start {
        Some(s) => (s + 59_999).div_euclid(60_000) * 60_000,
        None => last_open - (limit - 1) * 60_000,
    };
    let body = match mark {
        true => {
            state
                .market
                .binance_mark_klines(&symbol, first_open, last_open, limit as usize, now)
        }
        false => state.market.klines_of(
            exchange,
            &symbol,
            first_open,
            last_open,
            limit as usize,
            now,
        ),
    };
    let weight = if exchange == Exchange::BinanceFutures {
        FUTURES_KLINES_WEIGHT
    } else {
        KLINES_WEIGHT
    };
    deliver(state, exchange, peer.ip(), weight, body).await
}

fn coinbase_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "message": message }).to_string(),
    )
}

async fn coinbase_candles(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(product): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(symbol) = Symbol::parse(&product)
        .ok()
        .filter(|s| state.market.is_listed(Exchange::Coinbase, s))
    else {
        return coinbase_error(StatusCode::NOT_FOUND, "NotFound");
    };
    if q.get("granularity").map(String::as_str) != Some("60") {
        return coinbase_error(
            StatusCode::BAD_REQUEST,
            "Unsupported granularity: the simulated exchange serves 60 only",
        );
    }
    // A parameter that is present must be an RFC 3339 time; `Err` names it.
    let time = |name: &'static str| -> std::result::Result<Option<i64>, &'static str> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.timestamp()))
                .map_err(|_| name),
        }
    };
    let (start, end) = match (time("start"), time("end")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(name), _) | (_, Err(name)) => {
            return coinbase_error(StatusCode::BAD_REQUEST, &format!("Invalid {name}"));
        }
    };
    let now = state.clock.now();
    let end = end.unwrap_or(now.timestamp());
    let start = start.unwrap_or(end - 299 * 60);
    if end < start {
        return coinbase_error(StatusCode::BAD_REQUEST, "start must be before end");
    }
    // Both ends inclusive, on the minute grid.
    let first = (start + 59).div_euclid(60) * 60;
    let last = end.div_euclid(60) * 60;
    if (last - first) / 60 + 1 > 300 {
        return coinbase_error(
            StatusCode::BAD_REQUEST,
            "granularity too small for the requested time range. Count of aggregations requested exceeds 300",
        );
    }
    // Coinbase sometimes answers with a candle from before `start`: so does the simulation,
    // for one request in three.
    let first = if first.div_euclid(60) % 3 == 0 {
        first - 60
    } else {
        first
    };
    let body = state.market.coinbase_candles(&symbol, first, last, now);
    deliver(&state, Exchange::Coinbase, peer.ip(), 1, body).await
}

fn kraken_error(error: &str) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({ "error": [error] }).to_string(),
    )
}

/// The key Kraken answers under: the legacy eight-letter name for the old assets against fiat.
fn kraken_result_key(symbol: &Symbol) -> String {
    let pair = crate::kraken::pair_name(symbol);
    let (base, quote) = pair.split_at(pair.len() - symbol.quote().len().min(pair.len()));
    if ["XBT", "ETH", "XDG", "LTC"].contains(&base) && ["USD", "EUR"].contains(&quote) {
        format!("X{base}Z{quote}")
    } else {
        pair
    }
}

async fn kraken_ohlc(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(symbol) = q
        .get("pair")
        .and_then(|p| symbol_for_pair(p))
        .filter(|s| state.market.is_listed(Exchange::Kraken, s))
    else {
        return kraken_error("EQuery:Unknown asset pair");
    };
    if q.get("interval").is_some_and(|i| i != "1") {
        return kraken_error("EGeneral:Invalid arguments:interval");
    }
    let since = match param_i64(&q, "since") {
        Ok(s) => s,
        Err(_) => return kraken_error("EGeneral:Invalid arguments:since"),
    };
    let body = state.market.kraken_ohlc(
        &symbol,
        &kraken_result_key(&symbol),
        since,
        state.clock.now(),
    );
    deliver(&state, Exchange::Kraken, peer.ip(), 1, body).await
}

fn okx_error(status: StatusCode, code: &str, msg: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "code": code, "msg": msg, "data": [] }).to_string(),
    )
}

/// The market and symbol an OKX `instId` names, if the simulated OKX lists it.
fn okx_instrument(state: &SimState, inst_id: &str) -> Option<(Exchange, Symbol)> {
    let (exchange, name) = match inst_id.strip_suffix("-SWAP") {
        Some(name) => (Exchange::OkxSwap, name),
        None => (Exchange::Okx, inst_id),
    };
    let symbol = Symbol::parse(name).ok()?;
    state
        .market
        .is_listed(exchange, &symbol)
        .then_some((exchange, symbol))
}

async fn okx_history_candles(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    okx_candles(&state, peer, &q, false, false).await
}

async fn okx_recent_candles(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    okx_candles(&state, peer, &q, true, false).await
}

async fn okx_history_mark_candles(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    okx_candles(&state, peer, &q, false, true).await
}

async fn okx_recent_mark_candles(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    okx_candles(&state, peer, &q, true, true).await
}

/// `history-candles` (at most 100 rows) or `candles` (`recent`: at most 300 rows, of the
/// newest 1,440 only). `after` and `before` are exclusive; rows come newest first.
async fn okx_candles(
    state: &SimState,
    peer: SocketAddr,
    q: &HashMap<String, String>,
    recent: bool,
    mark: bool,
) -> Response {
    let Some(inst_id) = q.get("instId").filter(|s| !s.is_empty()) else {
        return okx_error(
            StatusCode::BAD_REQUEST,
            "50014",
            "Parameter instId can not be empty",
        );
    };
    let Some((exchange, symbol)) = okx_instrument(state, inst_id) else {
        return okx_error(
            StatusCode::OK,
            "51001",
            &format!("Instrument ID {inst_id} does not exist on this server"),
        );
    };
    if q.get("bar").is_some_and(|b| b != "1m") {
        return okx_error(StatusCode::OK, "51000", "Parameter bar error");
    }
    let (after, before, limit) = match (
        param_i64(q, "after"),
        param_i64(q, "before"),
        param_i64(q, "limit"),
    ) {
        (Ok(a), Ok(b), Ok(l)) => (a, b, l.unwrap_or(100)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return okx_error(StatusCode::OK, "51000", &format!("Parameter {name} error"));
        }
    };
    // Mark price candles come 100 at a time from either endpoint, and only for swaps.
    let most = if recent && !mark { 300 } else { 100 };
    if mark && exchange != Exchange::OkxSwap {
        return okx_error(StatusCode::OK, "51001", "Instrument ID does not exist");
    }
    if !(1..=most).contains(&limit) {
        return okx_error(StatusCode::OK, "51000", "Parameter limit error");
    }
    let now = state.clock.now();
    let now_minute = now.timestamp_millis().div_euclid(60_000) * 60_000;
    // Exclusive cursors: older than `after`, newer than `before`.
    let last_ms = after.map_or(now_minute, |a| a - 1);
    let mut first_ms = before.map_or(i64::MIN / 2, |b| b + 1);
    if recent {
        first_ms = first_ms.max(now_minute - (crate::okx::CANDLES_SERVED_MINUTES - 1) * 60_000);
    }
    let range = super::market::NewestFirst {
        first_ms,
        last_ms,
        limit: limit as usize,
    };
    let body = match mark {
        true => state.market.okx_mark_candles(&symbol, range, now),
        false => state.market.okx_candles(exchange, &symbol, range, now),
    };
    deliver(state, exchange, peer.ip(), 1, body).await
}

async fn okx_instruments(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let exchange = match q.get("instType").map(String::as_str) {
        Some("SPOT") => Exchange::Okx,
        Some("SWAP") => Exchange::OkxSwap,
        _ => return okx_error(StatusCode::OK, "51000", "Parameter instType error"),
    };
    let data: Vec<serde_json::Value> = state
        .market
        .listed(exchange)
        .iter()
        .map(|s| {
            let id = crate::okx::inst_id(exchange, s);
            serde_json::json!({
                "instId": id,
                "instType": q.get("instType"),
                "baseCcy": s.base(),
                "quoteCcy": s.quote(),
                "state": "live",
                "listTime": state.market.listing_ms(exchange, s).to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({ "code": "0", "msg": "", "data": data }).to_string();
    // Instruments are not candles: no fault is drawn, only the budget counts.
    admit_only(&state, exchange, peer.ip(), body)
}

fn bybit_error(code: i64, msg: &str) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "retCode": code,
            "retMsg": msg,
            "result": {},
            "retExtInfo": {},
            "time": Utc::now().timestamp_millis()
        })
        .to_string(),
    )
}

fn bybit_category(q: &HashMap<String, String>) -> Option<Exchange> {
    match q.get("category").map(String::as_str) {
        Some("spot") => Some(Exchange::Bybit),
        Some("linear") => Some(Exchange::BybitLinear),
        _ => None,
    }
}

/// `GET /v5/market/kline`: `start` and `end` inclusive, the latest `limit` rows of the range
/// (at most 1,000), newest first.
async fn bybit_kline(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    bybit_klines(&state, peer, &q, false).await
}

async fn bybit_mark_kline(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    bybit_klines(&state, peer, &q, true).await
}

/// `kline`, or with `mark` `mark-price-kline` (linear only).
async fn bybit_klines(
    state: &SimState,
    peer: SocketAddr,
    q: &HashMap<String, String>,
    mark: bool,
) -> Response {
    let Some(exchange) = bybit_category(q).filter(|e| !mark || *e == Exchange::BybitLinear) else {
        return bybit_error(10001, "params error: category invalid");
    };
    let Some(symbol) = q.get("symbol").and_then(|name| {
        state
            .market
            .listed(exchange)
            .into_iter()
            .find(|s| crate::bybit::instrument(s) == *name)
    }) else {
        return bybit_error(10001, "params error: symbol invalid");
    };
    if q.get("interval").map(String::as_str) != Some("1") {
        return bybit_error(10001, "params error: interval invalid");
    }
    let (start, end, limit) = match (
        param_i64(q, "start"),
        param_i64(q, "end"),
        param_i64(q, "limit"),
    ) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l.unwrap_or(200)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return bybit_error(10001, &format!("params error: {name} invalid"));
        }
    };
    if !(1..=1000).contains(&limit) {
        return bybit_error(10001, "params error: limit invalid");
    }
    let now = state.clock.now();
    let range = super::market::NewestFirst {
        first_ms: start.unwrap_or(i64::MIN / 2),
        last_ms: end.unwrap_or(now.timestamp_millis()),
        limit: limit as usize,
    };
    let body = match mark {
        true => state.market.bybit_mark_kline(&symbol, range, now),
        false => state.market.bybit_kline(exchange, &symbol, range, now),
    };
    deliver(state, exchange, peer.ip(), 1, body).await
}

async fn bybit_instruments(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(exchange) = bybit_category(&q) else {
        return bybit_error(10001, "params error: category invalid");
    };
    let list: Vec<serde_json::Value> = state
        .market
        .listed(exchange)
        .iter()
        .map(|s| {
            let mut i = serde_json::json!({
                "symbol": crate::bybit::instrument(s),
                "baseCoin": s.base(),
                "quoteCoin": s.quote(),
                "status": "Trading",
            });
            // Only linear instruments carry a launch time.
            if exchange == Exchange::BybitLinear {
                i["launchTime"] = state.market.listing_ms(exchange, s).to_string().into();
            }
            i
        })
        .collect();
    let body = serde_json::json!({
        "retCode": 0,
        "retMsg": "OK",
        "result": { "category": q.get("category"), "list": list, "nextPageCursor": "" },
        "retExtInfo": {},
        "time": Utc::now().timestamp_millis()
    })
    .to_string();
    admit_only(&state, exchange, peer.ip(), body)
}

/// Serves `body` after the budget's accounting, with no fault drawn.
fn admit_only(state: &SimState, exchange: Exchange, client: IpAddr, body: String) -> Response {
    match state.admit(client, exchange, 1) {
        Admission::Ok(_) => json_response(StatusCode::OK, body),
        Admission::OverBudget(secs) => with_header(
            venue_throttled(exchange, true).unwrap_or_else(|| banned(1)),
            "retry-after",
            secs.to_string(),
        ),
    }
}

/// `GET /fapi/v1/fundingRate`: oldest first from `startTime`, else the latest `limit` (100 by
/// default, at most 1000) up to `endTime`; funding times a few milliseconds after the slot.
async fn binance_funding(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let exchange = Exchange::BinanceFutures;
    let Some(symbol) = q.get("symbol").and_then(|name| {
        state
            .market
            .listed(exchange)
            .into_iter()
            .find(|s| exchange_symbol(s) == *name)
    }) else {
        return binance_error(-1121, "Invalid symbol.");
    };
    let (start, end, limit) = match (
        param_i64(&q, "startTime"),
        param_i64(&q, "endTime"),
        param_i64(&q, "limit"),
    ) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l.unwrap_or(100)),
        _ => return binance_error(-1100, "Illegal characters found in a parameter."),
    };
    if !(1..=1000).contains(&limit) {
        return binance_error(-1130, "Data sent for parameter 'limit' is not valid.");
    }
    let now = state.clock.now().timestamp_millis();
    let last = end.unwrap_or(now).min(now);
    let mut rows = match start {
        Some(s) => state
            .market
            .funding(exchange, &symbol, s, last, limit as usize, false),
        None => {
            let mut r =
                state
                    .market
                    .funding(exchange, &symbol, i64::MIN / 2, last, limit as usize, true);
            r.reverse();
            r
        }
    };
    // The funding time, not the slot, is what `startTime` and `endTime` compare with.
    rows.retain(|f| start.is_none_or(|s| f.time_ms >= s) && f.time_ms <= last);
    let body: Vec<serde_json::Value> = rows
        .iter()
        .map(|f| {
            serde_json::json!({
                "symbol": exchange_symbol(&symbol),
                "fundingTime": f.time_ms,
                "fundingRate": format!("{:.8}", f.rate),
                "markPrice": format!("{:.8}", f.mark_price),
            })
        })
        .collect();
    deliver(
        &state,
        exchange,
        peer.ip(),
        1,
        serde_json::Value::Array(body).to_string(),
    )
    .await
}

/// `GET /api/v5/public/funding-rate-history`: newest first, exclusive `after`/`before` on the
/// funding time, at most 100, only the last three months.
async fn okx_funding(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inst_id = q.get("instId").cloned().unwrap_or_default();
    let Some((exchange, symbol)) =
        okx_instrument(&state, &inst_id).filter(|(e, _)| *e == Exchange::OkxSwap)
    else {
        return okx_error(
            StatusCode::OK,
            "51001",
            &format!("Instrument ID {inst_id} does not exist on this server"),
        );
    };
    let (after, before, limit) = match (
        param_i64(&q, "after"),
        param_i64(&q, "before"),
        param_i64(&q, "limit"),
    ) {
        (Ok(a), Ok(b), Ok(l)) => (a, b, l.unwrap_or(100)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return okx_error(StatusCode::OK, "51000", &format!("Parameter {name} error"));
        }
    };
    if !(1..=100).contains(&limit) {
        return okx_error(StatusCode::OK, "51000", "Parameter limit error");
    }
    let now = state.clock.now().timestamp_millis();
    let oldest = now - super::market::OKX_FUNDING_DAYS * 86_400_000;
    let last = after.map_or(now, |a| a - 1).min(now);
    let first = before.map_or(oldest, |b| b + 1).max(oldest);
    let rows = state
        .market
        .funding(exchange, &symbol, first, last, limit as usize, true);
    let data: Vec<serde_json::Value> = rows
        .iter()
        .map(|f| {
            serde_json::json!({
                "instId": inst_id,
                "instType": "SWAP",
                "fundingRate": format!("{:.8}", f.rate),
                "realizedRate": format!("{:.8}", f.rate),
                "fundingTime": f.time_ms.to_string(),
                "method": "current_period",
            })
        })
        .collect();
    let body = serde_json::json!({ "code": "0", "msg": "", "data": data }).to_string();
    deliver(&state, exchange, peer.ip(), 1, body).await
}

/// `GET /v5/market/funding/history`: linear only, `startTime` only with `endTime`, the latest
/// `limit` (at most 200) of the range, newest first.
async fn bybit_funding(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let exchange = match bybit_category(&q) {
        Some(Exchange::BybitLinear) => Exchange::BybitLinear,
        _ => {
            return bybit_error(
                10001,
                "params error: category only support linear or inverse",
            );
        }
    };
    let Some(symbol) = q.get("symbol").and_then(|name| {
        state
            .market
            .listed(exchange)
            .into_iter()
            .find(|s| crate::bybit::instrument(s) == *name)
    }) else {
        return bybit_error(10001, "params error: symbol invalid");
    };
    let (start, end, limit) = match (
        param_i64(&q, "startTime"),
        param_i64(&q, "endTime"),
        param_i64(&q, "limit"),
    ) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l.unwrap_or(200)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return bybit_error(10001, &format!("params error: {name} invalid"));
        }
    };
    if start.is_some() && end.is_none() {
        return bybit_error(10001, "params error: endTime is required with startTime");
    }
    if !(1..=200).contains(&limit) {
        return bybit_error(10001, "params error: limit invalid");
    }
    let now = state.clock.now().timestamp_millis();
    let rows = state.market.funding(
        exchange,
        &symbol,
        start.unwrap_or(i64::MIN / 2),
        end.unwrap_or(now).min(now),
        limit as usize,
        true,
    );
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|f| {
            serde_json::json!({
                "symbol": crate::bybit::instrument(&symbol),
                "fundingRate": format!("{:.8}", f.rate),
                "fundingRateTimestamp": f.time_ms.to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "retCode": 0,
        "retMsg": "OK",
        "result": { "category": "linear", "list": list },
        "retExtInfo": {},
        "time": Utc::now().timestamp_millis()
    })
    .to_string();
    deliver(&state, exchange, peer.ip(), 1, body).await
}
