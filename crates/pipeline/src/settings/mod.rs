//! The one typed configuration: `cryptolake.toml`, then `CRYPTOLAKE_*` environment variables,
//! then whatever a front end's flags set on the result.
//!
//! Every setting is declared once, in [`declared`]: key, kind (type and checks), default,
//! documentation and flag. Its environment variable follows from its key. From the
//! declarations come the loader, the commented file `cryptolake init` writes
//! ([`default_toml`]) and the README's settings table ([`readme_table`]; a test keeps it
//! true). Every value is parsed and range-checked once, here, into typed fields: durations
//! become durations, the lake a [`LakeLocation`], the schedule a [`CronSchedule`]. Nothing
//! downstream parses a setting again.

pub mod declared;
pub mod kinds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cryptolake_lake::quality::QualityRules;
use cryptolake_lake::{LakeLocation, LakeOptions, SimulatedLatency};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::ExchangeClient;
use cryptolake_sources::limit::Budget;

use crate::{Error, Result};
use declared::{Declared, Source};
use kinds::{Input, Problem};

/// Variables that are ours but are not settings.
pub const NON_SETTING_VARS: [&str; 2] = ["CRYPTOLAKE_CONFIG", "CRYPTOLAKE_LOG"];

/// The longest a duration setting may be: far beyond any sensible value, well inside every
/// time type the pipeline computes with.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Every setting, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the lake lives.
    pub lake: LakeLocation,
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
    /// When the hourly job runs, UTC.
    pub cron: CronSchedule,
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

impl PgTls {
    /// Neither file yet: each is set by its own setting, and both must be.
    fn unset() -> PgTls {
        PgTls {
            cert: PathBuf::new(),
            key: PathBuf::new(),
        }
    }
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
    /// Whether the hourly job fetches a perpetual market's funding rates.
    pub funding: bool,
    /// Whether the hourly job fetches a perpetual market's mark price candles.
    pub mark_prices: bool,
}

impl ExchangeSettings {
    /// The defaults of `exchange`: its market's entry, its adapter's API root and budget.
    pub fn default_for(exchange: Exchange) -> ExchangeSettings {
        let market = declared::MARKETS
            .iter()
            .find(|m| m.exchange == exchange)
            .expect("every exchange has a market entry");
        ExchangeSettings {
            enabled: market.enabled,
            base_url: ExchangeClient::default_base_url(exchange).to_string(),
            symbols: market
                .symbols
                .iter()
                .map(|s| Symbol::parse(s).expect("declared symbols are valid"))
                .collect(),
            budget: ExchangeClient::default_budget(exchange),
            max_response_bytes: cryptolake_sources::http::DEFAULT_MAX_BODY_BYTES,
            funding: true,
            mark_prices: true,
        }
    }
}

impl Default for Settings {
    /// Every declared default.
    fn default() -> Self {
        let mut draft = Draft::blank();
        for d in declared::SETTINGS {
            if let declared::Default::Is(text) = d.default() {
                let value = toml_value(text);
                d.apply(&mut draft, Input::File(&value), &[])
                    .unwrap_or_else(|p| {
                        panic!("the default of {} is invalid: {}", d.key(), p.reason)
                    });
            }
        }
        draft.s
    }
}

/// Settings while they are read: the environment's one wire-protocol user arrives in two
/// variables, joined when all are read.
pub struct Draft {
    pub s: Settings,
    pg_env_user: Option<String>,
    pg_env_password: Option<Secret>,
}

impl Draft {
    /// Placeholders only: every field with a default is set from its declaration.
    fn blank() -> Draft {
        Draft {
            s: Settings {
                lake: LakeLocation::Local(PathBuf::from("lake")),
                s3: S3Settings::default(),
                ingest: IngestSettings {
                    lookback: chrono::Duration::zero(),
                    concurrency: 0,
                    request_timeout: Duration::ZERO,
                    max_refetch_windows: 0,
                },
                schedule: ScheduleSettings {
                    cron: CronSchedule::from_str("0 * * * *").expect("a valid expression"),
                },
                silver: SilverSettings {
                    manifest_overlap: chrono::Duration::zero(),
                    read_concurrency: None,
                    batch_days: 0,
                },
                server: ServerSettings {
                    http: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    token: None,
                    max_rows: 0,
                    read_cache: 0,
                    allowed_hosts: Vec::new(),
                    pg: None,
                    pg_max_connections: 0,
                    pg_users: Vec::new(),
                    pg_tls: None,
                },
                query: cryptolake_query::Limits::default(),
                quality: QualityRules::default(),
                exchanges: Exchange::ALL
                    .iter()
                    .map(|e| (*e, ExchangeSettings::default_for(*e)))
                    .collect(),
            },
            pg_env_user: None,
            pg_env_password: None,
        }
    }
}

/// A cron expression in UTC, checked once.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl CronSchedule {
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for CronSchedule {
    type Err = String;

    /// `5 * * * *`: minute, hour, day of month, month, day of week.
    fn from_str(text: &str) -> std::result::Result<CronSchedule, String> {
        let text = text.trim();
        let cron = croner::Cron::from_str(text).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(CronSchedule {
            text: text.to_string(),
            cron,
        })
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &CronSchedule) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A size as a setting is written: the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// A declared default's TOML text as a value.
fn toml_value(text: &str) -> toml::Value {
    let mut t: toml::Table =
        toml::from_str(&format!("v = {text}")).expect("declared defaults are TOML");
    t.remove("v").expect("just written")
}

/// The environment variable of a setting outside the exchanges' tables.
pub fn env_name(key: &str) -> String {
    format!("CRYPTOLAKE_{}", key.replace('.', "_").to_uppercase())
}

/// Where a value came from, for the message that names it.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    File,
    Env(&'a str),
}

/// One reading of a file and an environment.
struct Loader<'a> {
    text: &'a str,
    origin: &'a str,
    env: &'a [(String, String)],
}

impl Loader<'_> {
    /// An error naming `key`, and where it was given: the file's line, or the variable.
    fn bad(&self, key: &str, origin: Origin<'_>, reason: impl std::fmt::Display) -> Error {
        let key = match origin {
            Origin::File => match line_of(self.text, key) {
                Some(line) => format!("config key {key} ({} line {line})", self.origin),
                None => format!("config key {key}"),
            },
            Origin::Env(var) => format!("environment variable {var} (config key {key})"),
        };
        Error::Setting {
            key,
            reason: reason.to_string(),
        }
    }

    fn problem(&self, key: &str, origin: Origin<'_>, p: Problem) -> Error {
        self.bad(&format!("{key}{}", p.at), origin, p.reason)
    }

    /// The `CRYPTOLAKE_*` variables that set something, by name; an unknown one is an error.
    fn variables(&self) -> Result<BTreeMap<String, &str>> {
        let mut known: Vec<String> = declared::SETTINGS
            .iter()
            .filter(|d| d.source() != Source::FileOnly)
            .map(|d| env_name(d.key()))
            .collect();
        for ex in Exchange::ALL {
            for d in declared::EXCHANGE_SETTINGS {
                known.push(Settings::exchange_var(ex, d.key()));
            }
        }
        let mut out = BTreeMap::new();
        for (name, value) in self.env {
            if !name.starts_with("CRYPTOLAKE_") || NON_SETTING_VARS.contains(&name.as_str()) {
                continue;
            }
            if !known.contains(name) {
                return Err(Error::Setting {
                    key: format!("environment variable {name}"),
                    reason: "unknown setting (see the settings table in the README)".into(),
                });
            }
            out.insert(name.clone(), value.as_str());
        }
        Ok(out)
    }

    /// Applies one declaration to `target`: the variable if set, else the file's value.
    fn apply<T: 'static>(
        &self,
        d: &dyn Declared<T>,
        key: &str,
        var: &str,
        file: Option<toml::Value>,
        vars: &BTreeMap<String, &str>,
        target: &mut T,
    ) -> Result<()> {
        let from_env = match d.source() {
            Source::FileOnly => None,
            _ => vars.get(var).copied(),
        };
        if let (Source::EnvOnly, Some(_)) = (d.source(), &file) {
            return Err(self.bad(
                key,
                Origin::File,
                format!("does not belong in the file: set the environment variable {var}"),
            ));
        }
        match (from_env, file) {
            (Some(v), _) => d
                .apply(target, Input::Env(v), self.env)
                .map_err(|p| self.problem(key, Origin::Env(var), p)),
            (None, Some(v)) => d
                .apply(target, Input::File(&v), self.env)
                .map_err(|p| self.problem(key, Origin::File, p)),
            (None, None) => Ok(()),
        }
    }

    fn resolve(&self, mut table: toml::Table) -> Result<Settings> {
        let vars = self.variables()?;
        let mut draft = Draft {
            s: Settings::default(),
            pg_env_user: None,
            pg_env_password: None,
        };
        for d in declared::SETTINGS {
            let file = take(&mut table, d.key()).map_err(|(k, r)| self.bad(&k, Origin::File, r))?;
            self.apply(*d, d.key(), &env_name(d.key()), file, &vars, &mut draft)?;
        }

        let mut tables: BTreeMap<Exchange, toml::Table> = BTreeMap::new();
        if let Some(exchanges) = table.remove("exchanges") {
            let toml::Value::Table(exchanges) = exchanges else {
                return Err(self.bad("exchanges", Origin::File, "expected a table of exchanges"));
            };
            for (name, value) in exchanges {
                let key = format!("exchanges.{name}");
                let exchange =
                    Exchange::from_str(&name).map_err(|e| self.bad(&key, Origin::File, e))?;
                let toml::Value::Table(t) = value else {
                    return Err(self.bad(&key, Origin::File, format!("expected a table [{key}]")));
                };
                tables.insert(exchange, t);
            }
        }
        for exchange in Exchange::ALL {
            let mut t = tables.remove(&exchange).unwrap_or_default();
            let s = draft
                .s
                .exchanges
                .get_mut(&exchange)
                .expect("every exchange has settings");
            for d in declared::EXCHANGE_SETTINGS {
                let key = format!("exchanges.{exchange}.{}", d.key());
                let var = Settings::exchange_var(exchange, d.key());
                self.apply(*d, &key, &var, t.remove(d.key()), &vars, s)?;
            }
            if let Some(k) = t.keys().next() {
                return Err(self.bad(
                    &format!("exchanges.{exchange}.{k}"),
                    Origin::File,
                    "unknown setting (see `cryptolake init` or the settings table in the README)",
                ));
            }
        }
        if let Some(key) = leftover(&table, "") {
            return Err(self.bad(
                &key,
                Origin::File,
                "unknown setting (see `cryptolake init` or the settings table in the README)",
            ));
        }
        self.finish(draft, &vars)
    }

    /// The checks across settings.
    fn finish(&self, mut draft: Draft, vars: &BTreeMap<String, &str>) -> Result<Settings> {
        let (user_var, password_var) = (env_name("server.pg_user"), env_name("server.pg_password"));
        match (draft.pg_env_user.take(), draft.pg_env_password.take()) {
            (None, None) => {}
            (Some(name), Some(password)) => {
                if draft.s.server.pg_users.iter().any(|x| x.name == name) {
                    return Err(self.bad(
                        "server.pg_users",
                        Origin::Env(&user_var),
                        format!("user {name:?} is also in the file"),
                    ));
                }
                draft.s.server.pg_users.push(PgUser {
                    name,
                    password: PgPassword::Plain(password),
                });
            }
            (user, _) => {
                let var = if user.is_some() {
                    &password_var
                } else {
                    &user_var
                };
                let given = if vars.contains_key(&user_var) {
                    &user_var
                } else {
                    &password_var
                };
                return Err(self.bad(
                    "server.pg_users",
                    Origin::Env(given),
                    format!("{user_var} and {password_var} go together, neither empty ({var} is missing)"),
                ));
            }
        }
        if let Some(tls) = &draft.s.server.pg_tls
            && (tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty())
        {
            return Err(self.bad(
                "server.pg_tls_cert / server.pg_tls_key",
                Origin::File,
                "TLS needs both the certificate and the key file",
            ));
        }
        draft.s.quality.validate().map_err(|e| Error::Setting {
            key: "config".into(),
            reason: e,
        })?;
        Ok(draft.s)
    }
}

/// Removes the value at dotted `key` from `table`; `Err((key, reason))` when a section on the
/// way is not a table.
fn take(
    table: &mut toml::Table,
    key: &str,
) -> std::result::Result<Option<toml::Value>, (String, String)> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a key has a name");
    let mut t = table;
    for (i, part) in parts.iter().enumerate() {
        match t.get_mut(*part) {
            None => return Ok(None),
            Some(toml::Value::Table(inner)) => t = inner,
            Some(other) => {
                let section = parts[..=i].join(".");
                return Err((
                    section.clone(),
                    format!("is a {}, expected a table [{section}]", other.type_str()),
                ));
            }
        }
    }
    Ok(t.remove(last))
}

/// The first key still in `table` after every setting took its own: a value, or a section no
/// setting lives in.
fn leftover(table: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => {
                let known = declared::SETTINGS
                    .iter()
                    .any(|d| d.key().starts_with(&format!("{key}.")));
                if !known {
                    return Some(key);
                }
                if let Some(found) = leftover(inner, &key) {
                    return Some(found);
                }
            }
            _ => return Some(key),
        }
    }
    None
}

/// The line of `text` that sets dotted `key` (or opens its table), if any: for messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let key = key.split('[').next().unwrap_or(key);
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            let name = line.trim_start_matches('[').split(']').next().unwrap_or("");
            section = name
                .split('.')
                .map(|p| p.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join(".");
            if section == key {
                return Some(n + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".");
        let full = if section.is_empty() {
            name
        } else {
            format!("{section}.{name}")
        };
        if full == key {
            return Some(n + 1);
        }
    }
    None
}

/// The file `cryptolake init` writes: every setting with its documentation, variable and flag,
/// and its default (or, where there is none, an example commented out).
pub fn default_toml() -> String {
    let mut out = String::from(
        "# cryptolake configuration.\n\
         #\n\
         # Every setting can be overridden by an environment variable (named beside it) and, where\n\
         # noted, by a command-line flag. Unknown keys are errors. Secrets never belong here: AWS\n\
         # credentials come from the standard AWS environment and credential chain, and the server's\n\
         # token and passwords from environment variables.\n",
    );
    let comment = |out: &mut String, text: &str| {
        for line in text.lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
    };
    for section in declared::SECTIONS {
        out.push('\n');
        if !section.name.is_empty() {
            out.push_str(&format!("[{}]\n", section.name));
        }
        if !section.doc.is_empty() {
            comment(&mut out, section.doc);
        }
        for d in declared::SETTINGS {
            let (sec, name) = d.key().rsplit_once('.').unwrap_or(("", d.key()));
            if sec != section.name || d.source() == Source::EnvOnly {
                continue;
            }
            comment(&mut out, d.doc());
            let mut refs = String::new();
            if d.source() != Source::FileOnly {
                refs = format!("Env: {}.", env_name(d.key()));
            }
            if let Some(flag) = d.flag() {
                refs.push_str(&format!(" Flag: {flag}."));
            }
            if !refs.is_empty() {
                comment(&mut out, refs.trim());
            }
            match d.default() {
                declared::Default::Is(v) => out.push_str(&format!("{name} = {v}\n")),
                declared::Default::Unset {
                    example: Some(e), ..
                } if e.starts_with("[[") => comment(&mut out, e),
                declared::Default::Unset {
                    example: Some(e), ..
                } => out.push_str(&format!("# {name} = {e}\n")),
                _ => {}
            }
        }
    }
    out.push('\n');
    comment(&mut out, declared::EXCHANGES_DOC);
    comment(&mut out, "Each exchange's table holds:");
    for d in declared::EXCHANGE_SETTINGS {
        let mut line = format!("{}: {}", d.key(), d.doc());
        if let Some(flag) = d.flag() {
            line.push_str(&format!(" Flag: {flag}."));
        }
        comment(&mut out, &line);
    }
    comment(
        &mut out,
        "Env: CRYPTOLAKE_<EXCHANGE>_<KEY>, e.g. CRYPTOLAKE_BINANCE_FUTURES_SYMBOLS (lists comma separated).",
    );
    for market in declared::MARKETS {
        let defaults = ExchangeSettings::default_for(market.exchange);
        out.push_str(&format!("\n[exchanges.{}]\n", market.exchange));
        comment(&mut out, market.doc);
        for d in declared::EXCHANGE_SETTINGS {
            if let declared::Default::Shown(show) = d.default() {
                out.push_str(&format!("{} = {}\n", d.key(), show(&defaults)));
            }
        }
    }
    out
}

/// README's settings table: one row per setting, from the declarations.
pub fn readme_table() -> String {
    let one_line = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::from(
        "| setting | environment variable, flag | default | value | what it does |\n|---|---|---|---|---|\n",
    );
    for d in declared::SETTINGS {
        let mut set_by = match d.source() {
            Source::FileOnly => "file only".to_string(),
            _ => format!("`{}`", env_name(d.key())),
        };
        if d.source() == Source::EnvOnly {
            set_by.push_str(" (environment only)");
        }
        if let Some(flag) = d.flag() {
            set_by.push_str(&format!(", `{flag}`"));
        }
        let default = match d.default() {
            declared::Default::Is(v) => format!("`{}`", v.trim_matches('"')),
            declared::Default::Unset { meaning, .. } => meaning.to_string(),
            declared::Default::Shown(_) => String::new(),
        };
        out.push_str(&format!(
            "| `{}` | {set_by} | {default} | {} | {} |\n",
            d.key(),
            d.accepts(),
            one_line(d.doc())
        ));
    }
    for d in declared::EXCHANGE_SETTINGS {
        let mut set_by = format!("`CRYPTOLAKE_<E>_{}`", d.key().to_uppercase());
        if let Some(flag) = d.flag() {
            set_by.push_str(&format!(", `{flag}`"));
        }
        let default = match d.default() {
            declared::Default::Shown(show) => declared::MARKETS
                .iter()
                .map(|m| {
                    format!(
                        "{}: `{}`",
                        m.exchange,
                        show(&ExchangeSettings::default_for(m.exchange)).replace('"', "")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| `exchanges.<E>.{}` | {set_by} | {default} | {} | {} |\n",
            d.key(),
            d.accepts(),
            one_line(d.doc())
        ));
    }
    out
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

/// Splits a comma-separated list, dropping blanks.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
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
        let table: toml::Table = toml::from_str(text).map_err(|e| {
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
        Loader { text, origin, env }.resolve(table)
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
            exchange.as_str().to_uppercase().replace('-', "_"),
            key.to_uppercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(list: &[&str]) -> Vec<Symbol> {
        list.iter().map(|s| Symbol::parse(s).unwrap()).collect()
    }

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
        assert_eq!(load(&default_toml(), &[]).unwrap(), Settings::default());
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
            &default_toml(),
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
        assert_eq!(s.lake, LakeLocation::Local("/tmp/l".into()));
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
        assert_eq!(s.schedule.cron.as_str(), "0 * * * *");
    }

    #[test]
    fn unknown_keys_and_variables_are_named() {
        assert!(err("laek = 1\n", &[]).contains("laek"));
        assert!(err("[exchanges.binance]\nbase_ulr = \"x\"\n", &[]).contains("base_ulr"));
        assert!(err("[exchanges.bitfinex]\n", &[]).contains("bitfinex"));
        // A section no setting lives in, even empty.
        let e = err("[ingest]\n[sliver]\n", &[]);
        assert!(
            e.contains("config key sliver") && e.contains("line 2"),
            "{e}"
        );
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

    /// README's table between these markers is [`readme_table`]'s output.
    const TABLE_BEGIN: &str =
        "<!-- settings table: generated from crates/pipeline/src/settings/declared.rs -->\n";
    const TABLE_END: &str = "<!-- end of settings table -->";

    #[test]
    fn readme_settings_table_is_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let a = readme
            .find(TABLE_BEGIN)
            .expect("README has the settings table's markers")
            + TABLE_BEGIN.len();
        let b = readme[a..].find(TABLE_END).expect("the table's end marker") + a;
        let table = readme_table();
        if readme[a..b] == table {
            return;
        }
        if std::env::var_os("CRYPTOLAKE_BLESS").is_some() {
            std::fs::write(path, format!("{}{table}{}", &readme[..a], &readme[b..])).unwrap();
            return;
        }
        panic!(
            "README's settings table is not what the declarations say; rewrite it with \
             `CRYPTOLAKE_BLESS=1 cargo nextest run -p cryptolake-pipeline readme_settings_table`"
        );
    }

    #[test]
    fn every_declaration_is_in_the_file_init_writes_and_in_the_table() {
        let file = default_toml();
        let table = readme_table();
        for d in declared::SETTINGS {
            let (section, name) = d.key().rsplit_once('.').unwrap_or(("", d.key()));
            assert!(table.contains(&format!("| `{}` |", d.key())), "{}", d.key());
            match d.source() {
                Source::EnvOnly => {
                    assert!(table.contains(&env_name(d.key())), "{}", d.key());
                    continue;
                }
                Source::FileAndEnv => assert!(file.contains(&env_name(d.key())), "{}", d.key()),
                Source::FileOnly => {}
            }
            let header = format!("[{section}]");
            let shown = [
                format!("\n{name} = "),
                format!("\n# {name} = "),
                format!("# [[{}]]", d.key()),
            ];
            let at = if section.is_empty() {
                0
            } else {
                file.find(&header).unwrap_or_else(|| panic!("{header}"))
            };
            assert!(
                shown.iter().any(|s| file[at..].contains(s.as_str())),
                "{} is not in the file",
                d.key()
            );
        }
        for d in declared::EXCHANGE_SETTINGS {
            for m in declared::MARKETS {
                let section = format!("[exchanges.{}]", m.exchange);
                let at = file.find(&section).unwrap_or_else(|| panic!("{section}"));
                assert!(
                    file[at..].contains(&format!("\n{} = ", d.key())),
                    "{section} {}",
                    d.key()
                );
            }
            assert!(table.contains(&format!("`exchanges.<E>.{}`", d.key())));
        }
        // Every exchange has its market entry.
        for ex in Exchange::ALL {
            assert!(declared::MARKETS.iter().any(|m| m.exchange == ex), "{ex}");
        }
    }

    #[test]
    fn every_declared_variable_sets_its_setting() {
        // Each setting's default, given as its variable, loads to the defaults; a value the
        // kind refuses names the variable.
        for d in declared::SETTINGS {
            let var = env_name(d.key());
            if let declared::Default::Is(text) = d.default() {
                let value = match toml_value(text) {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                assert_eq!(
                    load("", &[(&var, &value)]).unwrap(),
                    Settings::default(),
                    "{var}"
                );
            }
            if d.source() != Source::FileOnly {
                let e = err("", &[(&var, "\u{1}not a value of any kind")]);
                assert!(e.contains(&var), "{var}: {e}");
            }
        }
        let s = load(
            "",
            &[
                ("CRYPTOLAKE_QUALITY_OHLC", "fail"),
                ("CRYPTOLAKE_QUALITY_PRICE_JUMP_MAX_CHANGE", "0.5"),
            ],
        )
        .unwrap();
        assert_eq!(s.quality.ohlc, cryptolake_lake::quality::Action::Fail);
        assert_eq!(s.quality.max_price_change, 0.5);
    }

    #[test]
    fn file_errors_name_the_line_and_secrets_stay_out_of_the_file() {
        let e = err(
            "# a comment\n\n[ingest]\nconcurrency = 4\nlookback = \"soon\"\n",
            &[],
        );
        assert!(
            e.contains("ingest.lookback") && e.contains("test.toml line 5"),
            "{e}"
        );
        let e = err("[server]\ntoken = \"0123456789abcdef0\"\n", &[]);
        assert!(
            e.contains("server.token") && e.contains("CRYPTOLAKE_SERVER_TOKEN"),
            "{e}"
        );
        assert!(!e.contains("0123456789abcdef0"), "{e}");
        let e = err("[exchanges.kraken]\nweight_limit = \"many\"\n", &[]);
        assert!(
            e.contains("exchanges.kraken.weight_limit") && e.contains("line 2"),
            "{e}"
        );
        let e = err("ingest = 5\n", &[]);
        assert!(e.contains("ingest") && e.contains("table"), "{e}");
        // The lake is parsed once, into a location.
        let s = load("lake = \"s3://my-bucket/data/lake/\"\n", &[]).unwrap();
        assert_eq!(
            s.lake,
            LakeLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "data/lake".into()
            }
        );
        assert_eq!(s.lake.to_string(), "s3://my-bucket/data/lake");
        for bad in [
            "ftp://x",
            "s3://Bad_Bucket/x",
            "s3://b/../x",
            "s3://KEY:SECRET@b/x",
            "",
        ] {
            let e = err(&format!("lake = {bad:?}\n"), &[]);
            assert!(e.contains("config key lake"), "{bad}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn cron_schedules_are_checked_once() {
        let c: CronSchedule = " 5 * * * * ".parse().unwrap();
        assert_eq!(c.as_str(), "5 * * * *");
        assert!(
            "every hour"
                .parse::<CronSchedule>()
                .unwrap_err()
                .contains("every hour")
        );
        assert!("61 * * * *".parse::<CronSchedule>().is_err());
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
