//! Gold `crypto_gold.funding_1d`: per exchange, symbol and UTC day, the sum of the day's
//! funding rates, their number, the smallest and the largest, and whether the day is
//! complete. Built from silver `funding_rates` alone, for the days whose silver partition
//! (or the next day's, which says whether the day's last interval closed) changed.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use chrono::{Duration, NaiveDate};
use cryptolake_model::{Exchange, Symbol, day_start, schema};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{FundingRow, funding_from_batch};
use crate::columns::Builder;
use crate::lease::Lease;
use crate::{Error, Lake, Result, paths, read_parquet, state, write_parquet};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GoldState {
    /// The `funding_rates` partition versions the gold days were built from.
    silver: BTreeMap<NaiveDate, String>,
}

/// One row of `crypto_gold.funding_1d`.
#[derive(Debug, Clone, PartialEq)]
pub struct FundingDay {
    pub exchange: Exchange,
    pub symbol: Symbol,
    pub date: NaiveDate,
    pub rate_sum: f64,
    pub events: i32,
    pub rate_min: f64,
    pub rate_max: f64,
    /// Every slot of the day at the symbol's interval is present: the day's first at
    /// midnight, no stretch between its slots (and the next day's first, at midnight) longer
    /// than the interval in force.
    pub is_complete: bool,
}

/// What a `funding_1d` build did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FundingGoldMetrics {
    pub changed_dates: Vec<NaiveDate>,
    pub rows: usize,
}

/// Builds `funding_1d` from the silver partitions that changed since the last build.
#[derive(Debug, Clone, Default)]
pub struct FundingGold {
    rebuild: bool,
}

impl FundingGold {
    pub fn new() -> FundingGold {
        FundingGold::default()
    }

    pub fn with_rebuild(mut self, rebuild: bool) -> Self {
        self.rebuild = rebuild;
        self
    }

    pub async fn run(&self, lake: &Lake, lease: Option<&Lease>) -> Result<FundingGoldMetrics> {
        let silver = crate::silver::list_versions(lake, paths::silver_funding_table()).await?;
        let before = match self.rebuild {
            true => GoldState::default(),
            false => state::read::<GoldState>(lake, &paths::funding_gold_state())
                .await?
                .unwrap_or_default(),
        };
        let mut dates: BTreeSet<NaiveDate> = BTreeSet::new();
        for (d, v) in &silver {
            if before.silver.get(d) != Some(v) {
                dates.insert(*d);
            }
        }
        dates.extend(before.silver.keys().filter(|d| !silver.contains_key(d)));
        let earlier: Vec<NaiveDate> = dates.iter().filter_map(|d| d.pred_opt()).collect();
        dates.extend(earlier);
        if self.rebuild {
            let table = paths::gold_funding_table();
            for key in lake.list_keys(&table).await? {
                if let Some(d) = paths::partition_file_date(&table, &key) {
                    dates.insert(d);
                }
            }
        }
        let mut m = FundingGoldMetrics::default();
        for date in dates {
            let rows = match silver.contains_key(&date) {
                true => read_day(lake, date).await?,
                false => Vec::new(),
            };
            let next = match date.succ_opt().filter(|d| silver.contains_key(d)) {
                Some(d) => read_day(lake, d).await?,
                None => Vec::new(),
            };
            let days = aggregate(date, &rows, &next);
            let key = paths::partition_file(&paths::gold_funding_table(), date);
            if let Some(l) = lease {
                l.check().await?;
            }
            if days.is_empty() {
                if lake.head(&key).await?.is_some() {
                    lake.delete(&key).await?;
                    m.changed_dates.push(date);
                }
                continue;
            }
            m.rows += days.len();
            write_parquet(lake, &key, &funding_days_to_batch(&days)?, &[0, 1]).await?;
            m.changed_dates.push(date);
        }
        if let Some(l) = lease {
            l.check().await?;
        }
        state::write(lake, &paths::funding_gold_state(), &GoldState { silver }).await?;
        info!(
            dates = m.changed_dates.len(),
            rows = m.rows,
            "funding gold built"
        );
        Ok(m)
    }
}

async fn read_day(lake: &Lake, date: NaiveDate) -> Result<Vec<FundingRow>> {
    let key = paths::partition_file(&paths::silver_funding_table(), date);
    let mut rows = Vec::new();
    for b in read_parquet(lake, &key).await? {
        rows.extend(funding_from_batch(&b, key.as_ref())?);
    }
    Ok(rows)
}

/// The day's rows per pair, from its silver rows and the next day's (for the stretch after
/// the day's last slot).
pub fn aggregate(date: NaiveDate, rows: &[FundingRow], next_day: &[FundingRow]) -> Vec<FundingDay> {
    let start = day_start(date);
    let end = start + Duration::days(1);
    let mut by_pair: BTreeMap<(Exchange, Symbol), Vec<&FundingRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.slot >= start && r.slot < end) {
        by_pair
            .entry((r.exchange, r.symbol.clone()))
            .or_default()
            .push(r);
    }
    by_pair
        .into_iter()
        .map(|((exchange, symbol), mut day)| {
            day.sort_by_key(|r| r.slot);
            let following = next_day
                .iter()
                .find(|r| r.exchange == exchange && r.symbol == symbol && r.slot == end);
            let stretches_ok = day
                .iter()
                .copied()
                .chain(following)
                .collect::<Vec<_>>()
                .windows(2)
                .all(|w| {
                    let hours = (w[1].slot - w[0].slot).num_seconds() as f64 / 3600.0;
                    w[1].interval_hours
                        .is_some_and(|iv| (hours - iv).abs() < 1e-9)
                });
            let rates = day.iter().map(|r| r.rate);
            FundingDay {
                exchange,
                symbol,
                date,
                rate_sum: rates.clone().sum(),
                events: day.len() as i32,
                rate_min: rates.clone().fold(f64::INFINITY, f64::min),
                rate_max: rates.fold(f64::NEG_INFINITY, f64::max),
                is_complete: day[0].slot == start && following.is_some() && stretches_ok,
            }
        })
        .collect()
}

pub fn funding_days_to_batch(rows: &[FundingDay]) -> Result<RecordBatch> {
    Builder::new(rows)
        .text(|r| r.exchange.as_str())
        .text(|r| r.symbol.as_str())
        .float64(|r| r.rate_sum)
        .int32(|r| r.events)
        .float64(|r| r.rate_min)
        .float64(|r| r.rate_max)
        .boolean(|r| r.is_complete)
        .finish(schema::funding_1d())
}

/// The rows of a `funding_1d` partition of `date` (`what` names its file in errors).
pub fn funding_days_from_batch(
    batch: &RecordBatch,
    date: NaiveDate,
    what: &str,
) -> Result<Vec<FundingDay>> {
    let col = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::Data {
            key: what.to_string(),
            reason: format!("column {name} is missing"),
        })
    };
    let bad = |reason: String| Error::Data {
        key: what.to_string(),
        reason,
    };
    let text = |name: &str| -> Result<StringArray> {
        col(name)?
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| bad(format!("{name} is not text")))
    };
    let float = |name: &str| -> Result<Float64Array> {
        col(name)?
            .as_any()
            .downcast_ref::<Float64Array>()
            .cloned()
            .ok_or_else(|| bad(format!("{name} is not a double")))
    };
    let (exchange, symbol) = (text("exchange")?, text("symbol")?);
    let (sum, min, max) = (float("rate_sum")?, float("rate_min")?, float("rate_max")?);
    let events = col("events")?
        .as_any()
        .downcast_ref::<Int32Array>()
        .cloned()
        .ok_or_else(|| bad("events is not an integer".into()))?;
    let complete = col("is_complete")?
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| bad("is_complete is not a boolean".into()))?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(FundingDay {
                exchange: exchange
                    .value(i)
                    .parse()
                    .map_err(|e: cryptolake_model::Error| bad(e.to_string()))?,
                symbol: Symbol::parse(symbol.value(i)).map_err(|e| bad(e.to_string()))?,
                date,
                rate_sum: sum.value(i),
                events: events.value(i),
                rate_min: min.value(i),
                rate_max: max.value(i),
                is_complete: complete.is_valid(i) && complete.value(i),
            })
        })
        .collect()
}
