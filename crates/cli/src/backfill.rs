//! `backfill`, `import binance-archive` and `gaps`: getting history in, and saying what is
//! missing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_pipeline::archive::{Checksum, Market, TimeUnit};
use cryptolake_pipeline::query::{OutputFormat, render};
use cryptolake_pipeline::reads::{Gap, GapStatus, gap_report_batch};
use cryptolake_pipeline::{HistoryStart, Pipeline};

use crate::flags::{BackfillCmd, parse_symbols};
use crate::output::{ingest_summary, transform_summary};
use crate::progress::Progress;

/// `--from`/`--to`: a date means its whole day (for `--to`, through its end).
fn range(from: &str, to: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start = parse_time(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let is_date = |s: &str| s.len() == 10 && !s.contains('T');
    let end = parse_time(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let end = if is_date(to) {
        end.checked_add_signed(Duration::days(1))
            .ok_or_else(|| anyhow::anyhow!("--to {to}: out of range"))?
    } else {
        end
    };
    if start >= end {
        bail!("--from {from} is not before --to {to}");
    }
    Ok((start, end))
}

pub async fn run(p: &Pipeline, cmd: &BackfillCmd) -> Result<ExitCode> {
    let exchange = cmd.exchange;
    let symbols = cmd.symbols.as_deref().map(parse_symbols).transpose()?;
    let mut plan = p
        .plan_backfill(
            exchange,
            symbols,
            range(&cmd.from, &cmd.to)?,
            cmd.base_url.clone(),
        )
        .await?;
    plan.concurrency = cmd.concurrency.map(|c| c.max(1));
    println!(
        "backfill {exchange} {} .. {}: {} symbols, {} pages to fetch",
        plan.from.to_rfc3339(),
        plan.to.to_rfc3339(),
        plan.symbols.len(),
        plan.pages()
    );
    for s in &plan.symbols {
        if s.covered_minutes > 0 {
            println!(
                "  {}: {} minutes already in bronze, not fetched again",
                s.symbol, s.covered_minutes
            );
        }
        match s.history {
            Some(HistoryStart::From(t)) => println!(
                "  {}: {exchange} history starts at {}, later than --from (found in {} requests); nothing before it is fetched",
                s.symbol,
                t.to_rfc3339(),
                s.search_requests
            ),
            Some(HistoryStart::Nothing) => println!(
                "  {}: {exchange} has no candle of it in this range (searched in {} requests)",
                s.symbol, s.search_requests
            ),
            Some(HistoryStart::AtStart) | None => {}
        }
    }
    if let Some(served) = plan.served_from
        && plan.from < served
    {
        println!(
            "  NOTE: {exchange} serves only its latest {} one-minute candles; everything before {} cannot be fetched from its API",
            cryptolake_pipeline::ExchangeClient::max_window_minutes(exchange),
            served.to_rfc3339()
        );
    }
    let progress = Progress::new(exchange, !cmd.no_progress);
    let report = p.backfill(&plan, &progress).await;
    progress.finish();
    let report = report?;
    print!("{}", ingest_summary(exchange, &report.ingest));
    // A perpetual market's mark prices and funding, asked for the same range.
    let mut extra = 0;
    if let Some(m) = &report.mark {
        extra += m.pages as u64;
        println!("  mark prices: {} minutes in {} requests", m.rows, m.pages);
    }
    if let Some(f) = &report.funding {
        let requests: usize = f.iter().map(|o| o.pages).sum();
        extra += requests as u64;
        for o in f {
            match &o.error {
                None => println!(
                    "  funding of {}: {} events in {} requests",
                    o.symbol, o.rows, o.pages
                ),
                Some(e) => println!("  funding of {}: FAILED: {e}", o.symbol),
            }
        }
    }
    print!("{}", transform_summary(&report.transform));
    // What the venue was asked for candles, searches, retries and gap refetches included,
    // against the least a page size allows.
    let sent: u64 = p
        .exchange_requests()
        .requests
        .iter()
        .filter(|((e, _), _)| e == exchange.as_str())
        .map(|(_, n)| n)
        .sum::<u64>()
        .saturating_sub(extra);
    let minutes: i64 = plan
        .symbols
        .iter()
        .flat_map(|s| s.windows.iter())
        .map(|(a, b)| (*b - *a).num_minutes())
        .sum();
    if minutes > 0 {
        let days = minutes as f64 / 1440.0;
        let page = cryptolake_pipeline::ExchangeClient::max_window_minutes(exchange);
        println!(
            "  requests to {exchange}: {sent} for {days:.2} symbol-days of history ({:.1} per symbol-day; a page holds {page} minutes, so the least is {:.1})",
            sent as f64 / days,
            1440.0 / page as f64
        );
    }
    if let Some(e) = report.incomplete(exchange) {
        return Err(e.into());
    }
    println!("backfill complete");
    Ok(ExitCode::SUCCESS)
}

/// Expands directories into the archive files they hold, sorted.
fn archive_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                for e in
                    std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?
                {
                    let path = e?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "zip" || x == "csv") {
                        out.push(path);
                    }
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub async fn import(
    p: &Pipeline,
    paths: &[PathBuf],
    symbol: Option<&Symbol>,
    market: Option<Market>,
) -> Result<ExitCode> {
    let files = archive_files(paths)?;
    if files.is_empty() {
        bail!("no .zip or .csv files found in the given paths");
    }
    let report = p.import_archives(&files, symbol, market).await?;
    let (mut written, mut present) = (0, 0);
    for (f, r) in &report.files {
        match r {
            Ok(o) => {
                written += o.days_written;
                present += o.days_present;
                println!(
                    "{}: {} {} {} lines ({} timestamps), checksum {}; {} days written, {} already in bronze",
                    f.display(),
                    o.exchange,
                    o.symbol,
                    o.lines,
                    match o.time_unit {
                        TimeUnit::Millis => "millisecond",
                        TimeUnit::Micros => "microsecond",
                    },
                    match o.checksum {
                        Checksum::Verified => "verified",
                        Checksum::Absent => "not present (unverified)",
                    },
                    o.days_written,
                    o.days_present
                );
            }
            Err(e) => println!("{}: FAILED: {e}", f.display()),
        }
    }
    let failed = report.failed();
    println!(
        "import: {} files, {written} days written, {present} already present, {failed} failed",
        files.len()
    );
    if let Some(t) = &report.transform {
        print!("{}", transform_summary(t));
    }
    if failed > 0 {
        bail!("{failed} file(s) could not be imported; nothing of those was written");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn report_gaps(
    p: &Pipeline,
    exchange: Option<Exchange>,
    symbols: Option<Vec<Symbol>>,
    (from, to): (Option<NaiveDate>, Option<NaiveDate>),
    format: OutputFormat,
) -> Result<ExitCode> {
    let scan = p.scan_gaps(from, to).await?;
    let rows: Vec<&Gap> = scan
        .gaps
        .iter()
        .filter(|g| exchange.is_none_or(|e| g.exchange == e))
        .filter(|g| symbols.as_ref().is_none_or(|s| s.contains(&g.symbol)))
        .collect();
    let batch = gap_report_batch(&rows)?;
    print!("{}", render(&[batch], format)?);
    if format == OutputFormat::Table {
        println!();
        let minutes = |s: GapStatus| -> i64 {
            rows.iter()
                .filter(|g| g.status == s)
                .map(|g| g.minutes())
                .sum()
        };
        println!(
            "{} gaps, {} minutes: {} missing (refetched by the next run or backfill), {} unconfirmed (refetched once to confirm), {} confirmed (the exchange has no candle there), {} unservable (no longer served); {} dates scanned",
            rows.len(),
            rows.iter().map(|g| g.minutes()).sum::<i64>(),
            minutes(GapStatus::Missing),
            minutes(GapStatus::Unconfirmed),
            minutes(GapStatus::Confirmed),
            minutes(GapStatus::Unservable),
            scan.dates_scanned
        );
        // The perpetual markets' own reports: funding slots and mark price minutes.
        let perpetual = p.perpetual_gaps().await?;
        let wanted = |e: Exchange, s: &Symbol| {
            exchange.is_none_or(|x| x == e) && symbols.as_ref().is_none_or(|l| l.contains(s))
        };
        let minute = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%MZ").to_string();
        for g in perpetual
            .funding
            .iter()
            .filter(|g| wanted(g.exchange, &g.symbol))
        {
            println!(
                "funding {} {}: slots missing between {} and {}, {} ({} fetches)",
                g.exchange,
                g.symbol,
                minute(g.after),
                minute(g.before),
                g.status.as_str(),
                g.fetches
            );
        }
        let marks: Vec<&Gap> = perpetual
            .mark
            .iter()
            .filter(|g| wanted(g.exchange, &g.symbol))
            .collect();
        for g in &marks {
            println!(
                "mark price {} {}: {} to {} ({} minutes), {} ({} fetches)",
                g.exchange,
                g.symbol,
                minute(g.start),
                minute(g.end),
                g.minutes(),
                g.status.as_str(),
                g.fetches
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
