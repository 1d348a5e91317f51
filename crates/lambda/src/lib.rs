//! AWS Lambda handlers for the cloud half of cryptolake.
//!
//! - **Ingest** (`cryptolake-ingest-lambda`): the bronze step only, as the design intends:
//!   fetch closed candles from each configured exchange into the S3 lake. Invoked hourly by
//!   EventBridge Scheduler with `{"scheduled_time": "<aws.scheduler.scheduled-time>"}`, or by a
//!   classic EventBridge scheduled event (`"detail-type": "Scheduled Event"`, `"time"`). The
//!   run id comes from the scheduled time and the ingest asks for candles up to that time, so a
//!   retried invocation plans the same windows and skips those it already wrote: no duplicate
//!   bronze.
//! - **Transform** (`cryptolake-transform-lambda`): silver, then gold, incrementally, on its
//!   own schedule after ingestion.
//!
//! Settings come from environment variables only (see [`Settings::from_vars`]); credentials
//! come from the Lambda's execution role through the standard AWS chain.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cryptolake_lake::bronze::{Ingest, IngestMetrics};
use cryptolake_lake::gold::{GoldBuild, GoldMetrics};
use cryptolake_lake::lease::{Lease, LeaseOptions};
use cryptolake_lake::ops::{RunRecord, record_run};
use cryptolake_lake::silver::{SilverBuild, SilverMetrics};
use cryptolake_lake::{Lake, LakeOptions};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::ExchangeClient;
use cryptolake_sources::http::RetryPolicy;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("environment variable {name}: {reason}")]
    Setting { name: String, reason: String },
    #[error(
        "unrecognised event: expected {{\"scheduled_time\": \"...\"}} from EventBridge Scheduler or an EventBridge \"Scheduled Event\"; got {0}"
    )]
    Event(String),
    #[error(transparent)]
    Lake(#[from] cryptolake_lake::Error),
    #[error(transparent)]
    Source(#[from] cryptolake_sources::Error),
    #[error("ingest failed for {0}")]
    Ingest(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One exchange to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSettings {
    pub exchange: Exchange,
    pub symbols: Vec<Symbol>,
    pub base_url: Option<String>,
}

/// What the handlers need, from `CRYPTOLAKE_*` environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `CRYPTOLAKE_LAKE`: `s3://bucket/prefix` (required).
    pub lake: String,
    /// `CRYPTOLAKE_S3_ENDPOINT`: an S3-compatible endpoint instead of AWS (tests).
    pub s3_endpoint: Option<String>,
    /// `CRYPTOLAKE_S3_REGION`, else the Lambda's `AWS_REGION`.
    pub s3_region: Option<String>,
    /// `CRYPTOLAKE_EXCHANGES` (comma separated, default `binance`), each with
    /// `CRYPTOLAKE_<EXCHANGE>_SYMBOLS` (required) and `CRYPTOLAKE_<EXCHANGE>_BASE_URL`.
    pub exchanges: Vec<ExchangeSettings>,
    /// `CRYPTOLAKE_INGEST_LOOKBACK_MINUTES` (default 1440): where a symbol's first ingest starts.
    pub lookback: Duration,
    /// `CRYPTOLAKE_INGEST_CONCURRENCY` (default 4).
    pub concurrency: usize,
    /// `CRYPTOLAKE_REQUEST_TIMEOUT_SECONDS` (default 20).
    pub request_timeout: StdDuration,
}

fn env_name(exchange: Exchange) -> String {
    exchange.as_str().to_uppercase().replace('-', "_")
}

impl Settings {
    /// Reads the settings from `(name, value)` pairs (the process environment in the Lambda).
    /// Unknown `CRYPTOLAKE_*` names are errors, so a typo never silently does nothing.
    pub fn from_vars(vars: &[(String, String)]) -> Result<Settings> {
        let map: BTreeMap<&str, &str> = vars
            .iter()
            .filter(|(k, _)| k.starts_with("CRYPTOLAKE_"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let bad = |name: &str, reason: String| Error::Setting {
            name: name.to_string(),
            reason,
        };
        let lake = map
            .get("CRYPTOLAKE_LAKE")
            .ok_or_else(|| {
                bad(
                    "CRYPTOLAKE_LAKE",
                    "not set; expected s3://bucket/prefix".into(),
                )
            })?
            .to_string();
        let exchanges: Vec<Exchange> = map
            .get("CRYPTOLAKE_EXCHANGES")
            .unwrap_or(&"binance")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Exchange::from_str(s).map_err(|e| bad("CRYPTOLAKE_EXCHANGES", e.to_string())))
            .collect::<Result<_>>()?;
        let mut known: Vec<String> = [
            "CRYPTOLAKE_LAKE",
            "CRYPTOLAKE_S3_ENDPOINT",
            "CRYPTOLAKE_S3_REGION",
            "CRYPTOLAKE_EXCHANGES",
            "CRYPTOLAKE_INGEST_LOOKBACK_MINUTES",
            "CRYPTOLAKE_INGEST_CONCURRENCY",
            "CRYPTOLAKE_REQUEST_TIMEOUT_SECONDS",
            "CRYPTOLAKE_LOG",
        ]
        .map(String::from)
        .to_vec();
        let mut per_exchange = Vec::new();
        for exchange in exchanges {
            let prefix = format!("CRYPTOLAKE_{}_", env_name(exchange));
            let symbols_var = format!("{prefix}SYMBOLS");
            let url_var = format!("{prefix}BASE_URL");
            let symbols: Vec<Symbol> = map
                .get(symbols_var.as_str())
                .ok_or_else(|| {
                    bad(
                        &symbols_var,
                        "not set; expected BASE-QUOTE symbols, comma separated".into(),
                    )
                })?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Symbol::parse(s).map_err(|e| bad(&symbols_var, e.to_string())))
                .collect::<Result<_>>()?;
            if symbols.is_empty() {
                return Err(bad(&symbols_var, "is empty".into()));
            }
            let base_url = map.get(url_var.as_str()).map(|s| s.to_string());
            if let Some(u) = &base_url {
                cryptolake_sources::http::check_base_url(u)
                    .map_err(|e| bad(&url_var, e.to_string()))?;
            }
            known.push(symbols_var);
            known.push(url_var);
            per_exchange.push(ExchangeSettings {
                exchange,
                symbols,
                base_url,
            });
        }
        if let Some(unknown) = map.keys().find(|k| !known.iter().any(|n| n == *k)) {
            return Err(bad(unknown, "unknown setting".into()));
        }
        let number = |name: &str, default: u64| -> Result<u64> {
            match map.get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, format!("{v:?} is not a positive whole number"))),
            }
        };
        Ok(Settings {
            lake,
            s3_endpoint: map.get("CRYPTOLAKE_S3_ENDPOINT").map(|s| s.to_string()),
            s3_region: map.get("CRYPTOLAKE_S3_REGION").map(|s| s.to_string()),
            exchanges: per_exchange,
            lookback: Duration::minutes(number("CRYPTOLAKE_INGEST_LOOKBACK_MINUTES", 1440)? as i64),
            concurrency: number("CRYPTOLAKE_INGEST_CONCURRENCY", 4)? as usize,
            request_timeout: StdDuration::from_secs(number(
                "CRYPTOLAKE_REQUEST_TIMEOUT_SECONDS",
                20,
            )?),
        })
    }

    pub fn from_env() -> Result<Settings> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    async fn open_lake(&self) -> Result<Lake> {
        let lake = Lake::open_with(
            &self.lake,
            &LakeOptions {
                s3_endpoint: self.s3_endpoint.clone(),
                s3_region: self.s3_region.clone(),
            },
        )?;
        lake.probe().await?;
        Ok(lake)
    }
}

/// The scheduled time an invocation stands for.
pub fn scheduled_time(event: &Value) -> Result<DateTime<Utc>> {
    let text = event
        .get("scheduled_time")
        .or_else(|| {
            (event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event"))
                .then(|| event.get("time"))
                .flatten()
        })
        .and_then(Value::as_str)
        .ok_or_else(|| {
            let shown = event.to_string();
            Error::Event(shown.chars().take(200).collect())
        })?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Event(format!("time {text:?}: {e}")))
}

/// The run id of the invocation for `scheduled`: the same for every retry of it.
pub fn run_id_for(scheduled: DateTime<Utc>) -> String {
    format!("sched-{}", scheduled.format("%Y%m%dT%H%M%SZ"))
}

/// What an ingest invocation did, returned as the Lambda's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestReport {
    pub run_id: String,
    pub scheduled_time: DateTime<Utc>,
    pub exchanges: Vec<ExchangeReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExchangeReport {
    pub exchange: Exchange,
    pub pages: usize,
    pub candles: usize,
    pub bytes: u64,
    pub failed_symbols: Vec<String>,
}

async fn record(
    lake: &Lake,
    run_id: &str,
    step: &str,
    started: DateTime<Utc>,
    error: Option<String>,
    counts: (i64, i64, i64),
    details: String,
) {
    let record = RunRecord {
        run_id: run_id.to_string(),
        step: step.to_string(),
        started_at: started,
        finished_at: Utc::now(),
        status: if error.is_some() { "failed" } else { "ok" }.to_string(),
        inputs: counts.0,
        outputs: counts.1,
        rows: counts.2,
        quarantined: 0,
        error,
        details,
    };
    if let Err(e) = record_run(lake, &record).await {
        warn!(step, run_id, error = %e, "could not record the run");
    }
}

fn owner(run_id: &str) -> String {
    format!("lambda run {run_id}")
}

/// The ingestion handler: every configured exchange, up to the scheduled time.
pub async fn handle_ingest(event: Value, settings: &Settings) -> Result<IngestReport> {
    let scheduled = scheduled_time(&event)?;
    let run_id = run_id_for(scheduled);
    let lake = settings.open_lake().await?;
    let mut report = IngestReport {
        run_id: run_id.clone(),
        scheduled_time: scheduled,
        exchanges: Vec::new(),
    };
    let mut failures = Vec::new();
    for ex in &settings.exchanges {
        let started = Utc::now();
        let outcome = ingest_exchange(&lake, settings, ex, &run_id, scheduled).await;
        let step = format!("ingest:{}", ex.exchange);
        match outcome {
            Ok(m) => {
                let failed: Vec<String> = m
                    .failures()
                    .map(|f| format!("{}: {}", f.symbol, f.error.as_deref().unwrap_or("")))
                    .collect();
                record(
                    &lake,
                    &run_id,
                    &step,
                    started,
                    (!failed.is_empty()).then(|| failed.join("; ")),
                    (m.symbols.len() as i64, m.pages as i64, m.rows as i64),
                    serde_json::json!({ "bytes": m.bytes, "trigger": "lambda" }).to_string(),
                )
                .await;
                failures.extend(failed.iter().map(|f| format!("{} {f}", ex.exchange)));
                report.exchanges.push(ExchangeReport {
                    exchange: ex.exchange,
                    pages: m.pages,
                    candles: m.rows,
                    bytes: m.bytes,
                    failed_symbols: failed,
                });
            }
            Err(e) => {
                record(
                    &lake,
                    &run_id,
                    &step,
                    started,
                    Some(e.to_string()),
                    (0, 0, 0),
                    "{}".into(),
                )
                .await;
                failures.push(format!("{}: {e}", ex.exchange));
            }
        }
    }
    info!(run_id, report = %serde_json::to_string(&report).unwrap_or_default(), "ingest invocation done");
    if !failures.is_empty() {
        // A failed invocation is retried by the scheduler; what did arrive stays, and the retry
        // skips it.
        return Err(Error::Ingest(failures.join("; ")));
    }
    Ok(report)
}

async fn ingest_exchange(
    lake: &Lake,
    settings: &Settings,
    ex: &ExchangeSettings,
    run_id: &str,
    scheduled: DateTime<Utc>,
) -> Result<IngestMetrics> {
    let policy = RetryPolicy {
        request_timeout: settings.request_timeout,
        ..RetryPolicy::default()
    };
    let client = ExchangeClient::new(ex.exchange, ex.base_url.as_deref(), policy, None)?;
    let lease = Lease::acquire(
        lake,
        &format!("ingest-{}", ex.exchange),
        &owner(run_id),
        &LeaseOptions::default(),
    )
    .await?;
    let job = Ingest::new(ex.exchange, ex.symbols.clone(), run_id, scheduled)
        .with_lookback(settings.lookback)
        .with_concurrency(settings.concurrency)
        .with_skip_done_by_run(true);
    let result = async {
        let plan = job.plan(lake).await?;
        job.execute(lake, &client, plan, &|_, _| {}).await
    }
    .await;
    lease.release().await?;
    Ok(result?)
}

/// What a transform invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct TransformReport {
    pub run_id: String,
    pub silver: SilverMetrics,
    pub gold: GoldMetrics,
}

/// The batch handler: silver, the gap report for what silver touched, then gold.
pub async fn handle_transform(event: Value, settings: &Settings) -> Result<TransformReport> {
    let scheduled = scheduled_time(&event).unwrap_or_else(|_| Utc::now());
    let run_id = format!("{}-transform", run_id_for(scheduled));
    let lake = settings.open_lake().await?;
    let lease = Lease::acquire(
        &lake,
        "transform",
        &owner(&run_id),
        &LeaseOptions::default(),
    )
    .await?;
    let result = async {
        let started = Utc::now();
        let build = SilverBuild::new();
        let plan = build.plan(&lake).await?;
        let silver = build.execute(&lake, plan, Some(&lease)).await?;
        record(
            &lake,
            &run_id,
            "silver",
            started,
            None,
            (
                silver.objects_read as i64,
                silver.partitions_written as i64,
                silver.hours_written as i64,
            ),
            serde_json::to_string(&silver).unwrap_or_default(),
        )
        .await;
        cryptolake_lake::gaps::update(&lake, &silver.touched, &silver.listed, Utc::now()).await?;
        let started = Utc::now();
        let build = GoldBuild::new();
        let plan = build.plan(&lake).await?;
        let gold = build.execute(&lake, plan, Some(&lease)).await?;
        record(
            &lake,
            &run_id,
            "gold",
            started,
            None,
            (
                gold.changed_dates.len() as i64,
                gold.partitions_written as i64,
                gold.rows_written as i64,
            ),
            serde_json::to_string(&gold).unwrap_or_default(),
        )
        .await;
        Ok::<_, Error>(TransformReport {
            run_id: run_id.clone(),
            silver,
            gold,
        })
    }
    .await;
    lease.release().await?;
    result
}

/// Runs `handler` as the Lambda function: logging set up, settings read once per cold start
/// (a bad one fails every invocation with its name), each event's report returned as JSON.
pub async fn serve<T, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    T: Serialize,
    F: Fn(Value, Settings) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    init_logging();
    let settings = Settings::from_env().map_err(|e| e.to_string());
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<Value>| {
            let settings = settings.clone();
            async move {
                let settings = settings.map_err(lambda_runtime::Error::from)?;
                let report = handler(event.payload, settings).await?;
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
            }
        },
    ))
    .await
}

/// JSON logs for CloudWatch, filter from `CRYPTOLAKE_LOG` (default `info`).
pub fn init_logging() {
    let filter = std::env::var("CRYPTOLAKE_LOG").unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn both_event_shapes_give_the_scheduled_time() {
        let scheduler = serde_json::json!({"scheduled_time": "2024-03-04T12:05:00Z"});
        let classic = serde_json::json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2024-03-04T12:05:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/hourly"], "detail": {}
        });
        let a = scheduled_time(&scheduler).unwrap();
        assert_eq!(a, scheduled_time(&classic).unwrap());
        assert_eq!(run_id_for(a), "sched-20240304T120500Z");
        let err = scheduled_time(&serde_json::json!({"hello": 1}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unrecognised event") && err.contains("hello"),
            "{err}"
        );
        assert!(scheduled_time(&serde_json::json!({"scheduled_time": "noon"})).is_err());
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let s = Settings::from_vars(&vars(&[
            ("CRYPTOLAKE_LAKE", "s3://b/p"),
            ("CRYPTOLAKE_EXCHANGES", "binance,coinbase"),
            ("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT"),
            ("CRYPTOLAKE_COINBASE_SYMBOLS", "BTC-USD,ETH-USD"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(s.exchanges.len(), 2);
        assert_eq!(s.exchanges[1].symbols.len(), 2);
        assert_eq!(s.lookback, Duration::minutes(1440));
        let err =
            |pairs: &[(&str, &str)]| Settings::from_vars(&vars(pairs)).unwrap_err().to_string();
        assert!(err(&[]).contains("CRYPTOLAKE_LAKE"));
        assert!(
            err(&[
                ("CRYPTOLAKE_LAKE", "s3://b"),
                ("CRYPTOLAKE_BINANCE_SYMBOLS", "../x")
            ])
            .contains("CRYPTOLAKE_BINANCE_SYMBOLS")
        );
        assert!(
            err(&[
                ("CRYPTOLAKE_LAKE", "s3://b"),
                ("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT"),
                ("CRYPTOLAKE_BINANCE_SYMBLS", "x")
            ])
            .contains("CRYPTOLAKE_BINANCE_SYMBLS: unknown setting")
        );
        assert!(
            err(&[
                ("CRYPTOLAKE_LAKE", "s3://b"),
                ("CRYPTOLAKE_EXCHANGES", "ftx")
            ])
            .contains("ftx")
        );
    }
}
