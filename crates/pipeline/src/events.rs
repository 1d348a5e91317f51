//! Step outcomes as typed events: what every front end consumes. The CLI prints them, the
//! Lambda functions log them as CloudWatch Embedded Metric Format lines, and the server turns
//! them into Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, Symbol};
pub use cryptolake_model::{Outcome, Step};
use serde::Serialize;

/// What kind of problem ended or spoiled a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Another run holds the lease.
    Busy,
    /// The exchange's ban lasts.
    Banned,
    /// Requests to the exchange failed (after retries).
    Exchange,
    /// A range the exchange no longer serves.
    Unservable,
    /// A quality rule with action `fail` was broken, or could not be evaluated.
    Quality,
    /// The lake's storage failed.
    Storage,
    /// Bad input: a flag, a setting, a file.
    Input,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Busy => "busy",
            ErrorKind::Banned => "banned",
            ErrorKind::Exchange => "exchange",
            ErrorKind::Unservable => "unservable",
            ErrorKind::Quality => "quality",
            ErrorKind::Storage => "storage",
            ErrorKind::Input => "input",
        }
    }
}

/// What a step read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Pages requested, bronze objects read, partitions or results evaluated.
    pub inputs: i64,
    /// Bronze objects, partitions written or deleted, violations found.
    pub outputs: i64,
    /// Candles fetched, hours or days written.
    pub rows: i64,
    /// Records quarantined.
    pub quarantined: i64,
}

/// How fresh one exchange and symbol is in silver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    pub exchange: Exchange,
    pub symbol: Symbol,
    /// The newest hour whose every minute is present or confirmed empty, if any.
    pub newest_complete_hour: Option<DateTime<Utc>>,
    /// How long ago that hour ended; `None` when silver holds no complete hour.
    #[serde(serialize_with = "seconds_opt")]
    pub lag: Option<Duration>,
}

fn seconds_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepEvent {
    pub run_id: String,
    pub step: Step,
    /// The exchange of a per-exchange step (ingest, refetch, backfill).
    pub exchange: Option<Exchange>,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    pub counts: Counts,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    /// After a transform: the freshness of every enabled exchange and symbol.
    pub freshness: Vec<Freshness>,
    /// The requests the step made to the lake's store.
    pub requests: cryptolake_lake::RequestCounts,
}

impl StepEvent {
    /// The event's line for people: `silver ok in 1.20 s: 12 in, 3 out, 480 rows`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {} in {:.2} s: {} in, {} out, {} rows",
            self.step.label(self.exchange),
            self.outcome,
            self.duration.as_secs_f64(),
            self.counts.inputs,
            self.counts.outputs,
            self.counts.rows
        );
        if self.counts.quarantined > 0 {
            s.push_str(&format!(", {} quarantined", self.counts.quarantined));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(
                " ({}: {e})",
                self.error_kind.map_or("error", ErrorKind::as_str)
            ));
        }
        s
    }

    /// The event as CloudWatch Embedded Metric Format lines: one for the step (namespace
    /// `cryptolake`, dimensions step, exchange and outcome; metrics Runs, Duration, Rows,
    /// Quarantined), and one per exchange and symbol with a freshness lag (`FreshnessLag`,
    /// dimensions table, exchange and symbol, and table alone for the worst of them).
    pub fn emf_lines(&self) -> Vec<String> {
        let ms = self.started_at.timestamp_millis() + self.duration.as_millis() as i64;
        let mut lines = vec![
            serde_json::json!({
                "_aws": {
                    "Timestamp": ms,
                    "CloudWatchMetrics": [{
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [["step", "exchange", "outcome"]],
                        "Metrics": [
                            {"Name": "Runs", "Unit": "Count"},
                            {"Name": "Duration", "Unit": "Seconds"},
                            {"Name": "Rows", "Unit": "Count"},
                            {"Name": "Quarantined", "Unit": "Count"},
                        ],
                    }],
                },
                "step": self.step.as_str(),
                "exchange": self.exchange.map_or("all", |e| e.as_str()),
                "outcome": self.outcome.as_str(),
                "Runs": 1,
                "Duration": self.duration.as_secs_f64(),
                "Rows": self.counts.rows,
                "Quarantined": self.counts.quarantined,
                "run_id": self.run_id,
                "error_kind": self.error_kind.map(ErrorKind::as_str),
                "error": self.error,
            })
            .to_string(),
        ];
        for f in &self.freshness {
            let Some(lag) = f.lag else { continue };
            lines.push(
                serde_json::json!({
                    "_aws": {
                        "Timestamp": ms,
                        "CloudWatchMetrics": [{
                            "Namespace": EMF_NAMESPACE,
                            "Dimensions": [["table", "exchange", "symbol"], ["table"]],
                            "Metrics": [{"Name": "FreshnessLag", "Unit": "Seconds"}],
                        }],
                    },
                    "table": "ohlcv_1h",
                    "exchange": f.exchange.as_str(),
                    "symbol": f.symbol.as_str(),
                    "FreshnessLag": lag.as_secs_f64(),
                    "newest_complete_hour": f.newest_complete_hour,
                })
                .to_string(),
            );
        }
        lines
    }
}

/// The CloudWatch namespace of the metrics.
pub const EMF_NAMESPACE: &str = "cryptolake";

/// Where a pipeline sends its events.
pub type EventSink = Arc<dyn Fn(&StepEvent) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_carry_the_contract_dimensions_and_metrics() {
        let e = StepEvent {
            run_id: "r1".into(),
            step: Step::Ingest,
            exchange: Some(Exchange::Coinbase),
            outcome: Outcome::Partial,
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            duration: Duration::from_millis(1500),
            counts: Counts {
                inputs: 2,
                outputs: 3,
                rows: 480,
                quarantined: 1,
            },
            error_kind: Some(ErrorKind::Exchange),
            error: Some("BTC-USD: timed out".into()),
            requests: Default::default(),
            freshness: vec![Freshness {
                exchange: Exchange::Coinbase,
                symbol: Symbol::parse("BTC-USD").unwrap(),
                newest_complete_hour: None,
                lag: Some(Duration::from_secs(5400)),
            }],
        };
        let lines: Vec<serde_json::Value> = e
            .emf_lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let m = &lines[0];
        assert_eq!(m["_aws"]["Timestamp"], 1_700_000_001_500i64);
        assert_eq!(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], "cryptolake");
        assert_eq!(
            m["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["step", "exchange", "outcome"]])
        );
        assert_eq!(
            (&m["step"], &m["exchange"], &m["outcome"]),
            (&"ingest".into(), &"coinbase".into(), &"partial".into())
        );
        assert_eq!(
            (m["Runs"].as_i64(), m["Rows"].as_i64()),
            (Some(1), Some(480))
        );
        assert_eq!(m["Duration"].as_f64(), Some(1.5));
        // Every metric a directive names is a member of the line.
        for line in &lines {
            for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
            {
                let name = metric["Name"].as_str().unwrap();
                assert!(line[name].is_number(), "{name} missing in {line}");
            }
        }
        assert_eq!(lines[1]["FreshnessLag"].as_f64(), Some(5400.0));
        assert_eq!(lines[1]["table"], "ohlcv_1h");
        assert!(e.line().contains("ingest:coinbase partial"), "{}", e.line());
    }
}
