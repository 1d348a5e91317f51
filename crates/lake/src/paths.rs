//! The layout of the lake. This is the only module that builds or parses keys.
//!
//! ```text
//! bronze/source=binance/dataset=klines_1m/symbol=BTC-USDT/date=2024-03-01/
//!     {fetched_at}_{window_start}_{window_end}_{run_id}.bronze
//! silver/ohlcv_1h/date=2024-03-01/part-00000.parquet
//! silver/ohlcv_1m/date=2024-03-01/part-00000.parquet     the minutes of the same hours
//! gold/ohlcv_1d/date=2024-03-01/part-00000.parquet
//! quarantine/ohlcv_1h/source=binance/dataset=klines_1m/symbol=BTC-USDT/date=2024-03-01/{bronze file}.json
//! ops/runs/date=2024-03-01/{started}_{run_id}_{step}_{nonce}.parquet   run history (crypto_ops.runs)
//! ops/quality_results/date=2024-03-01/{checked}_{run_id}_{step}_{nonce}.parquet   (crypto_ops.quality_results)
//! ops/gaps/date=2024-03-01/part-00000.parquet           missing minutes (crypto_ops.gaps)
//! _manifest/bronze/{date written}/{hour written}/{written_at}_{nonce}_{bronze key with / as +}
//!                                                       one empty entry per bronze object,
//!                                                       written just before it
//! _state/ingest/{exchange}/{dataset}/{symbol}.json      ingest cursors
//! _state/ingest/{exchange}/ban.json                     an exchange's 418 ban, until it expires
//! _state/unservable/{exchange}/{symbol}.json            ranges asked for but no longer served
//! _state/silver/ohlcv_1h.json                           bronze objects already in silver
//! _state/gold/ohlcv_1d.json                             silver versions gold was built from
//! _state/schedule.json                                  the scheduler's last slot
//! _state/changed.json                                   rewritten after every step: readers elsewhere notice changes
//! _locks/{name}/{generation}.json                       leases
//! _staging/                                             local writes before their rename
//! ```

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use cryptolake_model::{Exchange, Symbol, format_compact};
use object_store::path::Path;

pub const BRONZE: &str = "bronze";
pub const SILVER_OHLCV_1H: &str = "silver/ohlcv_1h";
pub const SILVER_OHLCV_1M: &str = "silver/ohlcv_1m";
pub const GOLD_OHLCV_1D: &str = "gold/ohlcv_1d";
pub const QUARANTINE_OHLCV_1H: &str = "quarantine/ohlcv_1h";
pub const OPS_RUNS: &str = "ops/runs";
pub const OPS_QUALITY_RESULTS: &str = "ops/quality_results";
pub const OPS_GAPS: &str = "ops/gaps";
pub const SILVER_FUNDING_RATES: &str = "silver/funding_rates";
pub const GOLD_FUNDING_1D: &str = "gold/funding_1d";
pub const OPS_FUNDING_GAPS: &str = "ops/funding_gaps";
pub const QUARANTINE_FUNDING_RATES: &str = "quarantine/funding_rates";
pub const SILVER_MARK_OHLCV_1M: &str = "silver/mark_ohlcv_1m";
pub const OPS_MARK_GAPS: &str = "ops/mark_gaps";
pub const QUARANTINE_MARK_OHLCV_1M: &str = "quarantine/mark_ohlcv_1m";
pub(crate) const PART_FILE: &str = "part-00000.parquet";
const BRONZE_EXT: &str = ".bronze";

/// Where a bronze object sits and what it covers, all readable from its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BronzeKey {
    pub source: Exchange,
    pub dataset: String,
    pub symbol: Symbol,
    /// UTC date of `window_start`.
    pub date: NaiveDate,
    pub fetched_at: DateTime<Utc>,
    /// The requested interval of open times, `[window_start, window_end)`.
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub run_id: String,
}

impl BronzeKey {
    pub fn path(&self) -> Path {
        Path::from(format!(
            "{}/{}_{}_{}_{}{BRONZE_EXT}",
            bronze_partition(self.source, &self.dataset, &self.symbol, self.date),
            format_compact(self.fetched_at),
            format_compact(self.window_start),
            format_compact(self.window_end),
            self.run_id
        ))
    }

    /// Parses a key written by [`BronzeKey::path`]; `None` for anything else.
    pub fn parse(path: &Path) -> Option<BronzeKey> {
        let mut parts = path.as_ref().split(object_store::path::DELIMITER);
        let (Some(BRONZE), Some(source), Some(dataset), Some(symbol), Some(date), Some(file), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let source = source.strip_prefix("source=")?.parse().ok()?;
        let dataset = dataset.strip_prefix("dataset=")?.to_string();
        let symbol = Symbol::parse(symbol.strip_prefix("symbol=")?).ok()?;
        let date = parse_date(date.strip_prefix("date=")?)?;
        let stem = file.strip_suffix(BRONZE_EXT)?;
        let mut fields = stem.splitn(4, '_');
        let fetched_at = parse_compact(fields.next()?)?;
        let window_start = parse_compact(fields.next()?)?;
        let window_end = parse_compact(fields.next()?)?;
        let run_id = fields.next()?.to_string();
        Some(BronzeKey {
            source,
            dataset,
            symbol,
            date,
            fetched_at,
            window_start,
            window_end,
            run_id,
        })
    }
}

pub fn bronze_root() -> Path {
    Path::from(BRONZE)
}

pub fn bronze_partition(source: Exchange, dataset: &str, symbol: &Symbol, date: NaiveDate) -> Path {
    Path::from(format!(
        "{BRONZE}/source={source}/dataset={dataset}/symbol={symbol}/date={date}"
    ))
}

pub const MANIFEST_BRONZE: &str = "_manifest/bronze";

/// The manifest entry announcing `bronze`, written at `written_at`. Entries sit in one folder
/// per hour of writing, so a build lists only the hours since its watermark.
pub fn manifest_entry(written_at: DateTime<Utc>, bronze: &Path) -> Path {
    Path::from(format!(
        "{MANIFEST_BRONZE}/{}/{}/{}_{:08x}_{}",
        written_at.date_naive(),
        written_at.format("%H"),
        format_compact(written_at),
        rand::random::<u32>(),
        bronze.as_ref().replace('/', "+")
    ))
}

/// The manifest folder of one day: its hour folders (and, from lakes written before hour
/// folders, entries directly inside).
pub fn manifest_day(date: NaiveDate) -> Path {
    Path::from(format!("{MANIFEST_BRONZE}/{date}"))
}

/// The hour of a manifest hour folder (`_manifest/bronze/2024-03-01/07`).
pub fn manifest_hour_of(folder: &Path) -> Option<DateTime<Utc>> {
    let mut parts = folder.as_ref().strip_prefix(MANIFEST_BRONZE)?.split('/');
    let (_, date, hour) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hour.len() != 2 {
        return None;
    }
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.parse().ok()?;
    Some(date.and_hms_opt(hour, 0, 0)?.and_utc())
}

/// Where a listing of the entries of `t`'s hour folder written at or after `t` starts.
pub fn manifest_offset(t: DateTime<Utc>) -> Path {
    Path::from(format!(
        "{MANIFEST_BRONZE}/{}/{}/{}",
        t.date_naive(),
        t.format("%H"),
        format_compact(t)
    ))
}

/// A manifest entry's file name, write time and bronze key.
pub fn parse_manifest_entry(path: &Path) -> Option<(String, DateTime<Utc>, BronzeKey)> {
    let name = path.filename()?;
    let mut parts = name.splitn(3, '_');
    let written_at = parse_compact(parts.next()?)?;
    let _nonce = parts.next()?;
    let key = BronzeKey::parse(&Path::from(parts.next()?.replace('+', "/")))?;
    Some((name.to_string(), written_at, key))
}

/// Every bronze object of one source, dataset and symbol.
pub fn bronze_symbol(source: Exchange, dataset: &str, symbol: &Symbol) -> Path {
    Path::from(format!(
        "{BRONZE}/source={source}/dataset={dataset}/symbol={symbol}"
    ))
}

pub fn silver_table() -> Path {
    Path::from(SILVER_OHLCV_1H)
}

pub fn silver_partition_file(date: NaiveDate) -> Path {
    Path::from(format!("{SILVER_OHLCV_1H}/date={date}/{PART_FILE}"))
}

pub fn minute_table() -> Path {
    Path::from(SILVER_OHLCV_1M)
}

pub fn minute_partition_file(date: NaiveDate) -> Path {
    Path::from(format!("{SILVER_OHLCV_1M}/date={date}/{PART_FILE}"))
}

pub fn gold_table() -> Path {
    Path::from(GOLD_OHLCV_1D)
}

pub fn gold_partition_file(date: NaiveDate) -> Path {
    Path::from(format!("{GOLD_OHLCV_1D}/date={date}/{PART_FILE}"))
}

/// The partition file of `date` in any partitioned table.
pub fn partition_file(table: &Path, date: NaiveDate) -> Path {
    Path::from(format!("{table}/date={date}/{PART_FILE}"))
}

/// The date of a table's partition file (`.../date=YYYY-MM-DD/part-00000.parquet`); `None` for
/// anything that is not a partition file (including a store's temporary files).
pub fn partition_file_date(table: &Path, path: &Path) -> Option<NaiveDate> {
    let rest: Vec<_> = path.prefix_match(table)?.collect();
    let [date, file] = rest.as_slice() else {
        return None;
    };
    if file.as_ref() != PART_FILE {
        return None;
    }
    parse_date(date.as_ref().strip_prefix("date=")?)
}

/// Whether every `date=` folder on `path` names a real date as the lake writes it
/// (`YYYY-MM-DD`). Queries list only such keys; `check --files` reports the others.
pub fn in_layout(path: &Path) -> bool {
    path.parts().all(|part| {
        part.as_ref()
            .strip_prefix("date=")
            .is_none_or(|d| parse_date_exact(d).is_some())
    })
}

/// Whether the table under `prefix` holds exactly one file per partition, `part-00000.parquet`
/// (silver, gold, gaps), rather than one file per run (`crypto_ops.runs`, `quality_results`).
pub fn one_file_per_partition(prefix: &str) -> bool {
    [
        SILVER_OHLCV_1H,
        SILVER_OHLCV_1M,
        GOLD_OHLCV_1D,
        OPS_GAPS,
        SILVER_FUNDING_RATES,
        GOLD_FUNDING_1D,
        OPS_FUNDING_GAPS,
        SILVER_MARK_OHLCV_1M,
        OPS_MARK_GAPS,
    ]
    .contains(&prefix)
}

/// The name of every partition's one file in the tables that have one per date.
pub fn part_file_name() -> &'static str {
    PART_FILE
}

/// One step of one run in `crypto_ops.runs`. The nonce keeps two records of the same step
/// of one run at the same instant (a clock stepped by hand) from replacing each other: these
/// files are written once and never rewritten, which is what lets readers read each once.
pub fn run_record(started_at: DateTime<Utc>, run_id: &str, step: &str, nonce: u32) -> Path {
    Path::from(format!(
        "{OPS_RUNS}/date={}/{}_{run_id}_{step}_{nonce:08x}.parquet",
        started_at.date_naive(),
        format_compact(started_at)
    ))
}

/// The quality results of one step of one run in `crypto_ops.quality_results`; the nonce as
/// in [`run_record`].
pub fn quality_results(checked_at: DateTime<Utc>, run_id: &str, step: &str, nonce: u32) -> Path {
    Path::from(format!(
        "{OPS_QUALITY_RESULTS}/date={}/{}_{run_id}_{step}_{nonce:08x}.parquet",
        checked_at.date_naive(),
        format_compact(checked_at)
    ))
}

/// Where the rejected records of one bronze object go.
pub fn quarantine_for(bronze: &Path) -> Path {
    quarantine_under(QUARANTINE_OHLCV_1H, bronze)
}

/// Where the rejected funding records of one bronze object go.
pub fn quarantine_funding_for(bronze: &Path) -> Path {
    quarantine_under(QUARANTINE_FUNDING_RATES, bronze)
}

/// Where the rejected mark price rows of one bronze object go.
pub fn quarantine_mark_for(bronze: &Path) -> Path {
    quarantine_under(QUARANTINE_MARK_OHLCV_1M, bronze)
}

fn quarantine_under(table: &str, bronze: &Path) -> Path {
    let rest: Vec<String> = bronze
        .parts()
        .skip(1)
        .map(|p| p.as_ref().to_string())
        .collect();
    Path::from(format!("{table}/{}.json", rest.join("/")))
}

pub fn ingest_cursor(exchange: Exchange, dataset: &str, symbol: &Symbol) -> Path {
    Path::from(format!("_state/ingest/{exchange}/{dataset}/{symbol}.json"))
}

/// Ranges asked for that the exchange no longer served (Kraken's 720 minutes), so the gap
/// report can name them.
pub fn unservable_state(exchange: Exchange, symbol: &Symbol) -> Path {
    Path::from(format!("{UNSERVABLE}/{exchange}/{symbol}.json"))
}

pub const UNSERVABLE: &str = "_state/unservable";

/// A 418 ban an exchange gave this client: no request goes there until it expires.
pub fn exchange_ban(exchange: Exchange) -> Path {
    Path::from(format!("_state/ingest/{exchange}/ban.json"))
}

/// What each exchange and symbol was ever asked for, for the gap report.
pub fn gaps_state() -> Path {
    Path::from("_state/gaps/asked.json")
}

pub fn silver_funding_table() -> Path {
    Path::from(SILVER_FUNDING_RATES)
}

pub fn gold_funding_table() -> Path {
    Path::from(GOLD_FUNDING_1D)
}

pub fn mark_table() -> Path {
    Path::from(SILVER_MARK_OHLCV_1M)
}

pub fn mark_gaps_table() -> Path {
    Path::from(OPS_MARK_GAPS)
}

/// What the mark price build remembers: its manifest watermark.
pub fn mark_state() -> Path {
    Path::from("_state/silver/mark_ohlcv_1m.json")
}

pub fn funding_gaps_table() -> Path {
    Path::from(OPS_FUNDING_GAPS)
}

pub fn gaps_table() -> Path {
    Path::from(OPS_GAPS)
}

pub fn gaps_partition_file(date: NaiveDate) -> Path {
    Path::from(format!("{OPS_GAPS}/date={date}/{PART_FILE}"))
}

pub fn silver_state() -> Path {
    Path::from("_state/silver/ohlcv_1h.json")
}

/// What the funding build remembers: its manifest watermark, every symbol's funding slots
/// and the missing ones.
pub fn funding_state() -> Path {
    Path::from("_state/silver/funding_rates.json")
}

/// The `funding_rates` partition versions gold's `funding_1d` was built from.
pub fn funding_gold_state() -> Path {
    Path::from("_state/gold/funding_1d.json")
}

pub fn gold_state() -> Path {
    Path::from("_state/gold/ohlcv_1d.json")
}

/// Rewritten after every step's run record: a reader in another process looks at this one
/// object's version to learn, in one request, whether the lake may have changed.
pub fn change_marker() -> Path {
    Path::from("_state/changed.json")
}

/// Everything a build derives from bronze, by prefix: removing it all makes the next build a
/// first build (bronze, its manifest and the ingest cursors are kept).
pub const DERIVED: [&str; 17] = [
    SILVER_OHLCV_1H,
    SILVER_OHLCV_1M,
    GOLD_OHLCV_1D,
    QUARANTINE_OHLCV_1H,
    SILVER_FUNDING_RATES,
    GOLD_FUNDING_1D,
    OPS_FUNDING_GAPS,
    QUARANTINE_FUNDING_RATES,
    SILVER_MARK_OHLCV_1M,
    OPS_MARK_GAPS,
    QUARANTINE_MARK_OHLCV_1M,
    OPS_RUNS,
    OPS_QUALITY_RESULTS,
    OPS_GAPS,
    "_state/silver",
    "_state/gold",
    "_state/gaps",
];

/// Where local writes are staged before a rename puts them in place: outside every table, so
/// a crash mid-write never leaves a partial file where readers look.
pub const STAGING: &str = "_staging";

pub fn staging_file(for_key: &Path) -> Path {
    Path::from(format!(
        "{STAGING}/{}-{:016x}",
        for_key.as_ref().replace('/', "_"),
        rand::random::<u64>()
    ))
}

pub fn schedule_state() -> Path {
    Path::from("_state/schedule.json")
}

pub fn demo_marker() -> Path {
    Path::from("_state/demo.json")
}

pub fn lease_dir(name: &str) -> Path {
    Path::from(format!("_locks/{name}"))
}

pub fn lease_generation(name: &str, generation: u64) -> Path {
    Path::from(format!("_locks/{name}/{generation:020}.json"))
}

/// The generation number of a lease file.
pub fn parse_lease_generation(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    // As with compact times: the exact `YYYY-MM-DD` form directly, anything else by chrono.
    parse_date_exact(s).or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
}

fn parse_date_exact(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

fn parse_compact(s: &str) -> Option<DateTime<Utc>> {
    // Keys are parsed by the thousand in every plan: the exact `YYYYMMDDTHHMMSS.mmmZ` form is
    // read directly; anything else goes to chrono's format parser, which decides.
    parse_compact_exact(s).or_else(|| {
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%.3fZ")
            .ok()
            .map(|t| t.and_utc())
    })
}

fn parse_compact_exact(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
    let t = date.and_hms_milli_opt(num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?)?;
    Some(t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    proptest::proptest! {
        /// The direct reader of compact times agrees with chrono's format parser, on valid
        /// times and on anything of the same length.
        #[test]
        fn compact_times_parse_as_chrono_does(
            text in "[0-9]{8}T[0-9]{6}\\.[0-9]{3}Z",
            noise in "[0-9TZ.]{20}",
            ms in 0i64..4_102_444_800_000,
        ) {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            proptest::prop_assert_eq!(parse_compact(&format_compact(t)), Some(t));
            for s in [text.as_str(), noise.as_str()] {
                let chrono = NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%.3fZ")
                    .ok()
                    .map(|t| t.and_utc());
                proptest::prop_assert_eq!(parse_compact(s), chrono, "{}", s);
            }
        }

        /// Likewise for dates in keys.
        #[test]
        fn key_dates_parse_as_chrono_does(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            noise in "[0-9-]{10}",
            days in -700_000i32..3_000_000,
        ) {
            let d = NaiveDate::from_num_days_from_ce_opt(days).unwrap();
            proptest::prop_assert_eq!(parse_date(&d.to_string()), Some(d));
            for s in [text.as_str(), noise.as_str()] {
                proptest::prop_assert_eq!(parse_date(s), NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(), "{}", s);
            }
        }
    }

    #[test]
    fn bronze_key_round_trips() {
        let key = BronzeKey {
            source: Exchange::Binance,
            dataset: "klines_1m".into(),
            symbol: Symbol::parse("BTC-USDT").unwrap(),
            date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            fetched_at: parse_time("2024-03-02T10:00:01.250Z").unwrap(),
            window_start: parse_time("2024-03-01T00:00:00Z").unwrap(),
            window_end: parse_time("2024-03-01T16:40:00Z").unwrap(),
            run_id: "20240302T100000Z-0a1b2c3d".into(),
        };
        let path = key.path();
        assert_eq!(
            path.as_ref(),
            "bronze/source=binance/dataset=klines_1m/symbol=BTC-USDT/date=2024-03-01/\
             20240302T100001.250Z_20240301T000000.000Z_20240301T164000.000Z_20240302T100000Z-0a1b2c3d.bronze"
        );
        assert_eq!(BronzeKey::parse(&path), Some(key));
        assert_eq!(BronzeKey::parse(&Path::from("bronze/x.bronze")), None);
    }

    #[test]
    fn partition_files_only() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        assert_eq!(
            partition_file_date(&silver_table(), &silver_partition_file(d)),
            Some(d)
        );
        let tmp = Path::from("silver/ohlcv_1h/date=2024-03-01/part-00000.parquet#1");
        assert_eq!(partition_file_date(&silver_table(), &tmp), None);
        assert_eq!(
            partition_file_date(&silver_table(), &gold_partition_file(d)),
            None
        );
    }
}
