//! AWS Lambda handlers: a front end over the pipeline library, like the CLI.
//!
//! - **Ingest** (`cryptolake-ingest-lambda`): the ingest half of the hourly job
//!   ([`Pipeline::hourly_ingest`]): every enabled exchange up to the scheduled time, then its
//!   recorded gaps. Invoked hourly by EventBridge Scheduler with
//!   `{"scheduled_time": "<aws.scheduler.scheduled-time>"}`, or by a classic EventBridge
//!   scheduled event (`"detail-type": "Scheduled Event"`, `"time"`). The run id comes from the
//!   scheduled time, so a retried invocation plans the same windows and skips those it already
//!   wrote: no duplicate bronze.
//! - **Transform** (`cryptolake-transform-lambda`): the other half ([`Pipeline::transform`]):
//!   silver with the gap report and the quality checks, then gold, then the perpetual
//!   markets' funding rates, `funding_1d` and mark prices with theirs.
//!
//! Settings are the CLI's: the same `CRYPTOLAKE_*` variables ([`Settings::from_env_only`]),
//! with a file only where `CRYPTOLAKE_CONFIG` names one. Credentials come from the function's
//! execution role through the standard AWS chain. Every step's event is logged as a CloudWatch
//! Embedded Metric Format line.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cryptolake_model::Exchange;
use cryptolake_pipeline::{Freshness, Options, Pipeline, Settings};
use cryptolake_pipeline::{GoldMetrics, SilverMetrics};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unrecognised event: expected {{\"scheduled_time\": \"...\"}} from EventBridge Scheduler or an EventBridge \"Scheduled Event\"; got {0}"
    )]
    Event(String),
    #[error(
        "CRYPTOLAKE_LAKE: not set; expected s3://bucket/prefix (or a file that sets lake, named by CRYPTOLAKE_CONFIG)"
    )]
    NoLake,
    #[error(transparent)]
    Pipeline(#[from] cryptolake_pipeline::Error),
    #[error("ingest failed: {0}")]
    Ingest(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The settings of a function, from `(name, value)` pairs (the process environment in the
/// Lambda). The lake must be named: a function has no working directory to default to.
pub fn settings_from_vars(vars: &[(String, String)]) -> Result<Settings> {
    let named = vars
        .iter()
        .any(|(k, _)| k == "CRYPTOLAKE_LAKE" || k == "CRYPTOLAKE_CONFIG");
    if !named {
        return Err(Error::NoLake);
    }
    Ok(Settings::from_env_only(vars)?)
}

pub fn settings_from_env() -> Result<Settings> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    settings_from_vars(&vars)
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

/// The pipeline a function works with: leases owned by `lambda`, events as EMF lines.
pub async fn open(settings: Settings) -> Result<Pipeline> {
    let options = Options {
        owner: "lambda".into(),
        ..Options::default()
    };
    let pipeline = Pipeline::open(settings, options).await?;
    Ok(pipeline.with_events(Arc::new(|e| {
        for line in e.emf_lines() {
            println!("{line}");
        }
    })))
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
    /// Candles fetched again for recorded gaps.
    pub refetched: usize,
    /// A perpetual market's funding events fetched (its gaps' refetch included).
    pub funding_events: usize,
    /// A perpetual market's mark price minutes fetched (its gaps' refetch included).
    pub mark_minutes: usize,
    pub problems: Vec<String>,
}

/// The ingestion handler: every enabled exchange up to the scheduled time, then its gaps.
pub async fn handle_ingest(event: Value, settings: &Settings) -> Result<IngestReport> {
    let scheduled = scheduled_time(&event)?;
    let run_id = run_id_for(scheduled);
    let pipeline = open(settings.clone()).await?;
    let runs = pipeline.hourly_ingest(&run_id, scheduled, true).await;
    let mut report = IngestReport {
        run_id: run_id.clone(),
        scheduled_time: scheduled,
        exchanges: Vec::new(),
    };
    let mut problems = Vec::new();
    for r in &runs {
        let (pages, candles, bytes) = r
            .ingest
            .as_ref()
            .map_or((0, 0, 0), |m| (m.pages, m.rows, m.bytes));
        let refetched = match &r.refetch {
            Some(Ok(m)) => m.rows,
            _ => 0,
        };
        let funding_events = match &r.funding {
            Some(Ok(outcomes)) => outcomes.iter().map(|o| o.rows).sum(),
            _ => 0,
        };
        let mark_minutes = match &r.mark {
            Some(Ok(m)) => m.rows,
            _ => 0,
        };
        problems.extend(r.problems());
        report.exchanges.push(ExchangeReport {
            exchange: r.exchange,
            pages,
            candles,
            bytes,
            refetched,
            funding_events,
            mark_minutes,
            problems: r.problems(),
        });
    }
    info!(run_id, report = %serde_json::to_string(&report).unwrap_or_default(), "ingest invocation done");
    if !problems.is_empty() {
        // A failed invocation is retried; what did arrive stays, and the retry skips it.
        return Err(Error::Ingest(problems.join("; ")));
    }
    Ok(report)
}

/// What a transform invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct TransformReport {
    pub run_id: String,
    pub silver: Vec<SilverMetrics>,
    pub gold: GoldMetrics,
    pub freshness: Vec<Freshness>,
    /// The perpetual markets' tables.
    pub perpetual: PerpetualReport,
}

/// What a transform invocation built of the perpetual markets' tables.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PerpetualReport {
    /// Funding events read from new bronze (copies included).
    pub funding_events: usize,
    /// Missing funding stretches now recorded, over every symbol.
    pub funding_gaps: usize,
    /// Rows of `funding_1d` written.
    pub funding_days: usize,
    /// Mark price minutes read from new bronze (copies included).
    pub mark_minutes: usize,
    /// Violations of the perpetual tables' quality rules.
    pub violations: usize,
}

/// The batch handler: silver with the gap report and the quality checks, then gold, then
/// the perpetual markets' funding and mark prices with their quality checks.
pub async fn handle_transform(event: Value, settings: &Settings) -> Result<TransformReport> {
    let scheduled = scheduled_time(&event).unwrap_or_else(|_| Utc::now());
    let run_id = format!("{}-transform", run_id_for(scheduled));
    let pipeline = open(settings.clone()).await?;
    let t = pipeline.transform(&[], &run_id).await?;
    Ok(TransformReport {
        run_id,
        silver: t.silver,
        gold: t.gold,
        freshness: t.freshness,
        perpetual: PerpetualReport {
            funding_events: t.funding.silver.rows,
            funding_gaps: t.funding.silver.gaps,
            funding_days: t.funding.gold.rows,
            mark_minutes: t.funding.mark.rows,
            violations: t.funding.violations,
        },
    })
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
    let settings = settings_from_env().map_err(|e| e.to_string());
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

/// JSON-free plain logs for CloudWatch on stderr (stdout carries the EMF lines whole), filter
/// from `CRYPTOLAKE_LOG` (default `info`).
pub fn init_logging() {
    let filter = std::env::var("CRYPTOLAKE_LOG").unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
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
    fn a_function_reads_the_cli_settings_and_needs_only_the_lake() {
        let env = vars(&[
            ("CRYPTOLAKE_LAKE", "s3://b/p"),
            ("CRYPTOLAKE_COINBASE_ENABLED", "true"),
            ("CRYPTOLAKE_COINBASE_SYMBOLS", "BTC-USD,ETH-USD"),
            ("CRYPTOLAKE_INGEST_LOOKBACK", "3h"),
            ("PATH", "/bin"),
        ]);
        let s = settings_from_vars(&env).unwrap();
        // Exactly what the CLI makes of the same variables (with no file).
        let cli_env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("CRYPTOLAKE_"))
            .cloned()
            .collect();
        assert_eq!(s, Settings::from_toml("", "(none)", &cli_env).unwrap());
        assert_eq!(s.enabled_exchanges().count(), 2);
        assert_eq!(s.ingest.lookback, chrono::Duration::hours(3));
        // The transform function starts with the lake alone: no symbols needed.
        assert!(settings_from_vars(&vars(&[("CRYPTOLAKE_LAKE", "s3://b/p")])).is_ok());
        let err =
            |pairs: &[(&str, &str)]| settings_from_vars(&vars(pairs)).unwrap_err().to_string();
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
                ("CRYPTOLAKE_BINANCE_SYMBLS", "x")
            ])
            .contains("CRYPTOLAKE_BINANCE_SYMBLS")
        );
        // The former Lambda-only names are unknown everywhere now.
        assert!(
            err(&[
                ("CRYPTOLAKE_LAKE", "s3://b"),
                ("CRYPTOLAKE_INGEST_LOOKBACK_MINUTES", "180")
            ])
            .contains("CRYPTOLAKE_INGEST_LOOKBACK_MINUTES")
        );
    }
}
