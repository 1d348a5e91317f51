//! The shared transport against a misbehaving server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use cryptolake_model::Symbol;
use cryptolake_sources::Error;
use cryptolake_sources::binance::BinanceClient;
use cryptolake_sources::http::{HttpClient, RetryPolicy};

/// Serves `script[i]` for the i-th request (the last entry repeats).
async fn serve(
    script: Vec<(u16, Option<&'static str>, &'static str)>,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let script = Arc::new(script);
    let app = Router::new().route(
        "/api/v3/klines",
        get(move || {
            let h = h.clone();
            let script = script.clone();
            async move {
                let i = h.fetch_add(1, Ordering::SeqCst).min(script.len() - 1);
                let (status, retry_after, body) = script[i];
                let mut headers = HeaderMap::new();
                if let Some(r) = retry_after {
                    headers.insert("retry-after", HeaderValue::from_static(r));
                }
                (StatusCode::from_u16(status).unwrap(), headers, body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), hits)
}

fn client(base: &str) -> BinanceClient {
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 1 << 16,
    };
    BinanceClient::new(HttpClient::new(policy).unwrap(), base).unwrap()
}

const PAGE: &str =
    r#"[[1709251200000,"1.0","1.0","1.0","1.0","0",1709251259999,"0",0,"0","0","0"]]"#;

async fn fetch(base: &str) -> Result<cryptolake_sources::FetchedPage, Error> {
    let start = chrono::DateTime::from_timestamp_millis(1709251200000).unwrap();
    client(base)
        .fetch_klines_1m(
            &Symbol::parse("BTC-USDT").unwrap(),
            start,
            start + chrono::Duration::minutes(1),
        )
        .await
}

#[tokio::test]
async fn retries_server_errors_and_truncated_bodies() {
    let (base, hits) = serve(vec![
        (503, None, "busy"),
        (200, None, r#"[[1709251200000,"1.0""#),
        (200, None, "<html>oops</html>"),
        (200, None, PAGE),
    ])
    .await;
    let page = fetch(&base).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!(page.rows, 1);
    assert_eq!(&page.body[..], PAGE.as_bytes());
    assert!(page.fetched_at <= Utc::now());
}

#[tokio::test]
async fn honours_retry_after() {
    let (base, hits) = serve(vec![(429, Some("1"), ""), (200, None, PAGE)]).await;
    let started = Instant::now();
    fetch(&base).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn gives_up_with_the_last_error_named() {
    let (base, hits) = serve(vec![(500, None, "")]).await;
    let err = fetch(&base).await.unwrap_err();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let msg = err.to_string();
    assert!(
        msg.contains("4 attempts") && msg.contains("HTTP 500") && msg.contains(&base),
        "{msg}"
    );
}

#[tokio::test]
async fn ban_stops_at_once_and_client_errors_are_not_retried() {
    let (base, hits) = serve(vec![(418, Some("120"), "")]).await;
    let err = fetch(&base).await.unwrap_err();
    assert!(matches!(err, Error::Banned { .. }), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let (base, hits) = serve(vec![(
        400,
        None,
        r#"{"code":-1121,"msg":"Invalid symbol."}"#,
    )])
    .await;
    let err = fetch(&base).await.unwrap_err().to_string();
    assert!(
        err.contains("Invalid symbol") && err.contains("-1121"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retry_after_beyond_the_cap_fails_instead_of_sleeping() {
    let (base, hits) = serve(vec![(429, Some("3600"), "")]).await;
    let started = Instant::now();
    let err = fetch(&base).await.unwrap_err().to_string();
    assert!(err.contains("Retry-After 3600s"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}
