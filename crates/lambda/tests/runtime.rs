//! Both functions run as Lambda runs them: the real binaries, started with the Lambda
//! environment, pulling real-format EventBridge events from a Runtime API on loopback and
//! posting their results back. Against the simulated exchange, on a local lake and on SeaweedFS,
//! with quality rules configured; and the tables they build equal those of the hourly job run
//! through the library (what `cryptolake run` calls) from the same input.

#[path = "../../cli/tests/support/seaweed.rs"]
mod seaweed;

use std::collections::{HashMap, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use cryptolake_lake::Lake;
use cryptolake_model::{ManualClock, parse_time};
use cryptolake_pipeline::query::{OutputFormat, QueryEngine, render};
use cryptolake_pipeline::{Options, Pipeline, Settings};
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A Lambda Runtime API: hands out queued events on `next`, collects responses and errors.
#[derive(Default)]
struct Runtime {
    queue: Mutex<VecDeque<(String, Value)>>,
    queued: Notify,
    results: Mutex<HashMap<String, Result<Value, Value>>>,
    answered: Notify,
}

async fn next(State(rt): State<Arc<Runtime>>) -> (HeaderMap, String) {
    loop {
        let notified = rt.queued.notified();
        if let Some((id, event)) = rt.queue.lock().unwrap().pop_front() {
            let mut h = HeaderMap::new();
            h.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&id).unwrap(),
            );
            let deadline = chrono::Utc::now().timestamp_millis() + 900_000;
            h.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&deadline.to_string()).unwrap(),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static(
                    "arn:aws:lambda:eu-west-1:123456789012:function:cryptolake-test",
                ),
            );
            h.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (h, event.to_string());
        }
        notified.await;
    }
}

async fn respond(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    rt.results.lock().unwrap().insert(id, Ok(v));
    rt.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn fail(State(rt): State<Arc<Runtime>>, Path(id): Path<String>, body: String) -> StatusCode {
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    rt.results.lock().unwrap().insert(id, Err(v));
    rt.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(body: String) -> StatusCode {
    panic!("the function failed to start: {body}");
}

/// One function: its Runtime API and its process.
struct Function {
    runtime: Arc<Runtime>,
    child: Child,
    stdout: std::path::PathBuf,
    invocations: usize,
}

impl Function {
    async fn start(binary: &str, env: &[(String, String)], dir: &std::path::Path) -> Function {
        let runtime = Arc::new(Runtime::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(runtime.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let name = std::path::Path::new(binary)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let stdout = dir.join(format!("{name}.stdout"));
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Function {
            runtime,
            child,
            stdout,
            invocations: 0,
        }
    }

    /// Invokes the function with `event` and waits for its answer.
    async fn invoke(&mut self, event: Value) -> Result<Value, Value> {
        self.invocations += 1;
        let id = format!("req-{}", self.invocations);
        self.runtime
            .queue
            .lock()
            .unwrap()
            .push_back((id.clone(), event));
        self.runtime.queued.notify_waiters();
        let wait = async {
            loop {
                let answered = self.runtime.answered.notified();
                if let Some(r) = self.runtime.results.lock().unwrap().remove(&id) {
                    return r;
                }
                answered.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(300), wait)
            .await
            .expect("the function answered within 5 minutes")
    }

    /// The function's stdout lines that are CloudWatch EMF documents.
    fn emf_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn query(lake: &Lake, sql: &str) -> String {
    let engine = QueryEngine::open(lake).await.unwrap();
    render(&engine.query(sql).await.unwrap(), OutputFormat::Csv).unwrap()
}

/// The tables both runs must agree on: everything but the times of fetch and detection.
async fn tables(lake: &Lake) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT exchange, symbol, open_time, open, high, low, close, volume, quote_volume, trade_count, minutes_present, minute_mask, empty_mask FROM crypto_analytics.ohlcv_1h ORDER BY exchange, symbol, open_time",
        "SELECT * FROM crypto_gold.ohlcv_1d ORDER BY exchange, symbol, date",
        "SELECT exchange, symbol, gap_start, gap_end, minutes, status, fetches FROM crypto_ops.gaps ORDER BY exchange, symbol, gap_start",
    ] {
        out.push(query(lake, sql).await);
    }
    out
}

const QUALITY: &str = "[quality.price_jump]\nmax_change = 0.0005\naction = \"warn\"\n";

async fn functions_do_what_the_hourly_job_does(s3: Option<&seaweed::SeaweedFs>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimServer::start(
        SimMarket::default_market(4),
        SimClock::Fixed(parse_time("2024-03-04T14:10:00Z").unwrap()),
        0,
    )
    .await
    .unwrap();
    let url = sim.base_url();
    let config = dir.path().join("cryptolake.toml");
    std::fs::write(&config, QUALITY).unwrap();
    let lake_url = match s3 {
        Some(_) => "s3://lake-bucket/functions".to_string(),
        None => dir.path().join("lake").display().to_string(),
    };
    let mut env: Vec<(String, String)> = [
        ("CRYPTOLAKE_LAKE", lake_url.as_str()),
        ("CRYPTOLAKE_CONFIG", config.to_str().unwrap()),
        ("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT"),
        ("CRYPTOLAKE_BINANCE_BASE_URL", url.as_str()),
        ("CRYPTOLAKE_COINBASE_ENABLED", "true"),
        ("CRYPTOLAKE_COINBASE_SYMBOLS", "BTC-USD,ETH-USD"),
        ("CRYPTOLAKE_COINBASE_BASE_URL", url.as_str()),
        ("CRYPTOLAKE_INGEST_LOOKBACK", "3h"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    if let Some(s3) = s3 {
        env.extend(s3.env());
    }
    let mut ingest = Function::start(
        env!("CARGO_BIN_EXE_cryptolake-ingest-lambda"),
        &env,
        dir.path(),
    )
    .await;
    let mut transform = Function::start(
        env!("CARGO_BIN_EXE_cryptolake-transform-lambda"),
        &env,
        dir.path(),
    )
    .await;
    let settings = Settings::from_env_only(&env).unwrap();
    let lake = Lake::open_at(&settings.lake, &settings.lake_options()).unwrap();

    let first = ingest
        .invoke(json!({"scheduled_time": "2024-03-04T12:05:00Z"}))
        .await
        .unwrap();
    assert_eq!(first["run_id"], "sched-20240304T120500Z");
    assert_eq!(first["exchanges"][0]["candles"], 185, "{first}");
    transform
        .invoke(json!({"scheduled_time": "2024-03-04T12:20:00Z"}))
        .await
        .unwrap();
    let unconfirmed = query(
        &lake,
        "SELECT coalesce(sum(minutes), 0) AS m FROM crypto_ops.gaps WHERE exchange = 'coinbase' AND status = 'unconfirmed'",
    )
    .await;
    assert_ne!(
        unconfirmed.trim(),
        "m\n0",
        "Coinbase leaves out empty minutes: {unconfirmed}"
    );

    // The next hour, as a classic EventBridge scheduled event: the new hour, and the gaps the
    // transform recorded are fetched again.
    let classic = json!({
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2024-03-04T13:05:00Z",
        "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/cryptolake-hourly"],
        "detail": {}
    });
    let second = ingest.invoke(classic).await.unwrap();
    let coinbase = &second["exchanges"][1];
    assert_eq!(coinbase["exchange"], "coinbase");
    assert!(
        coinbase["refetched"].as_u64().unwrap() > 0 || coinbase["candles"].as_u64().unwrap() > 0,
        "{second}"
    );
    let refetches = query(
        &lake,
        "SELECT count(*) AS n FROM crypto_ops.runs WHERE step = 'refetch:coinbase' AND status = 'ok'",
    )
    .await;
    assert_eq!(
        refetches.trim(),
        "n\n1",
        "the recorded gaps were refetched once"
    );
    transform
        .invoke(json!({"scheduled_time": "2024-03-04T13:20:00Z"}))
        .await
        .unwrap();
    let still = query(
        &lake,
        "SELECT coalesce(sum(minutes), 0) AS m FROM crypto_ops.gaps WHERE exchange = 'coinbase' AND status = 'unconfirmed' AND gap_end <= TIMESTAMP '2024-03-04T12:00:00Z'",
    )
    .await;
    assert_eq!(
        still.trim(),
        "m\n0",
        "two fetches confirm every empty minute before 12:00"
    );

    // The configured quality rules ran in the transform, and their results landed.
    let results = query(
        &lake,
        "SELECT step, count(*) AS n FROM crypto_ops.quality_results WHERE rule = 'price_jump' AND status = 'violation' GROUP BY step ORDER BY step",
    )
    .await;
    assert!(results.contains("silver,"), "{results}");
    // Every step's event is an EMF line on stdout.
    let emf = ingest.emf_lines();
    assert!(
        emf.iter()
            .any(|l| l["step"] == "ingest" && l["exchange"] == "binance" && l["outcome"] == "ok")
    );
    assert!(
        emf.iter()
            .any(|l| l["step"] == "refetch" && l["exchange"] == "coinbase")
    );
    let emf = transform.emf_lines();
    assert!(
        emf.iter().any(|l| l["step"] == "silver"
            && l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "cryptolake")
    );
    assert!(
        emf.iter()
            .any(|l| l["FreshnessLag"].is_number() && l["symbol"] == "BTC-USD")
    );

    // The same input through the library's hourly job, on a clock stepped by hand.
    let clock = ManualClock::new(parse_time("2024-03-04T12:05:00Z").unwrap());
    let mut local = settings.clone();
    local.lake = cryptolake_lake::LakeLocation::Local(dir.path().join("by-run"));
    let by_run = cryptolake_lake::Lake::open(&local.lake.to_string()).unwrap();
    let p = Pipeline::open(
        local,
        Options {
            clock: Arc::new(clock.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(p.run_once().await.problems().is_empty());
    clock.set(parse_time("2024-03-04T13:05:00Z").unwrap());
    assert!(p.run_once().await.problems().is_empty());
    assert_eq!(tables(&by_run).await, tables(&lake).await);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_through_the_runtime_interface_on_a_local_lake() {
    functions_do_what_the_hourly_job_does(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_through_the_runtime_interface_on_seaweedfs() {
    let s3 = seaweed::SeaweedFs::start("lake-bucket");
    for (k, v) in s3.env() {
        if k.starts_with("AWS_") {
            // Only this test runs in this process (nextest runs each test alone): the AWS
            // credential chain of the comparison run reads the process environment.
            unsafe { std::env::set_var(k, v) };
        }
    }
    functions_do_what_the_hourly_job_does(Some(&s3)).await;
}
