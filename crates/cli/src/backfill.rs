//! `backfill`, `import binance-archive` and `gaps`: getting history in, and saying what is
//! missing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_lake::bronze::IngestMetrics;
use cryptolake_lake::bronze::archive::{Checksum, Market, import_archive};
use cryptolake_lake::{gaps, new_run_id};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_query::{OutputFormat, render};
use cryptolake_sources::ExchangeClient;

use crate::BackfillCmd;
use crate::pipeline::{Env, GapRefetch, IngestArgs, gold_summary, ingest_summary, silver_summary};
use crate::progress::Progress;

/// `--from`/`--to`: a date means its whole day (for `--to`, through its end).
fn range(from: &str, to: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start = parse_time(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let is_date = |s: &str| s.len() == 10 && !s.contains('T');
    let end = parse_time(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let end = if is_date(to) {
        end + Duration::days(1)
    } else {
        end
    };
    if start >= end {
        bail!("--from {from} is not before --to {to}");
    }
    Ok((start, end))
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

/// Silver (with the gap report), one round of gap refetches for `exchange` in the range, and
/// gold. Prints what each step did.
async fn transform(
    env: &Env,
    refetch: Option<&GapRefetch>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let s = env.silver(false, run_id).await?;
    print!("{}", silver_summary(&s));
    if let Some(scope) = refetch {
        let m = env.refetch_gaps(scope, run_id, now).await?;
        if let Some(m) = m {
            println!("  gap refetch: {} pages, {} candles", m.pages, m.rows);
            let s = env.silver(false, run_id).await?;
            print!("{}", silver_summary(&s));
        }
    }
    let g = env.gold(false, run_id).await?;
    print!("{}", gold_summary(&g));
    Ok(())
}

pub async fn run(
    env: &Env,
    exchange: Exchange,
    symbols: Vec<Symbol>,
    cmd: &BackfillCmd,
    now: DateTime<Utc>,
) -> Result<ExitCode> {
    if symbols.is_empty() {
        bail!(
            "no symbols to backfill for {exchange}: pass --symbols or set exchanges.{exchange}.symbols"
        );
    }
    let (from, to) = range(&cmd.from, &cmd.to)?;
    let closed = floor_minute(now);
    if from >= closed {
        bail!("--from {} is in the future", cmd.from);
    }
    let to = to.min(closed);
    // Fail on a bad base URL before anything else.
    env.client(exchange, cmd.base_url.as_deref())?;
    let plan = env.plan_backfill(exchange, &symbols, from, to).await?;
    let run_id = new_run_id(now);
    let pages: Vec<(Symbol, usize)> = plan
        .iter()
        .map(|p| (p.symbol.clone(), p.windows.len()))
        .collect();
    println!(
        "backfill {exchange} {} .. {}: {} symbols, {} pages to fetch",
        from.to_rfc3339(),
        to.to_rfc3339(),
        plan.len(),
        pages.iter().map(|(_, n)| n).sum::<usize>()
    );
    for p in &plan {
        if p.covered_minutes > 0 {
            println!(
                "  {}: {} minutes already in bronze, not fetched again",
                p.symbol, p.covered_minutes
            );
        }
    }
    if let Some(served) = ExchangeClient::served_from(exchange, now)
        && from < served
    {
        println!(
            "  NOTE: {exchange} serves only its latest {} one-minute candles; everything before {} cannot be fetched from its API",
            ExchangeClient::max_window_minutes(exchange),
            served.to_rfc3339()
        );
    }
    let progress = Progress::new(exchange, &pages, !cmd.no_progress);
    let args = IngestArgs {
        base_url: cmd.base_url.clone(),
        windows: Some(
            plan.iter()
                .map(|p| (p.symbol.clone(), p.windows.clone()))
                .collect(),
        ),
        move_cursor: false,
        ..IngestArgs::hourly(exchange, symbols.clone(), &run_id)
    };
    let fetched: Result<IngestMetrics> = env
        .ingest(&args, now, &|symbol, rows| progress.page(symbol, rows))
        .await;
    progress.finish();
    let m = fetched?;
    print!("{}", ingest_summary(exchange, &m));
    let unservable: Vec<String> = m
        .symbols
        .iter()
        .flat_map(|o| {
            o.unservable.iter().map(move |(a, b)| {
                format!(
                    "{} {} .. {} ({} minutes)",
                    o.symbol,
                    a.to_rfc3339(),
                    b.to_rfc3339(),
                    (*b - *a).num_minutes()
                )
            })
        })
        .collect();
    for u in &unservable {
        println!("  NOT SERVED by {exchange}: {u}");
    }
    let days = (from.date_naive(), (to - Duration::minutes(1)).date_naive());
    let scope = GapRefetch {
        symbols: Some(symbols.clone()),
        from: Some(days.0),
        to: Some(days.1),
        base_url: cmd.base_url.clone(),
        ..GapRefetch::all(exchange, None)
    };
    transform(env, Some(&scope), &run_id, now).await?;
    let failures = m.failures().count();
    if failures > 0 {
        bail!(
            "backfill incomplete: {failures} symbol(s) failed (see above); run the same command again to continue where it stopped"
        );
    }
    if !unservable.is_empty() {
        bail!(
            "backfill incomplete: {exchange} no longer serves part of the range ({} span(s) above); those minutes are recorded as unservable gaps",
            unservable.len()
        );
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
    env: &Env,
    paths: &[PathBuf],
    symbol: Option<&Symbol>,
    market: Option<Market>,
    now: DateTime<Utc>,
) -> Result<ExitCode> {
    let files = archive_files(paths)?;
    if files.is_empty() {
        bail!("no .zip or .csv files found in the given paths");
    }
    let run_id = new_run_id(now);
    let mut failed = 0;
    let (mut written, mut present) = (0, 0);
    for f in &files {
        match import_archive(&env.lake, f, symbol, market, now).await {
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
                        cryptolake_sources::binance::archive::TimeUnit::Millis => "millisecond",
                        cryptolake_sources::binance::archive::TimeUnit::Micros => "microsecond",
                    },
                    match o.checksum {
                        Checksum::Verified => "verified",
                        Checksum::Absent => "not present (unverified)",
                    },
                    o.days_written,
                    o.days_present
                );
            }
            Err(e) => {
                failed += 1;
                println!("{}: FAILED: {e}", f.display());
            }
        }
    }
    println!(
        "import: {} files, {written} days written, {present} already present, {failed} failed",
        files.len()
    );
    if written > 0 {
        transform(env, None, &run_id, now).await?;
    }
    if failed > 0 {
        bail!("{failed} file(s) could not be imported; nothing of those was written");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn report_gaps(
    env: &Env,
    exchange: Option<Exchange>,
    symbols: Option<Vec<Symbol>>,
    (from, to): (Option<NaiveDate>, Option<NaiveDate>),
    format: OutputFormat,
) -> Result<ExitCode> {
    let scan = env.scan_gaps(from, to).await?;
    let rows: Vec<&gaps::Gap> = scan
        .gaps
        .iter()
        .filter(|g| exchange.is_none_or(|e| g.exchange == e))
        .filter(|g| symbols.as_ref().is_none_or(|s| s.contains(&g.symbol)))
        .collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "exchange",
            std::sync::Arc::new(StringArray::from_iter_values(
                rows.iter().map(|g| g.exchange.as_str()),
            )) as ArrayRef,
        ),
        (
            "symbol",
            std::sync::Arc::new(StringArray::from_iter_values(
                rows.iter().map(|g| g.symbol.as_str()),
            )),
        ),
        (
            "gap_start",
            std::sync::Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|g| g.start.format("%Y-%m-%dT%H:%MZ").to_string()),
            )),
        ),
        (
            "gap_end",
            std::sync::Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|g| g.end.format("%Y-%m-%dT%H:%MZ").to_string()),
            )),
        ),
        (
            "minutes",
            std::sync::Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|g| g.minutes()),
            )),
        ),
        (
            "status",
            std::sync::Arc::new(StringArray::from_iter_values(
                rows.iter().map(|g| g.status.as_str()),
            )),
        ),
        (
            "fetches",
            std::sync::Arc::new(Int32Array::from_iter_values(rows.iter().map(|g| g.fetches))),
        ),
    ])?;
    print!("{}", render(&[batch], format)?);
    if format == OutputFormat::Table {
        println!();
        let minutes = |s: gaps::GapStatus| -> i64 {
            rows.iter()
                .filter(|g| g.status == s)
                .map(|g| g.minutes())
                .sum()
        };
        println!(
            "{} gaps, {} minutes: {} missing (refetched by the next run or backfill), {} unconfirmed (refetched once to confirm), {} confirmed (the exchange has no candle there), {} unservable (no longer served); {} dates scanned",
            rows.len(),
            rows.iter().map(|g| g.minutes()).sum::<i64>(),
            minutes(gaps::GapStatus::Missing),
            minutes(gaps::GapStatus::Unconfirmed),
            minutes(gaps::GapStatus::Confirmed),
            minutes(gaps::GapStatus::Unservable),
            scan.dates_scanned
        );
    }
    Ok(ExitCode::SUCCESS)
}
