//! The silver plan: which bronze objects are new and which (date, exchange, symbol) groups
//! they touch. A first build or a rebuild lists all of bronze; an incremental build reads the
//! manifest since its watermark and lists only the partitions the new objects touch.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use cryptolake_model::{Exchange, Symbol};
use object_store::path::Path;
use tracing::warn;

use futures::StreamExt;

use super::{Pair, SilverPlan, SilverState, dates_of_window, manifest_since, spills};
use crate::bronze::{KLINES_1M, KLINES_1M_ARCHIVE};
use crate::paths::{self, BronzeKey};
use crate::{Lake, Result};

impl SilverPlan {
    /// Takes `key` as new: its groups on every date its window touches are recomputed.
    fn add_new(&mut self, key: &BronzeKey) {
        let pair = (key.source, key.symbol.clone());
        for d in dates_of_window(key.window_start, key.window_end) {
            self.affected.entry(d).or_default().insert(pair.clone());
        }
        self.new_objects.push(key.clone());
    }
}

/// The plan of a first build or a rebuild: every bronze partition found (the symbol folders,
/// then each one's date folders), to be listed and built a range of dates at a time, so that
/// memory holds one range's objects, never all of bronze (see [`super::Streamed`]).
pub(super) async fn full(
    lake: &Lake,
    mut plan: SilverPlan,
    previous: &SilverState,
    watermark: DateTime<Utc>,
    started: DateTime<Utc>,
) -> Result<SilverPlan> {
    plan.full_listing = true;
    plan.state_changed = true;
    let entries = manifest_since(lake, watermark, started).await?;
    let mut folders = Vec::new();
    let dirs = symbol_dirs(lake, &mut plan.foreign_keys).await?;
    let levels: Vec<Result<(Vec<object_store::ObjectMeta>, Vec<Path>)>> =
        futures::stream::iter(dirs.iter().map(|(_, dir)| lake.list_level(dir)))
            .buffered(LISTINGS_IN_FLIGHT)
            .collect()
            .await;
    for ((pair, dir), level) in dirs.into_iter().zip(levels) {
        let (objects, date_dirs) = level?;
        plan.foreign_keys
            .extend(objects.into_iter().map(|m| m.location.to_string()));
        let mut dates = BTreeSet::new();
        for d in date_dirs {
            match d
                .filename()
                .and_then(|f| f.strip_prefix("date="))
                .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
            {
                Some(date) => {
                    plan.affected.entry(date).or_default().insert(pair.clone());
                    dates.insert(date);
                }
                None => plan.foreign_keys.push(d.to_string()),
            }
        }
        folders.push((pair, dir, dates));
    }
    // Entries in the overlap are done once the listing sees their objects.
    let overlap = entries
        .iter()
        .filter_map(paths::parse_manifest_entry)
        .map(|(name, _, key)| (key.path().to_string(), name))
        .collect();
    plan.streamed = Some(super::Streamed {
        folders,
        overlap,
        processed: previous.processed.clone(),
    });
    Ok(plan)
}

/// Symbol folders listed at once.
const LISTINGS_IN_FLIGHT: usize = 16;

/// The symbol folders of bronze (three levels of listing), with their exchange and symbol;
/// anything else found on the way is added to `foreign`.
async fn symbol_dirs(lake: &Lake, foreign: &mut Vec<String>) -> Result<Vec<(Pair, Path)>> {
    let mut out = Vec::new();
    let (objects, sources) = lake.list_level(&paths::bronze_root()).await?;
    foreign.extend(objects.into_iter().map(|m| m.location.to_string()));
    for source in sources {
        let exchange = source
            .filename()
            .and_then(|f| f.strip_prefix("source="))
            .and_then(|e| e.parse::<Exchange>().ok());
        let Some(exchange) = exchange else {
            foreign.push(source.to_string());
            continue;
        };
        let (objects, datasets) = lake.list_level(&source).await?;
        foreign.extend(objects.into_iter().map(|m| m.location.to_string()));
        for dataset in datasets {
            let Some(name) = dataset.filename().and_then(|f| f.strip_prefix("dataset=")) else {
                foreign.push(dataset.to_string());
                continue;
            };
            // Funding and other tables' datasets are built by their own builds.
            if !crate::bronze::is_candle_dataset(name) {
                continue;
            }
            let (objects, symbols) = lake.list_level(&dataset).await?;
            foreign.extend(objects.into_iter().map(|m| m.location.to_string()));
            for dir in symbols {
                let symbol = dir
                    .filename()
                    .and_then(|f| f.strip_prefix("symbol="))
                    .and_then(|s| Symbol::parse(s).ok());
                match symbol {
                    Some(symbol) => out.push(((exchange, symbol), dir)),
                    None => foreign.push(dir.to_string()),
                }
            }
        }
    }
    Ok(out)
}

/// The plan of an incremental build: the manifest entries since the watermark (`since`, less
/// the overlap, is `watermark`), then just the bronze partitions they touch.
pub(super) async fn incremental(
    lake: &Lake,
    mut plan: SilverPlan,
    previous: &SilverState,
    (since, watermark): (DateTime<Utc>, DateTime<Utc>),
    started: DateTime<Utc>,
) -> Result<SilverPlan> {
    // Incremental: the manifest entries since the watermark, then just the partitions
    // they touch.
    let entries = manifest_since(lake, since, started).await?;
    let mut candidates = Vec::new();
    for e in &entries {
        match paths::parse_manifest_entry(e) {
            // Another table's object (funding): its own build reads it.
            Some((_, _, key)) if !crate::bronze::is_candle_dataset(&key.dataset) => {}
            Some((name, written_at, key)) if !previous.recent.contains(&name) => {
                candidates.push((name, written_at, key))
            }
            Some((name, written_at, _)) if written_at >= watermark => {
                plan.next_state.recent.insert(name);
            }
            Some(_) => {}
            None => plan.foreign_keys.push(e.to_string()),
        }
    }
    // A bronze object sits in the partition of its window's start, and a window spans at
    // most a day (writers split at midnight; the longest is a one-day archive file), so
    // every object overlapping date D is in partition D, or in D-1 when that partition
    // spills over midnight (see `SilverState::spilling`).
    let mut groups: BTreeSet<(Exchange, Symbol, NaiveDate)> = BTreeSet::new();
    for (_, _, key) in &candidates {
        for d in dates_of_window(key.window_start, key.window_end) {
            groups.insert((key.source, key.symbol.clone(), d));
        }
        if let (Some(spilling), Some(p)) = (plan.next_state.spilling.as_mut(), spills(key)) {
            spilling.insert(p);
        }
    }
    // Listed together: an hourly run touches every symbol, and each listing is a round
    // trip (a directory read locally, a request on S3, made concurrently).
    // Only the datasets each source has (most lakes hold no archive imports).
    let mut datasets: HashMap<Exchange, Vec<&str>> = HashMap::new();
    for source in groups.iter().map(|p| p.0).collect::<BTreeSet<_>>() {
        let (_, folders) = lake
            .list_level(&Path::from(format!("{}/source={source}", paths::BRONZE)))
            .await?;
        let has = |dataset: &str| {
            folders
                .iter()
                .any(|f| f.filename() == Some(&format!("dataset={dataset}")))
        };
        datasets.insert(
            source,
            [KLINES_1M, KLINES_1M_ARCHIVE]
                .into_iter()
                .filter(|d| has(d))
                .collect(),
        );
    }
    let spilling = plan.next_state.spilling.as_ref();
    let mut prefixes: BTreeSet<Path> = BTreeSet::new();
    for (source, symbol, date) in &groups {
        for dataset in &datasets[source] {
            prefixes.insert(paths::bronze_partition(*source, dataset, symbol, *date));
            if let Some(before) = date.pred_opt() {
                let p = paths::bronze_partition(*source, dataset, symbol, before);
                if spilling.is_none_or(|s| s.contains(p.as_ref())) {
                    prefixes.insert(p);
                }
            }
        }
    }
    let listings = lake
        .list_keys_many(prefixes.into_iter().map(|p| (p, None)).collect())
        .await?;
    // Each listing is one partition (no key is in two), so of one exchange and symbol.
    let wanted: HashSet<String> = candidates
        .iter()
        .map(|(_, _, k)| k.path().to_string())
        .collect();
    let mut existing: HashSet<String> = HashSet::new();
    for listing in listings {
        let keys: Vec<BronzeKey> = listing
            .iter()
            .filter_map(|location| {
                if wanted.contains(location.as_ref()) {
                    existing.insert(location.to_string());
                }
                BronzeKey::parse(location)
            })
            .collect();
        if let Some(first) = keys.first() {
            plan.index
                .entry((first.source, first.symbol.clone()))
                .or_default()
                .extend(keys);
        }
    }
    for (name, written_at, key) in candidates {
        if existing.contains(key.path().as_ref()) {
            plan.add_new(&key);
            if written_at >= watermark {
                plan.next_state.recent.insert(name);
            }
        } else if written_at < watermark {
            // Announced but never written: its writer died in between.
            warn!(entry = %name, "bronze manifest entry without its object; ignoring it");
        }
        plan.state_changed = true;
    }
    Ok(plan)
}

/// Adds a whole recompute of each of `dates` from all its bronze: every exchange and symbol
/// with bronze on the date, or in the day before (a window may spill over midnight).
pub(super) async fn repair(
    lake: &Lake,
    plan: &mut SilverPlan,
    dates: BTreeSet<NaiveDate>,
) -> Result<()> {
    let symbol_dirs: Vec<Path> = symbol_dirs(lake, &mut Vec::new())
        .await?
        .into_iter()
        .map(|(_, dir)| dir)
        .collect();
    let mut prefixes = Vec::new();
    for dir in &symbol_dirs {
        for date in &dates {
            for d in [Some(*date), date.pred_opt()].into_iter().flatten() {
                prefixes.push((dir.clone().join(format!("date={d}")), None));
            }
        }
    }
    let known: HashSet<String> = plan
        .index
        .values()
        .flatten()
        .map(|k| k.path().to_string())
        .collect();
    let mut seen = HashSet::new();
    for location in lake.list_keys_many(prefixes).await?.into_iter().flatten() {
        let Some(key) = BronzeKey::parse(&location) else {
            continue;
        };
        let pair = (key.source, key.symbol.clone());
        for d in dates_of_window(key.window_start, key.window_end) {
            if dates.contains(&d) {
                plan.affected.entry(d).or_default().insert(pair.clone());
            }
        }
        if !known.contains(location.as_ref()) && seen.insert(location.to_string()) {
            plan.index.entry(pair).or_default().push(key);
        }
    }
    for d in dates {
        plan.affected.entry(d).or_default();
        plan.repair.insert(d);
    }
    plan.state_changed = true;
    Ok(())
}
