//! `cryptolake serve`: one long-running process that runs the hourly job on its schedule and is
//! the window onto the lake: a dashboard in the browser, an HTTP API under `/api/v1`, Prometheus
//! metrics, and health checks. It is a front end of the pipeline library like the CLI and the
//! Lambda functions: the job is [`cryptolake_pipeline::schedule::run`], the answers come from
//! the pipeline's read model (the user's own SQL from its SQL session with its limits), and
//! step events become metrics.

mod api;
pub mod metrics;
mod pages;
pub mod pg;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cryptolake_pipeline::{EventSink, Pipeline, RunSummary, StepEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] cryptolake_pipeline::Error),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// The cron of the hourly job; `None` serves the lake read-only.
    pub schedule: Option<cryptolake_pipeline::CronSchedule>,
    /// The PostgreSQL wire protocol, when asked for.
    pub pg: Option<pg::PgOptions>,
}

/// How long a failed run may stand before `/readyz` says the process is not ready.
const FAILED_RUN_GRACE: Duration = Duration::from_secs(2 * 3600);
/// The largest request body accepted (a SQL statement).
const MAX_BODY: usize = 64 << 10;

/// The outcome of the last scheduled run, for `/readyz`.
#[derive(Debug, Clone)]
struct LastRun {
    at: DateTime<Utc>,
    failed_since: Option<DateTime<Utc>>,
}

pub(crate) struct AppState {
    pipeline: Arc<Pipeline>,
    metrics: Arc<metrics::Metrics>,
    token: Option<String>,
    max_rows: usize,
    last_run: Mutex<Option<LastRun>>,
    scheduled: bool,
    hosts: Hosts,
}

/// The names a request may give as its `Host`: IP addresses (the bound one, or any when bound
/// to all), `localhost`, and `server.allowed_hosts`. Any other name is a page that rebinds its
/// own DNS name to this machine (DNS rebinding), and is refused.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    bound: std::net::IpAddr,
    names: Vec<String>,
}

impl Hosts {
    fn new(bound: std::net::IpAddr, names: &[String]) -> Hosts {
        Hosts {
            bound,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `host` (a `Host` header's value, or an origin's host, with or without a port)
    /// is one this server answers to.
    fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => ip == self.bound || ip.is_loopback() || self.bound.is_unspecified(),
            Err(_) => name == "localhost" || self.names.iter().any(|n| n == name),
        }
    }
}

/// `host` without its port: `[::1]:8080` is `[::1]`, `example:80` is `example`.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.find(']').map_or(host, |i| &host[..i + 2]),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    }
}

/// How long a client has to send a request's headers, from the moment the server starts
/// waiting for them (an idle kept-alive connection waits the same): then it is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The address is loopback, or a token is configured: anything else is refused, with why.
pub fn check_binding(addr: &SocketAddr, has_token: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "refusing to serve on {addr} without an access token: anyone who can reach it could read the lake and run SQL. Set CRYPTOLAKE_SERVER_TOKEN (16 characters or more; clients send `Authorization: Bearer TOKEN`), or bind 127.0.0.1"
    )))
}

/// The pipeline with step events turned into `metrics` (and passed on to `also`).
pub fn with_metrics(
    pipeline: Pipeline,
    metrics: Arc<metrics::Metrics>,
    also: Option<EventSink>,
) -> Pipeline {
    let sink: EventSink = Arc::new(move |e: &StepEvent| {
        metrics.record(e);
        if let Some(a) = &also {
            a(e);
        }
    });
    pipeline.with_events(sink)
}

/// Serves until `stop` yields (SIGINT or SIGTERM in the binary). With a schedule, the first
/// signal also lets the run in progress finish, and a second aborts it, as `schedule` does.
/// `on_ready` gets the bound addresses, HTTP and the PostgreSQL protocol's (port 0 picks one).
pub async fn serve(
    pipeline: Pipeline,
    metrics: Arc<metrics::Metrics>,
    options: ServeOptions,
    mut stop: UnboundedReceiver<()>,
    on_ready: &(dyn Fn(SocketAddr, Option<SocketAddr>) + Sync),
    on_run: &(dyn Fn(&RunSummary) + Sync),
) -> Result<()> {
    let settings = pipeline.settings().clone();
    let token = settings
        .server
        .token
        .as_ref()
        .map(|t| t.expose().to_string());
    check_binding(&options.addr, token.is_some())?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: options.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let pg_server = match &options.pg {
        Some(o) => Some(pg::PgServer::bind(pipeline.served_query_engine().await?, o).await?),
        None => None,
    };
    let pg_addr = pg_server.as_ref().map(|p| p.local_addr()).transpose()?;
    let pipeline = Arc::new(pipeline);
    // The first requests find the gold table and the newest silver dates in memory.
    let warming = pipeline.clone();
    tokio::spawn(async move {
        if let Err(e) = warming.reads().warm().await {
            warn!(error = %e, "could not read the lake ahead of the first requests");
        }
        // Then changes by other processes are looked for in the background, once a second.
        warming.reads().watch().await;
    });
    let state = Arc::new(AppState {
        pipeline: pipeline.clone(),
        metrics,
        token,
        max_rows: settings.server.max_rows,
        last_run: Mutex::new(None),
        scheduled: options.schedule.is_some(),
        hosts: Hosts::new(addr.ip(), &settings.server.allowed_hosts),
    });
    let app = router(state.clone());
    info!(%addr, pg = ?pg_addr, schedule = ?options.schedule, "serving");
    on_ready(addr, pg_addr);

    // One signal stops the server and the scheduler; the scheduler sees every signal, so a
    // second one aborts its run.
    let (sched_tx, sched_rx) = tokio::sync::mpsc::unbounded_channel();
    let (down_tx, down_rx) = tokio::sync::watch::channel(false);
    let (down_http, mut down_job, down_pg) = (down_rx.clone(), down_rx.clone(), down_rx);
    tokio::spawn(async move {
        while stop.recv().await.is_some() {
            let _ = sched_tx.send(());
            let _ = down_tx.send(true);
        }
    });
    let http = serve_http(listener, app, down_http);
    let job = async {
        let Some(cron) = &options.schedule else {
            let _ = down_job.wait_for(|d| *d).await;
            return Ok(());
        };
        let record = |s: &RunSummary| {
            let failed = !s.problems().is_empty();
            let mut last = state.last_run.lock().unwrap_or_else(|p| p.into_inner());
            let now = pipeline.now();
            let failed_since = match (&*last, failed) {
                (_, false) => None,
                (
                    Some(LastRun {
                        failed_since: Some(t),
                        ..
                    }),
                    true,
                ) => Some(*t),
                (_, true) => Some(now),
            };
            *last = Some(LastRun {
                at: now,
                failed_since,
            });
            on_run(s);
        };
        cryptolake_pipeline::schedule::run(&pipeline, cron, sched_rx, &record)
            .await
            .map_err(Error::from)
    };
    let pg = async move {
        match pg_server {
            Some(p) => p.run(down_pg).await,
            None => Ok(()),
        }
    };
    let (served, scheduled, pg_served) = tokio::join!(http, job, pg);
    if let Err(e) = &scheduled {
        warn!(error = %e, "the scheduler stopped with an error");
    }
    served?;
    pg_served?;
    scheduled
}

/// Serves HTTP/1.1 on `listener` until `down` turns true, then lets the requests in flight
/// finish. A connection that does not send a whole request head within [`HEADER_TIMEOUT`]
/// (idle between requests, or sending its headers slowly) is closed.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    mut down: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = down.wait_for(|d| *d) => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut down = down.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                r = connection.as_mut() => r,
                _ = async { drop(down.wait_for(|d| *d).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(client = %peer, error = %e, "http: connection ended");
            }
        });
    }
}

fn router(state: Arc<AppState>) -> Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), authorize);
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .route("/metrics", axum::routing::get(api::metrics))
        .route("/readyz", axum::routing::get(readyz))
        .layer(auth)
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(entity_tags))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

/// Every response counted by status code in `/metrics`.
async fn count_responses(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.metrics.record_response(resp.status().as_u16());
    resp
}

async fn not_found(req: Request) -> Response {
    api::error(
        StatusCode::NOT_FOUND,
        &format!("no such page or endpoint: {}", req.uri().path()),
    )
}

/// Requests for this server only, from its own pages only:
/// - a `Host` the server does not answer to is refused (421): a page elsewhere whose name was
///   rebound to this machine's address;
/// - a request that can change something or run SQL (anything but GET, HEAD and OPTIONS)
///   from another origin is refused (403): its `Origin` (or, without one, `Sec-Fetch-Site`)
///   must be this server's;
/// - a body must arrive within [`BODY_TIMEOUT`].
async fn same_origin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(h) = host
        && !state.hosts.allows(h)
    {
        return api::error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this server does not answer to the host name {:?}: add it to server.allowed_hosts (CRYPTOLAKE_SERVER_ALLOWED_HOSTS) if it is one of its names",
                host_name(h)
            ),
        );
    }
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let foreign = match origin {
            Some(o) => {
                let origin_host = o
                    .split_once("://")
                    .map(|(_, rest)| rest.trim_end_matches('/'));
                match (origin_host, host) {
                    (Some(oh), Some(h)) => !oh.eq_ignore_ascii_case(h) || !state.hosts.allows(oh),
                    _ => true,
                }
            }
            None => matches!(fetch_site, Some("cross-site" | "same-site")),
        };
        if foreign {
            return api::error(
                StatusCode::FORBIDDEN,
                &format!(
                    "refused: a request from another origin ({}) may not run SQL or change anything here",
                    origin.unwrap_or("another site")
                ),
            );
        }
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return api::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body is larger than {} KiB", MAX_BODY >> 10),
                );
            }
            Err(_) => {
                return api::error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                );
            }
        };
        return next
            .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
            .await;
    }
    next.run(req).await
}

/// Every error answer is JSON `{"error": …}`, also those the router makes itself (a wrong
/// method, a body past the limit).
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not take {method}"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {} KiB", MAX_BODY >> 10)
        }
        s => format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or("error")),
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = api::error(status, &message);
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Pages never load anything from elsewhere, and are not framed.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Another origin's page can neither embed these answers nor keep a handle on these pages.
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Whether an `If-None-Match` header names `tag` (or `*`).
fn matches_tag(if_none_match: &str, tag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// Successful GET answers carry an ETag; a repeat that names it gets 304 and no body, so a
/// dashboard's refresh of an unchanged answer costs a few bytes. Answers without a cache
/// policy of their own are revalidated each time (`no-cache`).
async fn entity_tags(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    let asked = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // An answer the read model encoded comes tagged already.
    let given = parts
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tag, body) = match given {
        Some(tag) => (tag, body),
        None => {
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    return api::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("the answer could not be read: {e}"),
                    );
                }
            };
            let tag = cryptolake_pipeline::reads::entity_tag(&bytes);
            if let Ok(v) = HeaderValue::from_str(&tag) {
                parts.headers.insert(header::ETAG, v);
            }
            (tag, axum::body::Body::from(bytes))
        }
    };
    if !parts.headers.contains_key(header::CACHE_CONTROL) {
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if asked.is_some_and(|a| matches_tag(&a, &tag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    Response::from_parts(parts, body)
}

const TOKEN_COOKIE: &str = "cryptolake_token";

/// Equal without telling, by its timing, how much of it matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// With a token configured, a request carries it as `Authorization: Bearer`, or in the cookie
/// a page visit with `?token=` sets.
async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{TOKEN_COOKIE}=")))
        .map(str::to_string)
        .next();
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    if bearer.is_some_and(|b| same(b, token)) || cookie.is_some_and(|c| same(&c, token)) {
        return next.run(req).await;
    }
    if let Some(q) = query
        && same(&q, token)
    {
        // A page opened with ?token= keeps it in a cookie, then drops it from the address. The
        // redirect stays on this server: `//elsewhere/x` (or `/\\elsewhere`) would be read by a
        // browser as another host.
        let path = format!("/{}", req.uri().path().trim_start_matches(['/', '\\']));
        let mut resp = axum::response::Redirect::to(&path).into_response();
        // Behind a TLS proxy the cookie is never sent in the clear.
        let secure = req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        )) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    api::error(
        StatusCode::UNAUTHORIZED,
        "this server needs its access token: send `Authorization: Bearer TOKEN`, or open a page once with ?token=TOKEN",
    )
}

/// Ready: the lake answers a listing, and the last scheduled run has not been failing for
/// longer than [`FAILED_RUN_GRACE`].
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Err(e) = state.pipeline.probe().await {
        return api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the lake does not answer: {e}"),
        );
    }
    let last = state
        .last_run
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(LastRun {
        failed_since: Some(since),
        at,
    }) = last
    {
        let failing = (at - since).to_std().unwrap_or_default();
        if failing > FAILED_RUN_GRACE {
            return api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the hourly job has been failing since {since}"),
            );
        }
    }
    let mode = if state.scheduled {
        "scheduled"
    } else {
        "read-only"
    };
    (StatusCode::OK, format!("ready ({mode})\n")).into_response()
}
