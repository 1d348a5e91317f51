//! `import binance-archive`: data.binance.vision kline files into bronze.
//!
//! A file (`BTCUSDT-1m-2024-03-01.zip`, a monthly `BTCUSDT-1m-2024-03.zip`, or the CSV inside)
//! is checked against its `.CHECKSUM` (SHA-256) when one lies beside it, unpacked, and split by
//! UTC day. Each day becomes one bronze object holding that day's lines exactly as they were in
//! the file (and the header, if the file had one), so silver reads archives like any other
//! source. The object's run id is derived from its content: importing the same file again, or
//! again after an interruption, writes only the days not yet in bronze.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol, date_of, day_start};
use cryptolake_sources::binance::archive::{TimeUnit, is_header, open_time_field};
use sha2::{Digest, Sha256};

use super::{Envelope, FORMAT_VERSION, RequestInfo, encode, write_object};
use crate::paths::{self, BronzeKey};
use crate::{Error, Lake, Result};

/// Kline CSV lines from a data.binance.vision archive.
pub const KLINES_1M_ARCHIVE: &str = "klines_1m_archive";

/// Quote assets, longest first, to split `BTCUSDT` into `BTC-USDT`.
const QUOTES: [&str; 22] = [
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BIDR", "IDRT", "USDP", "DAI", "BTC", "ETH", "BNB",
    "EUR", "TRY", "BRL", "JPY", "GBP", "AUD", "RUB", "UAH", "ZAR", "PLN",
];

/// Which Binance market a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    Spot,
    /// USDⓈ-M futures (`futures/um` on data.binance.vision).
    Futures,
}

impl Market {
    pub fn exchange(self) -> Exchange {
        match self {
            Market::Spot => Exchange::Binance,
            Market::Futures => Exchange::BinanceFutures,
        }
    }
}

/// What the file's name and place say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveName {
    pub symbol: Symbol,
    pub interval: String,
    /// `2024-03-01` (daily) or `2024-03` (monthly).
    pub period: String,
    /// From the path (`.../futures/um/...`, `.../spot/...`), if it says.
    pub market: Option<Market>,
}

fn bad(path: &FsPath, reason: impl Into<String>) -> Error {
    Error::Invalid(format!("{}: {}", path.display(), reason.into()))
}

/// Splits `BTCUSDT` into `BTC-USDT` by its quote asset.
pub fn split_symbol(name: &str) -> Option<Symbol> {
    let quote = QUOTES
        .iter()
        .find(|q| name.len() > q.len() && name.ends_with(*q))?;
    Symbol::parse(&format!("{}-{quote}", &name[..name.len() - quote.len()])).ok()
}

/// Reads `SYMBOL-INTERVAL-PERIOD.zip|.csv` and the market folders above it.
pub fn parse_name(path: &FsPath, symbol: Option<&Symbol>) -> Result<ArchiveName> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| bad(path, "not a file name"))?;
    let stem = file
        .strip_suffix(".zip")
        .or_else(|| file.strip_suffix(".csv"))
        .ok_or_else(|| {
            bad(
                path,
                "expected a .zip or .csv kline file from data.binance.vision",
            )
        })?;
    let parts: Vec<&str> = stem.splitn(3, '-').collect();
    let [name, interval, period] = parts.as_slice() else {
        return Err(bad(
            path,
            "expected a name like BTCUSDT-1m-2024-03-01.zip (SYMBOL-INTERVAL-DATE)",
        ));
    };
    let components: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let in_path = |a: &str, b: &str| components.windows(2).any(|w| w[0] == a && w[1] == b);
    if in_path("futures", "cm") || name.contains('_') {
        return Err(bad(
            path,
            "coin-margined futures archives are not supported: their volumes are in contracts, not in the base asset",
        ));
    }
    let market = if in_path("futures", "um") {
        Some(Market::Futures)
    } else if components.iter().any(|c| c == "spot") {
        Some(Market::Spot)
    } else {
        None
    };
    if *interval != "1m" {
        return Err(bad(
            path,
            format!(
                "holds {interval} klines; only 1m klines can be imported (silver builds the hours)"
            ),
        ));
    }
    let symbol = match symbol {
        Some(s) => s.clone(),
        None => split_symbol(name).ok_or_else(|| {
            bad(
                path,
                format!(
                    "cannot tell the base and quote assets of {name}; pass --symbol BASE-QUOTE"
                ),
            )
        })?,
    };
    Ok(ArchiveName {
        symbol,
        interval: interval.to_string(),
        period: period.to_string(),
        market,
    })
}

/// How the file's integrity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The `.CHECKSUM` beside the file matched.
    Verified,
    /// No `.CHECKSUM` beside the file.
    Absent,
}

/// What importing one file did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub file: PathBuf,
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub checksum: Checksum,
    pub time_unit: TimeUnit,
    pub lines: usize,
    pub days_written: usize,
    /// Days whose identical content was already in bronze.
    pub days_present: usize,
    pub bytes: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `file` against `file.CHECKSUM` if present.
fn verify_checksum(path: &FsPath, bytes: &[u8]) -> Result<(Checksum, String)> {
    let digest = hex(&Sha256::digest(bytes));
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(".CHECKSUM");
    let sidecar = PathBuf::from(sidecar);
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Checksum::Absent, digest));
        }
        Err(e) => return Err(bad(&sidecar, format!("cannot read: {e}"))),
    };
    let expected = text
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            bad(
                &sidecar,
                "not a SHA-256 checksum file (\"<64 hex digits>  <file name>\")",
            )
        })?;
    if !expected.eq_ignore_ascii_case(&digest) {
        return Err(bad(
            path,
            format!(
                "SHA-256 is {digest} but {} says {expected}; the file is damaged or incomplete, nothing was imported",
                sidecar.display()
            ),
        ));
    }
    Ok((Checksum::Verified, digest))
}

/// The longest a kline line of any Binance archive is, with room to spare (a futures line with
/// microsecond times is under 200 bytes).
const MAX_LINE_BYTES: u64 = 512;

impl ArchiveName {
    /// The days the file's name covers: one, or each day of its month.
    pub fn days(&self) -> Option<(NaiveDate, NaiveDate)> {
        if let Ok(d) = NaiveDate::parse_from_str(&self.period, "%Y-%m-%d") {
            return Some((d, d));
        }
        let first = NaiveDate::parse_from_str(&format!("{}-01", self.period), "%Y-%m-%d").ok()?;
        let next = first.checked_add_months(chrono::Months::new(1))?;
        Some((first, next.pred_opt()?))
    }

    /// The most bytes the CSV of such a file can hold: a line per minute of its days, plus a
    /// header.
    pub fn max_csv_bytes(&self) -> u64 {
        let days = self
            .days()
            .map_or(31, |(a, b)| (b - a).num_days().unsigned_abs() + 1);
        days * 1440 * MAX_LINE_BYTES + 4096
    }
}

/// The CSV inside a zip (exactly one `.csv` member), or the file itself, read up to `limit`
/// bytes: what a zip entry's header claims is never trusted for an allocation.
pub fn csv_bytes(path: &FsPath, bytes: Vec<u8>, limit: u64) -> Result<(String, Vec<u8>)> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let too_big = |what: &str| {
        bad(
            path,
            format!(
                "{what} is larger than {limit} bytes, more than its period of 1m klines can be; refusing it"
            ),
        )
    };
    if !name.ends_with(".zip") {
        if bytes.len() as u64 > limit {
            return Err(too_big("the CSV"));
        }
        return Ok((name, bytes));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(path, format!("not a readable zip archive: {e}")))?;
    if zip.len() > 16 {
        return Err(bad(
            path,
            format!("holds {} entries; a kline archive holds one CSV", zip.len()),
        ));
    }
    let members: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.to_string()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(path, format!("unreadable zip entry names: {e}")))?;
    let csvs: Vec<&String> = members.iter().filter(|m| m.ends_with(".csv")).collect();
    let [member] = csvs.as_slice() else {
        return Err(bad(
            path,
            format!("expected exactly one .csv inside, found {members:?}"),
        ));
    };
    let entry = zip
        .by_name(member)
        .map_err(|e| bad(path, format!("reading {member}: {e}")))?;
    let mut out = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("unpacking {member}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(too_big(&format!("{member} unpacked")));
    }
    Ok(((*member).clone(), out))
}

/// One day of a file: its lines as they were.
struct DayChunk {
    date: NaiveDate,
    lines: Vec<String>,
    first: DateTime<Utc>,
}

/// Groups the file's lines by the UTC day of their open time. Lines without a readable open
/// time stay with the day before them (silver quarantines them with their line), or the first
/// day when they lead the file.
fn split_days(
    path: &FsPath,
    text: &str,
) -> Result<(Option<String>, Vec<DayChunk>, TimeUnit, usize)> {
    let mut header = None;
    let mut unit = None;
    let mut days: Vec<DayChunk> = Vec::new();
    let mut orphans: Vec<String> = Vec::new();
    let mut lines = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if n == 0 && is_header(line) {
            header = Some(line.to_string());
            continue;
        }
        lines += 1;
        let when = open_time_field(line).and_then(|v| {
            let u = *unit.get_or_insert(TimeUnit::detect(v));
            match u {
                TimeUnit::Millis => DateTime::from_timestamp_millis(v),
                TimeUnit::Micros => DateTime::from_timestamp_micros(v),
            }
        });
        match (when, days.last_mut()) {
            (Some(t), Some(day)) if date_of(t) == day.date => day.lines.push(line.to_string()),
            (Some(t), _) => {
                let mut chunk = DayChunk {
                    date: date_of(t),
                    lines: std::mem::take(&mut orphans),
                    first: t,
                };
                chunk.lines.push(line.to_string());
                days.push(chunk);
            }
            (None, Some(day)) => day.lines.push(line.to_string()),
            (None, None) => orphans.push(line.to_string()),
        }
    }
    if days.is_empty() {
        return Err(bad(path, "holds no kline with a readable open time"));
    }
    let dates: std::collections::BTreeSet<_> = days.iter().map(|d| d.date).collect();
    if dates.len() != days.len() {
        return Err(bad(
            path,
            "its klines are not in time order (a day appears twice); is it really a data.binance.vision file?",
        ));
    }
    Ok((header, days, unit.unwrap_or(TimeUnit::Millis), lines))
}

/// Imports one archive file into bronze. `market` overrides what the path says; a file with a
/// header whose market nothing states is refused (futures files have headers, spot files do
/// not), rather than guessed.
pub async fn import_archive(
    lake: &Lake,
    path: &FsPath,
    symbol: Option<&Symbol>,
    market: Option<Market>,
    now: DateTime<Utc>,
) -> Result<ImportOutcome> {
    let name = parse_name(path, symbol)?;
    let limit = name.max_csv_bytes();
    let size = std::fs::metadata(path)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?
        .len();
    // A zip is smaller than what it holds; a file larger than the CSV may be is not one.
    if size > limit {
        return Err(bad(
            path,
            format!(
                "is {size} bytes, more than a file of its period of 1m klines can be ({limit})"
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let (checksum, digest) = verify_checksum(path, &bytes)?;
    let (member, csv) = csv_bytes(path, bytes, limit)?;
    let text =
        String::from_utf8(csv).map_err(|e| bad(path, format!("the CSV is not UTF-8: {e}")))?;
    let (header, days, unit, lines) = split_days(path, &text)?;
    // Rows are checked against the file's name, as its checksum is against its bytes.
    if let Some((first, last)) = name.days()
        && let Some(day) = days.iter().find(|d| d.date < first || d.date > last)
    {
        return Err(bad(
            path,
            format!(
                "holds klines of {}, outside the period {} its name gives; refusing the file",
                day.date, name.period
            ),
        ));
    }
    let market = match (market, name.market, &header) {
        (Some(m), _, _) | (None, Some(m), _) => m,
        (None, None, None) => Market::Spot,
        (None, None, Some(_)) => {
            return Err(bad(
                path,
                "has a header line, as USDⓈ-M futures files do, but its path does not say futures/um or spot; pass --market spot or --market futures",
            ));
        }
    };
    let exchange = market.exchange();
    let mut out = ImportOutcome {
        file: path.to_path_buf(),
        exchange,
        symbol: name.symbol.clone(),
        checksum,
        time_unit: unit,
        lines,
        days_written: 0,
        days_present: 0,
        bytes: 0,
    };
    for day in days {
        let mut payload = String::new();
        if let Some(h) = &header {
            payload.push_str(h);
            payload.push('\n');
        }
        for l in &day.lines {
            payload.push_str(l);
            payload.push('\n');
        }
        // The same lines always get the same run id: a re-import finds them already there.
        let run_id = format!("import-{}", &hex(&Sha256::digest(payload.as_bytes()))[..16]);
        let partition =
            paths::bronze_partition(exchange, KLINES_1M_ARCHIVE, &name.symbol, day.date);
        let existing = lake.list(&partition).await?;
        if existing
            .iter()
            .filter_map(|m| BronzeKey::parse(&m.location))
            .any(|k| k.run_id == run_id)
        {
            out.days_present += 1;
            continue;
        }
        let window_start = day_start(day.date);
        let envelope = Envelope {
            format: FORMAT_VERSION,
            source: exchange,
            dataset: KLINES_1M_ARCHIVE.to_string(),
            symbol: name.symbol.clone(),
            request: RequestInfo {
                method: "FILE".into(),
                url: format!(
                    "{}#{member}",
                    path.file_name()
                        .map(|f| f.to_string_lossy().to_string())
                        .unwrap_or_default()
                ),
                params: [
                    ("sha256".to_string(), digest.clone()),
                    (
                        "checksum".to_string(),
                        match checksum {
                            Checksum::Verified => "verified",
                            Checksum::Absent => "absent",
                        }
                        .to_string(),
                    ),
                    ("time_unit".to_string(), format!("{unit:?}").to_lowercase()),
                    ("first_open_time".to_string(), day.first.to_rfc3339()),
                ]
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            },
            window_start,
            window_end: window_start + Duration::days(1),
            fetched_at: now,
            http_status: 200,
            run_id: run_id.clone(),
            payload_bytes: payload.len() as u64,
            rows: day.lines.len() as u64,
        };
        let key = BronzeKey {
            source: exchange,
            dataset: KLINES_1M_ARCHIVE.to_string(),
            symbol: name.symbol.clone(),
            date: day.date,
            fetched_at: now,
            window_start,
            window_end: envelope.window_end,
            run_id,
        };
        out.bytes += payload.len() as u64;
        if write_object(lake, &key, encode(&envelope, payload.as_bytes())).await? {
            out.days_written += 1;
        } else {
            out.days_present += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_markets() {
        let n = parse_name(
            FsPath::new("data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-03-01.zip"),
            None,
        )
        .unwrap();
        assert_eq!(n.symbol.as_str(), "ETH-USDT");
        assert_eq!(n.period, "2024-03-01");
        assert_eq!(n.market, Some(Market::Futures));
        let n = parse_name(FsPath::new("BTCFDUSD-1m-2024-03.csv"), None).unwrap();
        assert_eq!((n.symbol.as_str(), n.market), ("BTC-FDUSD", None));
        let err = |p: &str| parse_name(FsPath::new(p), None).unwrap_err().to_string();
        assert!(err("BTCUSDT-1h-2024-03-01.zip").contains("only 1m"));
        assert!(err("x/futures/cm/BTCUSD_PERP-1m-2024-03-01.zip").contains("coin-margined"));
        assert!(err("BTCXYZ-1m-2024-03-01.zip").contains("--symbol"));
        assert!(err("notes.txt").contains(".zip or .csv"));
        let s = Symbol::parse("BTC-XYZ").unwrap();
        assert_eq!(
            parse_name(FsPath::new("BTCXYZ-1m-2024-03-01.zip"), Some(&s))
                .unwrap()
                .symbol,
            s
        );
    }

    /// A real zip of `csv`, deflated, as the archive's one member.
    fn zip_of(csv: &[u8], zip64: bool) -> Vec<u8> {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file(
            "BTCUSDT-1m-2024-03-01.csv",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(zip64),
        )
        .unwrap();
        zip.write_all(csv).unwrap();
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn periods_bound_what_a_file_may_unpack_to() {
        let day = parse_name(FsPath::new("BTCUSDT-1m-2024-02-29.zip"), None).unwrap();
        let month = parse_name(FsPath::new("BTCUSDT-1m-2024-02.zip"), None).unwrap();
        assert_eq!(day.days(), Some((d("2024-02-29"), d("2024-02-29"))));
        assert_eq!(month.days(), Some((d("2024-02-01"), d("2024-02-29"))));
        assert_eq!(day.max_csv_bytes(), 1440 * 512 + 4096);
        assert_eq!(month.max_csv_bytes(), 29 * 1440 * 512 + 4096);
        let path = FsPath::new("BTCUSDT-1m-2024-03-01.zip");
        let limit = 1 << 16;
        let (_, csv) = csv_bytes(path, zip_of(b"1,2,3\n", false), limit).unwrap();
        assert_eq!(csv, b"1,2,3\n");
        let e = csv_bytes(path, zip_of(&vec![b'0'; 1 << 20], true), limit).unwrap_err();
        assert!(
            e.to_string()
                .contains("unpacked is larger than 65536 bytes"),
            "{e}"
        );
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    proptest::proptest! {
        /// Any change to a zip's bytes unpacks within the bound or fails: never a panic, an
        /// abort, or an allocation of what a header claims.
        #[test]
        fn damaged_zips_never_panic(
            zip64 in proptest::bool::ANY,
            edits in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..12),
        ) {
            let mut bytes = zip_of(b"1709251200000,1,1,1,1,0,1709251259999,0,0,0,0,0\n", zip64);
            for (at, b) in edits {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            let path = FsPath::new("BTCUSDT-1m-2024-03-01.zip");
            if let Ok((_, csv)) = csv_bytes(path, bytes, 4096) {
                proptest::prop_assert!(csv.len() <= 4096);
            }
        }
    }
}
