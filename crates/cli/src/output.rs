//! What the commands print: one-line errors and the summaries of runs and steps.

use std::process::ExitCode;

use anyhow::{Result, bail};
use cryptolake_model::Exchange;
use cryptolake_pipeline::{GoldMetrics, IngestMetrics, RunSummary, SilverMetrics, TransformReport};

/// An error and its causes on one line, leaving out causes the line already says.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Exit status 1, naming every problem, when any exchange or the transform failed.
pub fn finish_run(summary: &RunSummary) -> Result<ExitCode> {
    let problems = summary.problems();
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    bail!(
        "the run finished with {} problem(s): {}",
        problems.len(),
        problems.join("; ")
    )
}

pub fn run_summary(s: &RunSummary) -> String {
    let mut out = format!("run {}\n", s.run_id);
    for e in &s.exchanges {
        match &e.ingest {
            Ok(m) => out.push_str(&ingest_summary(e.exchange, m)),
            Err(err) => out.push_str(&format!("ingest {}: FAILED: {err}\n", e.exchange)),
        }
        match &e.refetch {
            Some(Ok(m)) => out.push_str(&format!(
                "  gap refetch: {} pages, {} candles\n",
                m.pages, m.rows
            )),
            Some(Err(err)) => out.push_str(&format!("  gap refetch FAILED: {err}\n")),
            None => {}
        }
    }
    match &s.transform {
        Ok(t) => out.push_str(&transform_summary(t)),
        Err(e) => out.push_str(&format!("  transform FAILED: {e}\n")),
    }
    out.push_str(&format!("  requests to the lake: {}\n", s.requests));
    out
}

pub fn transform_summary(t: &TransformReport) -> String {
    let mut out = String::new();
    for (i, s) in t.silver.iter().enumerate() {
        if i == 1
            && let Some(m) = &t.refetch
        {
            out.push_str(&format!(
                "  gap refetch: {} pages, {} candles\n",
                m.pages, m.rows
            ));
        }
        out.push_str(&silver_summary(s));
    }
    out.push_str(&gold_summary(&t.gold));
    out.push_str(&perpetuals_summary(&t.funding));
    out
}

/// The perpetual markets' builds: funding and mark prices (nothing when there was nothing).
pub fn perpetuals_summary(r: &cryptolake_pipeline::FundingReport) -> String {
    let (f, m) = (&r.silver, &r.mark);
    if f.objects == 0 && m.objects == 0 && f.changed_dates.is_empty() && m.changed_dates.is_empty()
    {
        return String::new();
    }
    format!(
        "perpetuals: {} funding events from {} bronze objects, {} days of funding_rates and {} of funding_1d written, {} missing funding stretches; {} mark price minutes from {} objects, {} days written, {} minutes missing\n",
        f.rows,
        f.objects,
        f.changed_dates.len(),
        r.gold.changed_dates.len(),
        f.gaps,
        m.rows,
        m.objects,
        m.changed_dates.len(),
        m.gap_minutes
    )
}

pub fn ingest_summary(exchange: Exchange, m: &IngestMetrics) -> String {
    let mut s = format!(
        "ingest {exchange}: {} pages, {} candles, {} bytes into bronze\n",
        m.pages, m.rows, m.bytes
    );
    for o in &m.symbols {
        let next = o
            .next_open_time
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into());
        match &o.error {
            None => s.push_str(&format!(
                "  {}: {} candles, next from {next}\n",
                o.symbol, o.rows
            )),
            Some(e) => s.push_str(&format!(
                "  {}: FAILED after {} candles: {e}\n",
                o.symbol, o.rows
            )),
        }
        for (a, b) in &o.unservable {
            s.push_str(&format!(
                "  NOT SERVED by {exchange}: {} {} .. {} ({} minutes)\n",
                o.symbol,
                a.to_rfc3339(),
                b.to_rfc3339(),
                (*b - *a).num_minutes()
            ));
        }
    }
    s
}

pub fn silver_summary(m: &SilverMetrics) -> String {
    format!(
        "  silver: {} new bronze objects ({} read), {} candles, {} duplicates dropped, {} open candles skipped, {} outside their window skipped, {} bad records dropped, {} records quarantined in {} objects; {} partitions written ({} hours), {} unchanged, {} deleted; requests: {}\n",
        m.new_objects,
        m.objects_read,
        m.candles_read,
        m.duplicates_dropped,
        m.open_candles_skipped,
        m.outside_window_skipped,
        m.dropped_records,
        m.rejected_records,
        m.quarantined_objects,
        m.partitions_written,
        m.hours_written,
        m.partitions_unchanged,
        m.partitions_deleted,
        m.requests
    )
}

pub fn gold_summary(m: &GoldMetrics) -> String {
    format!(
        "  gold: {} partitions written ({} rows), {} deleted; requests: {}\n",
        m.partitions_written, m.rows_written, m.partitions_deleted, m.requests
    )
}
