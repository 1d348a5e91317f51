//! Dispatch: each command's flags into calls on the pipeline, and its results into output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cryptolake_model::{Exchange, ManualClock, Symbol, parse_time};
use cryptolake_pipeline::archive::Market;
use cryptolake_pipeline::bench::{GenerateRequest, WrittenAt};
use cryptolake_pipeline::query::{OutputFormat, render};
use cryptolake_pipeline::settings::{parse_duration, split_list};
use cryptolake_pipeline::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use cryptolake_pipeline::{CronSchedule, IngestRequest, Options, Pipeline, Settings, default_toml};

use crate::flags::*;
use crate::output::*;
use crate::{backfill, catalog, demo, serve, shell};

/// Commands whose output is the point (query results, the demo's walk-through) log warnings
/// only, and so does a backfill drawing progress bars, so that lines do not tear the bars.
pub fn quiet(command: &Command) -> bool {
    match command {
        Command::Backfill(b) => {
            !b.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
        Command::Sql { .. }
        | Command::Runs { .. }
        | Command::Demo { .. }
        | Command::Init { .. }
        | Command::Gaps(_)
        | Command::Catalog(_) => true,
        _ => false,
    }
}

/// The settings: the file (`--config`, `CRYPTOLAKE_CONFIG`, or `./cryptolake.toml`), the
/// `CRYPTOLAKE_*` environment, then `--lake`. The whole environment is passed: settings come
/// from `CRYPTOLAKE_*` only, and a wire-protocol user's `password_env` names any other.
fn load_settings(cli: &Cli) -> Result<Settings> {
    let env_vars: Vec<(String, String)> = std::env::vars().collect();
    let config_path = cli.config.clone().or_else(|| {
        env_vars
            .iter()
            .find(|(k, _)| k == "CRYPTOLAKE_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    });
    let mut settings = Settings::load(config_path.as_deref(), &env_vars)?;
    // Parsed here rather than by clap, whose message would repeat the value: a URL holding
    // credentials must never be printed.
    if let Some(lake) = &cli.lake {
        settings.lake = lake.parse().context("--lake")?;
    }
    Ok(settings)
}

/// Opens the pipeline the command needs: an existing lake only for commands that only read
/// or report, and the CLI's printing of step events.
async fn open(cli: &Cli, settings: Settings) -> Result<Pipeline> {
    // A read-only `serve` writes nothing, not even a probe: on S3 a reader's role may have no
    // PutObject.
    let existing_only = matches!(
        cli.command,
        Command::Sql { .. }
            | Command::Runs { .. }
            | Command::Gaps(_)
            | Command::Check { .. }
            | Command::Export(_)
            | Command::Serve {
                no_schedule: true,
                ..
            }
    );
    let mut options = Options {
        lock_wait: Duration::from_secs(cli.wait_lock),
        existing_only,
        ..Options::default()
    };
    if let Some(at) = &cli.clock_at {
        let at = parse_time(at).context("--clock-at")?;
        options.clock = Arc::new(ManualClock::new(at));
    }
    let pipeline = Pipeline::open(settings, options).await?;
    if quiet(&cli.command) {
        return Ok(pipeline);
    }
    Ok(pipeline.with_events(Arc::new(|e| tracing::info!("step {}", e.line()))))
}

/// `cryptolake simulate`: the simulated exchange in the foreground.
async fn simulate(cmd: &SimulateCmd, clock_at: Option<&str>) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&cmd.fault_rate) {
        bail!(
            "--fault-rate {}: expected a number from 0 to 1",
            cmd.fault_rate
        );
    }
    let kinds = match &cmd.faults {
        None => Fault::RANDOM.to_vec(),
        Some(list) => split_list(list)
            .iter()
            .map(|f| {
                Fault::parse(f).ok_or_else(|| {
                    anyhow!("--faults: unknown fault {f:?} (429, 418, 5xx, timeout, reset, truncated, malformed, duplicates, out-of-order, short-page, long-ban, oversized, overlong)")
                })
            })
            .collect::<Result<_>>()?,
    };
    // With --clock-at the market stands still at that instant: a replay of hourly runs serves
    // what each run's own clock allows.
    let clock = match clock_at {
        Some(at) => SimClock::Fixed(parse_time(at).context("--clock-at")?),
        None => SimClock::Real,
    };
    let mut options = SimOptions::new(clock);
    options.faults = FaultPlan {
        kinds,
        ..FaultPlan::random(cmd.fault_rate, cmd.seed)
    };
    let server =
        SimServer::start_with(SimMarket::default_market(cmd.seed), options, cmd.port).await?;
    let market = SimMarket::default_market(cmd.seed);
    println!(
        "simulated exchange on {} (seed {}, fault rate {})",
        server.base_url(),
        cmd.seed,
        cmd.fault_rate
    );
    for ex in Exchange::ALL {
        let listed: Vec<String> = market.listed(ex).iter().map(|s| s.to_string()).collect();
        println!("  {ex:<16} {}", listed.join(", "));
    }
    println!(
        "point an exchange at it with --base-url {} or CRYPTOLAKE_<EXCHANGE>_BASE_URL; Ctrl-C stops",
        server.base_url()
    );
    tokio::signal::ctrl_c().await?;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

fn init(path: &PathBuf, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    std::fs::write(path, default_toml()).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    // The settings and the pipeline, for the commands that use them.
    let settings = || load_settings(&cli);
    let pipeline = async || open(&cli, settings()?).await;
    match &cli.command {
        Command::Init { path, force } => init(path, *force),
        Command::Simulate(cmd) => simulate(cmd, cli.clock_at.as_deref()).await,
        Command::Demo { .. } => demo::run(&cli, settings()?).await,
        Command::Catalog(cmd) => catalog::run(&settings()?, cmd).await,
        Command::Sql { query, format } => sql(&pipeline().await?, query.as_deref(), *format).await,
        Command::Runs { limit, format } => runs(&pipeline().await?, *limit, *format).await,
        Command::Ingest(cmd) => ingest(&pipeline().await?, cmd).await,
        Command::Backfill(cmd) => backfill::run(&pipeline().await?, cmd).await,
        Command::Import(ImportCmd::BinanceArchive {
            paths,
            symbol,
            market,
        }) => {
            let symbol = symbol.as_deref().map(Symbol::parse).transpose()?;
            let market = market.map(|m| match m {
                MarketArg::Spot => Market::Spot,
                MarketArg::Futures => Market::Futures,
            });
            backfill::import(&pipeline().await?, paths, symbol.as_ref(), market).await
        }
        Command::Gaps(cmd) => {
            let symbols = cmd.symbols.as_deref().map(parse_symbols).transpose()?;
            let range = (parse_day("from", &cmd.from)?, parse_day("to", &cmd.to)?);
            backfill::report_gaps(&pipeline().await?, cmd.exchange, symbols, range, cmd.format)
                .await
        }
        Command::Export(cmd) => export(&pipeline().await?, cmd).await,
        Command::Silver { rebuild } => {
            let p = pipeline().await?;
            let run_id = p.new_run_id();
            print!("{}", silver_summary(&p.silver(*rebuild, &run_id).await?));
            // The perpetual markets' tables: funding (with its gold) and mark prices.
            print!(
                "{}",
                crate::output::perpetuals_summary(&p.funding(*rebuild, &run_id).await?)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gold { rebuild } => {
            let p = pipeline().await?;
            print!(
                "{}",
                gold_summary(&p.gold(*rebuild, &p.new_run_id()).await?)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files: true, .. } => check_files(&pipeline().await?).await,
        Command::Check { from, to, .. } => {
            let range = (parse_day("from", from)?, parse_day("to", to)?);
            check(&pipeline().await?, range).await
        }
        Command::Run => {
            let summary = pipeline().await?.run_once().await;
            print!("{}", run_summary(&summary));
            finish_run(&summary)
        }
        Command::Schedule { cron } => schedule(&pipeline().await?, cron.as_ref()).await,
        Command::Serve {
            http,
            no_schedule,
            cron,
            pg,
        } => {
            let p = open(&cli, settings()?).await?;
            serve::run(p, *http, !no_schedule, cron.as_ref(), *pg).await
        }
        Command::PgPassword => serve::pg_password(),
        Command::Bench(BenchCmd::Generate {
            symbols,
            days,
            hours,
            from,
            seed,
            window_minutes,
            written_at,
        }) => {
            let start = parse_time(from).context("--from")?;
            let span = match (days, hours) {
                (Some(d), None) => chrono::Duration::days(i64::from(*d)),
                (None, Some(h)) => chrono::Duration::hours(i64::from(*h)),
                _ => bail!("pass one of --days or --hours"),
            };
            let p = pipeline().await?;
            let g = p
                .bench_generate(GenerateRequest {
                    symbols: *symbols,
                    range: (start, start + span),
                    seed: *seed,
                    window_minutes: *window_minutes,
                    written_at: match written_at {
                        WrittenAtArg::Fetched => WrittenAt::Fetched,
                        WrittenAtArg::Now => WrittenAt::Now,
                    },
                })
                .await?;
            println!("{}", serde_json::to_string(&g)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Reset { yes }) => {
            if !yes {
                bail!(
                    "bench reset deletes silver, gold, quarantine, the ops tables and the build state of this lake; pass --yes to do it"
                );
            }
            let p = pipeline().await?;
            let n = p.bench_reset().await?;
            println!("deleted {n} objects built from bronze");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn schedule(p: &Pipeline, cron: Option<&CronSchedule>) -> Result<ExitCode> {
    let cron = cron.unwrap_or(&p.settings().schedule.cron);
    let signals = cryptolake_pipeline::schedule::shutdown_signals()?;
    cryptolake_pipeline::schedule::run(p, cron, signals, &|s| print!("{}", run_summary(s))).await?;
    Ok(ExitCode::SUCCESS)
}

async fn sql(p: &Pipeline, query: Option<&str>, format: OutputFormat) -> Result<ExitCode> {
    let engine = p.query_engine().await?;
    match query {
        Some(q) => {
            let batches = engine.query(q).await?;
            print!("{}", render(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        None => shell::run(&engine, format).await.map(|_| ExitCode::SUCCESS),
    }
}

async fn export(p: &Pipeline, cmd: &ExportCmd) -> Result<ExitCode> {
    use cryptolake_pipeline::export::{ExportRequest, ExportTarget};
    let (target, what) = match cmd {
        ExportCmd::Freqtrade { datadir, what } => (ExportTarget::Freqtrade(datadir.clone()), what),
        ExportCmd::Nautilus { catalog, what } => (ExportTarget::Nautilus(catalog.clone()), what),
    };
    let req = ExportRequest {
        exchanges: what.exchange.into_iter().collect(),
        symbols: what
            .symbols
            .as_deref()
            .map(parse_symbols)
            .transpose()?
            .unwrap_or_default(),
        intervals: what.timeframes.clone(),
        from: parse_opt_time("from", &what.from)?,
        to: parse_opt_time("to", &what.to)?,
    };
    let report = p.export(&target, &req).await?;
    print!("{}", render(&[report.to_batch()?], what.format)?);
    if what.format == OutputFormat::Table {
        println!(
            "\n{} candles added in {} files",
            report.added(),
            report.files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(p: &Pipeline, limit: usize, format: OutputFormat) -> Result<ExitCode> {
    let runs = p.reads().runs(limit).await?;
    let mut batch = cryptolake_pipeline::reads::runs_batch(&runs)?;
    // The terminal table leaves out the end time, which start and seconds already tell.
    if let Ok(i) = batch.schema().index_of("finished_at") {
        batch.remove_column(i);
    }
    print!("{}", render(&[batch], format)?);
    if format == OutputFormat::Table {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

async fn ingest(p: &Pipeline, cmd: &IngestCmd) -> Result<ExitCode> {
    let exchange = cmd.exchange;
    let lookback = cmd
        .lookback
        .as_deref()
        .map(|l| {
            parse_duration(l)
                .map_err(|e| anyhow!("--lookback: {e}"))
                .and_then(|d| chrono::Duration::from_std(d).context("--lookback"))
        })
        .transpose()?;
    let now = p.now();
    let req = IngestRequest {
        symbols: cmd.symbols.as_deref().map(parse_symbols).transpose()?,
        concurrency: cmd.concurrency.map(|c| c.max(1)),
        since: parse_opt_time("since", &cmd.since)?,
        until: parse_opt_time("until", &cmd.until)?,
        base_url: cmd.base_url.clone(),
        lookback,
        ..IngestRequest::hourly(exchange, &p.new_run_id(), now)
    };
    use crate::flags::DataKind;
    let wanted = |k: DataKind| cmd.data.as_ref().is_none_or(|d| d.contains(&k));
    if !exchange.is_perpetual()
        && let Some(k) = cmd.data.iter().flatten().find(|k| **k != DataKind::Candles)
    {
        bail!(
            "--data {k:?}: {exchange} is not a perpetual market; mark prices and funding are on binance-futures, okx-swap and bybit-linear"
        );
    }
    let mut incomplete = None;
    if wanted(DataKind::Candles) {
        let m = p.ingest(&req, &|_, _| {}).await?;
        // What arrived is printed either way; the error names what did not.
        print!("{}", ingest_summary(exchange, &m));
        incomplete = cryptolake_pipeline::incomplete_ingest(exchange, &m);
    }
    // A perpetual market's mark prices and funding come with its candles, as in the hourly job.
    if exchange.is_perpetual() && wanted(DataKind::Mark) {
        let mark = IngestRequest {
            prices: cryptolake_pipeline::Prices::Mark,
            ..req.clone()
        };
        let m = p.ingest(&mark, &|_, _| {}).await?;
        print!(
            "{}",
            ingest_summary(exchange, &m).replacen("ingest ", "mark prices ", 1)
        );
        incomplete = incomplete.or(cryptolake_pipeline::incomplete_ingest(exchange, &m));
    }
    if exchange.is_perpetual() && wanted(DataKind::Funding) {
        let funding = cryptolake_pipeline::FundingRequest {
            symbols: req.symbols.clone(),
            since: req.since,
            until: req.until,
            base_url: req.base_url.clone(),
            ..cryptolake_pipeline::FundingRequest::hourly(exchange, &req.run_id, now)
        };
        let outcomes = p.ingest_funding(&funding, &|_, _| {}).await?;
        for o in &outcomes {
            match &o.error {
                None => println!(
                    "funding {exchange}: {}: {} events in {} requests",
                    o.symbol, o.rows, o.pages
                ),
                Some(e) => println!("funding {exchange}: {}: FAILED: {e}", o.symbol),
            }
        }
        if outcomes.iter().any(|o| o.error.is_some()) && incomplete.is_none() {
            return Err(anyhow!("funding of {exchange} incomplete (see above)"));
        }
    }
    match incomplete {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
    }
}

async fn check(
    p: &Pipeline,
    (from, to): (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>),
) -> Result<ExitCode> {
    let results = p.check(from, to, &p.new_run_id()).await?;
    let violations: Vec<_> = results.iter().filter(|r| r.is_violation()).collect();
    for r in &violations {
        println!(
            "{:<5} {}",
            r.action.as_str(),
            cryptolake_pipeline::describe(r)
        );
    }
    let rules_checked: std::collections::BTreeSet<_> =
        results.iter().map(|r| r.rule.as_str()).collect();
    println!(
        "check: {} rules, {} violations ({} with action fail)",
        rules_checked.len(),
        violations.len(),
        violations.iter().filter(|r| r.fails()).count()
    );
    let files = p.verify_files(false).await?;
    if !files.is_empty() {
        println!(
            "files: {} stray or missing; `cryptolake check --files` lists them",
            files.len()
        );
    }
    cryptolake_pipeline::verdict(&results)?;
    Ok(ExitCode::SUCCESS)
}

async fn check_files(p: &Pipeline) -> Result<ExitCode> {
    let problems = p.verify_files(true).await?;
    for f in &problems {
        println!("{:<8} {}", f.problem.as_str(), f.key);
        if !f.detail.is_empty() {
            println!("         {}", f.detail);
        }
        println!("         -> {}", f.action);
    }
    if problems.is_empty() {
        println!("files: every table file is the lake's own and readable");
        return Ok(ExitCode::SUCCESS);
    }
    bail!(
        "{} file problem(s) in the lake's tables (listed above)",
        problems.len()
    )
}
