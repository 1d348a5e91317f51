//! `cryptolake serve` through the binary: the API's answers against `cryptolake sql`'s for the
//! same questions, Arrow responses in pyarrow and Polars, `/metrics` through Prometheus's own
//! text parser, the access token rule, the schedule inside the server, and the dashboard in a
//! real browser (Debian's chromium, driven over WebDriver by chromedriver).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};
use serde_json::Value;
use support::run::*;

/// A running `cryptolake serve` and its base URL; stopped with SIGTERM when dropped.
struct Served {
    child: Option<Child>,
    url: String,
}

impl Served {
    fn start(dir: &Path, args: &[&str], envs: &[(String, String)]) -> Served {
        Served::start_on(dir, &dir.join("lake").display().to_string(), args, envs)
    }

    /// `serve` on the lake at `lake` (a directory or a URL), from `dir`.
    fn start_on(dir: &Path, lake: &str, args: &[&str], envs: &[(String, String)]) -> Served {
        let mut all = vec!["--lake".to_string(), lake.to_string(), "serve".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (child, rest) = spawn_announcing(dir, &refs, envs, "serving the dashboard on ");
        let url = rest.split('/').take(3).collect::<Vec<_>>().join("/");
        Served {
            child: Some(child),
            url,
        }
    }

    /// SIGTERM, then the exit status and stderr (within 60 s).
    fn stop(mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET or POST on the server: (status, body).
async fn http(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = match method {
        "POST" => client.post(url).body(body.unwrap_or_default().to_string()),
        _ => client.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the server answers");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn get_json(url: &str) -> Value {
    let (status, body) = http("GET", url, None, None).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// `cryptolake sql --format json` on the test's lake.
fn sql_json(dir: &Path, query: &str) -> Value {
    let lake = dir.join("lake").display().to_string();
    let out = ok(dir, &["--lake", &lake, "sql", "--format", "json", query]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{query}: {e}: {out}"))
}

/// A lake from the simulator: three exchanges, two days, gaps confirmed, quality results.
fn demo_lake(dir: &Path) {
    let lake = dir.join("lake").display().to_string();
    ok(dir, &["--lake", &lake, "demo", "--days", "2"]);
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_sql_does_in_json_csv_and_arrow() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || demo_lake(&dir)
    })
    .await
    .unwrap();
    let served = Served::start(&dir, &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let u = |p: &str| format!("{}{p}", served.url);

    // Symbols: the same pairs and hours as SQL counts.
    let symbols = get_json(&u("/api/v1/symbols")).await;
    let counted = sql_json(
        &dir,
        "SELECT exchange, symbol, count(*) AS n FROM crypto_analytics.ohlcv_1h GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let per_pair = |rows: &Value, count: &str| -> Vec<(String, String, f64)> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["exchange"].to_string(),
                    r["symbol"].to_string(),
                    num(&r[count]),
                )
            })
            .collect()
    };
    let api = per_pair(&symbols, "hours");
    assert_eq!(api, per_pair(&counted, "n"));
    assert!(api.len() >= 3, "{symbols}");

    // Candles, hourly and daily: count and volume as SQL sums them.
    for (interval, table) in [
        ("1h", "crypto_analytics.ohlcv_1h"),
        ("1d", "crypto_gold.ohlcv_1d"),
    ] {
        let path = format!(
            "/api/v1/candles?exchange=binance&symbol=BTC-USDT&interval={interval}&from=2020-01-01&limit=20000"
        );
        let rows = get_json(&u(&path)).await;
        let rows = rows.as_array().unwrap();
        let api_volume: f64 = rows.iter().map(|r| num(&r["volume"])).sum();
        let want = sql_json(
            &dir,
            &format!(
                "SELECT count(*) AS n, sum(volume) AS v FROM {table} WHERE exchange = 'binance' AND symbol = 'BTC-USDT'"
            ),
        );
        assert_eq!(rows.len() as f64, num(&want[0]["n"]), "{interval}");
        assert!((api_volume - num(&want[0]["v"])).abs() < 1e-6 * api_volume.max(1.0));
        // Oldest first, and the complete flag as silver's masks say.
        let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted);

        // CSV: a header and the same rows. Arrow: pyarrow and Polars read the stream.
        let (status, csv) = http("GET", &u(&format!("{path}&format=csv")), None, None).await;
        assert_eq!(status, 200);
        assert_eq!(csv.lines().count(), rows.len() + 1, "{csv}");
        let python = support::venv_with(&["pyarrow==26.0.1", "polars==2.1.0"], &|| {
            support::venv_imports("pyarrow, polars")
        });
        let script = r#"
import sys, urllib.request
import pyarrow as pa, polars as pl
url = sys.argv[1]
table = pa.ipc.open_stream(urllib.request.urlopen(url)).read_all()
frame = pl.read_ipc_stream(urllib.request.urlopen(url).read())
print(table.num_rows, round(sum(table.column("volume").to_pylist()), 3), frame.height, round(frame["volume"].sum(), 3))
"#;
        let out = Command::new(&python)
            .args(["-c", script, &u(&format!("{path}&format=arrow"))])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fields: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(fields[0], rows.len() as f64);
        assert_eq!(fields[2], rows.len() as f64);
        assert!((fields[1] - api_volume).abs() < 0.01 && (fields[3] - api_volume).abs() < 0.01);
    }

    // Five-minute candles from the minute table: the buckets README's date_bin resampling
    // gives, with their minutes present.
    let rows = get_json(&u(
        "/api/v1/candles?exchange=binance&symbol=BTC-USDT&interval=5m&from=2020-01-01&limit=20000",
    ))
    .await;
    let rows = rows.as_array().unwrap();
    let want = sql_json(
        &dir,
        "SELECT to_unixtime(date_bin(INTERVAL '5 minutes', open_time, TIMESTAMP '1970-01-01T00:00:00Z')) AS t,
                max(high) AS h, sum(volume) AS v, count(*) AS n
         FROM crypto_analytics.ohlcv_1m WHERE exchange = 'binance' AND symbol = 'BTC-USDT'
         GROUP BY 1 ORDER BY 1",
    );
    let want = want.as_array().unwrap();
    assert!(!want.is_empty());
    assert_eq!(rows.len(), want.len());
    for (r, w) in rows.iter().zip(want) {
        let t = chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap();
        assert_eq!(t.timestamp() as f64, num(&w["t"]));
        assert_eq!(num(&r["high"]), num(&w["h"]));
        assert!((num(&r["volume"]) - num(&w["v"])).abs() < 1e-9 * num(&w["v"]).max(1.0));
        assert_eq!(num(&r["minutes_present"]), num(&w["n"]));
        assert_eq!(num(&r["minutes"]), 5.0);
    }
    // An interval the API does not serve is named, with those it does.
    let (status, body) = http(
        "GET",
        &u("/api/v1/candles?exchange=binance&symbol=BTC-USDT&interval=7m"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains("\"7m\"") && error.contains("1m, 3m, 5m"),
        "{body}"
    );

    // Runs, gaps, quality: the same counts as SQL.
    let runs = get_json(&u("/api/v1/runs?limit=10000")).await;
    let n = sql_json(&dir, "SELECT count(*) AS n FROM crypto_ops.runs");
    assert_eq!(runs.as_array().unwrap().len() as f64, num(&n[0]["n"]));
    let gaps = get_json(&u("/api/v1/gaps?limit=100000")).await;
    let minutes: f64 = gaps
        .as_array()
        .unwrap()
        .iter()
        .map(|g| num(&g["minutes"]))
        .sum();
    let want = sql_json(
        &dir,
        "SELECT coalesce(sum(minutes), 0) AS m FROM crypto_ops.gaps",
    );
    assert_eq!(minutes, num(&want[0]["m"]));
    // Funding of a perpetual: the same events as SQL, in JSON and CSV.
    let funding = get_json(&u(
        "/api/v1/funding?exchange=binance-futures&symbol=BTC-USDT&from=2020-01-01T00:00:00Z",
    ))
    .await;
    let events = funding.as_array().unwrap();
    let want = sql_json(
        &dir,
        "SELECT count(*) AS n, sum(rate) AS s FROM crypto_analytics.funding_rates \
         WHERE exchange = 'binance-futures' AND symbol = 'BTC-USDT'",
    );
    assert!(!events.is_empty(), "the demo has funding");
    assert_eq!(events.len() as f64, num(&want[0]["n"]));
    let sum: f64 = events.iter().map(|e| num(&e["rate"])).sum();
    assert!((sum - num(&want[0]["s"])).abs() < 1e-12, "{sum}");
    let (status, csv) = http(
        "GET",
        &u("/api/v1/funding?exchange=binance-futures&symbol=BTC-USDT&from=2020-01-01T00:00:00Z&format=csv"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        csv.starts_with("exchange,symbol,funding_slot,funding_time,rate,interval_hours,mark_price"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), events.len() + 1);
    let (status, body) = http(
        "GET",
        &u("/api/v1/funding?exchange=binance&symbol=BTC-USDT"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not a perpetual market"), "{body}");
    let violations = get_json(&u("/api/v1/quality?status=violation&limit=10000")).await;
    let want = sql_json(
        &dir,
        "SELECT count(*) AS n FROM crypto_ops.quality_results WHERE status = 'violation'",
    );
    assert_eq!(
        violations.as_array().unwrap().len() as f64,
        num(&want[0]["n"])
    );

    // The overview: days covered and complete, and gap minutes, per pair, as SQL counts them.
    let overview = get_json(&u("/api/v1/overview")).await;
    for row in overview["rows"].as_array().unwrap() {
        let (e, s) = (
            row["exchange"].as_str().unwrap(),
            row["symbol"].as_str().unwrap(),
        );
        let want = sql_json(
            &dir,
            &format!(
                "SELECT count(*) AS days, sum(CASE WHEN is_complete THEN 1 ELSE 0 END) AS complete \
                 FROM crypto_gold.ohlcv_1d WHERE exchange = '{e}' AND symbol = '{s}'"
            ),
        );
        assert_eq!(num(&row["days_covered"]), num(&want[0]["days"]), "{row}");
        assert_eq!(
            num(&row["days_complete"]),
            num(&want[0]["complete"]),
            "{row}"
        );
        let gaps = sql_json(
            &dir,
            &format!(
                "SELECT coalesce(sum(minutes), 0) AS m FROM crypto_ops.gaps \
                 WHERE exchange = '{e}' AND symbol = '{s}' AND status = 'confirmed'"
            ),
        );
        assert_eq!(num(&row["confirmed_minutes"]), num(&gaps[0]["m"]), "{row}");
    }
    // Quality shows the current state: a pair's open violations are its results in
    // /api/v1/quality?open=true. The demo's refetch confirmed Coinbase's omitted minutes, so a
    // Coinbase pair whose every hour is complete has no open completeness finding, though the
    // history keeps the ones its first silver run found.
    let open = get_json(&u("/api/v1/quality?open=true&limit=10000")).await;
    let open = open.as_array().unwrap();
    let history = get_json(&u("/api/v1/quality?status=violation&limit=10000")).await;
    let history = history.as_array().unwrap();
    let full = (1i64 << 60) - 1;
    let mut resolved = 0;
    for row in overview["rows"].as_array().unwrap() {
        let (e, s) = (
            row["exchange"].as_str().unwrap(),
            row["symbol"].as_str().unwrap(),
        );
        let of_pair = |r: &&Value| r["exchange"] == e && r["symbol"] == s;
        assert_eq!(
            num(&row["open_violations"]),
            open.iter().filter(of_pair).count() as f64,
            "{row}"
        );
        assert!(open.iter().all(|r| r["status"] == "violation"));
        if e != "coinbase" {
            continue;
        }
        let incomplete = sql_json(
            &dir,
            &format!(
                "SELECT count(*) AS n FROM crypto_analytics.ohlcv_1h WHERE exchange = '{e}' \
                 AND symbol = '{s}' AND (minute_mask | empty_mask) <> {full}"
            ),
        );
        let completeness = |r: &&Value| of_pair(r) && r["rule"] == "completeness";
        if num(&incomplete[0]["n"]) == 0.0 {
            assert_eq!(open.iter().filter(completeness).count(), 0, "{s}: {open:?}");
            resolved += history.iter().filter(completeness).count();
        }
    }
    assert!(
        resolved > 0,
        "the demo's first silver run found Coinbase's omitted minutes, and the refetch resolved them"
    );

    // A repeat that names the answer's entity tag gets 304 and no body.
    let client = reqwest::Client::new();
    for path in [
        "/api/v1/symbols",
        "/api/v1/candles?exchange=binance&symbol=BTC-USDT&interval=1d",
        "/assets/app.js",
    ] {
        let first = client.get(u(path)).send().await.unwrap();
        assert_eq!(first.status(), 200, "{path}");
        let tag = first.headers()["etag"].to_str().unwrap().to_string();
        let cache = first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_string();
        let body = first.bytes().await.unwrap();
        assert!(!body.is_empty());
        let again = client
            .get(u(path))
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty(), "{path}");
        let other = client
            .get(u(path))
            .header("If-None-Match", "\"not-it\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200, "{path}");
        assert_eq!(other.bytes().await.unwrap(), body, "{path}");
        if path.starts_with("/assets/") {
            assert!(cache.contains("max-age="), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-cache", "{path}");
        }
    }

    // Freshness: the newest complete hour is the newest hour SQL finds complete.
    let freshness = get_json(&u("/api/v1/freshness")).await;
    for f in freshness.as_array().unwrap() {
        let Some(hour) = f["newest_complete_hour"].as_str() else {
            continue;
        };
        let want = sql_json(
            &dir,
            &format!(
                "SELECT max(open_time) AS t FROM crypto_analytics.ohlcv_1h WHERE exchange = {} AND symbol = {} \
                 AND (minute_mask | empty_mask) = 1152921504606846975",
                f["exchange"].to_string().replace('"', "'"),
                f["symbol"].to_string().replace('"', "'")
            ),
        );
        assert_eq!(
            want[0]["t"].as_str().unwrap().trim_end_matches('Z'),
            hour.trim_end_matches('Z'),
            "{f}"
        );
    }

    // SQL: the same result as the CLI; writes refused; a hostile join ends in a limit error
    // and the server keeps answering.
    let q = "SELECT exchange, count(*) AS n FROM crypto_gold.ohlcv_1d GROUP BY 1 ORDER BY 1";
    let (status, body) = http("POST", &u("/api/v1/sql"), Some(q), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        sql_json(&dir, q)
    );
    let (status, body) = http(
        "POST",
        &u("/api/v1/sql"),
        Some("DROP TABLE crypto_gold.ohlcv_1d"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (status, body) = http(
        "POST",
        &u("/api/v1/sql"),
        Some("SELECT a.close FROM crypto_analytics.ohlcv_1h a, crypto_analytics.ohlcv_1h b, crypto_analytics.ohlcv_1h c"),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("rows"), "{body}");
    let (status, body) = http(
        "GET",
        &u("/api/v1/candles?exchange=binance&symbol=../x"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("\"error\"") && body.contains("symbol"),
        "{body}"
    );
    let big = "x".repeat(200_000);
    let (status, _) = http("POST", &u("/api/v1/sql"), Some(&big), None).await;
    assert_eq!(status, 413, "request bodies are bounded");
    let (status, doc) = http("GET", &u("/api/v1/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/api/v1/candles"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/funding"]["get"].is_object());

    // /metrics through Prometheus's own parser; its freshness equals the API's.
    let python = support::venv_with(&["prometheus-client==0.26.0"], &|| {
        support::venv_imports("prometheus_client")
    });
    let script = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1]).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.name == "cryptolake_freshness_lag_seconds":
            print(s.labels["exchange"], s.labels["symbol"], s.value)
        if s.name == "cryptolake_build_info":
            print("build", s.labels["version"], s.value)
"#;
    let out = Command::new(&python)
        .args(["-c", script, &u("/metrics")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("build 0.1.0 1"), "{text}");
    let mut seen = 0;
    for f in freshness.as_array().unwrap() {
        let Some(lag) = f["lag"].as_f64() else {
            continue;
        };
        let key = format!(
            "{} {} ",
            f["exchange"].as_str().unwrap(),
            f["symbol"].as_str().unwrap()
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("{key} not in {text}"));
        let value: f64 = line[key.len()..].parse().unwrap();
        assert!((value - lag).abs() < 30.0, "{line} against {lag}");
        seen += 1;
    }
    assert!(seen >= 3, "{text}");
    let (code, stderr) = served.stop();
    assert_eq!(code, 0, "{stderr}");
}

fn random_token() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    String::from_utf8_lossy(&bytes).trim().replace('-', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_needs_a_token_and_every_request_carries_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("lake")).unwrap();
    let lake = d.path().join("lake").display().to_string();
    let r = cryptolake(
        d.path(),
        &[
            "--lake",
            &lake,
            "serve",
            "--no-schedule",
            "--http",
            "0.0.0.0:0",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let errors = error_lines(&r.stderr);
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].contains("without an access token"),
        "{}",
        errors[0]
    );

    let token = random_token();
    let envs = vec![("CRYPTOLAKE_SERVER_TOKEN".to_string(), token.clone())];
    let served = Served::start(d.path(), &["--no-schedule", "--http", "0.0.0.0:0"], &envs);
    let port = served.url.rsplit(':').next().unwrap().to_string();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    for path in ["/", "/api/v1/symbols", "/metrics", "/readyz"] {
        let (status, body) = http("GET", &url(path), None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _) = http("GET", &url(path), None, Some("wrong-token-wrong-token")).await;
        assert_eq!(status, 401, "{path}");
        let (status, body) = http("GET", &url(path), None, Some(&token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = http("GET", &url("/healthz"), None, None).await;
    assert_eq!(status, 200, "the liveness check needs no token");
    let (code, stderr) = served.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(&token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_hourly_job_on_its_schedule_and_stops_on_sigterm() {
    let sim = SimServer::start(SimMarket::default_market(4), SimClock::Real, 0)
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let envs = vec![
        ("CRYPTOLAKE_BINANCE_BASE_URL".to_string(), sim.base_url()),
        (
            "CRYPTOLAKE_BINANCE_SYMBOLS".to_string(),
            "BTC-USDT".to_string(),
        ),
        ("CRYPTOLAKE_INGEST_LOOKBACK".to_string(), "3h".to_string()),
        ("CRYPTOLAKE_LOG".to_string(), "info".to_string()),
    ];
    let dir = d.path().to_path_buf();
    let served = tokio::task::spawn_blocking(move || {
        Served::start(
            &dir,
            &["--http", "127.0.0.1:0", "--cron", "*/2 * * * * *"],
            &envs,
        )
    })
    .await
    .unwrap();
    let gold = d.path().join("lake/gold/ohlcv_1d");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !gold.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gold.exists(), "the scheduled run never built gold");
    // The run inside the server reaches its answers at once (the step events renew the read
    // model's snapshot); allow for the run still finishing its steps.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let symbols = get_json(&format!("{}/api/v1/symbols", served.url)).await;
        if symbols.as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(symbols[0]["symbol"], "BTC-USDT", "{symbols}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run's hours never reached the API"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The run's steps reached the metrics.
    let (_, metrics) = http("GET", &format!("{}/metrics", served.url), None, None).await;
    assert!(
        metrics.contains("cryptolake_runs_total{step=\"silver\",outcome=\"ok\"}"),
        "{metrics}"
    );
    let (status, _) = http("GET", &format!("{}/readyz", served.url), None, None).await;
    assert_eq!(status, 200);
    let (code, stderr) = tokio::task::spawn_blocking(move || served.stop())
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("run finished"), "{stderr}");
    assert!(stderr.contains("scheduler stopped"), "{stderr}");
    assert!(d.path().join("lake/_state/schedule.json").exists());
    sim.stop().await;
}

/// `cryptolake` on `lake` with the clock standing at `at`.
fn at_clock(dir: &Path, (lake, envs): (&str, &[(String, String)]), at: &str, args: &[&str]) {
    let mut all = vec!["--lake", lake, "--clock-at", at];
    all.extend_from_slice(args);
    ok_with(dir, &all, envs);
}

/// A lake of three symbols over three days at `lake`, served; another process writes the next
/// hour (a new date partition) and builds it; the server answers with it within five seconds,
/// and its history is unchanged.
async fn new_hour_from_another_process(lake: &str, envs: Vec<(String, String)>) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking({
        let (dir, lake, envs) = (dir.clone(), lake.to_string(), envs.clone());
        move || {
            let (on, at) = ((lake.as_str(), envs.as_slice()), "2024-01-04T00:10:00Z");
            at_clock(
                &dir,
                on,
                at,
                &[
                    "bench",
                    "generate",
                    "--symbols",
                    "3",
                    "--days",
                    "3",
                    "--from",
                    "2024-01-01",
                ],
            );
            at_clock(&dir, on, at, &["silver"]);
            at_clock(&dir, on, at, &["gold"]);
        }
    })
    .await
    .unwrap();
    let served = Served::start_on(
        &dir,
        lake,
        &["--no-schedule", "--http", "127.0.0.1:0"],
        &envs,
    );
    let u = |p: &str| format!("{}{p}", served.url);
    let hour = "/api/v1/candles?exchange=binance&symbol=S0001-USDT&interval=1h&from=2024-01-04T00:00:00Z&to=2024-01-04T01:00:00Z";
    let day = "/api/v1/candles?exchange=binance&symbol=S0001-USDT&interval=1d&from=2024-01-04T00:00:00Z&to=2024-01-05T00:00:00Z";
    let past = "/api/v1/candles?exchange=binance&symbol=S0001-USDT&interval=1h&from=2024-01-01T00:00:00Z&to=2024-01-04T00:00:00Z";
    assert_eq!(get_json(&u(hour)).await, serde_json::json!([]));
    assert_eq!(get_json(&u(day)).await, serde_json::json!([]));
    let history = get_json(&u(past)).await;
    assert_eq!(history.as_array().unwrap().len(), 72);

    // Another process writes the next hour, a new date partition, as the hourly job would.
    tokio::task::spawn_blocking({
        let (dir, lake, envs) = (dir.clone(), lake.to_string(), envs.clone());
        move || {
            let on = (lake.as_str(), envs.as_slice());
            at_clock(
                &dir,
                on,
                "2024-01-04T01:05:00Z",
                &[
                    "bench",
                    "generate",
                    "--symbols",
                    "3",
                    "--hours",
                    "1",
                    "--from",
                    "2024-01-04T00:00:00Z",
                    "--written-at",
                    "now",
                ],
            );
            at_clock(&dir, on, "2024-01-04T01:06:00Z", &["silver"]);
            at_clock(&dir, on, "2024-01-04T01:06:00Z", &["gold"]);
        }
    })
    .await
    .unwrap();
    let written = Instant::now();
    loop {
        let rows = get_json(&u(hour)).await;
        if rows.as_array().unwrap().len() == 1 {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "the new hour was not served within 5 s: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same snapshot has the new day in gold and the hour in the symbols' last hour.
    assert_eq!(get_json(&u(day)).await.as_array().unwrap().len(), 1);
    let symbols = get_json(&u("/api/v1/symbols")).await;
    for s in symbols.as_array().unwrap() {
        assert!(
            s["last_hour"]
                .as_str()
                .unwrap()
                .starts_with("2024-01-04T00:00:00"),
            "{s}"
        );
    }
    assert_eq!(
        get_json(&u(past)).await,
        history,
        "the history is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hour_written_by_another_process_is_served_within_five_seconds() {
    let d = tempfile::tempdir().unwrap();
    let lake = d.path().join("shared-lake").display().to_string();
    new_hour_from_another_process(&lake, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_new_hour_written_by_another_process_is_served_within_five_seconds() {
    let s3 = support::SeaweedFs::start("cryptolake-serve");
    new_hour_from_another_process("s3://cryptolake-serve/lake", s3.env()).await;
}

// ---- The dashboard in a real browser --------------------------------------------------------

/// A WebDriver session with Debian's chromium through chromedriver, headless, with every host
/// name but loopback unresolvable.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// Chromium's profile, removed with the browser.
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        Browser::start_resolving("").await
    }

    /// A browser in which the names in `rules` (Chromium's `MAP name address , …`) resolve
    /// as given, and every other name but 127.0.0.1 not at all.
    async fn start_resolving(rules: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, which the browser it starts joins: ended together on drop.
        let driver = std::os::unix::process::CommandExt::process_group(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver: {e}; `bash .ci/test` installs it, or `sudo apt-get install chromium chromium-driver`")
        });
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,900",
                         format!("--host-resolver-rules={rules}MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            let r = reqwest::Client::new()
                .post(format!("{base}/session"))
                .body(caps.to_string())
                .send()
                .await;
            if let Ok(r) = r {
                let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                break v["value"]["sessionId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no session: {v}"))
                    .to_string();
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Browser {
            driver,
            base,
            session,
            profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let client = reqwest::Client::new();
        let r = match method {
            "GET" => client.get(url),
            _ => client.post(url).body(body.to_string()),
        };
        let text = r.send().await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["value"].get("error").is_none(), "{path}: {v}");
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", serde_json::json!({ "url": url }))
            .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            serde_json::json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// How many pixels the chart's canvases have drawn in something darker than its white.
    async fn dark_pixels(&self) -> u64 {
        self.eval(
            "let n = 0; for (const c of document.querySelectorAll('#chart canvas')) {\
           const g = c.getContext('2d'); if (!g || !c.width || !c.height) continue;\
           const px = g.getImageData(0, 0, c.width, c.height).data;\
           for (let i = 0; i < px.length; i += 4) {\
             if (px[i+3] > 0 && (px[i] < 200 || px[i+1] < 200 || px[i+2] < 200)) n++; } }\
         return n;",
        )
        .await
        .as_u64()
        .unwrap()
    }

    /// Waits until `script` returns true.
    async fn until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(script).await != Value::Bool(true) {
            if Instant::now() >= deadline {
                let state = self
                    .eval(
                        "const s = window.cryptolake || {}; return JSON.stringify({interval: s.interval, \
                         loading: s.loading, exhausted: s.exhausted, bars: (s.bars || []).length, \
                         requests: s.requests, status: (document.querySelector('#status') || {}).textContent});",
                    )
                    .await;
                panic!("timed out waiting for {what}; the page's state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", Value::Null).await;
        std::fs::write(path, base64_decode(data.as_str().unwrap())).unwrap();
    }

    /// Every URL the page has asked for.
    async fn requests(&self) -> Vec<String> {
        let v = self
            .eval("return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));")
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver quits chromium), then the whole process group, whatever
    /// state the test left them in.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let port = self.base.rsplit(':').next().unwrap_or("0").to_string();
        if let Ok(mut c) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                c,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = c.read_to_end(&mut Vec::new());
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// Processes whose command line names `text` (a profile directory): none once a browser is
/// dropped.
fn processes_naming(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(text) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Standard base64, as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(value(*c))).collect();
        let n = v.iter().fold(0u32, |acc, x| (acc << 6) | x) << (6 * (4 - v.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..v.len() - 1]);
    }
    out
}

/// Where screenshots go: kept after the test, for a person to look at.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_in_a_real_browser_and_loads_history_on_demand() {
    let d = tempfile::tempdir().unwrap();
    // Forty days of three symbols: more hours than the chart's first page.
    generated_lake(d.path(), 3, 40, "2024-01-01");
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let browser = Browser::start().await;
    let shots = artifacts();

    // Overview: every figure on the page is the API's.
    browser.open(&format!("{}/", served.url)).await;
    browser
        .until(
            "return document.querySelectorAll('#overview tbody tr').length === 3",
            "the overview rows",
        )
        .await;
    browser.screenshot(&shots.join("overview.png")).await;
    let mut asked = browser.requests().await;
    let page = browser
        .eval(
            "return Array.from(document.querySelectorAll('#overview tbody tr')).map(tr => ({\
               exchange: tr.dataset.exchange, symbol: tr.dataset.symbol, stale: tr.classList.contains('stale'),\
               days_covered: tr.querySelector('[data-field=days_covered]').textContent,\
               days_complete: tr.querySelector('[data-field=days_complete]').textContent,\
               missing_minutes: tr.querySelector('[data-field=missing_minutes]').textContent}));",
        )
        .await;
    let api = get_json(&format!("{}/api/v1/overview", served.url)).await;
    for row in api["rows"].as_array().unwrap() {
        let shown = page
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["symbol"] == row["symbol"] && p["exchange"] == row["exchange"])
            .unwrap_or_else(|| panic!("{row} not on the page {page}"));
        for k in ["days_covered", "days_complete", "missing_minutes"] {
            assert_eq!(
                shown[k].as_str().unwrap(),
                row[k].to_string(),
                "{k}: {shown} {row}"
            );
        }
        assert_eq!(shown["stale"], row["stale"], "{shown} {row}");
    }

    // Symbol page: the chart has drawn, and zooming out loads older candles.
    browser
        .open(&format!(
            "{}/symbol?exchange=binance&symbol=S0001-USDT",
            served.url
        ))
        .await;
    browser
        .until(
            "return !!window.cryptolake && window.cryptolake.bars.length > 0",
            "the first candles",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drawn = browser.dark_pixels().await;
    assert!(drawn > 2000, "the chart has drawn: {drawn} dark pixels");
    let before = browser
        .eval("return window.cryptolake.bars.filter(b => b.open !== undefined).length;")
        .await
        .as_u64()
        .unwrap();
    assert!(before > 0 && before <= 500, "{before}");
    browser.screenshot(&shots.join("symbol.png")).await;
    browser
        .eval("window.cryptolake.chart.timeScale().setVisibleLogicalRange({from: -300, to: 600}); return true;")
        .await;
    browser
        .until(
            &format!(
                "return window.cryptolake.bars.filter(b => b.open !== undefined).length > {before};"
            ),
            "older candles after zooming out",
        )
        .await;
    browser
        .screenshot(&shots.join("symbol-zoomed-out.png"))
        .await;
    asked.extend(browser.requests().await);

    // The interval switcher: each width loads, draws, spaces its candles by its width (weeks
    // from Monday), and the crosshair's legend spells out the bar under it.
    for (interval, step) in [("1m", 60), ("15m", 900), ("4h", 14_400), ("1w", 604_800)] {
        browser
            .eval(&format!(
                "document.querySelector('[data-interval=\"{interval}\"]').click(); return true;"
            ))
            .await;
        browser
            .until(
                &format!(
                    "const s = window.cryptolake; return s.interval === '{interval}' && !s.loading \
                     && s.bars.some(b => b.open !== undefined) \
                     && document.querySelector('[data-interval=\"{interval}\"]').getAttribute('aria-pressed') === 'true';"
                ),
                &format!("the {interval} candles"),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let times = browser
            .eval(
                "return window.cryptolake.bars.filter(b => b.open !== undefined).map(b => b.time);",
            )
            .await;
        let times: Vec<i64> = times
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        assert!(!times.is_empty(), "{interval}");
        for t in &times {
            // Weeks start on Monday: the epoch was a Thursday, four days after one.
            let offset = if interval == "1w" { 4 * 86_400 } else { 0 };
            assert_eq!((t - offset).rem_euclid(step), 0, "{interval}: {t}");
        }
        let drawn = browser.dark_pixels().await;
        assert!(drawn > 500, "{interval} drew {drawn} dark pixels");
        // The mouse over the newest bar, as a user would move it there.
        let at = browser
            .eval(
                "const s = window.cryptolake; const b = s.bars.filter(b => b.open !== undefined).at(-1);\
                 const c = document.querySelector('#chart'); c.scrollIntoView({block: 'center'});\
                 const r = c.getBoundingClientRect();\
                 return [Math.round(r.left + s.chart.timeScale().timeToCoordinate(b.time)),\
                         Math.round(r.top + s.candles.priceToCoordinate(b.close)), b.time, b.present, b.minutes];",
            )
            .await;
        browser
            .call(
                "POST",
                "/actions",
                serde_json::json!({"actions": [{
                    "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                    "actions": [{"type": "pointerMove", "duration": 0, "origin": "viewport",
                                 "x": at[0], "y": at[1]}],
                }]}),
            )
            .await;
        browser
            .until(
                &format!(
                    "return document.querySelector('#crosshair').dataset.time === '{}';",
                    at[2]
                ),
                &format!("the {interval} crosshair legend"),
            )
            .await;
        let text = browser
            .eval("return document.querySelector('#crosshair').textContent;")
            .await;
        let text = text.as_str().unwrap();
        let (present, minutes) = (&at[3], &at[4]);
        assert!(
            text.contains(&format!("minutes {present}/{minutes}")) && text.contains(" O "),
            "{interval}: {text}"
        );
        assert_eq!(minutes.as_i64().unwrap(), step / 60, "{interval}");
        browser
            .screenshot(&shots.join(format!("symbol-{interval}.png")))
            .await;
    }

    // The other pages render.
    browser.open(&format!("{}/pipeline", served.url)).await;
    browser
        .until(
            "return document.querySelectorAll('#runs tbody tr').length > 0",
            "the runs table",
        )
        .await;
    browser.screenshot(&shots.join("pipeline.png")).await;
    asked.extend(browser.requests().await);
    browser.open(&format!("{}/sql", served.url)).await;
    browser
        .eval("document.querySelector('#run').click(); return true;")
        .await;
    browser
        .until(
            "return document.querySelectorAll('#result tbody tr').length > 0",
            "the SQL result",
        )
        .await;
    browser.screenshot(&shots.join("sql.png")).await;

    // Nothing was asked of any host but the server.
    asked.extend(browser.requests().await);
    assert!(
        asked
            .iter()
            .any(|u| u.ends_with("/assets/lightweight-charts.js")),
        "{asked:?}"
    );
    for url in asked {
        assert!(
            url.starts_with(&served.url),
            "a request left the server: {url}"
        );
    }
    let profile = browser.profile.path().display().to_string();
    assert!(
        !processes_naming(&profile).is_empty(),
        "chromium runs with its profile"
    );
    drop(browser);
    let left = processes_naming(&profile);
    assert!(
        left.is_empty(),
        "still running after the browser was dropped: {left:?}"
    );
    assert!(
        !std::path::Path::new(&profile).exists(),
        "the profile is removed"
    );
    let (code, stderr) = served.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// `curl` with `args`: (status, headers as text (lower case), body).
fn curl(args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let head = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .to_ascii_lowercase();
    (code.trim().parse().unwrap_or(0), head, body.to_string())
}

/// The JSON error a response body must be, naming `want`.
fn json_error(body: &str, want: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let message = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"));
    assert!(message.contains(want), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_server_answers_only_its_own_names_and_its_own_pages() {
    let d = tempfile::tempdir().unwrap();
    demo_lake(d.path());
    let token = random_token();
    let envs = vec![(
        "CRYPTOLAKE_SERVER_ALLOWED_HOSTS".to_string(),
        "lake.example.internal".to_string(),
    )];
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &envs);
    let base = served.url.clone();
    let hostport = base.trim_start_matches("http://").to_string();
    let port = hostport.rsplit(':').next().unwrap().to_string();
    let symbols = format!("{base}/api/v1/symbols");

    // DNS rebinding: a page's own name, pointed at 127.0.0.1, is not answered.
    let (status, _, body) = curl(&["-H", "Host: attacker.example", &symbols]);
    assert_eq!(status, 421, "{body}");
    json_error(&body, "attacker.example");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("lake.example.internal:{port}"),
        "LAKE.example.internal".to_string(),
    ] {
        let (status, _, body) = curl(&["-H", &format!("Host: {host}"), &symbols]);
        assert_eq!(status, 200, "{host}: {body}");
    }

    // A cross-origin POST of SQL as text/plain (a "simple" request a page may send without
    // asking) is refused before the statement runs; the server's own page may post it.
    let sql = format!("{base}/api/v1/sql");
    let statement = "SELECT count(*) AS n FROM crypto_analytics.ohlcv_1h";
    let (status, _, body) = curl(&[
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        statement,
        &sql,
    ]);
    assert_eq!(status, 403, "{body}");
    json_error(&body, "another origin");
    let (status, _, body) = curl(&[
        "-H",
        "Origin: null",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        statement,
        &sql,
    ]);
    assert_eq!(status, 403, "an opaque origin: {body}");
    let (status, _, body) = curl(&[
        "-H",
        "Sec-Fetch-Site: cross-site",
        "--data-binary",
        statement,
        &sql,
    ]);
    assert_eq!(
        status, 403,
        "a browser's cross-site fetch without an Origin: {body}"
    );
    let (status, _, body) = curl(&[
        "-H",
        &format!("Origin: {base}"),
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        statement,
        &sql,
    ]);
    assert_eq!(status, 200, "the server's own origin: {body}");
    let (status, _, body) = curl(&["--data-binary", statement, &sql]);
    assert_eq!(status, 200, "a tool that sends no Origin: {body}");

    // Pages cannot be framed or embedded elsewhere.
    let (status, head, _) = curl(&[&format!("{base}/")]);
    assert_eq!(status, 200);
    for h in [
        "x-frame-options: deny",
        "frame-ancestors 'none'",
        "cross-origin-resource-policy: same-origin",
        "cross-origin-opener-policy: same-origin",
        "referrer-policy: no-referrer",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }

    // Every error is JSON: an unknown path, a wrong method, a body past the limit.
    let (status, _, body) = curl(&[&format!("{base}/no/such/thing")]);
    assert_eq!(status, 404, "{body}");
    json_error(&body, "/no/such/thing");
    let (status, head, body) = curl(&["-X", "DELETE", &symbols]);
    assert_eq!(status, 405, "{body}");
    json_error(&body, "DELETE");
    assert!(head.contains("allow:"), "{head}");
    let big = d.path().join("big.sql");
    std::fs::write(&big, format!("SELECT '{}'", "x".repeat(100 << 10))).unwrap();
    let (status, _, body) = curl(&["--data-binary", &format!("@{}", big.display()), &sql]);
    assert_eq!(status, 413, "{body}");
    json_error(&body, "KiB");

    // A client that sends half a request head, or nothing at all, is closed.
    use std::io::{Read, Write};
    for sent in [
        &b""[..],
        b"GET /api/v1/symbols HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(&hostport).unwrap();
        s.write_all(sent).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let waited = started.elapsed();
        assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(
            waited < Duration::from_secs(20),
            "a silent client held its connection {waited:?}"
        );
    }
    // Meanwhile the server answers.
    let (status, _, _) = curl(&[&symbols]);
    assert_eq!(status, 200);
    drop(served);

    // Behind a token: the redirect that drops `?token=` stays on this server, and the cookie
    // is strict, not for scripts, and Secure behind TLS.
    let envs = vec![("CRYPTOLAKE_SERVER_TOKEN".to_string(), token.clone())];
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &envs);
    for evil in [
        "//evil.example/x",
        "/\\evil.example/x",
        "/%2F%2Fevil.example/x",
    ] {
        let (status, head, _) = curl(&[&format!("{}{evil}?token={token}", served.url)]);
        let location = head.lines().find(|l| l.starts_with("location:"));
        assert!(
            location.is_none_or(|l| {
                let to = l["location:".len()..].trim();
                to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\")
            }),
            "{evil}: {status} {head}"
        );
    }
    let (status, head, _) = curl(&[
        "-H",
        "X-Forwarded-Proto: https",
        &format!("{}/?token={token}", served.url),
    ]);
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /\r\n"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    for flag in ["httponly", "samesite=strict", "secure"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_serve_writes_nothing_in_the_lake() {
    let d = tempfile::tempdir().unwrap();
    demo_lake(d.path());
    let lake = d.path().join("lake");
    // Creating and removing any file in the lake's top directory would move its mtime.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&lake);
    let state_before = mtime(&lake.join("_state"));
    std::thread::sleep(Duration::from_millis(20));
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let v = get_json(&format!("{}/api/v1/symbols", served.url)).await;
    assert!(!v.as_array().unwrap().is_empty(), "{v}");
    let (status, _) = http(
        "POST",
        &format!("{}/api/v1/sql", served.url),
        Some("SELECT 1"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (code, stderr) = served.stop();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        mtime(&lake),
        before,
        "serve --no-schedule wrote in the lake"
    );
    assert_eq!(mtime(&lake.join("_state")), state_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_name_is_rebound_to_the_server_reads_nothing_in_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    generated_lake(d.path(), 3, 2, "2024-01-01");
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let port = served.url.rsplit(':').next().unwrap().to_string();
    // A page at rebound.example whose name now points at this machine, as DNS rebinding does.
    let browser =
        Browser::start_resolving("MAP rebound.example 127.0.0.1 , MAP localhost 127.0.0.1 , ")
            .await;
    let shots = artifacts();
    browser
        .open(&format!("http://rebound.example:{port}/api/v1/symbols"))
        .await;
    browser
        .until(
            "return document.body && document.body.innerText.length > 0",
            "the answer",
        )
        .await;
    let text = browser.eval("return document.body.innerText").await;
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains("does not answer to the host name"), "{text}");
    assert!(
        !text.contains("S0001"),
        "the rebound page read the lake: {text}"
    );
    // Its script, running at rebound.example, gets the same refusal.
    browser
        .open(&format!("http://rebound.example:{port}/"))
        .await;
    browser.screenshot(&shots.join("rebound.png")).await;
    let title = browser.eval("return document.body.innerText").await;
    assert!(
        title
            .as_str()
            .unwrap_or_default()
            .contains("does not answer"),
        "{title}"
    );
    // The server's own names still work in the same browser.
    for host in ["127.0.0.1", "localhost"] {
        browser
            .open(&format!("http://{host}:{port}/api/v1/symbols"))
            .await;
        let text = browser.eval("return document.body.innerText").await;
        assert!(
            text.as_str().unwrap_or_default().contains("S0001-USDT"),
            "{host}: {text}"
        );
    }
}

/// `/metrics`' count of responses with status `code`.
async fn responses(url: &str, code: u16) -> u64 {
    let (_, text) = http("GET", &format!("{url}/metrics"), None, None).await;
    let prefix = format!("cryptolake_http_responses_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_elsewhere_cannot_post_sql_through_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    generated_lake(d.path(), 3, 2, "2024-01-01");
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let browser = Browser::start().await;
    let post = |to: &str| {
        format!(
            "window.__status = 'pending'; fetch('{to}', {{method: 'POST', mode: 'no-cors', \
             headers: {{'Content-Type': 'text/plain'}}, body: 'SELECT count(*) FROM crypto_analytics.ohlcv_1h'}})\
             .then(r => window.__status = String(r.status)).catch(e => window.__status = 'failed');"
        )
    };
    let sql = format!("{}/api/v1/sql", served.url);
    // A page of another origin (another port on this machine, served here) posts SQL as a
    // "simple" request, which a browser sends without asking the server first.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere_url = format!("http://{}/", elsewhere.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in elsewhere.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let page = "<!doctype html><title>elsewhere</title><p>a page elsewhere</p>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    assert_eq!(responses(&served.url, 403).await, 0);
    browser.open(&elsewhere_url).await;
    browser.eval(&post(&sql)).await;
    browser
        .until(
            "return window.__status !== 'pending'",
            "the cross-origin post",
        )
        .await;
    assert_eq!(
        responses(&served.url, 403).await,
        1,
        "the browser's post was not refused"
    );
    // The server's own page posts the same statement and gets its answer.
    browser.open(&format!("{}/sql", served.url)).await;
    browser.eval(&post("/api/v1/sql")).await;
    browser
        .until(
            "return window.__status !== 'pending'",
            "the same-origin post",
        )
        .await;
    assert_eq!(
        browser.eval("return window.__status").await,
        serde_json::json!("200")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perpetuals_chart_shows_its_mark_price_and_funding_in_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    // A day and a half of binance-futures BTC-USDT from the simulated exchange: candles, mark
    // prices and funding, as `ingest` brings them for a perpetual market.
    let sim = SimServer::start(
        SimMarket::default_market(5),
        SimClock::Fixed(cryptolake_model::parse_time("2024-03-04T12:10:00Z").unwrap()),
        0,
    )
    .await
    .unwrap();
    let envs = vec![(
        "CRYPTOLAKE_BINANCE_FUTURES_BASE_URL".to_string(),
        sim.base_url(),
    )];
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lake = dir.join("lake").display().to_string();
        let out = ok_with(
            &dir,
            &[
                "--lake",
                &lake,
                "ingest",
                "--exchange",
                "binance-futures",
                "--symbols",
                "BTC-USDT",
                "--since",
                "2024-03-03T00:00:00Z",
                "--until",
                "2024-03-04T12:00:00Z",
            ],
            &envs,
        );
        assert!(
            out.contains("mark prices binance-futures") && out.contains("funding binance-futures"),
            "{out}"
        );
        let out = ok(&dir, &["--lake", &lake, "silver"]);
        assert!(out.contains("perpetuals: 5 funding events"), "{out}");
        ok(&dir, &["--lake", &lake, "gold"]);
    })
    .await
    .unwrap();
    let served = Served::start(d.path(), &["--no-schedule", "--http", "127.0.0.1:0"], &[]);
    let browser = Browser::start().await;
    let shots = artifacts();
    browser
        .open(&format!(
            "{}/symbol?exchange=binance-futures&symbol=BTC-USDT",
            served.url
        ))
        .await;
    browser
        .until(
            "const s = window.cryptolake; return !!s && s.bars.length > 0 \
             && (s.markPoints || []).length > 0 && (s.fundingPoints || []).length > 0;",
            "the candles, the mark price and the funding",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = browser
        .eval(
            "const s = window.cryptolake; return [s.bars.filter(b => b.open !== undefined).length, \
             s.markPoints.length, s.fundingPoints.length, s.fundingEvents, \
             s.fundingPoints.reduce((a, p) => a + p.value, 0), !document.querySelector('#perpetual').hidden];",
        )
        .await;
    // 36 hours of candles, each with its mark price; five funding events (8-hourly), each in
    // the bar of its hour.
    assert_eq!(shown[0], 36, "{shown}");
    assert_eq!(shown[1], 36, "{shown}");
    assert_eq!(shown[2], 5, "{shown}");
    assert_eq!(shown[3], 5, "{shown}");
    assert_eq!(shown[5], true, "{shown}");
    let api = get_json(&format!(
        "{}/api/v1/funding?exchange=binance-futures&symbol=BTC-USDT&from=2024-03-01T00:00:00Z",
        served.url
    ))
    .await;
    let total: f64 = api
        .as_array()
        .unwrap()
        .iter()
        .map(|f| num(&f["rate"]) * 100.0)
        .sum();
    assert!(
        (shown[4].as_f64().unwrap() - total).abs() < 1e-9,
        "{shown} {total}"
    );
    let marks = get_json(&format!(
        "{}/api/v1/mark?exchange=binance-futures&symbol=BTC-USDT&from=2024-03-03T00:00:00Z&to=2024-03-04T12:00:00Z",
        served.url
    ))
    .await;
    assert_eq!(marks.as_array().unwrap().len(), 36);
    assert!(
        marks
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["minutes_present"] == 60)
    );
    let drawn = browser.dark_pixels().await;
    assert!(drawn > 2000, "the chart has drawn: {drawn} dark pixels");
    browser
        .screenshot(&shots.join("symbol-perpetual.png"))
        .await;

    // The overview names the newest funding rate and its age.
    browser.open(&format!("{}/", served.url)).await;
    browser
        .until(
            "return document.querySelectorAll('#overview tbody tr').length > 0 \
             && document.querySelector('[data-field=last_funding]').textContent.includes('%');",
            "the last funding rate",
        )
        .await;
    let cell = browser
        .eval("return document.querySelector('[data-field=last_funding]').textContent;")
        .await;
    let latest = get_json(&format!("{}/api/v1/funding/latest", served.url)).await;
    let rate = num(&latest[0]["rate"]) * 100.0;
    assert!(
        cell.as_str().unwrap().starts_with(&format!("{rate:.4}%")),
        "{cell} {latest}"
    );
    assert_eq!(
        latest[0]["funding_slot"], "2024-03-04T08:00:00Z",
        "{latest}"
    );
    browser
        .screenshot(&shots.join("overview-perpetual.png"))
        .await;
    sim.stop().await;
}
