//! What `/metrics` serves, in the Prometheus text format, through `prometheus-client`'s
//! registry and encoder: counters and a histogram fed by the pipeline's step events and the
//! server's responses, and, collected when scraped, the exchanges' request counts and gauges
//! read from the lake (freshness, gaps, quality, the read cache). Names follow Prometheus's
//! conventions: a `cryptolake_` prefix, base units (seconds, bytes), `_total` for counters.

use std::sync::atomic::AtomicU64;

use cryptolake_pipeline::StepEvent;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the run duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepOutcome {
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

type Durations = Family<StepOutcome, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The counters of one process. Each is a handle: the registry of a scrape reads the same
/// values.
#[derive(Clone)]
pub struct Metrics {
    runs: Family<StepOutcome, Counter>,
    durations: Durations,
    last_success: Family<StepLabel, Gauge<f64, AtomicU64>>,
    rows: Family<StepLabel, Counter>,
    quarantined: Family<StepLabel, Counter>,
    http: Family<CodeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            runs: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            last_success: Family::default(),
            rows: Family::default(),
            quarantined: Family::default(),
            http: Family::default(),
        }
    }
}

/// What is read at scrape time: the pipeline's requests to the exchanges, and gauges of the
/// lake.
#[derive(Debug, Default, Clone)]
pub struct LakeGauges {
    /// Requests to the exchanges and budget waits, as the pipeline counted them.
    pub exchanges: cryptolake_pipeline::ExchangeRequests,
    /// (table, exchange, symbol) -> seconds since the newest complete period ended.
    pub freshness: Vec<(String, String, String, f64)>,
    /// (exchange, symbol, status) -> minutes.
    pub gap_minutes: Vec<(String, String, String, f64)>,
    /// rule -> violations still open (their latest evaluation still finds them).
    pub violations: Vec<(String, f64)>,
    /// Bytes of decoded partitions the read model holds, and its bound.
    pub read_cache: Option<(f64, f64)>,
}

/// What is read when scraped: the build, the exchanges' requests and the lake's gauges.
#[derive(Debug)]
struct Scraped {
    lake: LakeGauges,
}

/// One gauge or counter family whose samples are given as (labels, value).
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
    encode: fn(V, MetricEncoder) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        encode(v, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(v: f64, e: MetricEncoder) -> std::fmt::Result {
    ConstGauge::new(v).encode(e)
}

fn count(v: u64, e: MetricEncoder) -> std::fmt::Result {
    ConstCounter::new(v).encode(e)
}

fn counter(v: f64, e: MetricEncoder) -> std::fmt::Result {
    ConstCounter::new(v).encode(e)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let lake = &self.lake;
        let e = &mut encoder;
        family(
            e,
            (
                "cryptolake_build_info",
                "The running build: 1, with its version as a label.",
                MetricType::Gauge,
            ),
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1.0,
            )],
            gauge,
        )?;
        family(
            e,
            (
                "cryptolake_exchange_requests",
                "Requests sent to the exchanges, by exchange and HTTP status (0: no answer).",
                MetricType::Counter,
            ),
            lake.exchanges
                .requests
                .iter()
                .map(|((exchange, status), n)| {
                    (
                        vec![
                            ("exchange", exchange.clone()),
                            ("status", status.to_string()),
                        ],
                        *n,
                    )
                }),
            count,
        )?;
        family(
            e,
            (
                "cryptolake_rate_limit_wait_seconds",
                "Time requests spent waiting for the exchange's request budget, by exchange.",
                MetricType::Counter,
            ),
            lake.exchanges
                .waits
                .iter()
                .map(|(exchange, s)| (vec![("exchange", exchange.clone())], *s)),
            counter,
        )?;
        family(
            e,
            (
                "cryptolake_freshness_lag_seconds",
                "Seconds since the newest complete hour of each exchange and symbol ended.",
                MetricType::Gauge,
            ),
            lake.freshness.iter().map(|(table, exchange, symbol, v)| {
                let labels = vec![
                    ("table", table.clone()),
                    ("exchange", exchange.clone()),
                    ("symbol", symbol.clone()),
                ];
                (labels, *v)
            }),
            gauge,
        )?;
        family(
            e,
            (
                "cryptolake_gap_minutes",
                "Minutes missing from silver, by exchange, symbol and gap status.",
                MetricType::Gauge,
            ),
            lake.gap_minutes
                .iter()
                .map(|(exchange, symbol, status, v)| {
                    let labels = vec![
                        ("exchange", exchange.clone()),
                        ("symbol", symbol.clone()),
                        ("status", status.clone()),
                    ];
                    (labels, *v)
                }),
            gauge,
        )?;
        family(
            e,
            (
                "cryptolake_quality_violations",
                "Quality rule violations still open (their latest evaluation still finds them), by rule.",
                MetricType::Gauge,
            ),
            lake.violations
                .iter()
                .map(|(rule, v)| (vec![("rule", rule.clone())], *v)),
            gauge,
        )?;
        if let Some((held, bound)) = lake.read_cache {
            for (name, help, v) in [
                (
                    "cryptolake_read_cache_bytes",
                    "Bytes of decoded partitions the read model holds in memory.",
                    held,
                ),
                (
                    "cryptolake_read_cache_limit_bytes",
                    "The read model's bound on those bytes (server.read_cache).",
                    bound,
                ),
            ] {
                family(e, (name, help, MetricType::Gauge), [(vec![], v)], gauge)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// Counts a finished step.
    pub fn record(&self, e: &StepEvent) {
        let step = e.step.as_str().to_string();
        let key = StepOutcome {
            step: step.clone(),
            outcome: e.outcome.as_str().to_string(),
        };
        self.runs.get_or_create(&key).inc();
        let secs = e.duration.as_secs_f64();
        self.durations.get_or_create(&key).observe(secs);
        let step = StepLabel { step };
        if e.outcome.as_str() == "ok" {
            let done = e.started_at.timestamp_micros() as f64 / 1e6 + secs;
            self.last_success.get_or_create(&step).set(done);
        }
        self.rows
            .get_or_create(&step)
            .inc_by(e.counts.rows.max(0) as u64);
        self.quarantined
            .get_or_create(&step)
            .inc_by(e.counts.quarantined.max(0) as u64);
    }

    /// Counts an HTTP response by its status code.
    pub fn record_response(&self, status: u16) {
        let code = CodeLabel {
            code: status.to_string(),
        };
        self.http.get_or_create(&code).inc();
    }

    /// The whole exposition: these counters, the exchanges' requests and waits, and `lake`.
    pub fn render(&self, lake: LakeGauges) -> String {
        let mut registry = Registry::default();
        // `register` ends each help text with a full stop.
        registry.register(
            "cryptolake_runs",
            "Pipeline steps finished, by step and outcome",
            self.runs.clone(),
        );
        registry.register(
            "cryptolake_run_duration_seconds",
            "How long pipeline steps took, by step and outcome",
            self.durations.clone(),
        );
        registry.register(
            "cryptolake_last_success_timestamp_seconds",
            "When each step last finished ok (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "cryptolake_rows_written",
            "Candles fetched, hours or days written, by step",
            self.rows.clone(),
        );
        registry.register(
            "cryptolake_records_quarantined",
            "Records set aside under quarantine/, by step",
            self.quarantined.clone(),
        );
        registry.register(
            "cryptolake_http_responses",
            "HTTP responses of this server, by status code (421: a Host it does not answer to; 403: a request from another origin, or a statement that would write)",
            self.http.clone(),
        );
        registry.register_collector(Box::new(Scraped { lake }));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_keeps_its_names_labels_and_values() {
        let m = Metrics::default();
        m.record_response(200);
        m.record_response(200);
        m.record_response(421);
        let mut exchanges = cryptolake_pipeline::ExchangeRequests::default();
        exchanges.requests.insert(("binance".into(), 200), 3);
        exchanges.requests.insert(("kraken".into(), 0), 1);
        exchanges.waits.insert("binance".into(), 1.5);
        let lake = LakeGauges {
            exchanges,
            freshness: vec![("ohlcv_1h".into(), "binance".into(), "BTC-USDT".into(), 90.0)],
            gap_minutes: vec![("kraken".into(), "BTC-USD".into(), "missing".into(), 3.0)],
            violations: vec![("freshness".into(), 2.0)],
            read_cache: Some((1024.0, 4096.0)),
        };
        let text = m.render(lake);
        for line in [
            "# TYPE cryptolake_http_responses_total counter",
            "cryptolake_http_responses_total{code=\"200\"} 2",
            "cryptolake_http_responses_total{code=\"421\"} 1",
            "# TYPE cryptolake_freshness_lag_seconds gauge",
            "cryptolake_freshness_lag_seconds{table=\"ohlcv_1h\",exchange=\"binance\",symbol=\"BTC-USDT\"} 90.0",
            "cryptolake_gap_minutes{exchange=\"kraken\",symbol=\"BTC-USD\",status=\"missing\"} 3.0",
            "cryptolake_quality_violations{rule=\"freshness\"} 2.0",
            "cryptolake_read_cache_bytes 1024.0",
            "# TYPE cryptolake_exchange_requests_total counter",
            "cryptolake_exchange_requests_total{exchange=\"binance\",status=\"200\"} 3",
            "cryptolake_exchange_requests_total{exchange=\"kraken\",status=\"0\"} 1",
            "cryptolake_rate_limit_wait_seconds_total{exchange=\"binance\"} 1.5",
            "cryptolake_read_cache_limit_bytes 4096.0",
            &format!(
                "cryptolake_build_info{{version=\"{}\"}} 1.0",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // A label value is escaped, never breaks the line.
        let odd = LakeGauges {
            violations: vec![("a\"b\nc".into(), 1.0)],
            ..LakeGauges::default()
        };
        let text = m.render(odd);
        assert!(text.contains(r#"rule="a\"b\nc""#), "{text}");
    }
}
