//! What `/metrics` serves, in the Prometheus text format: counters and a histogram fed by the
//! pipeline's step events, the exchanges' request counts, and gauges read from the lake when
//! scraped (freshness, gaps, quality). Names follow Prometheus's conventions: a `cryptolake_`
//! prefix, base units (seconds), `_total` for counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use cryptolake_pipeline::StepEvent;

/// Upper bounds of the run duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (step, outcome) -> runs.
    runs: BTreeMap<(String, String), u64>,
    durations: BTreeMap<(String, String), Histogram>,
    /// step -> unix seconds of its last ok.
    last_success: BTreeMap<String, f64>,
    /// step -> rows written.
    rows: BTreeMap<String, u64>,
    /// step -> records quarantined.
    quarantined: BTreeMap<String, u64>,
    /// HTTP status code -> responses.
    http: BTreeMap<String, u64>,
}

/// The counters of one process.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read from the lake at scrape time.
#[derive(Default)]
pub struct LakeGauges {
    /// (table, exchange, symbol) -> seconds since the newest complete period ended.
    pub freshness: Vec<(String, String, String, f64)>,
    /// (exchange, symbol, status) -> minutes.
    pub gap_minutes: Vec<(String, String, String, f64)>,
    /// rule -> violations still open (their latest evaluation still finds them).
    pub violations: Vec<(String, f64)>,
    /// Bytes of decoded partitions the read model holds, and its bound.
    pub read_cache: Option<(f64, f64)>,
}

/// Writes a family's HELP and TYPE lines; returns its name.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name.to_string()
}

/// A whole family whose samples have one label each.
fn one_label<'a, V: std::fmt::Display + 'a>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    samples: impl IntoIterator<Item = (&'a String, V)>,
) {
    let n = family(out, name, kind, help);
    for (key, v) in samples {
        line(out, format!("{n}{} {v}", labels(&[(label, key)])));
    }
}

fn line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Metrics {
    /// Counts a finished step.
    pub fn record(&self, e: &StepEvent) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let step = e.step.as_str().to_string();
        let key = (step.clone(), e.outcome.as_str().to_string());
        *m.runs.entry(key.clone()).or_default() += 1;
        let h = m.durations.entry(key).or_default();
        let secs = e.duration.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
        if e.outcome.as_str() == "ok" {
            let done = e.started_at.timestamp_micros() as f64 / 1e6 + secs;
            m.last_success.insert(step.clone(), done);
        }
        *m.rows.entry(step.clone()).or_default() += e.counts.rows.max(0) as u64;
        *m.quarantined.entry(step).or_default() += e.counts.quarantined.max(0) as u64;
    }

    /// Counts an HTTP response by its status code.
    pub fn record_response(&self, status: u16) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.http.entry(status.to_string()).or_default() += 1;
    }

    /// The whole exposition: these counters, the exchanges' requests and waits, and `lake`.
    pub fn render(&self, lake: &LakeGauges) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();

        let n = family(
            &mut out,
            "cryptolake_build_info",
            "gauge",
            "The running build: 1, with its version as a label.",
        );
        line(
            &mut out,
            format!("{n}{} 1", labels(&[("version", env!("CARGO_PKG_VERSION"))])),
        );

        let n = family(
            &mut out,
            "cryptolake_runs_total",
            "counter",
            "Pipeline steps finished, by step and outcome.",
        );
        for ((step, outcome), v) in &m.runs {
            line(
                &mut out,
                format!("{n}{} {v}", labels(&[("step", step), ("outcome", outcome)])),
            );
        }

        let n = family(
            &mut out,
            "cryptolake_run_duration_seconds",
            "histogram",
            "How long pipeline steps took, by step and outcome.",
        );
        for ((step, outcome), h) in &m.durations {
            for (i, b) in BUCKETS.iter().enumerate() {
                line(
                    &mut out,
                    format!(
                        "{n}_bucket{} {}",
                        labels(&[("step", step), ("outcome", outcome), ("le", &b.to_string())]),
                        h.counts[i]
                    ),
                );
            }
            let l = [("step", step.as_str()), ("outcome", outcome.as_str())];
            line(
                &mut out,
                format!(
                    "{n}_bucket{} {}",
                    labels(&[l[0], l[1], ("le", "+Inf")]),
                    h.count
                ),
            );
            line(&mut out, format!("{n}_sum{} {}", labels(&l), h.sum));
            line(&mut out, format!("{n}_count{} {}", labels(&l), h.count));
        }

        one_label(
            &mut out,
            (
                "cryptolake_last_success_timestamp_seconds",
                "gauge",
                "When each step last finished ok (Unix time).",
            ),
            "step",
            &m.last_success,
        );
        one_label(
            &mut out,
            (
                "cryptolake_rows_written_total",
                "counter",
                "Candles fetched, hours or days written, by step.",
            ),
            "step",
            &m.rows,
        );
        one_label(
            &mut out,
            (
                "cryptolake_records_quarantined_total",
                "counter",
                "Records set aside under quarantine/, by step.",
            ),
            "step",
            &m.quarantined,
        );

        one_label(
            &mut out,
            (
                "cryptolake_http_responses_total",
                "counter",
                "HTTP responses of this server, by status code (421: a Host it does not answer to; 403: a request from another origin, or a statement that would write).",
            ),
            "code",
            &m.http,
        );

        let stats = cryptolake_pipeline::exchange_requests();
        let n = family(
            &mut out,
            "cryptolake_exchange_requests_total",
            "counter",
            "Requests sent to the exchanges, by exchange and HTTP status (0: no answer).",
        );
        for ((exchange, status), v) in &stats.requests {
            line(
                &mut out,
                format!(
                    "{n}{} {v}",
                    labels(&[("exchange", exchange), ("status", &status.to_string())])
                ),
            );
        }
        one_label(
            &mut out,
            (
                "cryptolake_rate_limit_wait_seconds_total",
                "counter",
                "Time requests spent waiting for the exchange's request budget, by exchange.",
            ),
            "exchange",
            &stats.waits,
        );

        let n = family(
            &mut out,
            "cryptolake_freshness_lag_seconds",
            "gauge",
            "Seconds since the newest complete hour of each exchange and symbol ended.",
        );
        for (table, exchange, symbol, v) in &lake.freshness {
            line(
                &mut out,
                format!(
                    "{n}{} {v}",
                    labels(&[("table", table), ("exchange", exchange), ("symbol", symbol)])
                ),
            );
        }

        let n = family(
            &mut out,
            "cryptolake_gap_minutes",
            "gauge",
            "Minutes missing from silver, by exchange, symbol and gap status.",
        );
        for (exchange, symbol, status, v) in &lake.gap_minutes {
            line(
                &mut out,
                format!(
                    "{n}{} {v}",
                    labels(&[
                        ("exchange", exchange),
                        ("symbol", symbol),
                        ("status", status)
                    ])
                ),
            );
        }

        one_label(
            &mut out,
            (
                "cryptolake_quality_violations",
                "gauge",
                "Quality rule violations still open (their latest evaluation still finds them), by rule.",
            ),
            "rule",
            lake.violations.iter().map(|(k, v)| (k, v)),
        );
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
                let n = family(&mut out, name, "gauge", help);
                line(&mut out, format!("{n} {v}"));
            }
        }
        out
    }
}
