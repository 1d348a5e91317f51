//! The one typed configuration: `cryptolake.toml`, then `CRYPTOLAKE_*` environment variables,
//! then whatever a front end's flags set on the result.
//!
//! Every value is parsed and range-checked once, here, into typed fields: durations become
//! durations, exchanges become [`Exchange`] and symbols [`Symbol`]. Nothing downstream parses a
//! setting again. Every default lives in [`Settings::default`]; the commented file that
//! `cryptolake init` writes ([`DEFAULT_TOML`]) parses to exactly those defaults (a test says so).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cryptolake_lake::quality::{Action, QualityRules};
use cryptolake_lake::{LakeOptions, SimulatedLatency};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::ExchangeClient;
use cryptolake_sources::limit::Budget;
use serde::Deserialize;

use crate::{Error, Result};

/// The file `cryptolake init` writes. Every key is documented where it stands.
pub const DEFAULT_TOML: &str = r#"# cryptolake configuration.
#
# Every setting can be overridden by an environment variable (named beside it) and, where
# noted, by a command-line flag. Unknown keys are errors. Secrets never belong here: AWS
# credentials come from the standard AWS environment and credential chain.

# Where the lake lives: file://PATH (a relative PATH is relative to the working directory)
# or a plain directory path.
# Env: CRYPTOLAKE_LAKE. Flag: --lake.
lake = "file://./lake"

[s3]
# For s3:// lakes only. An S3-compatible endpoint (MinIO, SeaweedFS, ...) instead of AWS;
# leave unset for AWS. Env: CRYPTOLAKE_S3_ENDPOINT (or the standard AWS_ENDPOINT_URL).
# endpoint = "http://127.0.0.1:8333"
# The region; unset means AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
# Env: CRYPTOLAKE_S3_REGION.
# region = "eu-west-1"
# For benchmarks: a wait before every request of the lake, local or S3, per request class
# (get, put, list, delete), to see how a build behaves at a distant store's latency.
# Env: CRYPTOLAKE_S3_SIMULATED_LATENCY.
# simulated_latency = "get=20ms,list=20ms,put=30ms"

[ingest]
# How far back the first ingest of a symbol reaches when no --since is given. Later ingests
# continue from where the previous one stopped. A number with m, h or d.
# Env: CRYPTOLAKE_INGEST_LOOKBACK. Flag: ingest --lookback.
lookback = "24h"
# How many symbols are fetched at the same time (each exchange's request budget still
# applies across all of them).
# Env: CRYPTOLAKE_INGEST_CONCURRENCY. Flag: ingest/backfill --concurrency.
concurrency = 4
# How long one request may take before it is abandoned and retried (s, m).
# Env: CRYPTOLAKE_INGEST_REQUEST_TIMEOUT.
request_timeout = "30s"
# Gap refetches per symbol and run: missing or unconfirmed minutes found in silver are fetched
# again by the next run or backfill, at most this many request windows per symbol each time.
# Env: CRYPTOLAKE_INGEST_MAX_REFETCH_WINDOWS.
max_refetch_windows = 24

[schedule]
# When `cryptolake schedule` runs the hourly job (ingest, silver, gold): a cron expression
# (minute hour day-of-month month day-of-week), always in UTC. Default: 5 minutes past every
# hour, so the hour just closed is complete at the exchange.
# Env: CRYPTOLAKE_SCHEDULE_CRON. Flag: schedule --cron.
cron = "5 * * * *"

[silver]
# How far back each silver build re-reads the bronze manifest from the start of the build
# before it: a writer announces an object, then writes it, and one that started before that
# build may finish after it. Raise it if a writer can take longer between the two.
# Env: CRYPTOLAKE_SILVER_MANIFEST_OVERLAP.
manifest_overlap = "10m"
# Bronze objects each date's build reads at once (1 to 1024). On S3 each read waits on the
# network, so many in flight hide the latency (64 by default there, and on a local lake with
# s3.simulated_latency); on local disk more than
# a few only costs memory (8 by default). Env: CRYPTOLAKE_SILVER_READ_CONCURRENCY.
# read_concurrency = 64
# At most how many dates a first build or a rebuild lists and builds at a time (1 to 366;
# fewer where dates hold many objects, about 8,192 objects a batch): its memory holds three
# batches' bronze keys (one listed ahead, one built, one in the gap report), whatever the size
# of bronze. Env: CRYPTOLAKE_SILVER_BATCH_DAYS.
batch_days = 32

[query]
# Limits of every SQL statement (cryptolake sql, the shell, and every front end that runs SQL).
# Memory its operators and its result may hold: sorts, aggregates and joins spill to disk past
# it, and what cannot spill fails with an error. Sizes take B, KiB, MiB, GiB (or KB, MB, GB).
# Env: CRYPTOLAKE_QUERY_MEMORY_LIMIT.
memory_limit = "2GiB"
# Disk the spill files of one statement may take. Env: CRYPTOLAKE_QUERY_SPILL_LIMIT.
spill_limit = "10GiB"
# How long one statement may run. Env: CRYPTOLAKE_QUERY_TIMEOUT.
timeout = "5m"

[server]
# Where `cryptolake serve` listens (dashboard, HTTP API, /metrics). Loopback by default; any
# other address needs an access token in the environment variable CRYPTOLAKE_SERVER_TOKEN
# (never in this file), which every request then carries as `Authorization: Bearer TOKEN`.
# Env: CRYPTOLAKE_SERVER_HTTP. Flag: serve --http.
http = "127.0.0.1:8080"
# The most rows one SQL request to the server returns. Env: CRYPTOLAKE_SERVER_MAX_ROWS.
max_rows = 100000
# Memory for decoded partitions that the dashboard, the API, /metrics and the reports are
# answered from; the least recently used are dropped past it. Env: CRYPTOLAKE_SERVER_READ_CACHE.
read_cache = "512MiB"
# Host names the server answers to besides its own address, localhost and IP addresses: a
# request naming any other `Host` is refused (421), which keeps a web page that rebinds its
# name to this machine from reading it. Env: CRYPTOLAKE_SERVER_ALLOWED_HOSTS (comma separated).
# allowed_hosts = ["lake.example.internal"]
# The PostgreSQL wire protocol, for BI tools and database drivers (docs/bi.md); off unless set.
# Loopback needs no user; any other address needs at least one user below.
# Env: CRYPTOLAKE_SERVER_PG. Flag: serve --pg.
# pg = "127.0.0.1:5432"
# Clients connected at once; one more is told "too many clients" (SQLSTATE 53300).
# Env: CRYPTOLAKE_SERVER_PG_MAX_CONNECTIONS.
pg_max_connections = 32
# TLS for the wire protocol: both files (PEM) or neither. Files that cannot be used stop the
# server; it never falls back to plain text. Env: CRYPTOLAKE_SERVER_PG_TLS_CERT, _TLS_KEY.
# pg_tls_cert = "/etc/cryptolake/server.crt"
# pg_tls_key = "/etc/cryptolake/server.key"
#
# Users, who sign in with SCRAM-SHA-256. A password is never written here: give its hash, from
# `cryptolake pg-password` (which reads the password on stdin), or the name of an environment
# variable holding it. One more user may come from CRYPTOLAKE_SERVER_PG_USER and
# CRYPTOLAKE_SERVER_PG_PASSWORD.
# [[server.pg_users]]
# name = "grafana"
# password_hash = "cryptolake-scram-sha-256$4096:…$…"
# [[server.pg_users]]
# name = "metabase"
# password_env = "METABASE_PG_PASSWORD"

[quality]
# Data-quality rules. Actions: warn (report, keep the data), drop (leave the record out, count
# it), quarantine (leave it out, keep it under quarantine/ with its reason), fail (the step
# fails, exit status 1, naming the rows). Results of every run are in crypto_ops.quality_results;
# `cryptolake check` evaluates the table rules on demand.
#
# Record rules, for every candle silver reads (drop, quarantine or fail):
# high/low consistent with open and close, prices positive and finite.
ohlc = "quarantine"
# volume, quote volume and trade count not negative.
amounts = "quarantine"
# open time on the minute grid.
alignment = "quarantine"
# Table rules (warn or fail): the same minute fetched more than once with different values
# (the exchange revised it; the latest fetch is kept). Identical refetches are expected.
duplicates = "warn"

[quality.completeness]
# Hours with fewer minutes, and closed days with fewer hours, are reported.
min_minutes_per_hour = 60
min_hours_per_day = 24
action = "warn"

[quality.freshness]
# The newest closed hour of each symbol must have ended at most this long ago.
max_age_minutes = 180
action = "warn"

[quality.price_jump]
# Largest allowed change of an hour's close against the previous hour's close (0.2 = 20%).
max_change = 0.2
action = "warn"

# Exchanges. For each: whether `run` and `schedule` ingest from it, its REST API root, the
# canonical BASE-QUOTE symbols, its request budget (weight per interval; the defaults are
# the exchange's published limits, lower them when other tools share your address), and the
# largest response body read (max_response_size, default 16MiB; a full page of any exchange is
# under 1 MiB, and a longer body is abandoned at the limit and retried, never stored).
# Env: CRYPTOLAKE_<EXCHANGE>_ENABLED, _BASE_URL, _SYMBOLS (comma separated), _WEIGHT_LIMIT,
# _WEIGHT_INTERVAL, _MAX_RESPONSE_SIZE, with <EXCHANGE> one of BINANCE, BINANCE_FUTURES,
# COINBASE, KRAKEN.
# Flags: ingest/backfill --base-url, --symbols.

[exchanges.binance]
# Spot klines, 1000 per request, weight 2 each, 6000 weight per minute. Zero-trade minutes
# are served as flat candles. Also https://data-api.binance.vision (market data only).
enabled = true
base_url = "https://api.binance.com"
symbols = ["BTC-USDT", "ETH-USDT"]
weight_limit = 6000
weight_interval = "1m"

[exchanges.binance-futures]
# USDⓈ-M futures klines, 1000 per request, weight 5 each, 2400 weight per minute.
enabled = false
base_url = "https://fapi.binance.com"
symbols = ["BTC-USDT"]
weight_limit = 2400
weight_interval = "1m"

[exchanges.coinbase]
# Coinbase Exchange candles, 300 per request, 10 requests per second. Minutes without trades
# are left out by Coinbase: they show up as confirmed gaps, not as data.
enabled = false
base_url = "https://api.exchange.coinbase.com"
symbols = ["BTC-USD", "ETH-USD"]
weight_limit = 10
weight_interval = "1s"

[exchanges.kraken]
# Kraken OHLC: only the latest 720 minutes (12 hours) are ever served, so the hourly job must
# not pause longer than that; older ranges are reported as unservable. About 1 request per
# second.
enabled = false
base_url = "https://api.kraken.com"
symbols = ["BTC-USD", "ETH-USD"]
weight_limit = 1
weight_interval = "1s"
"#;

/// Variables that are ours but are not settings.
pub const NON_SETTING_VARS: [&str; 2] = ["CRYPTOLAKE_CONFIG", "CRYPTOLAKE_LOG"];

/// The longest a duration setting may be: far beyond any sensible value, well inside every
/// time type the pipeline computes with.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Every setting, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `lake`: `file://PATH`, a directory path, or `s3://bucket/prefix`.
    pub lake: String,
    pub s3: S3Settings,
    pub ingest: IngestSettings,
    pub schedule: ScheduleSettings,
    pub silver: SilverSettings,
    pub server: ServerSettings,
    /// Limits of every SQL statement.
    pub query: cryptolake_query::Limits,
    pub quality: QualityRules,
    /// Every known exchange, configured or defaulted.
    pub exchanges: BTreeMap<Exchange, ExchangeSettings>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub simulated_latency: Option<SimulatedLatency>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestSettings {
    /// How far back a symbol's first ingest reaches.
    pub lookback: chrono::Duration,
    /// Symbols fetched at the same time.
    pub concurrency: usize,
    /// How long one request may take before it is retried.
    pub request_timeout: Duration,
    /// Gap-refetch request windows per symbol and run.
    pub max_refetch_windows: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// A checked cron expression, UTC.
    pub cron: String,
}

/// A secret: compared and used, never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// The address `serve` listens on.
    pub http: std::net::SocketAddr,
    /// The bearer token every request must carry; from `CRYPTOLAKE_SERVER_TOKEN` only.
    pub token: Option<Secret>,
    /// The most rows one SQL request returns.
    pub max_rows: usize,
    /// Bytes of decoded partitions the read model keeps.
    pub read_cache: u64,
    /// Host names answered besides the bound address, `localhost` and IP addresses (lower case).
    pub allowed_hosts: Vec<String>,
    /// Where the PostgreSQL wire protocol listens; `None` leaves it off.
    pub pg: Option<std::net::SocketAddr>,
    pub pg_max_connections: usize,
    /// Users who may sign in over the wire protocol; none means loopback without sign-in.
    pub pg_users: Vec<PgUser>,
    /// Certificate and key files (PEM) for TLS on the wire protocol.
    pub pg_tls: Option<PgTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PgTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A user of the PostgreSQL wire protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct PgUser {
    pub name: String,
    pub password: PgPassword,
}

/// How a wire-protocol user's password is known: never as plain text in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum PgPassword {
    /// SCRAM-SHA-256's salted password (PBKDF2-HMAC-SHA-256 of the password), as written by
    /// `cryptolake pg-password`: `cryptolake-scram-sha-256$ITERATIONS:SALT$SALTED` (base64).
    Scram {
        iterations: u32,
        salt: Vec<u8>,
        salted: Vec<u8>,
    },
    /// The password itself, from an environment variable.
    Plain(Secret),
}

/// The prefix of a [`PgPassword::Scram`] hash.
pub const PG_HASH_PREFIX: &str = "cryptolake-scram-sha-256$";

impl PgPassword {
    /// Parses a hash written by `cryptolake pg-password`.
    pub fn parse_hash(text: &str) -> std::result::Result<PgPassword, String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let form = format!(
            "{PG_HASH_PREFIX}ITERATIONS:SALT$SALTED_PASSWORD, as `cryptolake pg-password` prints"
        );
        let rest = text
            .trim()
            .strip_prefix(PG_HASH_PREFIX)
            .ok_or_else(|| format!("is not a password hash: expected {form}"))?;
        let (head, salted) = rest
            .split_once('$')
            .ok_or_else(|| format!("has no `$` before the salted password: expected {form}"))?;
        let (iterations, salt) = head
            .split_once(':')
            .ok_or_else(|| format!("has no `:` after the iteration count: expected {form}"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("iteration count {iterations:?} is not a number"))?;
        if iterations != 4096 {
            return Err(format!(
                "iteration count {iterations}: the server uses 4096, as `cryptolake pg-password` writes"
            ));
        }
        let salt = b64
            .decode(salt)
            .map_err(|e| format!("salt is not base64: {e}"))?;
        let salted = b64
            .decode(salted)
            .map_err(|e| format!("salted password is not base64: {e}"))?;
        if salt.len() < 8 || salted.len() != 32 {
            return Err(format!(
                "has a {}-byte salt and a {}-byte salted password; expected at least 8 and exactly 32",
                salt.len(),
                salted.len()
            ));
        }
        Ok(PgPassword::Scram {
            iterations,
            salt,
            salted,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SilverSettings {
    pub manifest_overlap: chrono::Duration,
    /// Bronze objects read at once for one date; `None`: 64 on an object store, 8 on disk.
    pub read_concurrency: Option<usize>,
    /// Dates a first build or a rebuild lists and builds at a time.
    pub batch_days: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSettings {
    /// Whether the hourly job ingests it.
    pub enabled: bool,
    pub base_url: String,
    pub symbols: Vec<Symbol>,
    pub budget: Budget,
    /// The largest response body read from it.
    pub max_response_bytes: usize,
}

fn symbols(list: &[&str]) -> Vec<Symbol> {
    list.iter()
        .map(|s| Symbol::parse(s).expect("default symbols are valid"))
        .collect()
}

impl ExchangeSettings {
    /// The defaults of `exchange`: its real API, its published budget, two well-known symbols.
    pub fn default_for(exchange: Exchange) -> ExchangeSettings {
        let (enabled, list): (bool, &[&str]) = match exchange {
            Exchange::Binance => (true, &["BTC-USDT", "ETH-USDT"]),
            Exchange::BinanceFutures => (false, &["BTC-USDT"]),
            Exchange::Coinbase | Exchange::Kraken => (false, &["BTC-USD", "ETH-USD"]),
        };
        ExchangeSettings {
            enabled,
            base_url: ExchangeClient::default_base_url(exchange).to_string(),
            symbols: symbols(list),
            budget: ExchangeClient::default_budget(exchange),
            max_response_bytes: cryptolake_sources::http::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lake: "file://./lake".into(),
            s3: S3Settings::default(),
            ingest: IngestSettings {
                lookback: chrono::Duration::hours(24),
                concurrency: 4,
                request_timeout: Duration::from_secs(30),
                max_refetch_windows: 24,
            },
            schedule: ScheduleSettings {
                cron: "5 * * * *".into(),
            },
            silver: SilverSettings {
                manifest_overlap: chrono::Duration::minutes(10),
                read_concurrency: None,
                batch_days: cryptolake_lake::silver::DATES_PER_BATCH,
            },
            server: ServerSettings {
                http: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                token: None,
                max_rows: 100_000,
                read_cache: 512 << 20,
                allowed_hosts: Vec::new(),
                pg: None,
                pg_max_connections: 32,
                pg_users: Vec::new(),
                pg_tls: None,
            },
            query: cryptolake_query::Limits::default(),
            quality: QualityRules::default(),
            exchanges: Exchange::ALL
                .iter()
                .map(|e| (*e, ExchangeSettings::default_for(*e)))
                .collect(),
        }
    }
}

// The file as written: every field optional, so that what is absent keeps its default.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    lake: Option<String>,
    #[serde(default)]
    s3: RawS3,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    silver: RawSilver,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    query: RawQuery,
    #[serde(default)]
    quality: RawQuality,
    #[serde(default)]
    exchanges: BTreeMap<String, RawExchange>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    simulated_latency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    lookback: Option<String>,
    concurrency: Option<i64>,
    request_timeout: Option<String>,
    max_refetch_windows: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilver {
    manifest_overlap: Option<String>,
    read_concurrency: Option<i64>,
    batch_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    http: Option<String>,
    max_rows: Option<i64>,
    read_cache: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    pg: Option<String>,
    pg_max_connections: Option<i64>,
    pg_tls_cert: Option<String>,
    pg_tls_key: Option<String>,
    #[serde(default)]
    pg_users: Vec<RawPgUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPgUser {
    name: String,
    password_hash: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    memory_limit: Option<String>,
    spill_limit: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuality {
    ohlc: Option<Action>,
    amounts: Option<Action>,
    alignment: Option<Action>,
    duplicates: Option<Action>,
    #[serde(default)]
    completeness: RawCompleteness,
    #[serde(default)]
    freshness: RawFreshness,
    #[serde(default)]
    price_jump: RawPriceJump,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompleteness {
    min_minutes_per_hour: Option<i32>,
    min_hours_per_day: Option<i32>,
    action: Option<Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreshness {
    max_age_minutes: Option<i64>,
    action: Option<Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriceJump {
    max_change: Option<f64>,
    action: Option<Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExchange {
    enabled: Option<bool>,
    base_url: Option<String>,
    symbols: Option<Vec<String>>,
    weight_limit: Option<i64>,
    weight_interval: Option<String>,
    max_response_size: Option<String>,
}

/// Where a value came from, for the message that names it.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    File,
    Env(&'a str),
}

fn bad(key: &str, origin: Origin<'_>, reason: impl std::fmt::Display) -> Error {
    let key = match origin {
        Origin::File => format!("config key {key}"),
        Origin::Env(var) => format!("environment variable {var} (config key {key})"),
    };
    Error::Setting {
        key,
        reason: reason.to_string(),
    }
}

/// `30s`, `90m`, `24h`, `7d`, `1h 30m`: a duration no longer than ten years.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 30s, 90m, 24h or 7d ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than the largest allowed, 3650d"
        ));
    }
    Ok(d)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).expect("bounded by MAX_DURATION")
}

/// `512MiB`, `2GiB`, `16 MB`, `1048576`: a size in bytes, binary (KiB, MiB, GiB, TiB) or
/// decimal (KB, MB, GB, TB) units, B or none for bytes; within `[min, max]`.
pub fn parse_size(text: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} is not a size like 512MiB, 2GiB or 16MB (unknown unit {unit:?})"
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MiB, 2GiB or 16MB"))?;
    let bytes = n * scale as f64;
    if !bytes.is_finite() || bytes < min as f64 || bytes > max as f64 {
        return Err(format!(
            "{text:?} is outside {} to {}",
            cryptolake_query::format_bytes(min),
            cryptolake_query::format_bytes(max)
        ));
    }
    Ok(bytes as u64)
}

/// A whole number in `[min, max]`.
fn count(n: i64, min: i64, max: i64) -> std::result::Result<i64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is outside {min}..={max}"))
    }
}

fn env_exchange_name(ex: Exchange) -> String {
    ex.as_str().to_uppercase().replace('-', "_")
}

/// Splits a comma-separated list, dropping blanks.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A value read from the file or the environment, remembering which.
struct Sourced<'a, T> {
    value: T,
    origin: Origin<'a>,
}

fn pick<'a, T>(file: Option<T>, env: Option<(&'a str, T)>) -> Option<Sourced<'a, T>> {
    match env {
        Some((var, value)) => Some(Sourced {
            value,
            origin: Origin::Env(var),
        }),
        None => file.map(|value| Sourced {
            value,
            origin: Origin::File,
        }),
    }
}

impl Settings {
    /// Loads `path` if given (it must exist), else `./cryptolake.toml` if present, else the
    /// defaults; then applies the `CRYPTOLAKE_*` variables of `env`. Every value is checked;
    /// an unknown key or variable is an error that names it.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Settings> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| Error::Setting {
                    key: format!("config file {}", p.display()),
                    reason: e.to_string(),
                })?,
                p.to_path_buf(),
            ),
            None => {
                let p = PathBuf::from("cryptolake.toml");
                match std::fs::read_to_string(&p) {
                    Ok(t) => (t, p),
                    Err(_) => (String::new(), PathBuf::from("(defaults)")),
                }
            }
        };
        Settings::from_toml(&text, &origin.display().to_string(), env)
    }

    /// The settings from the environment alone (a file only where `CRYPTOLAKE_CONFIG` names
    /// one), as a Lambda function reads them.
    pub fn from_env_only(env: &[(String, String)]) -> Result<Settings> {
        let file = env
            .iter()
            .find(|(k, _)| k == "CRYPTOLAKE_CONFIG")
            .map(|(_, v)| PathBuf::from(v));
        match file {
            Some(p) => Settings::load(Some(&p), env),
            None => Settings::from_toml("", "(environment)", env),
        }
    }

    /// Parses `text` (a `cryptolake.toml`, `origin` naming it in errors) and applies `env`.
    pub fn from_toml(text: &str, origin: &str, env: &[(String, String)]) -> Result<Settings> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            Error::Setting {
                key: match line {
                    Some(l) => format!("config {origin} line {l}"),
                    None => format!("config {origin}"),
                },
                reason: e.message().trim().to_string(),
            }
        })?;
        resolve(raw, env)
    }

    /// The settings of `exchange` (every exchange has some: configured or defaulted).
    pub fn exchange(&self, exchange: Exchange) -> &ExchangeSettings {
        self.exchanges
            .get(&exchange)
            .expect("every exchange has settings")
    }

    /// Enabled exchanges, in a fixed order.
    pub fn enabled_exchanges(&self) -> impl Iterator<Item = (Exchange, &ExchangeSettings)> {
        self.exchanges
            .iter()
            .filter(|(_, s)| s.enabled)
            .map(|(e, s)| (*e, s))
    }

    pub fn lake_options(&self) -> LakeOptions {
        LakeOptions {
            s3_endpoint: self.s3.endpoint.clone(),
            s3_region: self.s3.region.clone(),
            simulated_latency: self.s3.simulated_latency,
        }
    }

    /// The variable that sets `key` of `exchange`, for messages.
    pub fn exchange_var(exchange: Exchange, key: &str) -> String {
        format!(
            "CRYPTOLAKE_{}_{}",
            env_exchange_name(exchange),
            key.to_uppercase()
        )
    }
}

/// The environment's `CRYPTOLAKE_*` settings, checked against the known names.
#[derive(Default)]
struct EnvVars<'a> {
    top: BTreeMap<&'static str, (&'a str, &'a str)>,
    exchange: BTreeMap<(Exchange, &'static str), (&'a str, &'a str)>,
}

const TOP_VARS: [&str; 25] = [
    "LAKE",
    "SERVER_ALLOWED_HOSTS",
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_SIMULATED_LATENCY",
    "INGEST_LOOKBACK",
    "INGEST_CONCURRENCY",
    "INGEST_REQUEST_TIMEOUT",
    "INGEST_MAX_REFETCH_WINDOWS",
    "SCHEDULE_CRON",
    "SILVER_MANIFEST_OVERLAP",
    "SILVER_READ_CONCURRENCY",
    "SILVER_BATCH_DAYS",
    "QUERY_MEMORY_LIMIT",
    "QUERY_SPILL_LIMIT",
    "QUERY_TIMEOUT",
    "SERVER_HTTP",
    "SERVER_MAX_ROWS",
    "SERVER_TOKEN",
    "SERVER_PG",
    "SERVER_PG_MAX_CONNECTIONS",
    "SERVER_PG_TLS_CERT",
    "SERVER_PG_TLS_KEY",
    "SERVER_PG_USER",
    "SERVER_PG_PASSWORD",
];
const EXCHANGE_VARS: [&str; 6] = [
    "ENABLED",
    "BASE_URL",
    "SYMBOLS",
    "WEIGHT_LIMIT",
    "WEIGHT_INTERVAL",
    "MAX_RESPONSE_SIZE",
];

fn env_vars(env: &[(String, String)]) -> Result<EnvVars<'_>> {
    let mut out = EnvVars::default();
    for (name, value) in env {
        let Some(key) = name.strip_prefix("CRYPTOLAKE_") else {
            continue;
        };
        if NON_SETTING_VARS.contains(&name.as_str()) {
            continue;
        }
        if let Some(k) = TOP_VARS.iter().find(|k| **k == key) {
            out.top.insert(k, (name.as_str(), value.as_str()));
            continue;
        }
        // The longest exchange name wins: BINANCE_FUTURES_* is not BINANCE_*.
        let found = Exchange::ALL
            .iter()
            .filter_map(|ex| {
                let rest = key.strip_prefix(&format!("{}_", env_exchange_name(*ex)))?;
                let k = EXCHANGE_VARS.iter().find(|k| **k == rest)?;
                Some((*ex, *k))
            })
            .next();
        match found {
            Some(k) => {
                out.exchange.insert(k, (name.as_str(), value.as_str()));
            }
            None => {
                return Err(Error::Setting {
                    key: format!("environment variable {name}"),
                    reason: "unknown setting (see the settings table in the README)".into(),
                });
            }
        }
    }
    Ok(out)
}

/// The wire protocol's users: the file's, then the one of `CRYPTOLAKE_SERVER_PG_USER` and
/// `CRYPTOLAKE_SERVER_PG_PASSWORD`.
fn pg_users<'a>(
    raw: Vec<RawPgUser>,
    top: &dyn Fn(&'static str) -> Option<(&'a str, &'a str)>,
    env: &[(String, String)],
) -> Result<Vec<PgUser>> {
    let mut users: Vec<PgUser> = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let key = format!("server.pg_users[{i}]");
        let name = u.name.trim().to_string();
        if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
            return Err(bad(
                &format!("{key}.name"),
                Origin::File,
                "must be 1 to 63 printable characters",
            ));
        }
        let password = match (u.password_hash, u.password_env) {
            (Some(h), None) => PgPassword::parse_hash(&h)
                .map_err(|e| bad(&format!("{key}.password_hash"), Origin::File, e))?,
            (None, Some(var)) => {
                if var.starts_with("CRYPTOLAKE_") {
                    return Err(bad(
                        &format!("{key}.password_env"),
                        Origin::File,
                        format!(
                            "{var:?}: name a variable outside CRYPTOLAKE_*, which holds settings only"
                        ),
                    ));
                }
                match env.iter().find(|(k, _)| *k == var) {
                    Some((_, v)) if !v.is_empty() => PgPassword::Plain(Secret(v.clone())),
                    _ => {
                        return Err(bad(
                            &format!("{key}.password_env"),
                            Origin::File,
                            format!("environment variable {var} is not set"),
                        ));
                    }
                }
            }
            _ => {
                return Err(bad(
                    &key,
                    Origin::File,
                    "needs exactly one of password_hash (from `cryptolake pg-password`) and password_env; a password itself never goes in the file",
                ));
            }
        };
        if users.iter().any(|x| x.name == name) {
            return Err(bad(
                &format!("{key}.name"),
                Origin::File,
                format!("user {name:?} appears twice"),
            ));
        }
        users.push(PgUser { name, password });
    }
    match (top("SERVER_PG_USER"), top("SERVER_PG_PASSWORD")) {
        (None, None) => {}
        (Some((_, name)), Some((_, pw))) if !name.trim().is_empty() && !pw.is_empty() => {
            let name = name.trim().to_string();
            if users.iter().any(|x| x.name == name) {
                return Err(bad(
                    "server.pg_users",
                    Origin::Env("CRYPTOLAKE_SERVER_PG_USER"),
                    format!("user {name:?} is also in the file"),
                ));
            }
            users.push(PgUser {
                name,
                password: PgPassword::Plain(Secret(pw.to_string())),
            });
        }
        (Some((n, _)), _) | (None, Some((n, _))) => {
            return Err(bad(
                "server.pg_users",
                Origin::Env(n),
                "CRYPTOLAKE_SERVER_PG_USER and CRYPTOLAKE_SERVER_PG_PASSWORD go together, neither empty",
            ));
        }
    }
    Ok(users)
}

fn resolve(raw: RawFile, env: &[(String, String)]) -> Result<Settings> {
    let vars = env_vars(env)?;
    let top = |k: &'static str| vars.top.get(k).map(|(n, v)| (*n, *v));
    let d = Settings::default();

    let lake =
        pick(raw.lake, top("LAKE").map(|(n, v)| (n, v.to_string()))).map_or(d.lake, |s| s.value);
    if lake.trim().is_empty() {
        return Err(bad("lake", Origin::File, "is empty"));
    }
    let s3 = S3Settings {
        endpoint: pick(
            raw.s3.endpoint,
            top("S3_ENDPOINT").map(|(n, v)| (n, v.to_string())),
        )
        .map(|s| {
            if s.value.starts_with("http://") || s.value.starts_with("https://") {
                Ok(s.value)
            } else {
                Err(bad(
                    "s3.endpoint",
                    s.origin,
                    format!("{:?} must start with http:// or https://", s.value),
                ))
            }
        })
        .transpose()?,
        region: pick(
            raw.s3.region,
            top("S3_REGION").map(|(n, v)| (n, v.to_string())),
        )
        .map(|s| s.value),
        simulated_latency: pick(
            raw.s3.simulated_latency,
            top("S3_SIMULATED_LATENCY").map(|(n, v)| (n, v.to_string())),
        )
        .map(|s| {
            s.value
                .parse::<SimulatedLatency>()
                .map_err(|e| bad("s3.simulated_latency", s.origin, e))
        })
        .transpose()?,
    };

    let duration =
        |key: &str, s: Option<Sourced<'_, String>>, default: Duration, min: Duration| match s {
            None => Ok(default),
            Some(s) => {
                let v = parse_duration(&s.value).map_err(|e| bad(key, s.origin, e))?;
                if v < min {
                    return Err(bad(
                        key,
                        s.origin,
                        format!("must be at least {}", humantime::format_duration(min)),
                    ));
                }
                Ok(v)
            }
        };
    let number = |key: &str,
                  file: Option<i64>,
                  var: Option<(&str, &str)>,
                  default: usize,
                  max: i64|
     -> Result<usize> {
        let s = match var {
            Some((n, v)) => Some(Sourced {
                value: v.trim().parse::<i64>().map_err(|_| {
                    bad(key, Origin::Env(n), format!("{v:?} is not a whole number"))
                })?,
                origin: Origin::Env(n),
            }),
            None => file.map(|value| Sourced {
                value,
                origin: Origin::File,
            }),
        };
        match s {
            None => Ok(default),
            Some(s) => count(s.value, 1, max)
                .map(|n| n as usize)
                .map_err(|e| bad(key, s.origin, e)),
        }
    };
    let env_string = |k: &'static str| top(k).map(|(n, v)| (n, v.to_string()));

    let ingest = IngestSettings {
        lookback: chrono_duration(duration(
            "ingest.lookback",
            pick(raw.ingest.lookback, env_string("INGEST_LOOKBACK")),
            d.ingest.lookback.to_std().expect("positive"),
            Duration::from_secs(60),
        )?),
        concurrency: number(
            "ingest.concurrency",
            raw.ingest.concurrency,
            top("INGEST_CONCURRENCY"),
            d.ingest.concurrency,
            1024,
        )?,
        request_timeout: duration(
            "ingest.request_timeout",
            pick(
                raw.ingest.request_timeout,
                env_string("INGEST_REQUEST_TIMEOUT"),
            ),
            d.ingest.request_timeout,
            Duration::from_millis(1),
        )
        .and_then(|t| {
            if t > Duration::from_secs(3600) {
                Err(bad(
                    "ingest.request_timeout",
                    Origin::File,
                    "must be at most 1h",
                ))
            } else {
                Ok(t)
            }
        })?,
        max_refetch_windows: number(
            "ingest.max_refetch_windows",
            raw.ingest.max_refetch_windows,
            top("INGEST_MAX_REFETCH_WINDOWS"),
            d.ingest.max_refetch_windows,
            100_000,
        )?,
    };
    let cron = pick(raw.schedule.cron, env_string("SCHEDULE_CRON"));
    let schedule = match cron {
        None => d.schedule,
        Some(s) => {
            croner::Cron::from_str(&s.value)
                .map_err(|e| bad("schedule.cron", s.origin, format!("{:?}: {e}", s.value)))?;
            ScheduleSettings { cron: s.value }
        }
    };
    let silver = SilverSettings {
        manifest_overlap: chrono_duration(duration(
            "silver.manifest_overlap",
            pick(
                raw.silver.manifest_overlap,
                env_string("SILVER_MANIFEST_OVERLAP"),
            ),
            d.silver.manifest_overlap.to_std().expect("positive"),
            Duration::ZERO,
        )?),
        read_concurrency: match (raw.silver.read_concurrency, top("SILVER_READ_CONCURRENCY")) {
            (None, None) => None,
            (file, var) => Some(number("silver.read_concurrency", file, var, 0, 1024)?),
        },
        batch_days: number(
            "silver.batch_days",
            raw.silver.batch_days,
            top("SILVER_BATCH_DAYS"),
            d.silver.batch_days,
            366,
        )?,
    };
    let size = |key: &str, s: Option<Sourced<'_, String>>, default: u64, min: u64, max: u64| match s
    {
        None => Ok(default),
        Some(s) => parse_size(&s.value, min, max).map_err(|e| bad(key, s.origin, e)),
    };
    let query = cryptolake_query::Limits {
        memory_bytes: size(
            "query.memory_limit",
            pick(raw.query.memory_limit, env_string("QUERY_MEMORY_LIMIT")),
            d.query.memory_bytes as u64,
            16 << 20,
            1 << 40,
        )? as usize,
        spill_bytes: size(
            "query.spill_limit",
            pick(raw.query.spill_limit, env_string("QUERY_SPILL_LIMIT")),
            d.query.spill_bytes,
            0,
            16 << 40,
        )?,
        timeout: duration(
            "query.timeout",
            pick(raw.query.timeout, env_string("QUERY_TIMEOUT")),
            d.query.timeout,
            Duration::from_millis(100),
        )?,
    };
    let server = ServerSettings {
        http: match pick(raw.server.http, env_string("SERVER_HTTP")) {
            None => d.server.http,
            Some(s) => s.value.trim().parse().map_err(|_| {
                bad(
                    "server.http",
                    s.origin,
                    format!("{:?} is not an address like 127.0.0.1:8080", s.value),
                )
            })?,
        },
        token: match top("SERVER_TOKEN") {
            None => None,
            Some((n, v)) if v.trim().len() < 16 => {
                return Err(bad(
                    "server token",
                    Origin::Env(n),
                    "must be at least 16 characters",
                ));
            }
            Some((_, v)) => Some(Secret(v.trim().to_string())),
        },
        max_rows: number(
            "server.max_rows",
            raw.server.max_rows,
            top("SERVER_MAX_ROWS"),
            d.server.max_rows,
            10_000_000,
        )?,
        read_cache: size(
            "server.read_cache",
            pick(raw.server.read_cache, env_string("SERVER_READ_CACHE")),
            d.server.read_cache,
            1 << 20,
            1 << 40,
        )?,
        allowed_hosts: match pick(
            raw.server.allowed_hosts,
            top("SERVER_ALLOWED_HOSTS").map(|(n, v)| (n, split_list(v))),
        ) {
            None => Vec::new(),
            Some(list) => list
                .value
                .iter()
                .map(|h| {
                    let h = h.trim().to_ascii_lowercase();
                    let ok = !h.is_empty()
                        && h.len() <= 253
                        && h.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        });
                    match ok {
                        true => Ok(h),
                        false => Err(bad(
                            "server.allowed_hosts",
                            list.origin,
                            format!("{h:?} is not a host name like lake.example.internal (no port, no scheme)"),
                        )),
                    }
                })
                .collect::<Result<Vec<_>>>()?,
        },
        pg: match pick(raw.server.pg, env_string("SERVER_PG")) {
            None => None,
            Some(s) => Some(s.value.trim().parse().map_err(|_| {
                bad(
                    "server.pg",
                    s.origin,
                    format!("{:?} is not an address like 127.0.0.1:5432", s.value),
                )
            })?),
        },
        pg_max_connections: number(
            "server.pg_max_connections",
            raw.server.pg_max_connections,
            top("SERVER_PG_MAX_CONNECTIONS"),
            d.server.pg_max_connections,
            10_000,
        )?,
        pg_tls: match (
            pick(raw.server.pg_tls_cert, env_string("SERVER_PG_TLS_CERT")),
            pick(raw.server.pg_tls_key, env_string("SERVER_PG_TLS_KEY")),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(PgTls {
                cert: PathBuf::from(cert.value),
                key: PathBuf::from(key.value),
            }),
            (Some(only), None) | (None, Some(only)) => {
                return Err(bad(
                    "server.pg_tls_cert / server.pg_tls_key",
                    only.origin,
                    "TLS needs both the certificate and the key file",
                ));
            }
        },
        pg_users: pg_users(raw.server.pg_users, &top, env)?,
    };
    let q = raw.quality;
    let r = d.quality.clone();
    let quality = QualityRules {
        ohlc: q.ohlc.unwrap_or(r.ohlc),
        amounts: q.amounts.unwrap_or(r.amounts),
        alignment: q.alignment.unwrap_or(r.alignment),
        duplicates: q.duplicates.unwrap_or(r.duplicates),
        min_minutes_per_hour: q
            .completeness
            .min_minutes_per_hour
            .unwrap_or(r.min_minutes_per_hour),
        min_hours_per_day: q
            .completeness
            .min_hours_per_day
            .unwrap_or(r.min_hours_per_day),
        completeness: q.completeness.action.unwrap_or(r.completeness),
        max_age_minutes: q.freshness.max_age_minutes.unwrap_or(r.max_age_minutes),
        freshness: q.freshness.action.unwrap_or(r.freshness),
        max_price_change: q.price_jump.max_change.unwrap_or(r.max_price_change),
        price_jump: q.price_jump.action.unwrap_or(r.price_jump),
    };
    quality.validate().map_err(|e| Error::Setting {
        key: "config".into(),
        reason: e,
    })?;
    if quality.max_age_minutes > 10 * 365 * 24 * 60 {
        return Err(bad(
            "quality.freshness.max_age_minutes",
            Origin::File,
            "must be at most ten years",
        ));
    }

    let mut raw_exchanges = BTreeMap::new();
    for (name, ex) in raw.exchanges {
        let exchange = Exchange::from_str(&name)
            .map_err(|e| bad(&format!("exchanges.{name}"), Origin::File, e))?;
        raw_exchanges.insert(exchange, ex);
    }
    let mut exchanges = BTreeMap::new();
    for exchange in Exchange::ALL {
        let raw = raw_exchanges.remove(&exchange).unwrap_or_default();
        let var = |k: &'static str| vars.exchange.get(&(exchange, k)).map(|(n, v)| (*n, *v));
        let key = |k: &str| format!("exchanges.{exchange}.{k}");
        let mut s = ExchangeSettings::default_for(exchange);
        match var("ENABLED") {
            Some((n, v)) => {
                s.enabled = match v.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => {
                        return Err(bad(
                            &key("enabled"),
                            Origin::Env(n),
                            format!("{other:?}: expected true or false"),
                        ));
                    }
                }
            }
            None => s.enabled = raw.enabled.unwrap_or(s.enabled),
        }
        if let Some(url) = pick(
            raw.base_url,
            var("BASE_URL").map(|(n, v)| (n, v.to_string())),
        ) {
            cryptolake_sources::http::check_base_url(&url.value)
                .map_err(|e| bad(&key("base_url"), url.origin, e))?;
            s.base_url = url.value.trim_end_matches('/').to_string();
        }
        let list = pick(raw.symbols, var("SYMBOLS").map(|(n, v)| (n, split_list(v))));
        if let Some(list) = list {
            s.symbols = list
                .value
                .iter()
                .map(|t| Symbol::parse(t).map_err(|e| bad(&key("symbols"), list.origin, e)))
                .collect::<Result<_>>()?;
        }
        s.budget.weight = number(
            &key("weight_limit"),
            raw.weight_limit,
            var("WEIGHT_LIMIT"),
            s.budget.weight as usize,
            1_000_000,
        )? as u32;
        s.budget.interval = duration(
            &key("weight_interval"),
            pick(
                raw.weight_interval,
                var("WEIGHT_INTERVAL").map(|(n, v)| (n, v.to_string())),
            ),
            s.budget.interval,
            Duration::from_millis(1),
        )?;
        if s.budget.interval > Duration::from_secs(86_400) {
            return Err(bad(
                &key("weight_interval"),
                Origin::File,
                "must be at most 1d",
            ));
        }
        s.max_response_bytes = size(
            &key("max_response_size"),
            pick(
                raw.max_response_size,
                var("MAX_RESPONSE_SIZE").map(|(n, v)| (n, v.to_string())),
            ),
            s.max_response_bytes as u64,
            4 << 10,
            1 << 30,
        )? as usize;
        exchanges.insert(exchange, s);
    }
    Ok(Settings {
        lake,
        s3,
        ingest,
        schedule,
        silver,
        server,
        query,
        quality,
        exchanges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Settings::from_toml(text, "test.toml", &env)
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        load(text, env).unwrap_err().to_string()
    }

    #[test]
    fn allowed_hosts_are_host_names_from_the_file_or_the_environment() {
        let s = load(
            "[server]\nallowed_hosts = [\"Lake.Example.internal\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.server.allowed_hosts, vec!["lake.example.internal"]);
        let s = load(
            "",
            &[("CRYPTOLAKE_SERVER_ALLOWED_HOSTS", "a.example, b-2.example")],
        )
        .unwrap();
        assert_eq!(s.server.allowed_hosts, vec!["a.example", "b-2.example"]);
        for bad in [
            "http://a.example",
            "a.example:8080",
            "a..example",
            "*.example",
        ] {
            let e = err(&format!("[server]\nallowed_hosts = [{bad:?}]\n"), &[]);
            assert!(e.contains("server.allowed_hosts") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn simulated_latency_is_parsed_and_checked() {
        assert_eq!(load("", &[]).unwrap().s3.simulated_latency, None);
        let s = load(
            "[s3]\nsimulated_latency = \"get=20ms,list=20ms,put=30ms\"\n",
            &[],
        )
        .unwrap();
        let l = s.lake_options().simulated_latency.unwrap();
        assert_eq!(
            (l.get, l.list, l.put),
            (
                std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(30)
            )
        );
        let e = err("", &[("CRYPTOLAKE_S3_SIMULATED_LATENCY", "get=fast")]);
        assert!(
            e.contains("CRYPTOLAKE_S3_SIMULATED_LATENCY") && e.contains("\"fast\""),
            "{e}"
        );
        let e = err("[s3]\nsimulated_latency = \"post=1ms\"\n", &[]);
        assert!(
            e.contains("s3.simulated_latency") && e.contains("post"),
            "{e}"
        );
    }

    #[test]
    fn silver_read_concurrency_is_chosen_by_the_lake_unless_set() {
        assert_eq!(load("", &[]).unwrap().silver.read_concurrency, None);
        assert_eq!(load("", &[]).unwrap().silver.batch_days, 32);
        let s = load("", &[("CRYPTOLAKE_SILVER_BATCH_DAYS", "3")]).unwrap();
        assert_eq!(s.silver.batch_days, 3);
        let e = err("[silver]\nbatch_days = 400\n", &[]);
        assert!(e.contains("silver.batch_days"), "{e}");
        let s = load("[silver]\nread_concurrency = 16\n", &[]).unwrap();
        assert_eq!(s.silver.read_concurrency, Some(16));
        let s = load("", &[("CRYPTOLAKE_SILVER_READ_CONCURRENCY", "200")]).unwrap();
        assert_eq!(s.silver.read_concurrency, Some(200));
        let e = err("[silver]\nread_concurrency = 0\n", &[]);
        assert!(
            e.contains("silver.read_concurrency") && e.contains("1..=1024"),
            "{e}"
        );
        let e = err("", &[("CRYPTOLAKE_SILVER_READ_CONCURRENCY", "many")]);
        assert!(e.contains("CRYPTOLAKE_SILVER_READ_CONCURRENCY"), "{e}");
    }

    #[test]
    fn wire_protocol_users_come_as_hashes_or_from_the_environment() {
        // A hash as `cryptolake pg-password` writes it: 16-byte salt, 32-byte salted password.
        let hash = "cryptolake-scram-sha-256$4096:AAECAwQFBgcICQoLDA0ODw==$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let s = load(
            &format!(
                "[server]\npg = \"0.0.0.0:5433\"\n[[server.pg_users]]\nname = \"grafana\"\npassword_hash = \"{hash}\"\n[[server.pg_users]]\nname = \"metabase\"\npassword_env = \"MB_PW\"\n"
            ),
            &[
                ("MB_PW", "s3cret"),
                ("CRYPTOLAKE_SERVER_PG_USER", "psql"),
                ("CRYPTOLAKE_SERVER_PG_PASSWORD", "other"),
                ("CRYPTOLAKE_SERVER_PG_MAX_CONNECTIONS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.pg, Some("0.0.0.0:5433".parse().unwrap()));
        assert_eq!(s.server.pg_max_connections, 5);
        let names: Vec<&str> = s.server.pg_users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["grafana", "metabase", "psql"]);
        match &s.server.pg_users[0].password {
            PgPassword::Scram {
                iterations,
                salt,
                salted,
            } => {
                assert_eq!(*iterations, 4096);
                assert_eq!(salt.len(), 16);
                assert_eq!(salted[31], 31);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.server.pg_users[1].password,
            PgPassword::Plain(Secret("s3cret".into()))
        );
        // Secrets never print.
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{s:?}").contains("other\""));

        // Each wrong form names its key and says what was expected.
        let user = |body: &str| format!("[[server.pg_users]]\nname = \"u\"\n{body}\n");
        let e = err(&user("password = \"hunter2\""), &[]);
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
        let e = err(&user("password_hash = \"hunter2\""), &[]);
        assert!(
            e.contains("server.pg_users[0].password_hash") && e.contains("pg-password"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(
            &user("password_hash = \"cryptolake-scram-sha-256$1:AAAA$AAAA\""),
            &[],
        );
        assert!(e.contains("4096"), "{e}");
        let e = err(&user("password_env = \"NOT_SET_ANYWHERE\""), &[]);
        assert!(e.contains("NOT_SET_ANYWHERE is not set"), "{e}");
        let e = err(&user(""), &[]);
        assert!(e.contains("exactly one of password_hash"), "{e}");
        let e = err("[server]\npg_tls_cert = \"/x.pem\"\n", &[]);
        assert!(e.contains("both the certificate and the key"), "{e}");
        let e = err("[server]\npg = \"localhost\"\n", &[]);
        assert!(
            e.contains("server.pg") && e.contains("127.0.0.1:5432"),
            "{e}"
        );
        let e = err("", &[("CRYPTOLAKE_SERVER_PG_USER", "x")]);
        assert!(e.contains("go together"), "{e}");
    }

    #[test]
    fn the_file_init_writes_parses_to_exactly_the_defaults() {
        assert_eq!(load(DEFAULT_TOML, &[]).unwrap(), Settings::default());
        assert_eq!(load("", &[]).unwrap(), Settings::default());
        let d = Settings::default();
        assert_eq!(d.enabled_exchanges().count(), 1);
        assert_eq!(d.exchange(Exchange::BinanceFutures).symbols.len(), 1);
        assert_eq!(d.ingest.lookback, chrono::Duration::hours(24));
        assert_eq!(d.ingest.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn environment_overrides_the_file_with_the_cli_names() {
        let s = load(
            DEFAULT_TOML,
            &[
                ("CRYPTOLAKE_LAKE", "/tmp/l"),
                ("CRYPTOLAKE_INGEST_LOOKBACK", "3h"),
                ("CRYPTOLAKE_INGEST_REQUEST_TIMEOUT", "5s"),
                ("CRYPTOLAKE_BINANCE_SYMBOLS", "SOL-USDT, DOGE-USDT"),
                ("CRYPTOLAKE_BINANCE_BASE_URL", "http://127.0.0.1:9/"),
                ("CRYPTOLAKE_BINANCE_FUTURES_WEIGHT_LIMIT", "100"),
                ("CRYPTOLAKE_BINANCE_WEIGHT_INTERVAL", "2s"),
                ("CRYPTOLAKE_COINBASE_ENABLED", "true"),
                ("CRYPTOLAKE_SCHEDULE_CRON", "0 * * * *"),
                ("CRYPTOLAKE_LOG", "debug"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(s.lake, "/tmp/l");
        assert_eq!(s.ingest.lookback, chrono::Duration::hours(3));
        assert_eq!(s.ingest.request_timeout, Duration::from_secs(5));
        let b = s.exchange(Exchange::Binance);
        assert_eq!(b.symbols, symbols(&["SOL-USDT", "DOGE-USDT"]));
        assert_eq!(b.base_url, "http://127.0.0.1:9");
        assert_eq!(b.budget.interval, Duration::from_secs(2));
        assert_eq!(b.budget.weight, 6000);
        assert_eq!(s.exchange(Exchange::BinanceFutures).budget.weight, 100);
        assert_eq!(
            s.enabled_exchanges().map(|(e, _)| e).collect::<Vec<_>>(),
            vec![Exchange::Binance, Exchange::Coinbase]
        );
        assert_eq!(s.schedule.cron, "0 * * * *");
    }

    #[test]
    fn unknown_keys_and_variables_are_named() {
        assert!(err("laek = 1\n", &[]).contains("laek"));
        assert!(err("[exchanges.binance]\nbase_ulr = \"x\"\n", &[]).contains("base_ulr"));
        assert!(err("[exchanges.bitfinex]\n", &[]).contains("bitfinex"));
        let e = err("", &[("CRYPTOLAKE_LAEK", "x")]);
        assert!(
            e.contains("CRYPTOLAKE_LAEK") && e.contains("unknown"),
            "{e}"
        );
        let e = err("", &[("CRYPTOLAKE_BINANCE_SYMBLS", "x")]);
        assert!(e.contains("CRYPTOLAKE_BINANCE_SYMBLS"), "{e}");
        // The Lambda's former names are unknown now: one mapping for every front end.
        assert!(err("", &[("CRYPTOLAKE_EXCHANGES", "binance")]).contains("CRYPTOLAKE_EXCHANGES"));
    }

    #[test]
    fn bad_values_name_their_key_and_where_they_came_from() {
        let e = err("[exchanges.binance]\nsymbols = [\"../x\"]\n", &[]);
        assert!(
            e.contains("exchanges.binance.symbols") && e.contains("../x"),
            "{e}"
        );
        assert!(err("[schedule]\ncron = \"every hour\"\n", &[]).contains("schedule.cron"));
        assert!(err("[ingest]\nlookback = \"soon\"\n", &[]).contains("ingest.lookback"));
        let e = err("", &[("CRYPTOLAKE_SILVER_MANIFEST_OVERLAP", "-5m")]);
        assert!(
            e.contains("CRYPTOLAKE_SILVER_MANIFEST_OVERLAP")
                && e.contains("silver.manifest_overlap"),
            "{e}"
        );
        assert!(
            err("[exchanges.kraken]\nweight_limit = 0\n", &[])
                .contains("exchanges.kraken.weight_limit")
        );
        assert!(
            err("[exchanges.coinbase]\nbase_url = \"ftp://x\"\n", &[])
                .contains("exchanges.coinbase.base_url")
        );
        assert!(err("[quality]\nohlc = \"warn\"\n", &[]).contains("quality.ohlc"));
        assert!(err("[quality]\nohlc = \"ignore\"\n", &[]).contains("ignore"));
        assert!(
            err("", &[("CRYPTOLAKE_COINBASE_ENABLED", "maybe")])
                .contains("CRYPTOLAKE_COINBASE_ENABLED")
        );
        assert!(err("", &[("CRYPTOLAKE_INGEST_CONCURRENCY", "0")]).contains("ingest.concurrency"));
        let ok = load("[silver]\nmanifest_overlap = \"0s\"\n", &[]).unwrap();
        assert_eq!(ok.silver.manifest_overlap, chrono::Duration::zero());
    }

    #[test]
    fn huge_values_are_errors_not_panics() {
        for (text, key) in [
            (
                "[ingest]\nlookback = \"9223372036854775807m\"\n",
                "ingest.lookback",
            ),
            ("[ingest]\nlookback = \"99999999999d\"\n", "ingest.lookback"),
            (
                "[ingest]\nrequest_timeout = \"9223372036854775807s\"\n",
                "ingest.request_timeout",
            ),
            (
                "[ingest]\nconcurrency = 9223372036854775807\n",
                "ingest.concurrency",
            ),
            (
                "[exchanges.binance]\nweight_interval = \"99999999d\"\n",
                "exchanges.binance.weight_interval",
            ),
            (
                "[exchanges.binance]\nweight_limit = -1\n",
                "exchanges.binance.weight_limit",
            ),
            (
                "[quality.freshness]\nmax_age_minutes = 9223372036854775807\n",
                "max_age_minutes",
            ),
        ] {
            let e = err(text, &[]);
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = err(
            "",
            &[("CRYPTOLAKE_INGEST_REQUEST_TIMEOUT", "9223372036854775808s")],
        );
        assert!(e.contains("CRYPTOLAKE_INGEST_REQUEST_TIMEOUT"), "{e}");
    }

    #[test]
    fn sizes_and_query_limits_parse_with_units_and_range_checks() {
        assert_eq!(parse_size("512MiB", 0, u64::MAX), Ok(512 << 20));
        assert_eq!(parse_size(" 2 GiB ", 0, u64::MAX), Ok(2 << 30));
        assert_eq!(parse_size("16MB", 0, u64::MAX), Ok(16_000_000));
        assert_eq!(parse_size("1.5KiB", 0, u64::MAX), Ok(1536));
        assert_eq!(parse_size("4096", 0, u64::MAX), Ok(4096));
        assert!(
            parse_size("12 parsecs", 0, u64::MAX)
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("1e400GiB", 0, u64::MAX).is_err());
        assert!(
            parse_size("1KiB", 4096, 8192)
                .unwrap_err()
                .contains("outside 4 KiB to 8 KiB")
        );
        let s = load(
            "[query]\nmemory_limit = \"256MiB\"\ntimeout = \"30s\"\n",
            &[
                ("CRYPTOLAKE_QUERY_SPILL_LIMIT", "1GiB"),
                ("CRYPTOLAKE_KRAKEN_MAX_RESPONSE_SIZE", "64KiB"),
            ],
        )
        .unwrap();
        assert_eq!(s.query.memory_bytes, 256 << 20);
        assert_eq!(s.query.spill_bytes, 1 << 30);
        assert_eq!(s.query.timeout, Duration::from_secs(30));
        assert_eq!(s.exchange(Exchange::Kraken).max_response_bytes, 64 << 10);
        assert_eq!(
            s.exchange(Exchange::Binance).max_response_bytes,
            cryptolake_sources::http::DEFAULT_MAX_BODY_BYTES
        );
        let e = err("[query]\nmemory_limit = \"1MiB\"\n", &[]);
        assert!(
            e.contains("query.memory_limit") && e.contains("outside"),
            "{e}"
        );
        let e = err("", &[("CRYPTOLAKE_BINANCE_MAX_RESPONSE_SIZE", "2TiB")]);
        assert!(e.contains("CRYPTOLAKE_BINANCE_MAX_RESPONSE_SIZE"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_text_or_variable_makes_the_loader_panic(
            text in "\\PC{0,200}",
            value in "\\PC{0,40}",
            key in proptest::sample::select(vec![
                "CRYPTOLAKE_INGEST_LOOKBACK", "CRYPTOLAKE_INGEST_CONCURRENCY",
                "CRYPTOLAKE_INGEST_REQUEST_TIMEOUT", "CRYPTOLAKE_SILVER_MANIFEST_OVERLAP",
                "CRYPTOLAKE_KRAKEN_WEIGHT_INTERVAL", "CRYPTOLAKE_COINBASE_WEIGHT_LIMIT",
                "CRYPTOLAKE_SCHEDULE_CRON", "CRYPTOLAKE_BINANCE_SYMBOLS",
                "CRYPTOLAKE_QUERY_MEMORY_LIMIT", "CRYPTOLAKE_QUERY_SPILL_LIMIT",
                "CRYPTOLAKE_QUERY_TIMEOUT", "CRYPTOLAKE_BINANCE_MAX_RESPONSE_SIZE",
            ]),
            duration in "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y)",
            size in "[0-9.]{1,25} ?(|B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|xB)",
        ) {
            let _ = load(&text, &[(key, value.as_str())]);
            let _ = load(&format!("[ingest]\nlookback = \"{duration}\"\n"), &[]);
            let _ = load("", &[(key, duration.as_str())]);
            let _ = load(&format!("[query]\nmemory_limit = \"{size}\"\n"), &[]);
            let _ = load("", &[(key, size.as_str())]);
        }
    }
}
