//! One date's job: read the bronze objects of the touched groups, parse and validate them,
//! deduplicate, aggregate to hours (recording confirmed-empty minutes), and merge with the
//! partition's other rows.

use super::*;
use crate::MinuteRow;
use crate::parquet_io::{ParquetFile, RowGroup};
use chrono::Timelike;
use cryptolake_model::{Candle, minute_aligned};
use std::ops::Range;

/// A bronze object's window `[start, end)` and fetch time.
pub(super) type Fetch = (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

/// What one bronze object yielded.
pub(super) struct Parsed {
    pub(super) key: BronzeKey,
    /// The key as text: what breaks ties between objects fetched at the same instant.
    pub(super) path: String,
    /// When the object says it was fetched.
    pub(super) fetched_at: DateTime<Utc>,
    /// Its closed minutes inside its window, as parsing produced them: only
    /// [`Record::Candle`]s are kept, where they are, so no minute is copied again.
    pub(super) records: Vec<Record>,
    /// The earliest and latest open time of `records`.
    pub(super) span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub(super) open_skipped: usize,
    pub(super) outside_window: usize,
    pub(super) dropped: usize,
    /// A record broke a rule whose action is `fail`.
    pub(super) failure: Option<Error>,
    pub(super) quarantine: Option<QuarantineDoc>,
}

#[derive(Debug, Serialize)]
pub(super) struct QuarantineDoc {
    pub(super) bronze_key: String,
    /// Set when the whole object could not be used.
    pub(super) object_error: Option<String>,
    pub(super) records: Vec<QuarantinedRecord>,
}

#[derive(Debug, Serialize)]
pub(super) struct QuarantinedRecord {
    pub(super) index: usize,
    pub(super) reason: String,
    pub(super) raw: String,
}

/// The counters one date contributes to [`SilverMetrics`].
#[derive(Debug, Default)]
pub(super) struct DateCounts {
    pub(super) objects_read: usize,
    pub(super) candles_read: usize,
    pub(super) duplicates_dropped: usize,
    pub(super) conflicting_duplicates: usize,
    pub(super) open_candles_skipped: usize,
    pub(super) outside_window_skipped: usize,
    pub(super) dropped_records: usize,
}

impl SilverMetrics {
    pub(super) fn absorb(&mut self, c: &DateCounts) {
        self.objects_read += c.objects_read;
        self.candles_read += c.candles_read;
        self.duplicates_dropped += c.duplicates_dropped;
        self.conflicting_duplicates += c.conflicting_duplicates;
        self.open_candles_skipped += c.open_candles_skipped;
        self.outside_window_skipped += c.outside_window_skipped;
        self.dropped_records += c.dropped_records;
    }
}

/// A request window, `[start, end)`.
pub(super) type Window = (DateTime<Utc>, DateTime<Utc>);

/// Recomputes one date's partition: for each touched group, the hours new bronze can change,
/// from every bronze object overlapping them; merged with the rest of the date's rows.
pub(super) struct DateJob {
    pub(super) lake: Lake,
    pub(super) date: NaiveDate,
    pub(super) pairs: BTreeSet<Pair>,
    /// Every bronze object of the touched groups that overlaps the date.
    pub(super) keys: Vec<BronzeKey>,
    pub(super) rules: QualityRules,
    /// The new objects, by group.
    pub(super) new_keys: std::sync::Arc<HashMap<Pair, HashSet<BronzeKey>>>,
    pub(super) concurrency: usize,
    pub(super) rebuild: bool,
}

/// A date's new partition content, ready to write.
pub(super) struct DatePrepared {
    pub(super) date: NaiveDate,
    pub(super) counts: DateCounts,
    /// Quarantine documents of new objects, by bronze key.
    pub(super) quarantine: Vec<(String, QuarantineDoc)>,
    pub(super) merged: Vec<HourlyCandle>,
    /// The partition already holds exactly `merged`.
    pub(super) unchanged: bool,
    /// The version of the partition as it was read.
    pub(super) existing_version: Option<String>,
    /// The date's `ohlcv_1m` file: the minutes of the hours in `merged`.
    pub(super) minutes: MinuteGroups,
    pub(super) minutes_unchanged: bool,
    pub(super) existing_minute_version: Option<String>,
}

impl DateJob {
    pub(super) async fn run(self) -> Result<DatePrepared> {
        let key = paths::silver_partition_file(self.date);
        let minute_key = paths::minute_partition_file(self.date);
        // The new objects are read whatever the partition holds, so they are read while it
        // is; the older ones only where the hours to recompute need them.
        // The job's keys come grouped by exchange and symbol: one lookup per group.
        let mut fresh = Vec::new();
        let mut older: Vec<&BronzeKey> = Vec::new();
        for group in self.keys.chunk_by(same_group) {
            let new = self
                .new_keys
                .get(&(group[0].source, group[0].symbol.clone()));
            for k in group {
                match new.is_some_and(|n| n.contains(k)) {
                    true => fresh.push(k.clone()),
                    false => older.push(k),
                }
            }
        }
        let read_existing = read_partition(
            &self.lake,
            &key,
            self.rebuild,
            crate::parquet_io::decode_hours,
        );
        let read_minutes = read_minute_file(&self.lake, &minute_key, self.rebuild);
        let (existing, existing_minutes, parsed) =
            futures::join!(read_existing, read_minutes, self.read_objects(fresh));
        let (existing_version, existing) = existing?;
        let (existing_minute_version, existing_minutes) = existing_minutes?;
        let mut parsed = parsed?;
        let ranges = self.ranges(&existing);
        // An hour is final once some request asked for it in full after it closed: that
        // depends on every object of the group, read or not.
        let mut asked: HashMap<Pair, DateTime<Utc>> = HashMap::new();
        for group in self.keys.chunk_by(same_group) {
            let end = group
                .iter()
                .map(|k| k.window_end)
                .max()
                .expect("a group is never empty");
            let t = asked
                .entry((group[0].source, group[0].symbol.clone()))
                .or_insert(end);
            *t = (*t).max(end);
        }
        let mut wanted = Vec::new();
        for group in older.chunk_by(|a, b| same_group(a, b)) {
            if let Some((lo, hi)) = ranges.get(&(group[0].source, group[0].symbol.clone())) {
                wanted.extend(
                    group
                        .iter()
                        .filter(|k| k.window_start < *hi && k.window_end > *lo)
                        .map(|k| (*k).clone()),
                );
            }
        }
        let older = wanted;
        parsed.extend(self.read_objects(older).await?);
        let date = self.date;
        let mut prepared = tokio::task::spawn_blocking(move || {
            self.assemble(parsed, (existing, existing_minutes), &ranges, &asked)
        })
        .await
        .map_err(|e| Error::Invalid(format!("silver build for {date}: {e}")))??;
        prepared.existing_version = existing_version;
        prepared.existing_minute_version = existing_minute_version;
        Ok(prepared)
    }

    /// Fetches and parses bronze objects, a few at a time.
    async fn read_objects(&self, keys: Vec<BronzeKey>) -> Result<Vec<Parsed>> {
        let rules = self.rules.clone();
        self.lake
            .get_all_with(
                keys,
                self.concurrency,
                BronzeKey::path,
                move |key, bytes| parse_object(&key, &bytes, &rules),
            )
            .await
    }

    /// The hours of each touched group to recompute, `[lo, hi)` within the date. New bronze
    /// changes only the hours its windows cover, and the hours silver does not hold yet that a
    /// later request may have made final; the other hours keep their rows. A rebuild, and a
    /// group with no row yet, recompute the whole date.
    fn ranges(&self, existing: &[HourlyCandle]) -> HashMap<Pair, Window> {
        let (start, end) = (
            day_start(self.date),
            day_start(self.date) + Duration::days(1),
        );
        // Partitions are sorted by exchange and symbol: one entry per group.
        let mut held: HashMap<Pair, HashSet<DateTime<Utc>>> = HashMap::new();
        for group in existing.chunk_by(same_rows_group) {
            held.entry((group[0].exchange, group[0].symbol.clone()))
                .or_default()
                .extend(group.iter().map(|r| r.open_time));
        }
        let hour = Duration::hours(1);
        self.pairs
            .iter()
            .map(|pair| {
                let windows: Vec<Window> = self
                    .new_keys
                    .get(pair)
                    .into_iter()
                    .flatten()
                    .filter(|k| overlaps(k, self.date))
                    .map(|k| (k.window_start, k.window_end))
                    .collect();
                let windows = Some(&windows).filter(|w| !w.is_empty());
                let (Some(windows), Some(held), false) = (windows, held.get(pair), self.rebuild)
                else {
                    return (pair.clone(), (start, end));
                };
                let lo = windows
                    .iter()
                    .map(|w| w.0)
                    .min()
                    .unwrap_or(start)
                    .max(start);
                let hi = windows.iter().map(|w| w.1).max().unwrap_or(end).min(end);
                let mut lo = hour_start(lo);
                let hi = if hour_start(hi) == hi {
                    hi
                } else {
                    hour_start(hi) + hour
                };
                let mut h = start;
                while h < lo {
                    if !held.contains(&h) {
                        lo = h;
                        break;
                    }
                    h += hour;
                }
                (pair.clone(), (lo, hi))
            })
            .collect()
    }

    /// The CPU part, on the blocking pool: group, deduplicate, aggregate, merge.
    fn assemble(
        self,
        mut parsed: Vec<Parsed>,
        (existing, existing_minutes): (Vec<HourlyCandle>, Option<ParquetFile>),
        ranges: &HashMap<Pair, Window>,
        asked: &HashMap<Pair, DateTime<Utc>>,
    ) -> Result<DatePrepared> {
        let date = self.date;
        let mut counts = DateCounts::default();
        let mut quarantine = Vec::new();
        for p in &mut parsed {
            counts.objects_read += 1;
            let new = self.new_keys.get(&(p.key.source, p.key.symbol.clone()));
            if new.is_some_and(|n| n.contains(&p.key)) {
                if let Some(e) = p.failure.take() {
                    return Err(e);
                }
                counts.dropped_records += p.dropped;
                if let Some(doc) = p.quarantine.take() {
                    quarantine.push((p.path.clone(), doc));
                }
            }
            counts.open_candles_skipped += p.open_skipped;
            counts.outside_window_skipped += p.outside_window;
        }
        // Minutes stay where parsing put them; grouping and sorting move references. An
        // object within the date is taken whole, without reading its minutes: they are read
        // pair by pair from here on, while a pair's fit in the cache.
        let mut by_pair: BTreeMap<Pair, Vec<Fresh>> = BTreeMap::new();
        for p in &parsed {
            let pair = by_pair
                .entry((p.key.source, p.key.symbol.clone()))
                .or_default();
            let minutes = p.records.iter().map(|record| Fresh { record, object: p });
            match p.span {
                Some((lo, hi)) if date_of(lo) == date && date_of(hi) == date => {
                    pair.extend(minutes)
                }
                _ => pair.extend(minutes.filter(|m| date_of(m.candle().open_time) == date)),
            }
        }
        // What each group's objects asked for, and when: a missing minute asked for by two
        // fetches after it closed is confirmed empty.
        let mut fetches: HashMap<Pair, Vec<Fetch>> = HashMap::new();
        for group in self.keys.chunk_by(same_group) {
            fetches
                .entry((group[0].source, group[0].symbol.clone()))
                .or_default()
                .extend(
                    group
                        .iter()
                        .map(|k| (k.window_start, k.window_end, k.fetched_at)),
                );
        }
        let mut fresh: Vec<HourlyCandle> = Vec::new();
        let mut fresh_minutes: Vec<Fresh> = Vec::new();
        for (pair, minutes) in by_pair {
            counts.candles_read += minutes.len();
            let (minutes, dropped) = dedup_latest(minutes);
            counts.duplicates_dropped += dropped.total;
            counts.conflicting_duplicates += dropped.conflicting;
            let asked_until = asked.get(&pair).copied();
            let (lo, hi) = ranges[&pair];
            let is_final = |h: DateTime<Utc>| {
                h >= lo && h < hi && asked_until.is_some_and(|t| t >= h + Duration::hours(1))
            };
            // The minute table holds the minutes of the hours emitted, so the two tables
            // always describe the same hours.
            // Asked once an hour: the minutes come in time order.
            let mut last: Option<(DateTime<Utc>, bool)> = None;
            fresh_minutes.extend(
                minutes
                    .iter()
                    .filter(|m| {
                        let h = hour_start(m.candle().open_time);
                        match last {
                            Some((at, fin)) if at == h => fin,
                            _ => last.insert((h, is_final(h))).1,
                        }
                    })
                    .copied(),
            );
            let mut hours = hourly(&minutes, is_final);
            if let Some(f) = fetches.get(&pair) {
                for h in hours.iter_mut().filter(|h| h.minutes_present < 60) {
                    h.empty_mask = confirmed_empty(h.open_time, h.minute_mask, f);
                }
            }
            fresh.extend(hours);
        }
        let mut merged: Vec<HourlyCandle> = match self.rebuild {
            true => Vec::new(),
            false => outside_ranges(&existing, ranges, |h| (h.exchange, &h.symbol, h.open_time)),
        };
        merged.extend(fresh);
        merged.sort_by(HourlyCandle::row_order);
        let unchanged = merged == existing;
        let minute_key = paths::minute_partition_file(date);
        let (minutes, minutes_unchanged) = minute_groups(
            &minute_key,
            existing_minutes,
            fresh_minutes,
            ranges,
            self.rebuild,
        )?;
        Ok(DatePrepared {
            date,
            counts,
            quarantine,
            merged,
            unchanged,
            existing_version: None,
            minutes,
            minutes_unchanged,
            existing_minute_version: None,
        })
    }
}

/// A minute parsed by this build, where parsing put it, with the object it came from.
#[derive(Clone, Copy)]
pub(super) struct Fresh<'a> {
    record: &'a Record,
    object: &'a Parsed,
}

impl MinuteRow for Fresh<'_> {
    fn candle(&self) -> &Candle {
        match self.record {
            Record::Candle { candle, .. } => candle,
            // `parse_object` keeps nothing else.
            Record::Rejected { .. } => unreachable!("a rejected record among the minutes"),
        }
    }
    fn fetched_at(&self) -> DateTime<Utc> {
        self.object.fetched_at
    }
}

impl Fetched for Fresh<'_> {
    fn source_key(&self) -> &str {
        &self.object.path
    }
}

/// A date's `ohlcv_1m` file as it is to be written: one row group per UTC hour, in hour order,
/// each ordered by open time, exchange and symbol.
/// The hours no recomputed range reaches are copied from the file as it was, undecoded, so a
/// new hour costs its own minutes rather than the whole day's.
pub(super) struct MinuteGroups {
    pub(super) source: Option<ParquetFile>,
    pub(super) groups: Vec<RowGroup>,
    pub(super) rows: usize,
}

/// A minute of the new file: parsed from bronze by this build (with its fetch time), or kept
/// from the file.
#[derive(Clone, Copy)]
enum Row<'a> {
    Fresh(&'a Candle, DateTime<Utc>),
    Kept(&'a MinuteCandle),
}

impl MinuteRow for Row<'_> {
    fn candle(&self) -> &Candle {
        match self {
            Row::Fresh(c, _) => c,
            Row::Kept(m) => &m.candle,
        }
    }
    fn fetched_at(&self) -> DateTime<Utc> {
        match self {
            Row::Fresh(_, at) => *at,
            Row::Kept(m) => m.fetched_at,
        }
    }
}

/// The file's order (`MINUTES_SORTED_BY`: open time, exchange, symbol) of rows sorted by
/// exchange, symbol and open time, as their positions, and where each UTC hour's rows lie in
/// it (in hour order). A date's rows fall in its 1,440 minutes,
/// so a stable counting sort by minute of the day does it without comparing rows, and keeps
/// exchange and symbol in order within each minute. Rows of another date, or off the minute
/// (which a rule may let through with a warning), get a comparison sort instead, where they
/// are. Positions, not the rows moved: a date's rows are a megabyte of references, and a
/// second vector of them was mapped and faulted in fresh for every date. The hours come from
/// the counts, not from reading the rows again: in the file's order they are read in a jump
/// from pair to pair, a cache miss each, so they are read once, hour by hour, to encode them.
fn file_order(rows: &mut [Row<'_>]) -> (Vec<u32>, Vec<Range<usize>>) {
    let Some(date) = rows.first().map(|r| date_of(r.candle().open_time)) else {
        return (Vec::new(), Vec::new());
    };
    let minute_of_day = |r: &Row| {
        let t = r.candle().open_time;
        (date_of(t) == date && minute_aligned(t)).then(|| {
            let t = t.naive_utc();
            (t.hour() * 60 + t.minute()) as u16
        })
    };
    let minutes = match u32::try_from(rows.len()) {
        Ok(_) => rows.iter().map(minute_of_day).collect::<Option<Vec<u16>>>(),
        Err(_) => None,
    };
    let Some(minutes) = minutes else {
        rows.sort_by_key(|r| r.candle().open_time);
        let mut hours = Vec::new();
        let mut start = 0;
        for hour in rows
            .chunk_by(|a, b| hour_start(a.candle().open_time) == hour_start(b.candle().open_time))
        {
            hours.push(start..start + hour.len());
            start += hour.len();
        }
        return ((0..rows.len()).map(|i| i as u32).collect(), hours);
    };
    let mut starts = vec![0u32; 24 * 60 + 1];
    for &m in &minutes {
        starts[usize::from(m) + 1] += 1;
    }
    for m in 1..starts.len() {
        starts[m] += starts[m - 1];
    }
    let hours = (0..24)
        .map(|h| starts[h * 60] as usize..starts[(h + 1) * 60] as usize)
        .filter(|r| !r.is_empty())
        .collect();
    let mut order = vec![0u32; rows.len()];
    for (i, &m) in minutes.iter().enumerate() {
        let at = &mut starts[usize::from(m)];
        order[*at as usize] = i as u32;
        *at += 1;
    }
    (order, hours)
}

fn row_key<R: MinuteRow>(r: &R) -> (Exchange, &Symbol, DateTime<Utc>) {
    let c = r.candle();
    (c.exchange, &c.symbol, c.open_time)
}

/// The row groups of a date's new `ohlcv_1m` file, and whether it would hold exactly what the
/// file holds now. Each row group of `existing` that is one hour no range of `ranges` reaches is
/// copied; the others are decoded, and their minutes outside the ranges join `fresh` (sorted
/// by exchange, symbol and open time), an hour a row group. A row group spanning several
/// hours (a file written before hours had one each), or not in the file's order, is decoded,
/// and the file laid out again.
/// A rebuild decodes everything and keeps only `fresh`.
fn minute_groups(
    key: &Path,
    existing: Option<ParquetFile>,
    fresh: Vec<Fresh<'_>>,
    ranges: &HashMap<Pair, Window>,
    rebuild: bool,
) -> Result<(MinuteGroups, bool)> {
    let touched = |hour: DateTime<Utc>| ranges.values().any(|(lo, hi)| *lo <= hour && hour < *hi);
    let mut copied: BTreeMap<DateTime<Utc>, (usize, usize)> = BTreeMap::new();
    let mut decoded: Vec<MinuteCandle> = Vec::new();
    let mut relaid = false;
    let mut source = None;
    if let Some(file) = existing {
        let groups = file.metadata.num_row_groups();
        let hours: Vec<Option<DateTime<Utc>>> = (0..groups)
            .map(|i| {
                file.hour_of(i, "open_time")
                    .and_then(DateTime::from_timestamp_micros)
            })
            .collect();
        // Which row groups are copied as they are (no I/O), then the rest decoded at once.
        let mut to_decode = Vec::new();
        for (i, hour) in hours.iter().enumerate() {
            let alone = hours.iter().filter(|h| *h == hour).count() == 1;
            // Copied row groups keep their rows' order: only one in the file's order.
            let ordered = file.sorted_by(i) == MINUTES_SORTED_BY;
            match hour {
                Some(h) if alone && ordered && !rebuild && !touched(*h) => {
                    let rows =
                        usize::try_from(file.metadata.row_group(i).num_rows()).unwrap_or_default();
                    copied.insert(*h, (i, rows));
                }
                _ => {
                    relaid |= hour.is_none() || !alone || !ordered;
                    to_decode.push(i);
                }
            }
        }
        let read = || -> Result<Vec<MinuteCandle>> {
            let mut rows = Vec::new();
            if !to_decode.is_empty() {
                for b in file.decode_row_groups(key, to_decode)? {
                    rows.extend(crate::minutes_from_batch(&b, key.as_ref())?);
                }
            }
            Ok(rows)
        };
        match read() {
            Ok(rows) => (decoded, source) = (rows, Some(file)),
            Err(e) if rebuild => {
                tracing::warn!(key = %key, error = %e, "replacing an unreadable partition");
                (copied, decoded, relaid) = (BTreeMap::new(), Vec::new(), true);
            }
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "{e}; `cryptolake silver --rebuild` rebuilds it from bronze"
                )));
            }
        }
    }
    decoded.sort_by(MinuteCandle::row_order);
    let kept: Vec<MinuteCandle> = match rebuild {
        true => Vec::new(),
        false => outside_ranges(&decoded, ranges, row_key),
    };
    let mut rows: Vec<Row> = kept.iter().map(Row::Kept).collect();
    rows.extend(fresh.iter().map(|m| Row::Fresh(m.candle(), m.fetched_at())));
    // A first build's minutes come in order already.
    if !rows.is_sorted_by(|a, b| row_key(a) <= row_key(b)) {
        rows.sort_by(|a, b| row_key(a).cmp(&row_key(b)));
    }
    let unchanged = !relaid
        && rows.len() == decoded.len()
        && rows
            .iter()
            .zip(&decoded)
            .all(|(r, d)| r.candle() == &d.candle && r.fetched_at() == d.fetched_at);
    let mut total = 0;
    let mut groups: BTreeMap<DateTime<Utc>, RowGroup> = BTreeMap::new();
    for (h, (index, rows)) in copied {
        total += rows;
        groups.insert(h, RowGroup::Copied(index));
    }
    let (order, hours) = file_order(&mut rows);
    let mut hour_rows: Vec<Row> = Vec::new();
    for hour in hours {
        let hour = &order[hour];
        total += hour.len();
        hour_rows.clear();
        hour_rows.extend(hour.iter().map(|&i| rows[i as usize]));
        groups.insert(
            hour_start(hour_rows[0].candle().open_time),
            RowGroup::Rows(crate::minutes_to_batch(&hour_rows)?),
        );
    }
    let groups: Vec<RowGroup> = groups.into_values().collect();
    let source = source.filter(|_| groups.iter().any(|g| matches!(g, RowGroup::Copied(_))));
    Ok((
        MinuteGroups {
            source,
            groups,
            rows: total,
        },
        unchanged,
    ))
}

/// A date's `ohlcv_1m` file and its version, its footer parsed; none when there is none. A
/// whole-date recompute reads it only to see whether it changes, so one that cannot be read
/// is simply replaced; otherwise that is an error.
async fn read_minute_file(
    lake: &Lake,
    key: &Path,
    rebuild: bool,
) -> Result<(Option<String>, Option<ParquetFile>)> {
    // On local disk only the footer is read: the hours kept as they are are copied file to
    // file when the new file is written.
    let opened = match lake.direct_root() {
        Some(_) => {
            let k = key.clone();
            lake.open_with(key, move |file| ParquetFile::open(&k, file))
                .await?
                .map(|(parsed, meta)| (crate::state::version(&meta), parsed))
        }
        None => lake
            .get_versioned(key)
            .await?
            .map(|(bytes, version)| (version, ParquetFile::parse(key, bytes))),
    };
    let Some((version, parsed)) = opened else {
        return Ok((None, None));
    };
    match parsed {
        Ok(file) => Ok((Some(version), Some(file))),
        Err(e) if rebuild => {
            tracing::warn!(key = %key, error = %e, "replacing an unreadable partition");
            Ok((None, None))
        }
        Err(e) => Err(Error::Invalid(format!(
            "{e}; `cryptolake silver --rebuild` rebuilds it from bronze"
        ))),
    }
}

/// A partition and its version, read in one GET; empty when there is none. A whole-date
/// recompute (rebuild, repair) reads it only to see whether it changes, so one that cannot be
/// read is simply replaced; otherwise that is an error.
async fn read_partition<T>(
    lake: &Lake,
    key: &Path,
    rebuild: bool,
    decode: impl FnOnce(&Path, Bytes) -> Result<Vec<T>>,
) -> Result<(Option<String>, Vec<T>)> {
    let Some((bytes, version)) = lake.get_versioned(key).await? else {
        return Ok((None, Vec::new()));
    };
    match decode(key, bytes) {
        Ok(rows) => Ok((Some(version), rows)),
        Err(e) if rebuild => {
            tracing::warn!(key = %key, error = %e, "replacing an unreadable partition");
            Ok((None, Vec::new()))
        }
        Err(e) => Err(Error::Invalid(format!(
            "{e}; `cryptolake silver --rebuild` rebuilds it from bronze"
        ))),
    }
}

/// Parses one bronze object (CPU work, run on the blocking pool): its closed minutes inside
/// its window, and what its records broke.
pub(super) fn parse_object(key: &BronzeKey, bytes: &Bytes, rules: &QualityRules) -> Result<Parsed> {
    let path_text = key.path().to_string();
    let mut out = Parsed {
        key: key.clone(),
        path: path_text.clone(),
        fetched_at: key.fetched_at,
        records: Vec::new(),
        span: None,
        open_skipped: 0,
        outside_window: 0,
        dropped: 0,
        failure: None,
        quarantine: None,
    };
    let whole_object_error = |reason: String| QuarantineDoc {
        bronze_key: path_text.clone(),
        object_error: Some(reason),
        records: Vec::new(),
    };
    let (envelope, payload) = match decode(&path_text, bytes) {
        Ok(v) => v,
        Err(e) => {
            out.quarantine = Some(whole_object_error(e.to_string()));
            return Ok(out);
        }
    };
    if envelope.source != key.source || envelope.symbol != key.symbol {
        out.quarantine = Some(whole_object_error(format!(
            "envelope says {} {} but the key says {} {}",
            envelope.source, envelope.symbol, key.source, key.symbol
        )));
        return Ok(out);
    }
    out.fetched_at = envelope.fetched_at;
    let mut records = match parse_payload(&envelope, &payload) {
        Ok(r) => r,
        Err(reason) => {
            out.quarantine = Some(whole_object_error(reason));
            return Ok(out);
        }
    };
    let mut rejected = Vec::new();
    // In place: the candles kept do not move unless a record before them goes.
    records.retain_mut(|record| match record {
        Record::Candle { candle, close_time } => {
            let t = candle.open_time;
            if t < envelope.window_start || t >= envelope.window_end {
                out.outside_window += 1;
                false
            } else if *close_time > envelope.fetched_at {
                // Still open when fetched: not final, never counted.
                out.open_skipped += 1;
                false
            } else {
                out.span = Some(out.span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
                true
            }
        }
        Record::Rejected {
            index,
            raw,
            rule,
            reason,
        } => {
            let (index, raw, reason) = (*index, std::mem::take(raw), std::mem::take(reason));
            match rule.map(|r| (r, rules.record_action(r))) {
                Some((_, Action::Drop)) => out.dropped += 1,
                Some((r, Action::Fail)) => {
                    if out.failure.is_none() {
                        out.failure = Some(Error::QualityFailed {
                            rule: r.as_str().to_string(),
                            key: path_text.clone(),
                            index,
                            reason: reason.clone(),
                        });
                    }
                    rejected.push(QuarantinedRecord { index, reason, raw });
                }
                // Quarantine, and malformed records whatever the rules say.
                _ => rejected.push(QuarantinedRecord { index, reason, raw }),
            }
            false
        }
    });
    out.records = records;
    if !rejected.is_empty() {
        out.quarantine = Some(QuarantineDoc {
            bronze_key: path_text,
            object_error: None,
            records: rejected,
        });
    }
    Ok(out)
}

/// The rows of a partition (sorted by exchange, symbol and open time) that a build keeps as
/// they are: those of pairs it did not recompute, and of recomputed pairs those outside the
/// recomputed range `[lo, hi)`.
fn outside_ranges<T: Clone>(
    rows: &[T],
    ranges: &HashMap<Pair, Window>,
    key: impl Fn(&T) -> (Exchange, &Symbol, DateTime<Utc>),
) -> Vec<T> {
    let mut kept = Vec::with_capacity(rows.len());
    for group in rows.chunk_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        (ka.0, ka.1) == (kb.0, kb.1)
    }) {
        let (exchange, symbol, _) = key(&group[0]);
        match ranges.get(&(exchange, symbol.clone())) {
            Some((lo, hi)) => kept.extend(
                group
                    .iter()
                    .filter(|r| {
                        let t = key(r).2;
                        t < *lo || t >= *hi
                    })
                    .cloned(),
            ),
            None => kept.extend_from_slice(group),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::silver::aggregate::Minute;
    use chrono::TimeDelta;
    use cryptolake_model::parse_time;
    use proptest::prelude::*;

    fn minute(pair: usize, at: DateTime<Utc>) -> Minute {
        let symbol = ["BTC-USDT", "ETH-USDT", "SOL-USDT"][pair % 3];
        let exchange = [Exchange::Binance, Exchange::Kraken][pair / 3];
        let day = day_start(date_of(at));
        let mut candle = Candle::new(
            exchange,
            Symbol::parse(symbol).unwrap(),
            day,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            None,
            None,
        )
        .unwrap();
        // Set after the checks: a rule may let a candle off the minute through.
        candle.open_time = at;
        Minute {
            candle,
            fetched_at: at,
            source_key: "k".into(),
        }
    }

    proptest! {
        /// Whatever the minutes (off the minute, or past the date's end, now and then), the
        /// rows come out in the file's order (open time, exchange, symbol), and the hours
        /// given are where each hour's rows lie in it.
        #[test]
        fn rows_come_in_the_files_order(
            cells in proptest::collection::vec(
                (0usize..6, prop_oneof![0i64..20, 0i64..24 * 60]),
                0..200,
            ),
            // Seconds off the minute, or into the next date.
            shifted in proptest::option::weighted(
                0.3,
                (0usize..200, prop_oneof![1i64..300, 85_000i64..90_000]),
            ),
        ) {
            let day = parse_time("2024-03-01T00:00:00Z").unwrap();
            let mut times: Vec<(usize, DateTime<Utc>)> = cells
                .iter()
                .map(|&(p, m)| (p, day + TimeDelta::minutes(m)))
                .collect();
            if let Some((i, secs)) = shifted
                && let Some(cell) = times.get_mut(i)
            {
                cell.1 += TimeDelta::seconds(secs);
            }
            let minutes: Vec<Minute> = times.iter().map(|&(p, t)| minute(p, t)).collect();
            let mut rows: Vec<Row> = minutes
                .iter()
                .map(|m| Row::Fresh(&m.candle, m.fetched_at))
                .collect();
            rows.sort_by(|a, b| row_key(a).cmp(&row_key(b)));
            let order = |r: &Row| {
                let c = r.candle();
                (c.open_time, c.exchange, c.symbol.clone())
            };
            let mut want: Vec<_> = rows.iter().map(order).collect();
            want.sort();
            let (places, hours) = file_order(&mut rows);
            let got: Vec<_> = places.iter().map(|&i| order(&rows[i as usize])).collect();
            prop_assert_eq!(got, want);
            // The hours cover the order back to back, each one hour, in hour order.
            let hour_of = |i: usize| hour_start(rows[places[i] as usize].candle().open_time);
            let mut next = 0;
            let mut last = None;
            for range in &hours {
                prop_assert_eq!(range.start, next);
                prop_assert!(range.end > range.start);
                let h = hour_of(range.start);
                prop_assert!(range.clone().all(|i| hour_of(i) == h), "{range:?} spans hours");
                prop_assert!(last < Some(h), "{h} after {last:?}");
                (next, last) = (range.end, Some(h));
            }
            prop_assert_eq!(next, rows.len());
        }
    }
}
