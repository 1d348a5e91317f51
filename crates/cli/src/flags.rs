//! The command line's flags: what clap parses, typed, and the few values it leaves as text
//! (symbol lists and times) turned into the model's types.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use cryptolake_model::{Exchange, Symbol, parse_time};
use cryptolake_pipeline::CronSchedule;
use cryptolake_pipeline::query::OutputFormat;
use cryptolake_pipeline::query::ddl::Engine;
use cryptolake_pipeline::reads::Interval;
use cryptolake_pipeline::settings::split_list;

/// cryptolake: a data lake for cryptocurrency market data.
///
/// Ingest pulls closed candles from exchanges into bronze (raw, append-only); silver builds
/// hourly OHLCV candles; gold builds daily OHLCV; sql queries silver (crypto_analytics) and
/// gold (crypto_gold).
/// `--written-at` of `bench generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WrittenAtArg {
    /// When it was fetched: a lake that ingestion filled over time (history).
    Fetched,
    /// Now, as ingestion writes: new bronze the next build must pick up.
    Now,
}

#[derive(Parser, Debug)]
#[command(name = "cryptolake", version, about, long_about = None)]
pub struct Cli {
    /// The lake: file://PATH or a directory path [env: CRYPTOLAKE_LAKE; config: lake]
    #[arg(long, global = true)]
    pub lake: Option<String>,
    /// Configuration file [env: CRYPTOLAKE_CONFIG; default: ./cryptolake.toml if present]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Seconds to wait when another run holds the lake's lease (default: fail at once)
    #[arg(long, global = true, default_value_t = 0)]
    pub wait_lock: u64,
    /// Run as if the wall clock stood still at this UTC instant (RFC 3339): for the
    /// benchmark's simulated hourly runs and for replaying a schedule (`simulate` serves the
    /// market as of this instant)
    #[arg(long, global = true, hide = true)]
    pub clock_at: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Serve the simulated exchange (Binance spot and futures, Coinbase, Kraken, OKX spot and
    /// swaps, Bybit spot and linear formats) on loopback until interrupted, optionally
    /// injecting faults
    Simulate(SimulateCmd),
    /// Build silver ohlcv_1h and ohlcv_1m from bronze objects not yet processed
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
        cron: Option<CronSchedule>,
    },
    /// Serve the dashboard, the HTTP API (/api/v1) and Prometheus metrics (/metrics), running
    /// the hourly job on its schedule as `schedule` does, until SIGINT/SIGTERM
    Serve {
        /// Address to listen on [config: server.http; default 127.0.0.1:8080]. Any address but
        /// loopback needs CRYPTOLAKE_SERVER_TOKEN
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Serve the lake read-only: no scheduled runs
        #[arg(long)]
        no_schedule: bool,
        /// Cron expression, UTC [config: schedule.cron]
        #[arg(long, conflicts_with = "no_schedule")]
        cron: Option<CronSchedule>,
        /// Also serve the PostgreSQL wire protocol on this address, for BI tools and database
        /// drivers [config: server.pg; off by default]. Any address but loopback needs a user
        /// (server.pg_users)
        #[arg(long)]
        pg: Option<SocketAddr>,
    },
    /// Print a password hash for [[server.pg_users]] password_hash, reading the password from
    /// stdin (one line). The password itself never goes in the config file
    PgPassword,
    /// Run SQL over crypto_analytics.ohlcv_1h and ohlcv_1m, crypto_gold.ohlcv_1d and the
    /// crypto_ops tables (read-only); without a query, open an interactive shell
    Sql {
        /// The query; omit for the interactive shell
        query: Option<String>,
        /// Output format: table, csv or json
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Write the lake's candles in a trading tool's own layout (freqtrade, nautilus_trader),
    /// adding only the candles it does not hold yet. Minutes the lake does not hold are left
    /// out, never filled; a longer timeframe's candle is written only when all its minutes are
    /// present or confirmed empty
    #[command(subcommand)]
    Export(ExportCmd),
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
        http: Option<SocketAddr>,
    },
}

/// A Binance archive's market, as `--market` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MarketArg {
    Spot,
    Futures,
}

#[derive(Args, Debug)]
pub struct BackfillCmd {
    /// Exchange: binance, binance-futures, coinbase, kraken, okx, okx-swap, bybit or bybit-linear
    #[arg(long)]
    pub exchange: Exchange,
    /// Comma-separated BASE-QUOTE symbols [config: exchanges.<name>.symbols]
    #[arg(long)]
    pub symbols: Option<String>,
    /// First day or instant (UTC), inclusive
    #[arg(long)]
    pub from: String,
    /// Last day (inclusive) or instant (exclusive), UTC; capped at the last closed minute
    #[arg(long)]
    pub to: String,
    /// REST API root of the exchange [config: exchanges.<name>.base_url]
    #[arg(long)]
    pub base_url: Option<String>,
    /// Symbols fetched at the same time, within the exchange's request budget
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Plain log lines instead of progress bars, even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImportCmd {
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
pub enum BenchCmd {
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
pub enum CatalogCmd {
    /// Print CREATE statements for every silver and gold table, generated from the schemas
    /// the writers use
    Ddl {
        /// athena, trino, spark or duckdb
        #[arg(long)]
        engine: Engine,
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

#[derive(Subcommand, Debug)]
pub enum ExportCmd {
    /// freqtrade's data directory: BTC_USDT-1m.feather (perpetuals in futures/), the files
    /// `freqtrade list-data`, `backtesting` and `load_pair_history` read as they are
    Freqtrade {
        /// The data directory (freqtrade's --datadir, e.g. user_data/data/binance)
        #[arg(long)]
        datadir: PathBuf,
        #[command(flatten)]
        what: ExportWhat,
    },
    /// A nautilus_trader ParquetDataCatalog: bars (BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL)
    /// and their instruments, read by ParquetDataCatalog(DIR).bars()
    Nautilus {
        /// The catalog's directory
        #[arg(long)]
        catalog: PathBuf,
        #[command(flatten)]
        what: ExportWhat,
    },
}

#[derive(Args, Debug)]
pub struct ExportWhat {
    /// Only this exchange (a freqtrade directory holds one: required when the lake holds
    /// several)
    #[arg(long)]
    pub exchange: Option<Exchange>,
    /// Only these comma-separated symbols
    #[arg(long)]
    pub symbols: Option<String>,
    /// Comma-separated timeframes: 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w, 1M
    #[arg(long, value_delimiter = ',', value_parser = parse_interval, default_value = "1m")]
    pub timeframes: Vec<Interval>,
    /// Candles starting at or after this instant (RFC 3339 or a date, UTC)
    #[arg(long)]
    pub from: Option<String>,
    /// Candles starting before this instant (RFC 3339 or a date, UTC)
    #[arg(long)]
    pub to: Option<String>,
    /// Output format of the summary: table, csv or json
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

fn parse_interval(s: &str) -> std::result::Result<Interval, String> {
    Interval::parse(s.trim()).ok_or_else(|| format!("expected one of {}", Interval::names()))
}

#[derive(Args, Debug)]
pub struct GapsCmd {
    /// Only this exchange
    #[arg(long)]
    pub exchange: Option<Exchange>,
    /// Only these comma-separated symbols
    #[arg(long)]
    pub symbols: Option<String>,
    /// First date (UTC)
    #[arg(long)]
    pub from: Option<String>,
    /// Last date (UTC), inclusive
    #[arg(long)]
    pub to: Option<String>,
    /// Output format: table, csv or json
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct SimulateCmd {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Seed of the simulated market
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of requests answered with a fault, 0 to 1
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Faults to draw from, comma separated: 429, 418, 5xx, timeout, reset, truncated,
    /// malformed, duplicates, out-of-order, short-page (OKX and Bybit only) [default: all but
    /// 418]
    #[arg(long)]
    pub faults: Option<String>,
}

#[derive(Args, Debug)]
pub struct IngestCmd {
    /// Exchange to ingest from
    #[arg(long, default_value = "binance")]
    pub exchange: Exchange,
    /// Comma-separated BASE-QUOTE symbols [config: exchanges.<name>.symbols]
    #[arg(long)]
    pub symbols: Option<String>,
    /// Start (RFC 3339 or YYYY-MM-DD, UTC); default: where the last ingest stopped
    #[arg(long)]
    pub since: Option<String>,
    /// End, exclusive (RFC 3339 or YYYY-MM-DD, UTC); default and cap: the last closed minute
    #[arg(long)]
    pub until: Option<String>,
    /// REST API root of the exchange [env: CRYPTOLAKE_<EXCHANGE>_BASE_URL]
    #[arg(long)]
    pub base_url: Option<String>,
    /// How far back a symbol's first ingest reaches, e.g. 90m, 24h, 7d [config: ingest.lookback]
    #[arg(long)]
    pub lookback: Option<String>,
    /// Symbols fetched at the same time [config: ingest.concurrency]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// What to fetch, comma-separated: candles, mark, funding (the last two of a perpetual
    /// market only); default: all the market has
    #[arg(long, value_delimiter = ',')]
    pub data: Option<Vec<DataKind>>,
}

/// What `ingest` fetches of a market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataKind {
    /// 1-minute trade candles
    Candles,
    /// a perpetual's 1-minute mark price candles
    Mark,
    /// a perpetual's funding rates
    Funding,
}

pub fn parse_symbols(text: &str) -> Result<Vec<Symbol>> {
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

pub fn parse_opt_time(flag: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    v.as_deref()
        .map(|s| parse_time(s).with_context(|| format!("--{flag}")))
        .transpose()
}

pub fn parse_day(flag: &str, v: &Option<String>) -> Result<Option<chrono::NaiveDate>> {
    Ok(parse_opt_time(flag, v)?.map(|t| t.date_naive()))
}
