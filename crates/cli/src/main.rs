//! The `cryptolake` command line: a front end over the pipeline library. It turns flags into
//! calls on [`Pipeline`] and results into output; the only place with `anyhow`, exit codes
//! and argument parsing.

mod backfill;
mod catalog;
mod demo;
#[cfg(feature = "glue")]
mod glue;
mod progress;
mod serve;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use cryptolake_model::{Exchange, ManualClock, Symbol, parse_time};
use cryptolake_pipeline::archive::Market;
use cryptolake_pipeline::bench::{GenerateRequest, WrittenAt};
use cryptolake_pipeline::settings::{parse_duration, split_list};
use cryptolake_pipeline::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use cryptolake_pipeline::{
    DEFAULT_TOML, IngestRequest, Options, Pipeline, RunSummary, Settings, TransformReport,
};
use cryptolake_pipeline::{GoldMetrics, IngestMetrics, SilverMetrics};
use cryptolake_query::{OutputFormat, render};

/// cryptolake: a data lake for cryptocurrency market data.
///
/// Ingest pulls closed candles from exchanges into bronze (raw, append-only); silver builds
/// hourly OHLCV candles; gold builds daily OHLCV; sql queries silver (crypto_analytics) and
/// gold (crypto_gold).
/// `--written-at` of `bench generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WrittenAtArg {
    /// When it was fetched: a lake that ingestion filled over time (history).
    Fetched,
    /// Now, as ingestion writes: new bronze the next build must pick up.
    Now,
}

#[derive(Parser, Debug)]
#[command(name = "cryptolake", version, about, long_about = None)]
struct Cli {
    /// The lake: file://PATH or a directory path [env: CRYPTOLAKE_LAKE; config: lake]
    #[arg(long, global = true)]
    lake: Option<String>,
    /// Configuration file [env: CRYPTOLAKE_CONFIG; default: ./cryptolake.toml if present]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Seconds to wait when another run holds the lake's lease (default: fail at once)
    #[arg(long, global = true, default_value_t = 0)]
    wait_lock: u64,
    /// Run as if the wall clock stood still at this UTC instant (RFC 3339): for the
    /// benchmark's simulated hourly runs and for replaying a schedule (`simulate` serves the
    /// market as of this instant)
    #[arg(long, global = true, hide = true)]
    clock_at: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented default cryptolake.toml
    Init {
        /// Where to write it
        #[arg(long, default_value = "cryptolake.toml")]
        path: PathBuf,
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
    },
    /// Fetch closed 1-minute candles from an exchange into bronze
    Ingest(IngestCmd),
    /// Fetch a range of history into bronze, resumably, with progress; then build silver (and
    /// the gap report, refetching its gaps once) and gold
    Backfill(BackfillCmd),
    /// Import files into bronze, then build silver and gold
    #[command(subcommand)]
    Import(ImportCmd),
    /// Report missing minutes per exchange and symbol (also as crypto_ops.gaps)
    Gaps(GapsCmd),
    /// Catalog statements for other engines (Athena, Trino, Spark, DuckDB), and the Glue catalog
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Serve the simulated exchange (Binance, Binance futures, Coinbase and Kraken formats) on
    /// loopback until interrupted, optionally injecting faults
    Simulate(SimulateCmd),
    /// Build silver ohlcv_1h from bronze objects not yet processed
    Silver {
        /// Recompute every partition from all of bronze
        #[arg(long)]
        rebuild: bool,
    },
    /// Build gold ohlcv_1d for the days whose silver changed
    Gold {
        /// Recompute every partition from silver
        #[arg(long)]
        rebuild: bool,
    },
    /// The hourly job once: ingest every enabled exchange, then silver, then gold
    Run,
    /// Run the hourly job on a cron schedule (UTC) until SIGINT or SIGTERM
    Schedule {
        /// Cron expression, UTC [config: schedule.cron]
        #[arg(long)]
        cron: Option<String>,
    },
    /// Serve the dashboard, the HTTP API (/api/v1) and Prometheus metrics (/metrics), running
    /// the hourly job on its schedule as `schedule` does, until SIGINT/SIGTERM
    Serve {
        /// Address to listen on [config: server.http; default 127.0.0.1:8080]. Any address but
        /// loopback needs CRYPTOLAKE_SERVER_TOKEN
        #[arg(long)]
        http: Option<String>,
        /// Serve the lake read-only: no scheduled runs
        #[arg(long)]
        no_schedule: bool,
        /// Cron expression, UTC [config: schedule.cron]
        #[arg(long, conflicts_with = "no_schedule")]
        cron: Option<String>,
        /// Also serve the PostgreSQL wire protocol on this address, for BI tools and database
        /// drivers [config: server.pg; off by default]. Any address but loopback needs a user
        /// (server.pg_users)
        #[arg(long)]
        pg: Option<String>,
    },
    /// Print a password hash for [[server.pg_users]] password_hash, reading the password from
    /// stdin (one line). The password itself never goes in the config file
    PgPassword,
    /// Run SQL over crypto_analytics.ohlcv_1h and crypto_gold.ohlcv_1d (read-only); without a
    /// query, open an interactive shell
    Sql {
        /// The query; omit for the interactive shell
        query: Option<String>,
        /// Output format: table, csv or json
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Evaluate the quality rules over silver and gold; exit 1 when a rule with action fail is
    /// broken
    Check {
        /// First date (YYYY-MM-DD) to check
        #[arg(long)]
        from: Option<String>,
        /// Last date (YYYY-MM-DD) to check
        #[arg(long)]
        to: Option<String>,
        /// Check the tables' files instead of the data: stray, damaged (each file is read
        /// whole) and missing files, with what the next build does about each. Exit status 1
        /// when any is found.
        #[arg(long)]
        files: bool,
    },
    /// List recent runs from crypto_ops.runs, newest first
    Runs {
        /// How many steps to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Output format: table, csv or json
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Benchmark input: write a realistic bronze layer at a chosen scale (see bench/)
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run everything offline against the built-in simulated exchange and show the result
    Demo {
        /// Days of history to backfill
        #[arg(long, default_value_t = 3)]
        days: u32,
        /// Seed of the simulated market
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Then serve the demo lake's dashboard (read-only) until Ctrl-C
        #[arg(long)]
        serve: bool,
        /// With --serve: the address [default 127.0.0.1:8080]
        #[arg(long, requires = "serve")]
        http: Option<String>,
    },
}

/// A Binance archive's market, as `--market` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum MarketArg {
    Spot,
    Futures,
}

#[derive(Args, Debug)]
struct BackfillCmd {
    /// Exchange: binance, binance-futures, coinbase or kraken
    #[arg(long)]
    exchange: Exchange,
    /// Comma-separated BASE-QUOTE symbols [config: exchanges.<name>.symbols]
    #[arg(long)]
    symbols: Option<String>,
    /// First day or instant (UTC), inclusive
    #[arg(long)]
    from: String,
    /// Last day (inclusive) or instant (exclusive), UTC; capped at the last closed minute
    #[arg(long)]
    to: String,
    /// REST API root of the exchange [config: exchanges.<name>.base_url]
    #[arg(long)]
    base_url: Option<String>,
    /// Symbols fetched at the same time, within the exchange's request budget
    #[arg(long)]
    concurrency: Option<usize>,
    /// Plain log lines instead of progress bars, even on a terminal
    #[arg(long)]
    no_progress: bool,
}

#[derive(Subcommand, Debug)]
enum ImportCmd {
    /// data.binance.vision kline files (zip or CSV, daily or monthly, spot or USDⓈ-M futures);
    /// a PATH.CHECKSUM beside a file is verified
    BinanceArchive {
        /// Files to import (directories are searched for .zip and .csv files)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The BASE-QUOTE symbol, when the file name does not make it clear
        #[arg(long)]
        symbol: Option<String>,
        /// spot or futures (USDⓈ-M), when the path does not say (.../spot/..., .../futures/um/...)
        #[arg(long, value_enum)]
        market: Option<MarketArg>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// N symbols x D days of Binance 1-minute klines into bronze, as ingestion writes them,
    /// with occasional gaps and duplicate pages
    Generate {
        #[arg(long)]
        symbols: usize,
        /// Days of history (or --hours)
        #[arg(long)]
        days: Option<u32>,
        /// Hours of history (an hourly run's worth: --hours 1)
        #[arg(long)]
        hours: Option<u32>,
        /// Start (UTC date or RFC 3339 time)
        #[arg(long, default_value = "2024-01-01")]
        from: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Minutes per page (1000, Binance's largest page, by default; fewer makes more and
        /// smaller objects)
        #[arg(long, default_value_t = 1000)]
        window_minutes: i64,
        /// Date the manifest entries when the pages were fetched (history) or now (new bronze
        /// for the next build, as ingestion writes it)
        #[arg(long, value_enum, default_value = "fetched")]
        written_at: WrittenAtArg,
    },
    /// Delete everything built from bronze (silver, gold, quarantine, ops tables, build
    /// state), keeping bronze, so that the next build is a first build
    Reset {
        /// Required: the deletion cannot be undone (bronze can rebuild it all)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CatalogCmd {
    /// Print CREATE statements for every silver and gold table, generated from the schemas
    /// the writers use
    Ddl {
        /// athena, trino, spark or duckdb
        #[arg(long)]
        engine: String,
        /// Where the lake is as the engine sees it (default: this lake's URL)
        #[arg(long)]
        location: Option<String>,
        /// First day of Athena's partition projection (default: the lake's first day)
        #[arg(long)]
        first_day: Option<String>,
    },
    /// Create or update the Glue databases and tables (needs a build with --features glue)
    Register {
        /// Register in the AWS Glue Data Catalog
        #[arg(long)]
        glue: bool,
        /// Where the lake is as Athena sees it (default: this lake's URL)
        #[arg(long)]
        location: Option<String>,
        /// First day of the partition projection (default: the lake's first day)
        #[arg(long)]
        first_day: Option<String>,
        /// Glue API endpoint instead of AWS (a stand-in such as moto in server mode)
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Args, Debug)]
struct GapsCmd {
    /// Only this exchange
    #[arg(long)]
    exchange: Option<Exchange>,
    /// Only these comma-separated symbols
    #[arg(long)]
    symbols: Option<String>,
    /// First date (UTC)
    #[arg(long)]
    from: Option<String>,
    /// Last date (UTC), inclusive
    #[arg(long)]
    to: Option<String>,
    /// Output format: table, csv or json
    #[arg(long, default_value = "table")]
    format: OutputFormat,
}

#[derive(Args, Debug)]
struct SimulateCmd {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Seed of the simulated market
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of requests answered with a fault, 0 to 1
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Faults to draw from, comma separated: 429, 418, 5xx, timeout, reset, truncated,
    /// malformed, duplicates, out-of-order [default: all but 418]
    #[arg(long)]
    faults: Option<String>,
}

#[derive(Args, Debug)]
struct IngestCmd {
    /// Exchange to ingest from
    #[arg(long, default_value = "binance")]
    exchange: Exchange,
    /// Comma-separated BASE-QUOTE symbols [config: exchanges.<name>.symbols]
    #[arg(long)]
    symbols: Option<String>,
    /// Start (RFC 3339 or YYYY-MM-DD, UTC); default: where the last ingest stopped
    #[arg(long)]
    since: Option<String>,
    /// End, exclusive (RFC 3339 or YYYY-MM-DD, UTC); default and cap: the last closed minute
    #[arg(long)]
    until: Option<String>,
    /// REST API root of the exchange [env: CRYPTOLAKE_<EXCHANGE>_BASE_URL]
    #[arg(long)]
    base_url: Option<String>,
    /// How far back a symbol's first ingest reaches, e.g. 90m, 24h, 7d [config: ingest.lookback]
    #[arg(long)]
    lookback: Option<String>,
    /// Symbols fetched at the same time [config: ingest.concurrency]
    #[arg(long)]
    concurrency: Option<usize>,
}

fn init_logging(quiet: bool) {
    use std::io::IsTerminal;
    let filter = std::env::var("CRYPTOLAKE_LOG").unwrap_or_else(|_| {
        if quiet {
            "warn".to_string()
        } else {
            "warn,cryptolake=info,cryptolake_pipeline=info,cryptolake_lake=info,cryptolake_sources=warn"
                .to_string()
        }
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Commands whose output is the point (query results, the demo's walk-through) log warnings
/// only, and so does a backfill drawing progress bars, so that lines do not tear the bars.
fn quiet(command: &Command) -> bool {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(quiet(&cli.command));
    let runtime = match cryptolake_pipeline::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cryptolake_model::redact(&one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, leaving out causes the line already says.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
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
    if let Some(lake) = &cli.lake {
        settings.lake = lake.clone();
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

fn parse_symbols(text: &str) -> Result<Vec<Symbol>> {
    let symbols: Vec<Symbol> = split_list(text)
        .iter()
        .map(|s| Symbol::parse(s))
        .collect::<Result<_, _>>()
        .context("--symbols")?;
    if symbols.is_empty() {
        bail!("--symbols is empty");
    }
    Ok(symbols)
}

fn parse_opt_time(flag: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    v.as_deref()
        .map(|s| parse_time(s).with_context(|| format!("--{flag}")))
        .transpose()
}

fn parse_day(flag: &str, v: &Option<String>) -> Result<Option<chrono::NaiveDate>> {
    Ok(parse_opt_time(flag, v)?.map(|t| t.date_naive()))
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
                    anyhow!("--faults: unknown fault {f:?} (429, 418, 5xx, timeout, reset, truncated, malformed, duplicates, out-of-order, long-ban, oversized, overlong)")
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
    std::fs::write(path, DEFAULT_TOML).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
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
        Command::Silver { rebuild } => {
            let p = pipeline().await?;
            print!(
                "{}",
                silver_summary(&p.silver(*rebuild, &p.new_run_id()).await?)
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
        Command::Schedule { cron } => schedule(&pipeline().await?, cron.as_deref()).await,
        Command::Serve {
            http,
            no_schedule,
            cron,
            pg,
        } => {
            let p = open(&cli, settings()?).await?;
            serve::run(
                p,
                http.as_deref(),
                !no_schedule,
                cron.as_deref(),
                pg.as_deref(),
            )
            .await
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

async fn schedule(p: &Pipeline, cron: Option<&str>) -> Result<ExitCode> {
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
    let m = p.ingest(&req, &|_, _| {}).await?;
    // What arrived is printed either way; the error names what did not.
    print!("{}", ingest_summary(exchange, &m));
    match cryptolake_pipeline::incomplete_ingest(exchange, &m) {
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

/// Exit status 1, naming every problem, when any exchange or the transform failed.
fn finish_run(summary: &RunSummary) -> Result<ExitCode> {
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
    out
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
