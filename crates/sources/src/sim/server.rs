//! The simulated exchange's HTTP server (Binance klines format).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::market::SimMarket;
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

struct SimState {
    market: SimMarket,
    clock: SimClock,
    requests: AtomicU64,
}

/// A running simulated exchange on 127.0.0.1.
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub async fn start(market: SimMarket, clock: SimClock, port: u16) -> Result<SimServer> {
        let state = Arc::new(SimState {
            market,
            clock,
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/api/v3/ping", get(|| async { "{}" }))
            .route("/api/v3/klines", get(klines))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::Sim(format!("binding 127.0.0.1:{port}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Sim(e.to_string()))?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
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

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
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

fn api_error(code: i64, msg: &str) -> Response {
    let body = serde_json::json!({ "code": code, "msg": msg }).to_string();
    (StatusCode::BAD_REQUEST, body).into_response()
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

async fn klines(
    State(state): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let Some(name) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return api_error(
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    let Some(symbol) = state.market.by_exchange_name(name).cloned() else {
        return api_error(-1121, "Invalid symbol.");
    };
    if q.get("interval").map(String::as_str) != Some("1m") {
        return api_error(-1120, "Invalid interval.");
    }
    let (start, end, limit) = match (
        param_i64(&q, "startTime"),
        param_i64(&q, "endTime"),
        param_i64(&q, "limit"),
    ) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l.unwrap_or(500)),
        (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => {
            return api_error(
                -1100,
                &format!(
                    "Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
                ),
            );
        }
    };
    if !(1..=1000).contains(&limit) {
        return api_error(-1130, "Data sent for parameter 'limit' is not valid.");
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
    let body = state
        .market
        .binance_klines(&symbol, first_open, last_open, limit as usize, now);
    let mut resp = (StatusCode::OK, body).into_response();
    let weight = state.requests.load(Ordering::Relaxed) * 2;
    if let Ok(v) = HeaderValue::from_str(&weight.to_string()) {
        resp.headers_mut().insert("x-mbx-used-weight-1m", v);
    }
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}
