//! The dashboard: pages and their assets, compiled into the binary, so they work with no network
//! at all (no CDN, no font or script from elsewhere; the Content-Security-Policy says so too).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// A page or asset. Pages are checked on every visit (their ETag answers with 304 when
/// unchanged); scripts, styles and the chart library are kept by the browser for five
/// minutes, then checked the same way.
fn asset(kind: &'static str, body: &'static str) -> Response {
    let cache = match kind {
        HTML => "no-cache",
        _ => "public, max-age=300",
    };
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)],
        body,
    )
        .into_response()
}

const HTML: &str = "text/html; charset=utf-8";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(HTML, include_str!("../assets/overview.html")) }),
        )
        .route(
            "/symbol",
            get(|| async { asset(HTML, include_str!("../assets/symbol.html")) }),
        )
        .route(
            "/pipeline",
            get(|| async { asset(HTML, include_str!("../assets/pipeline.html")) }),
        )
        .route(
            "/sql",
            get(|| async { asset(HTML, include_str!("../assets/sql.html")) }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/app.js"),
                )
            }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../assets/app.css")) }),
        )
        .route(
            "/assets/lightweight-charts.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/vendor/lightweight-charts.standalone.production.js"),
                )
            }),
        )
        .route(
            "/assets/NOTICE-lightweight-charts",
            get(|| async {
                asset(
                    "text/plain; charset=utf-8",
                    concat!(
                        include_str!("../assets/vendor/NOTICE-lightweight-charts"),
                        "\n",
                        include_str!("../assets/vendor/LICENSE-lightweight-charts")
                    ),
                )
            }),
        )
}
