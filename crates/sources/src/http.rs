//! The HTTP transport every adapter shares: timeouts, retries with jittered exponential backoff,
//! `Retry-After`, and a body check so that a truncated or malformed body is retried, never stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use tracing::{debug, warn};

use crate::limit::Limiter;
use crate::{Error, Result};

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the request fails instead.
    pub max_retry_after: Duration,
    pub request_timeout: Duration,
    /// The largest response body read; a longer one is abandoned at this size and retried.
    pub max_body_bytes: usize,
}

/// The longest ban an exchange documents: Binance bans for 2 minutes up to 3 days. A 418's
/// `Retry-After` beyond it is taken as this long.
pub const MAX_BAN: Duration = Duration::from_secs(3 * 86_400);

/// The default body limit: a full page of any exchange is well under 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max_delay);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis.max(1)))
    }
}

/// A response that passed the caller's body check.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    pub fetched_at: DateTime<Utc>,
    pub headers: reqwest::header::HeaderMap,
}

/// What a pipeline's clients have sent, for metrics: requests by exchange and HTTP status (0
/// when no answer came), and seconds spent waiting for a request budget, by exchange.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: std::collections::BTreeMap<(String, u16), u64>,
    pub waits: std::collections::BTreeMap<String, f64>,
}

/// Where clients count their requests: shared by the clients of one pipeline, never global.
#[derive(Debug, Clone, Default)]
pub struct RequestStats(Arc<std::sync::Mutex<Stats>>);

impl RequestStats {
    /// A copy of the counts so far.
    pub fn snapshot(&self) -> Stats {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn count_request(&self, label: &str, status: u16) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *s.requests.entry((label.to_string(), status)).or_default() += 1;
    }

    fn count_wait(&self, label: &str, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *s.waits.entry(label.to_string()).or_default() += waited.as_secs_f64();
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    /// Whose requests these are, in [`RequestStats`].
    label: &'static str,
    stats: RequestStats,
    client: reqwest::Client,
    policy: RetryPolicy,
    limiter: Option<Arc<Limiter>>,
    /// The response header carrying the exchange's count of weight used in its window.
    used_weight_header: Option<&'static str>,
    /// A status that bans this client besides 418, with the shortest ban it means (Bybit's
    /// 403 "access too frequent": at least ten minutes).
    ban_status: Option<(u16, Duration)>,
}

/// What the caller's check says of a 200 response body.
pub enum BodyCheck<T> {
    Ok(T),
    /// Transient (truncated, malformed): retry.
    Retry(String),
    /// The exchange said no in a well-formed way: fail without retrying.
    Fail(String),
    /// The exchange said "too many requests" in a well-formed body (OKX's 50011, Bybit's
    /// 10006, both on HTTP 200): every request to it pauses, then this one is retried.
    Throttled(String),
}

impl HttpClient {
    pub fn new(policy: RetryPolicy) -> Result<HttpClient> {
        let client = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("cryptolake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(HttpClient {
            label: "other",
            stats: RequestStats::default(),
            client,
            policy,
            limiter: None,
            used_weight_header: None,
            ban_status: None,
        })
    }

    /// Names the exchange these requests go to, in [`stats`].
    pub fn with_label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// Every request (retries included) first takes its weight from `limiter`.
    /// Counts this client's requests in `stats`.
    pub fn with_stats(mut self, stats: RequestStats) -> Self {
        self.stats = stats;
        self
    }

    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Reads the exchange's own used-weight count from this response header.
    pub fn with_used_weight_header(mut self, header: &'static str) -> Self {
        self.used_weight_header = Some(header);
        self
    }

    /// Takes `status` as a ban of at least `least` (or the `Retry-After` given, if longer).
    pub fn with_ban_status(mut self, status: u16, least: Duration) -> Self {
        self.ban_status = Some((status, least));
        self
    }

    pub fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref()
    }

    async fn pause(&self, wait: Duration) {
        match &self.limiter {
            // Everyone talking to this exchange waits, not just this request.
            Some(l) => l.pause_for(wait),
            None => tokio::time::sleep(wait).await,
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// GET `url?params`, retrying transient failures; `check` validates a 200 body. Each
    /// attempt spends `weight` from the limiter; what an attempt came to is decided in one
    /// place, [`HttpClient::classify`].
    pub async fn get<T>(
        &self,
        url: &str,
        params: &[(String, String)],
        weight: u32,
        check: impl Fn(&[u8]) -> BodyCheck<T>,
    ) -> Result<(Response, T)> {
        let mut last = String::new();
        for attempt in 0..self.policy.max_attempts {
            if attempt > 0 {
                let wait = self.policy.backoff(attempt);
                debug!(url, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
            }
            if let Some(limiter) = &self.limiter {
                let asked = std::time::Instant::now();
                limiter
                    .acquire(weight)
                    .await
                    .map_err(|until| Error::Banned {
                        url: url.to_string(),
                        status: 418,
                        until,
                    })?;
                self.stats.count_wait(self.label, asked.elapsed());
            }
            match self.attempt(url, params, attempt, &check).await {
                Attempt::Done(response, v) => return Ok((response, v)),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { reason, pause } => {
                    warn!(url, attempt, error = %reason, pause_ms = pause.map(|p| p.as_millis() as u64), "attempt failed; retrying");
                    last = reason;
                    if let Some(wait) = pause {
                        self.pause(wait).await;
                    }
                }
            }
        }
        Err(Error::GaveUp {
            url: url.to_string(),
            attempts: self.policy.max_attempts,
            last,
        })
    }

    /// One request: sent, its body read whole, then classified.
    async fn attempt<T>(
        &self,
        url: &str,
        params: &[(String, String)],
        attempt: u32,
        check: &impl Fn(&[u8]) -> BodyCheck<T>,
    ) -> Attempt<T> {
        let resp = match self.client.get(url).query(params).send().await {
            Ok(r) => {
                self.stats.count_request(self.label, r.status().as_u16());
                r
            }
            Err(e) => {
                self.stats.count_request(self.label, 0);
                return Attempt::Retry {
                    reason: describe_reqwest(&e),
                    pause: None,
                };
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if let (Some(limiter), Some(name)) = (&self.limiter, self.used_weight_header)
            && let Some(used) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok())
        {
            limiter.observe_used(used);
        }
        let body = match read_limited(resp, self.policy.max_body_bytes).await {
            Ok(b) => b,
            Err(reason) => {
                return Attempt::Retry {
                    reason,
                    pause: None,
                };
            }
        };
        // Millisecond precision: the same instant survives keys, JSON and Parquet unchanged.
        let fetched_at =
            DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now);
        self.classify(
            url,
            Response {
                status: status.as_u16(),
                body,
                fetched_at,
                headers,
            },
            attempt,
            check,
        )
    }

    /// What a response means for the retry loop: 418 bans the exchange and stops; 429 and
    /// 5xx pause everyone (for `Retry-After`, unless it is past the cap) and retry; another
    /// non-2xx stops; a 2xx body is checked whole, and a malformed one is retried or refused.
    fn classify<T>(
        &self,
        url: &str,
        response: Response,
        attempt: u32,
        check: &impl Fn(&[u8]) -> BodyCheck<T>,
    ) -> Attempt<T> {
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let retry_after = retry_after(&response.headers);
        let ban = match self.ban_status {
            Some((code, least)) if status.as_u16() == code => {
                Some(retry_after.unwrap_or(least).max(least))
            }
            _ if status == StatusCode::IM_A_TEAPOT => {
                Some(retry_after.unwrap_or(self.policy.max_retry_after))
            }
            _ => None,
        };
        if let Some(wait) = ban {
            // An exchange's word is taken up to the longest ban it documents.
            let wait = wait.min(MAX_BAN);
            let until = response.fetched_at + chrono::Duration::from_std(wait).unwrap_or_default();
            if let Some(limiter) = &self.limiter {
                limiter.ban(until);
            }
            return Attempt::Fail(Error::Banned {
                url: url.to_string(),
                status: status.as_u16(),
                until,
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let pause = match retry_after {
                Some(w) if w > self.policy.max_retry_after => {
                    return Attempt::Fail(Error::Http {
                        url: url.to_string(),
                        status: status.as_u16(),
                        message: format!("Retry-After {}s is longer than the cap", w.as_secs()),
                    });
                }
                Some(w) => w,
                None => self.policy.backoff(attempt + 1),
            };
            return Attempt::Retry {
                reason: format!("HTTP {}", status.as_u16()),
                pause: Some(pause),
            };
        }
        if !status.is_success() {
            return Attempt::Fail(Error::Http {
                url: url.to_string(),
                status: status.as_u16(),
                message: snippet(&response.body),
            });
        }
        match check(&response.body) {
            BodyCheck::Ok(v) => Attempt::Done(response, v),
            BodyCheck::Retry(reason) => Attempt::Retry {
                reason: format!("malformed body: {reason}"),
                pause: None,
            },
            BodyCheck::Fail(reason) => Attempt::Fail(Error::Malformed {
                url: url.to_string(),
                reason,
            }),
            BodyCheck::Throttled(reason) => Attempt::Retry {
                reason,
                pause: Some(self.policy.backoff(attempt + 1)),
            },
        }
    }
}

/// What one attempt came to, and so what the retry loop does next.
enum Attempt<T> {
    /// A checked response.
    Done(Response, T),
    /// Try again after the backoff; `pause` first holds every request to the exchange.
    Retry {
        reason: String,
        pause: Option<Duration>,
    },
    /// Stop: retrying cannot help.
    Fail(Error),
}

/// Reads a body, stopping at `limit` bytes: a declared or actual length past it is an error
/// naming both, and no more than `limit` bytes are ever held.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    let too_long = |n: u64| {
        format!(
            "the body is {n} bytes or more, past the limit of {limit} bytes (max_response_size)"
        )
    };
    if let Some(n) = resp.content_length()
        && n > limit as u64
    {
        return Err(too_long(n));
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_long((body.len() + chunk.len()) as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(format!("reading body: {}", describe_reqwest(&e))),
        }
    }
}

/// What a page must look like before it is stored: at most `max_rows` rows (what the request
/// can hold), and at most [`PAGE_TOLERANCE`] rows opening outside the requested window.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    pub max_rows: usize,
    /// `[start, end)` of open times, when the exchange answers only the window asked for.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Rows a page may hold beyond its bounds: Coinbase adds a candle from before `start` now
/// and then.
pub const PAGE_TOLERANCE: usize = 2;

impl PageBounds {
    /// Checks the number of rows alone.
    pub fn check_rows(&self, rows: usize) -> std::result::Result<(), String> {
        if rows > self.max_rows + PAGE_TOLERANCE {
            return Err(format!(
                "the page has {rows} rows; a request for this window holds at most {}",
                self.max_rows
            ));
        }
        Ok(())
    }

    /// Checks a page's rows, given each row's open time where it has one (in units of
    /// `unit_ms` milliseconds); the reason names what is wrong.
    pub fn check(&self, heads: &[Option<i64>], unit_ms: i64) -> std::result::Result<(), String> {
        self.check_rows(heads.len())?;
        if let Some((start, end)) = self.window {
            let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
            let outside = heads
                .iter()
                .flatten()
                .filter(|t| {
                    let ms = t.saturating_mul(unit_ms);
                    ms < start || ms >= end
                })
                .count();
            if outside > PAGE_TOLERANCE {
                return Err(format!(
                    "{outside} rows open outside the requested window [{}, {})",
                    crate::http::fmt_ms(start),
                    crate::http::fmt_ms(end)
                ));
            }
        }
        Ok(())
    }
}

fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

/// The first element of each row of a JSON array (`[[t, ...], ...]`) where it is a whole
/// number, read without building the rows: what [`PageBounds::check`] needs of a Binance or
/// Coinbase page. A row of another shape gives `None` (parsing rejects it later, on its own).
pub fn row_heads(body: &[u8]) -> std::result::Result<Vec<Option<i64>>, String> {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Head(Option<i64>);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Head;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a row")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Head, A::Error> {
            let first: Option<serde_json::Value> = seq.next_element()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Head(first.and_then(|v| v.as_i64())))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Head, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Head(None))
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
        fn visit_unit<E>(self) -> std::result::Result<Head, E> {
            Ok(Head(None))
        }
    }
    impl<'de> Deserialize<'de> for Head {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Head, D::Error> {
            d.deserialize_any(V)
        }
    }
    let rows: Vec<Head> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON array of rows: {e}"))?;
    Ok(rows.into_iter().map(|h| h.0).collect())
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v.trim())
        .ok()?
        .with_timezone(&Utc);
    (when - Utc::now()).to_std().ok()
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!("could not connect: {e}")
    } else {
        e.to_string()
    }
}

/// Checks an exchange's REST root and returns it without a trailing slash.
pub fn check_base_url(base_url: &str) -> Result<String> {
    let trimmed = base_url.trim_end_matches('/');
    let bad = |reason: &str| Error::BaseUrl {
        url: cryptolake_model::redact(base_url),
        reason: reason.to_string(),
    };
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(bad("must start with http:// or https://"));
    }
    if trimmed.contains('?') || trimmed.contains('#') {
        return Err(bad("must not carry a query or fragment"));
    }
    if trimmed.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    Ok(trimmed.to_string())
}

/// The first bytes of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_past_their_bounds_are_named() {
        let t = |m: i64| DateTime::from_timestamp_millis(1_709_251_200_000 + m * 60_000).unwrap();
        let ms = |m: i64| Some(t(m).timestamp_millis());
        let b = PageBounds {
            max_rows: 10,
            window: Some((t(0), t(10))),
        };
        let ok: Vec<_> = (0..10).map(ms).collect();
        assert_eq!(b.check(&ok, 1), Ok(()));
        // Coinbase's extra candle from before the window is within the tolerance.
        let early: Vec<_> = (-1..10).map(ms).collect();
        assert_eq!(b.check(&early, 1), Ok(()));
        let long: Vec<_> = (0..13).map(ms).collect();
        assert!(b.check(&long, 1).unwrap_err().contains("13 rows"));
        let shifted: Vec<_> = (5..15).map(ms).collect();
        assert!(
            b.check(&shifted, 1)
                .unwrap_err()
                .contains("5 rows open outside the requested window")
        );
        // Seconds (Coinbase) are the same instants.
        let secs: Vec<_> = (0..10).map(|m| Some(t(m).timestamp())).collect();
        assert_eq!(b.check(&secs, 1000), Ok(()));
        // Kraken: only the count.
        assert!(
            PageBounds {
                max_rows: 721,
                window: None
            }
            .check_rows(724)
            .is_err()
        );
        assert_eq!(
            row_heads(br#"[[1,"a"],[2],["x"],{"a":1},3]"#).unwrap(),
            vec![Some(1), Some(2), None, None, None]
        );
        assert!(
            row_heads(b"{\"code\":-1}")
                .unwrap_err()
                .contains("not a JSON array")
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for attempt in 0..40 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(5)).collect();
        assert!(samples.len() > 1, "backoff should be jittered");
    }
}
