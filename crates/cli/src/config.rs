//! `cryptolake.toml`: the one configuration file, overridable by `CRYPTOLAKE_*` environment
//! variables and by flags (flags win over the environment, which wins over the file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use chrono::Duration;
use cryptolake_lake::quality::{Action, QualityRules};
use cryptolake_model::{Exchange, Symbol};
use serde::Deserialize;

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
# canonical BASE-QUOTE symbols, and its request budget (weight per interval; the defaults are
# the exchange's published limits, lower them when other tools share your address).
# Env: CRYPTOLAKE_<EXCHANGE>_ENABLED, _BASE_URL, _SYMBOLS (comma separated), _WEIGHT_LIMIT,
# _WEIGHT_INTERVAL, with <EXCHANGE> one of BINANCE, BINANCE_FUTURES, COINBASE, KRAKEN.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_lake")]
    pub lake: String,
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub silver: SilverConfig,
    #[serde(default)]
    pub quality: QualityConfig,
    #[serde(default = "default_exchanges")]
    pub exchanges: BTreeMap<String, ExchangeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    pub ohlc: Action,
    pub amounts: Action,
    pub alignment: Action,
    pub duplicates: Action,
    pub completeness: CompletenessConfig,
    pub freshness: FreshnessConfig,
    pub price_jump: PriceJumpConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletenessConfig {
    pub min_minutes_per_hour: i32,
    pub min_hours_per_day: i32,
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreshnessConfig {
    pub max_age_minutes: i64,
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceJumpConfig {
    pub max_change: f64,
    pub action: Action,
}

impl Default for QualityConfig {
    fn default() -> Self {
        let r = QualityRules::default();
        QualityConfig {
            ohlc: r.ohlc,
            amounts: r.amounts,
            alignment: r.alignment,
            duplicates: r.duplicates,
            completeness: CompletenessConfig::default(),
            freshness: FreshnessConfig::default(),
            price_jump: PriceJumpConfig::default(),
        }
    }
}

impl Default for CompletenessConfig {
    fn default() -> Self {
        let r = QualityRules::default();
        CompletenessConfig {
            min_minutes_per_hour: r.min_minutes_per_hour,
            min_hours_per_day: r.min_hours_per_day,
            action: r.completeness,
        }
    }
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        let r = QualityRules::default();
        FreshnessConfig {
            max_age_minutes: r.max_age_minutes,
            action: r.freshness,
        }
    }
}

impl Default for PriceJumpConfig {
    fn default() -> Self {
        let r = QualityRules::default();
        PriceJumpConfig {
            max_change: r.max_price_change,
            action: r.price_jump,
        }
    }
}

impl QualityConfig {
    pub fn rules(&self) -> QualityRules {
        QualityRules {
            ohlc: self.ohlc,
            amounts: self.amounts,
            alignment: self.alignment,
            duplicates: self.duplicates,
            min_minutes_per_hour: self.completeness.min_minutes_per_hour,
            min_hours_per_day: self.completeness.min_hours_per_day,
            completeness: self.completeness.action,
            max_age_minutes: self.freshness.max_age_minutes,
            freshness: self.freshness.action,
            max_price_change: self.price_jump.max_change,
            price_jump: self.price_jump.action,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilverConfig {
    #[serde(default = "default_manifest_overlap")]
    pub manifest_overlap: String,
}

fn default_manifest_overlap() -> String {
    "10m".into()
}

impl Default for SilverConfig {
    fn default() -> Self {
        SilverConfig {
            manifest_overlap: default_manifest_overlap(),
        }
    }
}

impl SilverConfig {
    pub fn manifest_overlap(&self) -> Result<Duration> {
        parse_duration(&self.manifest_overlap).context("config key silver.manifest_overlap")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default = "default_lookback")]
    pub lookback: String,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    #[serde(default = "default_max_refetch_windows")]
    pub max_refetch_windows: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default = "default_cron")]
    pub cron: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub base_url: Option<String>,
    #[serde(default)]
    pub symbols: Vec<String>,
    pub weight_limit: Option<u32>,
    pub weight_interval: Option<String>,
}

fn default_lake() -> String {
    "file://./lake".into()
}
fn default_lookback() -> String {
    "24h".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_request_timeout() -> String {
    "30s".into()
}
fn default_max_refetch_windows() -> usize {
    24
}
fn default_cron() -> String {
    "5 * * * *".into()
}
fn yes() -> bool {
    true
}
fn default_exchanges() -> BTreeMap<String, ExchangeConfig> {
    let ex = |enabled: bool, symbols: [&str; 2]| ExchangeConfig {
        enabled,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    BTreeMap::from([
        ("binance".to_string(), ex(true, ["BTC-USDT", "ETH-USDT"])),
        ("coinbase".to_string(), ex(false, ["BTC-USD", "ETH-USD"])),
        ("kraken".to_string(), ex(false, ["BTC-USD", "ETH-USD"])),
    ])
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            lookback: default_lookback(),
            concurrency: default_concurrency(),
            request_timeout: default_request_timeout(),
            max_refetch_windows: default_max_refetch_windows(),
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: default_cron(),
        }
    }
}

/// Environment variables that are not settings but are still ours.
const NON_SETTING_VARS: [&str; 2] = ["CRYPTOLAKE_CONFIG", "CRYPTOLAKE_LOG"];

impl Config {
    /// Loads `path` if given (it must exist), else `./cryptolake.toml` if present, else the
    /// defaults; then applies the environment; then validates.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?,
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
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => anyhow!(
                    "config {} line {l}: {}",
                    origin.display(),
                    e.message().trim()
                ),
                None => anyhow!("config {}: {}", origin.display(), e.message().trim()),
            }
        })?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<()> {
        for (name, value) in env {
            let Some(key) = name.strip_prefix("CRYPTOLAKE_") else {
                continue;
            };
            if NON_SETTING_VARS.contains(&name.as_str()) {
                continue;
            }
            match key {
                "LAKE" => self.lake = value.clone(),
                "INGEST_LOOKBACK" => self.ingest.lookback = value.clone(),
                "INGEST_CONCURRENCY" => {
                    self.ingest.concurrency = value
                        .parse()
                        .map_err(|_| anyhow!("{name}={value:?}: expected a whole number"))?
                }
                "INGEST_REQUEST_TIMEOUT" => self.ingest.request_timeout = value.clone(),
                "INGEST_MAX_REFETCH_WINDOWS" => {
                    self.ingest.max_refetch_windows = value
                        .parse()
                        .map_err(|_| anyhow!("{name}={value:?}: expected a whole number"))?
                }
                "SCHEDULE_CRON" => self.schedule.cron = value.clone(),
                "SILVER_MANIFEST_OVERLAP" => self.silver.manifest_overlap = value.clone(),
                "S3_ENDPOINT" => self.s3.endpoint = Some(value.clone()),
                "S3_REGION" => self.s3.region = Some(value.clone()),
                _ => {
                    // The longest name wins: BINANCE_FUTURES_* is not BINANCE_*.
                    let known = Exchange::ALL
                        .iter()
                        .filter_map(|ex| {
                            let prefix =
                                format!("{}_", ex.as_str().to_uppercase().replace('-', "_"));
                            key.strip_prefix(&prefix).map(|rest| (*ex, rest))
                        })
                        .min_by_key(|(_, rest)| rest.len());
                    let Some((ex, setting)) = known else {
                        bail!("unknown environment variable {name}");
                    };
                    let entry =
                        self.exchanges
                            .entry(ex.as_str().to_string())
                            .or_insert(ExchangeConfig {
                                enabled: true,
                                ..Default::default()
                            });
                    match setting {
                        "BASE_URL" => entry.base_url = Some(value.clone()),
                        "WEIGHT_LIMIT" => {
                            entry.weight_limit = Some(value.parse().map_err(|_| {
                                anyhow!("{name}={value:?}: expected a whole number")
                            })?)
                        }
                        "WEIGHT_INTERVAL" => entry.weight_interval = Some(value.clone()),
                        "SYMBOLS" => entry.symbols = split_list(value),
                        "ENABLED" => {
                            entry.enabled = value
                                .parse()
                                .map_err(|_| anyhow!("{name}={value:?}: expected true or false"))?
                        }
                        _ => bail!("unknown environment variable {name}"),
                    }
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        self.quality
            .rules()
            .validate()
            .map_err(|e| anyhow!("config key {e}"))?;
        if let Some(e) = &self.s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            bail!("config key s3.endpoint {e:?}: must start with http:// or https://");
        }
        parse_duration(&self.ingest.lookback)
            .with_context(|| "config key ingest.lookback (flag --lookback)".to_string())?;
        if self.ingest.concurrency == 0 {
            bail!("config key ingest.concurrency: must be at least 1");
        }
        let timeout = parse_duration(&self.ingest.request_timeout)
            .context("config key ingest.request_timeout")?;
        if timeout <= Duration::zero() {
            bail!("config key ingest.request_timeout: must be longer than 0s");
        }
        self.silver.manifest_overlap()?;
        croner::Cron::from_str(&self.schedule.cron)
            .map_err(|e| anyhow!("config key schedule.cron {:?}: {e}", self.schedule.cron))?;
        for (name, ex) in &self.exchanges {
            Exchange::from_str(name).map_err(|e| anyhow!("config key exchanges.{name}: {e}"))?;
            for s in &ex.symbols {
                Symbol::parse(s)
                    .map_err(|e| anyhow!("config key exchanges.{name}.symbols: {e}"))?;
            }
            if ex.weight_limit == Some(0) {
                bail!("config key exchanges.{name}.weight_limit: must be at least 1");
            }
            if let Some(i) = &ex.weight_interval {
                let d = parse_duration(i)
                    .with_context(|| format!("config key exchanges.{name}.weight_interval"))?;
                if d <= Duration::zero() {
                    bail!("config key exchanges.{name}.weight_interval: must be longer than 0s");
                }
            }
            if let Some(u) = &ex.base_url
                && let Err(e) = cryptolake_sources::http::check_base_url(u)
            {
                bail!("config key exchanges.{name}.base_url: {e}");
            }
        }
        Ok(())
    }

    pub fn lookback(&self) -> Duration {
        parse_duration(&self.ingest.lookback).expect("validated")
    }

    pub fn exchange(&self, ex: Exchange) -> Option<&ExchangeConfig> {
        self.exchanges.get(ex.as_str())
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        parse_duration(&self.ingest.request_timeout)
            .ok()
            .and_then(|d| d.to_std().ok())
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// The request budget configured for `ex`, each part defaulting to the exchange's own.
    pub fn budget(&self, ex: Exchange) -> cryptolake_sources::limit::Budget {
        let default = cryptolake_sources::ExchangeClient::default_budget(ex);
        let c = self.exchange(ex);
        cryptolake_sources::limit::Budget {
            weight: c.and_then(|c| c.weight_limit).unwrap_or(default.weight),
            interval: c
                .and_then(|c| c.weight_interval.as_deref())
                .and_then(|i| parse_duration(i).ok())
                .and_then(|d| d.to_std().ok())
                .unwrap_or(default.interval),
        }
    }

    /// The configured symbols of `ex`, enabled or not.
    pub fn symbols_of(&self, ex: Exchange) -> Vec<Symbol> {
        self.exchange(ex)
            .map(|c| {
                c.symbols
                    .iter()
                    .filter_map(|s| Symbol::parse(s).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Enabled exchanges with their parsed symbols.
    pub fn enabled_exchanges(&self) -> Vec<(Exchange, Vec<Symbol>)> {
        self.exchanges
            .iter()
            .filter(|(_, c)| c.enabled)
            .filter_map(|(name, c)| {
                let ex = Exchange::from_str(name).ok()?;
                let symbols = c
                    .symbols
                    .iter()
                    .filter_map(|s| Symbol::parse(s).ok())
                    .collect();
                Some((ex, symbols))
            })
            .collect()
    }
}

pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `90m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a duration like 30s, 90m, 24h or 7d"))?;
    match unit {
        "s" => Ok(Duration::seconds(n)),
        "ms" => Ok(Duration::milliseconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        _ => bail!("{text:?} is not a duration like 30s, 90m, 24h or 7d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| anyhow!("{}", e.message()))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        c.apply_env(&env)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn default_file_parses_to_defaults() {
        let c = load_str(DEFAULT_TOML, &[]).unwrap();
        assert_eq!(c.lake, "file://./lake");
        assert_eq!(c.lookback(), Duration::hours(24));
        assert_eq!(c.schedule.cron, "5 * * * *");
        let ex = c.enabled_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].1.len(), 2);
    }

    #[test]
    fn exchange_settings_from_file_and_env() {
        let c = load_str(
            DEFAULT_TOML,
            &[
                ("CRYPTOLAKE_BINANCE_FUTURES_WEIGHT_LIMIT", "100"),
                ("CRYPTOLAKE_BINANCE_WEIGHT_INTERVAL", "2s"),
                ("CRYPTOLAKE_COINBASE_ENABLED", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.budget(Exchange::BinanceFutures).weight, 100);
        assert_eq!(c.budget(Exchange::Binance).weight, 6000);
        assert_eq!(
            c.budget(Exchange::Binance).interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(c.budget(Exchange::Kraken).weight, 1);
        assert_eq!(c.enabled_exchanges().len(), 2);
        let err = load_str("[exchanges.kraken]\nweight_limit = 0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("exchanges.kraken.weight_limit"),
            "{err}"
        );
        let err = load_str("[exchanges.coinbase]\nbase_url = \"ftp://x\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("exchanges.coinbase.base_url"),
            "{err}"
        );
        let err = load_str("[exchanges.bitfinex]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("bitfinex"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load_str("lake = \"x\"\nlaek = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("laek"), "{err}");
        let err = load_str("[exchanges.binance]\nbase_ulr = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("base_ulr"), "{err}");
        let err = load_str("", &[("CRYPTOLAKE_LAEK", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRYPTOLAKE_LAEK"), "{err}");
    }

    #[test]
    fn quality_rules_are_checked() {
        let c = load_str(DEFAULT_TOML, &[]).unwrap();
        assert_eq!(c.quality.rules(), QualityRules::default());
        let c = load_str(
            "[quality]\nohlc = \"fail\"\n[quality.freshness]\nmax_age_minutes = 30\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.quality.rules().ohlc, Action::Fail);
        assert_eq!(c.quality.rules().max_age_minutes, 30);
        let err = load_str("[quality]\nohlc = \"warn\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("quality.ohlc"), "{err:#}");
        let err = load_str("[quality]\nohlc = \"ignore\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("ignore"), "{err:#}");
        let err = load_str("[quality.freshness]\nmax_age = 3\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("max_age"), "{err:#}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load_str(
            DEFAULT_TOML,
            &[
                ("CRYPTOLAKE_LAKE", "/tmp/l"),
                ("CRYPTOLAKE_BINANCE_SYMBOLS", "SOL-USDT, DOGE-USDT"),
                ("CRYPTOLAKE_BINANCE_BASE_URL", "http://127.0.0.1:9"),
                ("CRYPTOLAKE_SCHEDULE_CRON", "0 * * * *"),
            ],
        )
        .unwrap();
        assert_eq!(c.lake, "/tmp/l");
        assert_eq!(
            c.exchanges["binance"].symbols,
            vec!["SOL-USDT", "DOGE-USDT"]
        );
        assert_eq!(
            c.exchanges["binance"].base_url.as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(c.schedule.cron, "0 * * * *");
    }

    #[test]
    fn bad_values_are_named() {
        let err = load_str("[exchanges.binance]\nsymbols = [\"../x\"]\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("../x"), "{err:#}");
        let err = load_str("[schedule]\ncron = \"every hour\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("schedule.cron"), "{err:#}");
        let err = load_str("[ingest]\nlookback = \"soon\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("ingest.lookback"), "{err:#}");
        let err = load_str("[exchanges.bitfinex]\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("bitfinex"), "{err:#}");
        let err = load_str("", &[("CRYPTOLAKE_SILVER_MANIFEST_OVERLAP", "-5m")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("silver.manifest_overlap"),
            "{err:#}"
        );
        let ok = load_str("[silver]\nmanifest_overlap = \"0s\"\n", &[]).unwrap();
        assert_eq!(ok.silver.manifest_overlap().unwrap(), Duration::zero());
    }
}
