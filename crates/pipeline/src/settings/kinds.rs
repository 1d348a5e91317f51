//! What a setting holds. Each kind reads a value from the file or from an environment variable,
//! checks it, and says in words what it accepts (for the README's table).

use std::path::PathBuf;
use std::time::Duration;

use cryptolake_lake::quality::Action;
use cryptolake_lake::{LakeLocation, SimulatedLatency};
use cryptolake_model::Symbol;

use super::{
    CronSchedule, MAX_DURATION, PG_HASH_PREFIX, PgPassword, PgUser, Secret, format_size,
    parse_duration, parse_size, split_list,
};

/// A value as written: in the file, or as an environment variable's text.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    File(&'a toml::Value),
    Env(&'a str),
}

/// Why a value was refused. `at` extends the key (`[0].name` of `server.pg_users`).
#[derive(Debug)]
pub struct Problem {
    pub at: String,
    pub reason: String,
}

impl From<String> for Problem {
    fn from(reason: String) -> Problem {
        Problem {
            at: String::new(),
            reason,
        }
    }
}

impl From<&str> for Problem {
    fn from(reason: &str) -> Problem {
        reason.to_string().into()
    }
}

type Parsed<T> = std::result::Result<T, Problem>;

/// A kind of value: how it is read and checked.
pub trait Kind: Sync {
    type Out;
    /// Reads `input`; `env` is the whole environment, for a setting that names a variable.
    fn parse(&self, input: Input<'_>, env: &[(String, String)]) -> Parsed<Self::Out>;
    /// What it accepts, in words.
    fn accepts(&self) -> String;
}

fn text<'a>(input: Input<'a>, like: &str) -> Parsed<&'a str> {
    match input {
        Input::Env(v) => Ok(v),
        Input::File(toml::Value::String(s)) => Ok(s),
        Input::File(other) => Err(format!(
            "{} is not a string: expected {like} (in quotes)",
            other.type_str()
        )
        .into()),
    }
}

fn whole(input: Input<'_>) -> Parsed<i64> {
    match input {
        Input::Env(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a whole number").into()),
        Input::File(toml::Value::Integer(n)) => Ok(*n),
        Input::File(other) => Err(format!("{} is not a whole number", other.type_str()).into()),
    }
}

fn strings(input: Input<'_>, like: &str) -> Parsed<Vec<String>> {
    match input {
        Input::Env(v) => Ok(split_list(v)),
        Input::File(toml::Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s.clone()),
                other => {
                    Err(format!("{} in the list is not a string ({like})", other.type_str()).into())
                }
            })
            .collect(),
        Input::File(other) => {
            Err(format!("{} is not a list: expected [{like}, ...]", other.type_str()).into())
        }
    }
}

/// Control characters have no place in a name or a path.
fn printable(t: &str) -> Parsed<()> {
    match t.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("holds the control character {c:?}").into()),
        None => Ok(()),
    }
}

/// Free text (a region, a user name).
pub struct Text;

impl Kind for Text {
    type Out = String;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<String> {
        let t = text(input, "text")?.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        printable(t)?;
        Ok(t.to_string())
    }
    fn accepts(&self) -> String {
        "text".into()
    }
}

/// Where the lake lives.
pub struct Location;

impl Kind for Location {
    type Out = LakeLocation;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<LakeLocation> {
        let t = text(input, "file://PATH or s3://bucket/prefix")?;
        printable(t)?;
        t.parse()
            .map_err(|e: cryptolake_lake::Error| e.to_string().into())
    }
    fn accepts(&self) -> String {
        "`file://PATH`, a directory path, or `s3://bucket/prefix`".into()
    }
}

/// An HTTP(S) endpoint of an S3-compatible store.
pub struct Endpoint;

impl Kind for Endpoint {
    type Out = String;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<String> {
        let t = text(input, "http://host:port")?.trim();
        if t.starts_with("http://") || t.starts_with("https://") {
            Ok(t.to_string())
        } else {
            Err(format!("{t:?} must start with http:// or https://").into())
        }
    }
    fn accepts(&self) -> String {
        "an `http://` or `https://` URL".into()
    }
}

/// An exchange's REST API root.
pub struct BaseUrl;

impl Kind for BaseUrl {
    type Out = String;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<String> {
        let t = text(input, "https://api.example.com")?;
        cryptolake_sources::http::check_base_url(t).map_err(|e| e.to_string())?;
        Ok(t.trim().trim_end_matches('/').to_string())
    }
    fn accepts(&self) -> String {
        "an `http://` or `https://` URL".into()
    }
}

/// A duration within `[min, max]`.
pub struct Dur {
    pub min: Duration,
    pub max: Duration,
}

impl Dur {
    pub const fn at_least(min: Duration) -> Dur {
        Dur {
            min,
            max: MAX_DURATION,
        }
    }
}

impl Kind for Dur {
    type Out = Duration;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<Duration> {
        let d = parse_duration(text(input, "\"30s\"")?)?;
        if d < self.min {
            return Err(
                format!("must be at least {}", humantime::format_duration(self.min)).into(),
            );
        }
        if d > self.max {
            return Err(format!("must be at most {}", duration_text(self.max)).into());
        }
        Ok(d)
    }
    fn accepts(&self) -> String {
        format!(
            "a duration (`30s`, `90m`, `24h`, `7d`), {} to {}",
            duration_text(self.min),
            duration_text(self.max)
        )
    }
}

/// A duration as a setting is written: whole days as days (`3650d`), else `1h 30m`.
pub fn duration_text(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 86_400 && s.is_multiple_of(86_400) && d.subsec_nanos() == 0 => {
            format!("{}d", s / 86_400)
        }
        _ => humantime::format_duration(d).to_string(),
    }
}

/// A whole number within `[min, max]`.
pub struct Count {
    pub min: i64,
    pub max: i64,
}

impl Kind for Count {
    type Out = i64;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<i64> {
        let n = whole(input)?;
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is outside {}..={}", self.min, self.max).into())
        }
    }
    fn accepts(&self) -> String {
        format!("a whole number, {} to {}", self.min, self.max)
    }
}

/// A size in bytes within `[min, max]`.
pub struct Size {
    pub min: u64,
    pub max: u64,
}

impl Kind for Size {
    type Out = u64;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<u64> {
        Ok(parse_size(text(input, "\"512MiB\"")?, self.min, self.max)?)
    }
    fn accepts(&self) -> String {
        format!(
            "a size (`512MiB`, `2GiB`, `16MB`), {} to {}",
            format_size(self.min),
            format_size(self.max)
        )
    }
}

/// A socket address.
pub struct Address {
    pub example: &'static str,
}

impl Kind for Address {
    type Out = std::net::SocketAddr;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<std::net::SocketAddr> {
        let t = text(input, self.example)?;
        t.trim()
            .parse()
            .map_err(|_| format!("{t:?} is not an address like {}", self.example).into())
    }
    fn accepts(&self) -> String {
        format!("an address like `{}`", self.example)
    }
}

/// true or false.
pub struct Switch;

impl Kind for Switch {
    type Out = bool;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<bool> {
        match input {
            Input::File(toml::Value::Boolean(b)) => Ok(*b),
            Input::File(other) => Err(format!("{} is not true or false", other.type_str()).into()),
            Input::Env(v) => match v.trim() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                other => Err(format!("{other:?}: expected true or false").into()),
            },
        }
    }
    fn accepts(&self) -> String {
        "`true` or `false`".into()
    }
}

/// Host names (no port, no scheme), lower-cased.
pub struct HostNames;

impl Kind for HostNames {
    type Out = Vec<String>;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<Vec<String>> {
        strings(input, "\"lake.example.internal\"")?
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
                    false => Err(format!(
                        "{h:?} is not a host name like lake.example.internal (no port, no scheme)"
                    )
                    .into()),
                }
            })
            .collect()
    }
    fn accepts(&self) -> String {
        "host names (comma separated in the environment)".into()
    }
}

/// Canonical `BASE-QUOTE` symbols.
pub struct Symbols;

impl Kind for Symbols {
    type Out = Vec<Symbol>;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<Vec<Symbol>> {
        strings(input, "\"BTC-USDT\"")?
            .iter()
            .map(|t| Symbol::parse(t).map_err(|e| e.to_string().into()))
            .collect()
    }
    fn accepts(&self) -> String {
        "`BASE-QUOTE` symbols (comma separated in the environment)".into()
    }
}

/// A quality rule's action, among those the rule allows.
pub struct Act {
    pub allowed: &'static [Action],
}

/// Record rules keep no bad candle; table rules only report.
pub const RECORD_ACTIONS: &[Action] = &[Action::Drop, Action::Quarantine, Action::Fail];
pub const TABLE_ACTIONS: &[Action] = &[Action::Warn, Action::Fail];

impl Kind for Act {
    type Out = Action;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<Action> {
        let t = text(input, "\"warn\"")?.trim();
        let all = [Action::Warn, Action::Drop, Action::Quarantine, Action::Fail];
        match all.into_iter().find(|a| a.as_str() == t) {
            Some(a) if self.allowed.contains(&a) => Ok(a),
            Some(_) => Err(format!("{t:?} is not allowed here; use {}", self.choices()).into()),
            None => Err(format!("{t:?} is not an action; use {}", self.choices()).into()),
        }
    }
    fn accepts(&self) -> String {
        self.choices()
    }
}

impl Act {
    fn choices(&self) -> String {
        let names: Vec<&str> = self.allowed.iter().map(|a| a.as_str()).collect();
        names.join(", ")
    }
}

/// A positive fraction, at most `max`.
pub struct Ratio {
    pub max: f64,
}

impl Kind for Ratio {
    type Out = f64;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<f64> {
        let x = match input {
            Input::File(toml::Value::Float(x)) => *x,
            Input::File(toml::Value::Integer(n)) => *n as f64,
            Input::File(other) => {
                return Err(format!("{} is not a number", other.type_str()).into());
            }
            Input::Env(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{v:?} is not a number"))?,
        };
        if x.is_finite() && x > 0.0 && x <= self.max {
            Ok(x)
        } else {
            Err(format!("{x} is outside (0, {}]", self.max).into())
        }
    }
    fn accepts(&self) -> String {
        format!("a number above 0, at most {}", self.max)
    }
}

/// A cron expression, UTC.
pub struct Cron;

impl Kind for Cron {
    type Out = CronSchedule;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<CronSchedule> {
        Ok(text(input, "\"5 * * * *\"")?.parse::<CronSchedule>()?)
    }
    fn accepts(&self) -> String {
        "a cron expression (minute hour day-of-month month day-of-week), UTC".into()
    }
}

/// Waits per request class.
pub struct Latency;

impl Kind for Latency {
    type Out = SimulatedLatency;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<SimulatedLatency> {
        Ok(text(input, "\"get=20ms,put=30ms\"")?.parse::<SimulatedLatency>()?)
    }
    fn accepts(&self) -> String {
        "`class=duration` pairs, classes get, put, list, delete".into()
    }
}

/// A file path.
pub struct FilePath;

impl Kind for FilePath {
    type Out = PathBuf;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<PathBuf> {
        let t = text(input, "\"/etc/cryptolake/server.pem\"")?.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        printable(t)?;
        Ok(PathBuf::from(t))
    }
    fn accepts(&self) -> String {
        "a file path".into()
    }
}

/// A secret of at least `min_len` characters, from the environment only.
pub struct SecretText {
    pub min_len: usize,
}

impl Kind for SecretText {
    type Out = Secret;
    fn parse(&self, input: Input<'_>, _: &[(String, String)]) -> Parsed<Secret> {
        let t = text(input, "a secret")?.trim();
        printable(t)?;
        if t.chars().count() < self.min_len.max(1) {
            return Err(format!("must be at least {} characters", self.min_len.max(1)).into());
        }
        Ok(Secret(t.to_string()))
    }
    fn accepts(&self) -> String {
        match self.min_len {
            0 | 1 => "a secret".into(),
            n => format!("a secret of at least {n} characters"),
        }
    }
}

/// `[[server.pg_users]]`: a name and a password hash or the variable holding the password.
pub struct PgUsers;

impl Kind for PgUsers {
    type Out = Vec<PgUser>;
    fn parse(&self, input: Input<'_>, env: &[(String, String)]) -> Parsed<Vec<PgUser>> {
        let Input::File(toml::Value::Array(items)) = input else {
            return Err("expected [[server.pg_users]] tables".into());
        };
        let mut users: Vec<PgUser> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = |k: &str| format!("[{i}]{k}");
            let bad = |k: &str, reason: String| Problem { at: at(k), reason };
            let Some(table) = item.as_table() else {
                return Err(bad("", "is not a table with name and password_hash".into()));
            };
            if let Some(k) = table
                .keys()
                .find(|k| !["name", "password_hash", "password_env"].contains(&k.as_str()))
            {
                return Err(bad(
                    &format!(".{k}"),
                    "unknown key: a user has name and one of password_hash (from `cryptolake pg-password`) and password_env; a password itself never goes in the file".into(),
                ));
            }
            let field = |k: &str| table.get(k).map(|v| text(Input::File(v), "text"));
            let name = match field("name") {
                Some(Ok(n)) => n.trim().to_string(),
                Some(Err(p)) => return Err(bad(".name", p.reason)),
                None => return Err(bad(".name", "is missing".into())),
            };
            if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
                return Err(bad(".name", "must be 1 to 63 printable characters".into()));
            }
            let password = match (field("password_hash"), field("password_env")) {
                (Some(h), None) => {
                    let h = h.map_err(|p| bad(".password_hash", p.reason))?;
                    PgPassword::parse_hash(h).map_err(|e| bad(".password_hash", e))?
                }
                (None, Some(var)) => {
                    let var = var.map_err(|p| bad(".password_env", p.reason))?;
                    if var.starts_with("CRYPTOLAKE_") {
                        return Err(bad(
                            ".password_env",
                            format!(
                                "{var:?}: name a variable outside CRYPTOLAKE_*, which holds settings only"
                            ),
                        ));
                    }
                    match env.iter().find(|(k, _)| k == var) {
                        Some((_, v)) if !v.is_empty() => PgPassword::Plain(Secret(v.clone())),
                        _ => {
                            return Err(bad(
                                ".password_env",
                                format!("environment variable {var} is not set"),
                            ));
                        }
                    }
                }
                _ => {
                    return Err(bad(
                        "",
                        "needs exactly one of password_hash (from `cryptolake pg-password`) and password_env; a password itself never goes in the file".into(),
                    ));
                }
            };
            if users.iter().any(|x| x.name == name) {
                return Err(bad(".name", format!("user {name:?} appears twice")));
            }
            users.push(PgUser { name, password });
        }
        Ok(users)
    }
    fn accepts(&self) -> String {
        format!(
            "tables of `name` and `password_hash` (`{PG_HASH_PREFIX}…`, from `cryptolake pg-password`) or `password_env`"
        )
    }
}
