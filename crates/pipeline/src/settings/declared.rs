//! Every setting, declared once: its key, kind (type and checks), default, documentation and
//! flag. Its environment variable follows from its key (`ingest.lookback` is
//! `CRYPTOLAKE_INGEST_LOOKBACK`; an exchange's `base_url` is `CRYPTOLAKE_<EXCHANGE>_BASE_URL`).
//! The loader, the file `cryptolake init` writes and the README's table all come from here.

use std::time::Duration;

use cryptolake_model::Exchange;

use super::kinds::*;
use super::{Draft, ExchangeSettings, PgTls, format_size};

/// Where a setting may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    FileAndEnv,
    /// Secrets: only from the environment, never from the file.
    EnvOnly,
    /// Structured values that only the file can hold.
    FileOnly,
}

/// A setting's default.
pub enum Default<T: 'static> {
    /// The value, as TOML text (`"24h"`, `4`, `["a"]`).
    Is(&'static str),
    /// No value. `meaning` says what that means; `example` is written commented out.
    Unset {
        meaning: &'static str,
        example: Option<&'static str>,
    },
    /// The value of each exchange, as TOML text.
    Shown(fn(&T) -> String),
}

/// One setting.
pub struct Decl<K: Kind + 'static, T: 'static> {
    /// The dotted key (`ingest.lookback`); for an exchange's settings, the name in its table.
    pub key: &'static str,
    pub doc: &'static str,
    pub default: Default<T>,
    /// The command-line flag that overrides it, as `--help` names it.
    pub flag: Option<&'static str>,
    pub source: Source,
    pub kind: K,
    pub set: fn(&mut T, K::Out),
}

/// A declared setting of any kind, applied to `T`.
pub trait Declared<T: 'static>: Sync {
    fn key(&self) -> &'static str;
    fn doc(&self) -> &'static str;
    fn default(&self) -> &Default<T>;
    fn flag(&self) -> Option<&'static str>;
    fn source(&self) -> Source;
    fn accepts(&self) -> String;
    /// Reads, checks and sets the value.
    fn apply(
        &self,
        target: &mut T,
        input: Input<'_>,
        env: &[(String, String)],
    ) -> Result<(), Problem>;
}

impl<K: Kind + 'static, T: 'static> Declared<T> for Decl<K, T> {
    fn key(&self) -> &'static str {
        self.key
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
    fn default(&self) -> &Default<T> {
        &self.default
    }
    fn flag(&self) -> Option<&'static str> {
        self.flag
    }
    fn source(&self) -> Source {
        self.source
    }
    fn accepts(&self) -> String {
        self.kind.accepts()
    }
    fn apply(
        &self,
        target: &mut T,
        input: Input<'_>,
        env: &[(String, String)],
    ) -> Result<(), Problem> {
        (self.set)(target, self.kind.parse(input, env)?);
        Ok(())
    }
}

/// A section of the file, with what is said at its head.
pub struct Section {
    pub name: &'static str,
    pub doc: &'static str,
}

pub const SECTIONS: &[Section] = &[
    Section { name: "", doc: "" },
    Section {
        name: "s3",
        doc: "",
    },
    Section {
        name: "ingest",
        doc: "",
    },
    Section {
        name: "schedule",
        doc: "",
    },
    Section {
        name: "silver",
        doc: "",
    },
    Section {
        name: "query",
        doc: "Limits of every SQL statement (cryptolake sql, the shell, and every front end that runs SQL).",
    },
    Section {
        name: "server",
        doc: "",
    },
    Section {
        name: "quality",
        doc: "Data-quality rules. Actions: warn (report, keep the data), drop (leave the record out, count\n\
              it), quarantine (leave it out, keep it under quarantine/ with its reason), fail (the step\n\
              fails, exit status 1, naming the rows). Results of every run are in crypto_ops.quality_results;\n\
              `cryptolake check` evaluates the table rules on demand.",
    },
    Section {
        name: "quality.completeness",
        doc: "Hours with fewer minutes, and closed days with fewer hours, are reported.",
    },
    Section {
        name: "quality.freshness",
        doc: "The newest closed hour of each symbol must have ended at most this long ago.",
    },
    Section {
        name: "quality.price_jump",
        doc: "An hour's close far from the previous hour's close.",
    },
    Section {
        name: "quality.funding_completeness",
        doc: "Perpetual markets: a closed day of crypto_gold.funding_1d that is not complete (a slot of the\n\
              symbol's interval is missing; crypto_ops.funding_gaps names it).",
    },
    Section {
        name: "quality.funding_freshness",
        doc: "Perpetual markets: a symbol's newest funding slot may be at most its own interval (taken from the\n\
              data, 8 hours while unknown) and this many minutes old.",
    },
    Section {
        name: "quality.funding_rate",
        doc: "Perpetual markets: a funding rate outside plus or minus this bound.",
    },
    Section {
        name: "quality.mark_completeness",
        doc: "Perpetual markets: a closed hour of mark prices with fewer minutes (present or confirmed empty)\n\
              than quality.completeness.min_minutes_per_hour.",
    },
    Section {
        name: "quality.mark_freshness",
        doc: "Perpetual markets: a symbol's newest mark price minute ended longer ago than\n\
              quality.freshness.max_age_minutes.",
    },
];

const MINUTE: Duration = Duration::from_secs(60);
const MS: Duration = Duration::from_millis(1);

type D = Draft;

/// Every setting outside the exchanges' tables, in the order the file lists them.
pub static SETTINGS: &[&dyn Declared<Draft>] = &[
    &Decl::<Location, D> {
        key: "lake",
        doc: "Where the lake lives: file://PATH (a relative PATH is relative to the working directory),\n\
              a plain directory path, or s3://bucket/prefix.",
        default: Default::Is(r#""file://./lake""#),
        flag: Some("--lake"),
        source: Source::FileAndEnv,
        kind: Location,
        set: |d, v| d.s.lake = v,
    },
    &Decl::<Endpoint, D> {
        key: "s3.endpoint",
        doc: "For s3:// lakes only. An S3-compatible endpoint (MinIO, SeaweedFS, ...) instead of AWS;\n\
              leave unset for AWS (the standard AWS_ENDPOINT_URL is read too).",
        default: Default::Unset {
            meaning: "AWS",
            example: Some(r#""http://127.0.0.1:8333""#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: Endpoint,
        set: |d, v| d.s.s3.endpoint = Some(v),
    },
    &Decl::<Text, D> {
        key: "s3.region",
        doc: "The region of an s3:// lake.",
        default: Default::Unset {
            meaning: "AWS_REGION / AWS_DEFAULT_REGION, else us-east-1",
            example: Some(r#""eu-west-1""#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: Text,
        set: |d, v| d.s.s3.region = Some(v),
    },
    &Decl::<Latency, D> {
        key: "s3.simulated_latency",
        doc: "For benchmarks: a wait before every request of the lake, local or S3, per request class\n\
              (get, put, list, delete), to see how a build behaves at a distant store's latency.",
        default: Default::Unset {
            meaning: "none",
            example: Some(r#""get=20ms,list=20ms,put=30ms""#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: Latency,
        set: |d, v| d.s.s3.simulated_latency = Some(v),
    },
    &Decl::<Dur, D> {
        key: "ingest.lookback",
        doc: "How far back the first ingest of a symbol reaches when no --since is given. Later ingests\n\
              continue from where the previous one stopped.",
        default: Default::Is(r#""24h""#),
        flag: Some("ingest --lookback"),
        source: Source::FileAndEnv,
        kind: Dur::at_least(MINUTE),
        set: |d, v| d.s.ingest.lookback = super::chrono_duration(v),
    },
    &Decl::<Count, D> {
        key: "ingest.concurrency",
        doc: "How many symbols are fetched at the same time (each exchange's request budget still\n\
              applies across all of them).",
        default: Default::Is("4"),
        flag: Some("ingest/backfill --concurrency"),
        source: Source::FileAndEnv,
        kind: Count { min: 1, max: 1024 },
        set: |d, v| d.s.ingest.concurrency = v as usize,
    },
    &Decl::<Dur, D> {
        key: "ingest.request_timeout",
        doc: "How long one request may take before it is abandoned and retried.",
        default: Default::Is(r#""30s""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Dur {
            min: MS,
            max: Duration::from_secs(3600),
        },
        set: |d, v| d.s.ingest.request_timeout = v,
    },
    &Decl::<Count, D> {
        key: "ingest.max_refetch_windows",
        doc: "Gap refetches per symbol and run: missing or unconfirmed minutes found in silver are fetched\n\
              again by the next run or backfill, at most this many request windows per symbol each time.",
        default: Default::Is("24"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 1,
            max: 100_000,
        },
        set: |d, v| d.s.ingest.max_refetch_windows = v as usize,
    },
    &Decl::<Cron, D> {
        key: "schedule.cron",
        doc: "When `cryptolake schedule` and `serve` run the hourly job (ingest, silver, gold): a cron\n\
              expression (minute hour day-of-month month day-of-week), always in UTC. Default: 5 minutes\n\
              past every hour, so the hour just closed is complete at the exchange.",
        default: Default::Is(r#""5 * * * *""#),
        flag: Some("schedule/serve --cron"),
        source: Source::FileAndEnv,
        kind: Cron,
        set: |d, v| d.s.schedule.cron = v,
    },
    &Decl::<Dur, D> {
        key: "silver.manifest_overlap",
        doc: "How far back each silver build re-reads the bronze manifest from the start of the build\n\
              before it: a writer announces an object, then writes it, and one that started before that\n\
              build may finish after it. Raise it if a writer can take longer between the two.",
        default: Default::Is(r#""10m""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Dur::at_least(Duration::ZERO),
        set: |d, v| d.s.silver.manifest_overlap = super::chrono_duration(v),
    },
    &Decl::<Count, D> {
        key: "silver.read_concurrency",
        doc: "Bronze objects each date's build reads at once. On S3 each read waits on the network, so\n\
              many in flight hide the latency (64 by default there, and on a local lake with\n\
              s3.simulated_latency); on local disk more than a few only costs memory (8 by default).",
        default: Default::Unset {
            meaning: "64 on S3, 8 on local disk",
            example: Some("64"),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: Count { min: 1, max: 1024 },
        set: |d, v| d.s.silver.read_concurrency = Some(v as usize),
    },
    &Decl::<Count, D> {
        key: "silver.batch_days",
        doc: "At most how many dates a first build or a rebuild lists and builds at a time (fewer where\n\
              dates hold many objects, about 8,192 objects a batch): its memory holds three batches'\n\
              bronze keys (one listed ahead, one built, one in the gap report), whatever the size of\n\
              bronze.",
        default: Default::Is("32"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count { min: 1, max: 366 },
        set: |d, v| d.s.silver.batch_days = v as usize,
    },
    &Decl::<Size, D> {
        key: "query.memory_limit",
        doc: "Memory a statement's operators and its result may hold: sorts, aggregates and joins spill\n\
              to disk past it, and what cannot spill fails with an error. `repeat`, `lpad`, `rpad`,\n\
              `array_repeat`, `range` and `generate_series` may produce at most an eighth of it per batch.",
        default: Default::Is(r#""2GiB""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Size {
            min: 16 << 20,
            max: 1 << 40,
        },
        set: |d, v| d.s.query.memory_bytes = v as usize,
    },
    &Decl::<Size, D> {
        key: "query.spill_limit",
        doc: "Disk the spill files of one statement may take.",
        default: Default::Is(r#""10GiB""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Size {
            min: 0,
            max: 16 << 40,
        },
        set: |d, v| d.s.query.spill_bytes = v,
    },
    &Decl::<Dur, D> {
        key: "query.timeout",
        doc: "How long one statement may run.",
        default: Default::Is(r#""5m""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Dur::at_least(Duration::from_millis(100)),
        set: |d, v| d.s.query.timeout = v,
    },
    &Decl::<Address, D> {
        key: "server.http",
        doc: "Where `cryptolake serve` listens (dashboard, HTTP API, /metrics). Loopback by default; any\n\
              other address needs an access token in CRYPTOLAKE_SERVER_TOKEN (never in this file), which\n\
              every request then carries as `Authorization: Bearer TOKEN`.",
        default: Default::Is(r#""127.0.0.1:8080""#),
        flag: Some("serve --http"),
        source: Source::FileAndEnv,
        kind: Address {
            example: "127.0.0.1:8080",
        },
        set: |d, v| d.s.server.http = v,
    },
    &Decl::<SecretText, D> {
        key: "server.token",
        doc: "The bearer token every HTTP request must carry; needed to listen beyond loopback.",
        default: Default::Unset {
            meaning: "none (loopback only)",
            example: None,
        },
        flag: None,
        source: Source::EnvOnly,
        kind: SecretText { min_len: 16 },
        set: |d, v| d.s.server.token = Some(v),
    },
    &Decl::<Count, D> {
        key: "server.max_rows",
        doc: "The most rows one SQL request to the server returns.",
        default: Default::Is("100000"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 1,
            max: 10_000_000,
        },
        set: |d, v| d.s.server.max_rows = v as usize,
    },
    &Decl::<Size, D> {
        key: "server.read_cache",
        doc: "Memory for decoded partitions that the dashboard, the API, /metrics and the reports are\n\
              answered from, and (an eighth of it) for encoded candles answers; the least recently\n\
              used are dropped past it.",
        default: Default::Is(r#""512MiB""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Size {
            min: 1 << 20,
            max: 1 << 40,
        },
        set: |d, v| d.s.server.read_cache = v,
    },
    &Decl::<HostNames, D> {
        key: "server.allowed_hosts",
        doc: "Host names the server answers to besides its own address, localhost and IP addresses: a\n\
              request naming any other `Host` is refused (421), which keeps a web page that rebinds its\n\
              name to this machine from reading it.",
        default: Default::Unset {
            meaning: "none",
            example: Some(r#"["lake.example.internal"]"#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: HostNames,
        set: |d, v| d.s.server.allowed_hosts = v,
    },
    &Decl::<Address, D> {
        key: "server.pg",
        doc: "The PostgreSQL wire protocol, for BI tools and database drivers (docs/bi.md); off unless\n\
              set. Loopback needs no user; any other address needs at least one user.",
        default: Default::Unset {
            meaning: "off",
            example: Some(r#""127.0.0.1:5432""#),
        },
        flag: Some("serve --pg"),
        source: Source::FileAndEnv,
        kind: Address {
            example: "127.0.0.1:5432",
        },
        set: |d, v| d.s.server.pg = Some(v),
    },
    &Decl::<Count, D> {
        key: "server.pg_max_connections",
        doc: "Clients signed in at once (up to 64 more may be signing in, 5 s each); one more is told\n\
              \"too many clients\" (SQLSTATE 53300).",
        default: Default::Is("32"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 1,
            max: 10_000,
        },
        set: |d, v| d.s.server.pg_max_connections = v as usize,
    },
    &Decl::<FilePath, D> {
        key: "server.pg_tls_cert",
        doc: "TLS for the wire protocol: the certificate (PEM). Both files or neither; files that\n\
              cannot be used stop the server, which never falls back to plain text.",
        default: Default::Unset {
            meaning: "no TLS",
            example: Some(r#""/etc/cryptolake/server.crt""#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: FilePath,
        set: |d, v| d.s.server.pg_tls.get_or_insert_with(PgTls::unset).cert = v,
    },
    &Decl::<FilePath, D> {
        key: "server.pg_tls_key",
        doc: "TLS for the wire protocol: the private key (PEM).",
        default: Default::Unset {
            meaning: "no TLS",
            example: Some(r#""/etc/cryptolake/server.key""#),
        },
        flag: None,
        source: Source::FileAndEnv,
        kind: FilePath,
        set: |d, v| d.s.server.pg_tls.get_or_insert_with(PgTls::unset).key = v,
    },
    &Decl::<PgUsers, D> {
        key: "server.pg_users",
        doc: "Users of the wire protocol, who sign in with SCRAM-SHA-256. A password is never written\n\
              here: give its hash, from `cryptolake pg-password` (which reads the password on stdin), or\n\
              the name of an environment variable holding it.",
        default: Default::Unset {
            meaning: "none",
            example: Some(
                "[[server.pg_users]]\nname = \"grafana\"\npassword_hash = \"cryptolake-scram-sha-256$4096:…$…\"\n\
                 [[server.pg_users]]\nname = \"metabase\"\npassword_env = \"METABASE_PG_PASSWORD\"",
            ),
        },
        flag: None,
        source: Source::FileOnly,
        kind: PgUsers,
        set: |d, v| d.s.server.pg_users = v,
    },
    &Decl::<Text, D> {
        key: "server.pg_user",
        doc: "One more wire-protocol user, from the environment; with server.pg_password.",
        default: Default::Unset {
            meaning: "none",
            example: None,
        },
        flag: None,
        source: Source::EnvOnly,
        kind: Text,
        set: |d, v| d.pg_env_user = Some(v),
    },
    &Decl::<SecretText, D> {
        key: "server.pg_password",
        doc: "The password of server.pg_user.",
        default: Default::Unset {
            meaning: "none",
            example: None,
        },
        flag: None,
        source: Source::EnvOnly,
        kind: SecretText { min_len: 1 },
        set: |d, v| d.pg_env_password = Some(v),
    },
    &Decl::<Act, D> {
        key: "quality.ohlc",
        doc: "A record rule, for every candle silver reads: high/low consistent with open and close,\n\
              prices positive and finite.",
        default: Default::Is(r#""quarantine""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: RECORD_ACTIONS,
        },
        set: |d, v| d.s.quality.ohlc = v,
    },
    &Decl::<Act, D> {
        key: "quality.amounts",
        doc: "A record rule: volume, quote volume and trade count not negative.",
        default: Default::Is(r#""quarantine""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: RECORD_ACTIONS,
        },
        set: |d, v| d.s.quality.amounts = v,
    },
    &Decl::<Act, D> {
        key: "quality.alignment",
        doc: "A record rule: open time on the minute grid.",
        default: Default::Is(r#""quarantine""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: RECORD_ACTIONS,
        },
        set: |d, v| d.s.quality.alignment = v,
    },
    &Decl::<Act, D> {
        key: "quality.duplicates",
        doc: "A table rule: the same minute fetched more than once with different values (the exchange\n\
              revised it; the latest fetch is kept). Identical refetches are expected.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.duplicates = v,
    },
    &Decl::<Act, D> {
        key: "quality.consistency",
        doc: "A table rule, for `check`: every hour of ohlcv_1h equals its minutes in ohlcv_1m aggregated, no\n\
              minute lies outside an hour or is there twice. A disagreement means a damaged lake.",
        default: Default::Is(r#""fail""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.consistency = v,
    },
    &Decl::<Count, D> {
        key: "quality.completeness.min_minutes_per_hour",
        doc: "Hours with fewer minutes than this are reported.",
        default: Default::Is("60"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count { min: 0, max: 60 },
        set: |d, v| d.s.quality.min_minutes_per_hour = v as i32,
    },
    &Decl::<Count, D> {
        key: "quality.completeness.min_hours_per_day",
        doc: "Closed days with fewer hours than this are reported.",
        default: Default::Is("24"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count { min: 0, max: 24 },
        set: |d, v| d.s.quality.min_hours_per_day = v as i32,
    },
    &Decl::<Act, D> {
        key: "quality.completeness.action",
        doc: "What an incomplete hour or day does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.completeness = v,
    },
    &Decl::<Count, D> {
        key: "quality.freshness.max_age_minutes",
        doc: "How long ago the newest closed hour of each symbol may have ended.",
        default: Default::Is("180"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 1,
            max: 10 * 365 * 24 * 60,
        },
        set: |d, v| d.s.quality.max_age_minutes = v,
    },
    &Decl::<Act, D> {
        key: "quality.freshness.action",
        doc: "What a stale symbol does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.freshness = v,
    },
    &Decl::<Ratio, D> {
        key: "quality.price_jump.max_change",
        doc: "Largest allowed change of an hour's close against the previous hour's close (0.2 = 20%).",
        default: Default::Is("0.2"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Ratio { max: 1000.0 },
        set: |d, v| d.s.quality.max_price_change = v,
    },
    &Decl::<Act, D> {
        key: "quality.price_jump.action",
        doc: "What a jump does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.price_jump = v,
    },
    &Decl::<Act, D> {
        key: "quality.funding_completeness.action",
        doc: "What an incomplete funding day does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.funding_completeness = v,
    },
    &Decl::<Count, D> {
        key: "quality.funding_freshness.max_late_minutes",
        doc: "How long after its interval has passed a symbol's newest funding slot may be.",
        default: Default::Is("120"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 0,
            max: 10 * 365 * 24 * 60,
        },
        set: |d, v| d.s.quality.funding_max_late_minutes = v,
    },
    &Decl::<Act, D> {
        key: "quality.funding_freshness.action",
        doc: "What a symbol with stale funding does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.funding_freshness = v,
    },
    &Decl::<Ratio, D> {
        key: "quality.funding_rate.max_abs",
        doc: "Largest allowed size of one funding rate (0.02 = 2% of the position per interval).",
        default: Default::Is("0.02"),
        flag: None,
        source: Source::FileAndEnv,
        kind: Ratio { max: 10.0 },
        set: |d, v| d.s.quality.max_funding_rate = v,
    },
    &Decl::<Act, D> {
        key: "quality.funding_rate.action",
        doc: "What a rate outside the bound does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.funding_rate = v,
    },
    &Decl::<Act, D> {
        key: "quality.mark_completeness.action",
        doc: "What an incomplete hour of mark prices does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.mark_completeness = v,
    },
    &Decl::<Act, D> {
        key: "quality.mark_freshness.action",
        doc: "What a symbol with stale mark prices does.",
        default: Default::Is(r#""warn""#),
        flag: None,
        source: Source::FileAndEnv,
        kind: Act {
            allowed: TABLE_ACTIONS,
        },
        set: |d, v| d.s.quality.mark_freshness = v,
    },
];

type E = ExchangeSettings;

/// What the file says of all exchanges, before their tables.
pub const EXCHANGES_DOC: &str = "Exchanges. For each: whether `run`, `schedule` and `serve` ingest from it, its REST API\n\
root, the canonical BASE-QUOTE symbols, its request budget (weight per interval; the defaults are\n\
the exchange's published limits, lower them when other tools share your address), and the\n\
largest response body read.";

/// The settings every exchange has, in the order its table lists them.
pub static EXCHANGE_SETTINGS: &[&dyn Declared<ExchangeSettings>] = &[
    &Decl::<Switch, E> {
        key: "enabled",
        doc: "Whether the hourly job ingests from it.",
        default: Default::Shown(|e| e.enabled.to_string()),
        flag: None,
        source: Source::FileAndEnv,
        kind: Switch,
        set: |e, v| e.enabled = v,
    },
    &Decl::<Switch, E> {
        key: "funding",
        doc: "Whether the hourly job fetches its funding rates (perpetual markets only: binance-futures, okx-swap, bybit-linear; spot markets have none).",
        default: Default::Shown(|e| e.funding.to_string()),
        flag: Some("ingest --data"),
        source: Source::FileAndEnv,
        kind: Switch,
        set: |e, v| e.funding = v,
    },
    &Decl::<Switch, E> {
        key: "mark_prices",
        doc: "Whether the hourly job fetches its 1-minute mark price candles (perpetual markets only).",
        default: Default::Shown(|e| e.mark_prices.to_string()),
        flag: Some("ingest --data"),
        source: Source::FileAndEnv,
        kind: Switch,
        set: |e, v| e.mark_prices = v,
    },
    &Decl::<BaseUrl, E> {
        key: "base_url",
        doc: "Its REST API root.",
        default: Default::Shown(|e| format!("{:?}", e.base_url)),
        flag: Some("ingest/backfill --base-url"),
        source: Source::FileAndEnv,
        kind: BaseUrl,
        set: |e, v| e.base_url = v,
    },
    &Decl::<Symbols, E> {
        key: "symbols",
        doc: "The symbols the hourly job ingests.",
        default: Default::Shown(|e| {
            let names: Vec<String> = e
                .symbols
                .iter()
                .map(|s| format!("{:?}", s.as_str()))
                .collect();
            format!("[{}]", names.join(", "))
        }),
        flag: Some("ingest/backfill --symbols"),
        source: Source::FileAndEnv,
        kind: Symbols,
        set: |e, v| e.symbols = v,
    },
    &Decl::<Count, E> {
        key: "weight_limit",
        doc: "Request weight allowed per weight_interval.",
        default: Default::Shown(|e| e.budget.weight.to_string()),
        flag: None,
        source: Source::FileAndEnv,
        kind: Count {
            min: 1,
            max: 1_000_000,
        },
        set: |e, v| e.budget.weight = v as u32,
    },
    &Decl::<Dur, E> {
        key: "weight_interval",
        doc: "The interval of weight_limit.",
        default: Default::Shown(|e| format!("\"{}\"", duration_text(e.budget.interval))),
        flag: None,
        source: Source::FileAndEnv,
        kind: Dur {
            min: MS,
            max: Duration::from_secs(86_400),
        },
        set: |e, v| e.budget.interval = v,
    },
    &Decl::<Size, E> {
        key: "max_response_size",
        doc: "The largest response body read; a longer body is abandoned at the limit and retried, never\n\
              stored (a full page of any exchange is under 1 MiB).",
        default: Default::Shown(|e| format!("\"{}\"", format_size(e.max_response_bytes as u64))),
        flag: None,
        source: Source::FileAndEnv,
        kind: Size {
            min: 4 << 10,
            max: 1 << 30,
        },
        set: |e, v| e.max_response_bytes = v as usize,
    },
];

/// One exchange market: what the hourly job does with it by default, and what the file says
/// of it. Its API root and request budget come from its adapter. Adding a market is one entry.
pub struct Market {
    pub exchange: Exchange,
    pub enabled: bool,
    pub symbols: &'static [&'static str],
    pub doc: &'static str,
}

pub const MARKETS: &[Market] = &[
    Market {
        exchange: Exchange::Binance,
        enabled: true,
        symbols: &["BTC-USDT", "ETH-USDT"],
        doc: "Spot klines, 1000 per request, weight 2 each, 6000 weight per minute. Zero-trade minutes\n\
              are served as flat candles. Also https://data-api.binance.vision (market data only).",
    },
    Market {
        exchange: Exchange::BinanceFutures,
        enabled: false,
        symbols: &["BTC-USDT"],
        doc: "USDⓈ-M futures klines, 1000 per request, weight 5 each, 2400 weight per minute.",
    },
    Market {
        exchange: Exchange::Coinbase,
        enabled: false,
        symbols: &["BTC-USD", "ETH-USD"],
        doc: "Coinbase Exchange candles, 300 per request, 10 requests per second. Minutes without trades\n\
              are left out by Coinbase: they show up as confirmed gaps, not as data.",
    },
    Market {
        exchange: Exchange::Kraken,
        enabled: false,
        symbols: &["BTC-USD", "ETH-USD"],
        doc: "Kraken OHLC: only the latest 720 minutes (12 hours) are ever served, so the hourly job must\n\
              not pause longer than that; older ranges are reported as unservable. About 1 request per\n\
              second.",
    },
    Market {
        exchange: Exchange::Okx,
        enabled: false,
        symbols: &["BTC-USDT", "ETH-USDT"],
        doc: "OKX spot candles (instrument BTC-USDT), 100 per request, newest first. OKX allows 20 requests\n\
              per 2 seconds per IP for spot and swaps together: each takes 10 by default. Only candles\n\
              OKX has confirmed are final. No trade count.",
    },
    Market {
        exchange: Exchange::OkxSwap,
        enabled: false,
        symbols: &["BTC-USDT"],
        doc: "OKX USDT-margined perpetual swaps (instrument BTC-USDT-SWAP), as okx; volume in the base\n\
              currency (volCcy), never in contracts.",
    },
    Market {
        exchange: Exchange::Bybit,
        enabled: false,
        symbols: &["BTC-USDT", "ETH-USDT"],
        doc: "Bybit spot klines (symbol BTCUSDT), 1000 per request, newest first. Bybit allows 600\n\
              requests per 5 seconds per IP for spot and linear together: each takes 300 by default. A\n\
              403 means waiting at least 10 minutes. No trade count.",
    },
    Market {
        exchange: Exchange::BybitLinear,
        enabled: false,
        symbols: &["BTC-USDT"],
        doc: "Bybit USDT perpetuals (category linear, symbol BTCUSDT), as bybit.",
    },
];
