//! Gold: daily OHLCV per exchange and symbol (`gold/ohlcv_1d`), built from silver only.
//!
//! The plan compares each silver partition's current version (its e-tag, as silver recorded it
//! in its state after writing) with the version the gold partition was last built from
//! (`_state/gold/ohlcv_1d.json`); only dates whose silver changed are rebuilt, and a gold
//! partition whose silver is gone is removed. Reading silver's record instead of listing the
//! table keeps an hourly plan from touching every date of history; `--rebuild` lists.

pub mod aggregate;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use cryptolake_model::DailyCandle;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::lease::Lease;
use crate::{Lake, Result, daily_to_batch, paths, state, write_parquet};

pub const SORTED_BY: [usize; 2] = [0, 1];

#[derive(Debug, Default, Serialize, Deserialize)]
struct GoldState {
    /// Date -> version of the silver partition it was built from.
    built_from: BTreeMap<NaiveDate, String>,
    /// Date -> version of the gold partition as written: one that is gone or changed since is
    /// rebuilt from silver. Empty in states from older builds (only a missing file counts).
    #[serde(default)]
    written: BTreeMap<NaiveDate, String>,
}

/// The gold partitions and their versions as the last build wrote them; `None` when the state
/// does not say (no build yet, or a state from a build that did not record what it wrote).
pub async fn partition_versions(lake: &Lake) -> Result<Option<BTreeMap<NaiveDate, String>>> {
    let Some(s) = crate::state::read::<GoldState>(lake, &paths::gold_state()).await? else {
        return Ok(None);
    };
    Ok((s.written.len() == s.built_from.len()).then_some(s.written))
}

#[derive(Debug, Clone, Default)]
pub struct GoldBuild {
    rebuild: bool,
}

#[derive(Debug)]
pub struct GoldPlan {
    pub rebuild: bool,
    /// Dates to (re)build, with the silver version they will be built from.
    pub build: BTreeMap<NaiveDate, String>,
    /// Dates whose silver partition is gone.
    pub remove: Vec<NaiveDate>,
    previous: GoldState,
    /// Dates rebuilt because their gold partition was missing or changed.
    pub repair: Vec<NaiveDate>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct GoldMetrics {
    pub partitions_written: usize,
    pub partitions_deleted: usize,
    pub rows_written: usize,
    pub changed_dates: Vec<NaiveDate>,
    /// The requests the build (with its checks) made to the store; set by whoever ran it.
    pub requests: crate::RequestCounts,
}

impl GoldBuild {
    pub fn new() -> GoldBuild {
        GoldBuild::default()
    }

    pub fn with_rebuild(mut self, rebuild: bool) -> Self {
        self.rebuild = rebuild;
        self
    }

    pub async fn plan(&self, lake: &Lake) -> Result<GoldPlan> {
        let previous_state = state::read::<GoldState>(lake, &paths::gold_state())
            .await?
            .unwrap_or_default();
        let previous = &previous_state.built_from;
        // The versions silver recorded when it last wrote or checked each partition; a
        // rebuild, or a lake whose silver state predates them, lists the table instead.
        let recorded = match self.rebuild {
            true => None,
            false => crate::silver::partition_versions(lake).await?,
        };
        let silver = match recorded {
            Some(v) => v,
            None => crate::silver::list_partition_versions(lake).await?,
        };
        let mut build: BTreeMap<NaiveDate, String> = silver
            .iter()
            .filter(|(d, v)| self.rebuild || previous.get(*d) != Some(*v))
            .map(|(d, v)| (*d, v.clone()))
            .collect();
        // One listing of gold: a partition gone or changed since it was written is rebuilt.
        let mut repair = Vec::new();
        if !self.rebuild && !previous.is_empty() {
            let table = paths::gold_table();
            let listed = crate::silver::list_versions(lake, table).await?;
            for (d, v) in &silver {
                let written = previous_state.written.get(d);
                let changed = match listed.get(d) {
                    None => previous.contains_key(d),
                    Some(now) => written.is_some_and(|w| w != now),
                };
                if changed && !build.contains_key(d) {
                    build.insert(*d, v.clone());
                    repair.push(*d);
                }
            }
            if !repair.is_empty() {
                tracing::warn!(dates = ?repair, "gold partitions missing or changed since they were written; rebuilding them from silver");
            }
        }
        let mut remove: Vec<NaiveDate> = previous
            .keys()
            .filter(|d| !silver.contains_key(*d))
            .copied()
            .collect();
        if self.rebuild {
            for meta in lake.list(&paths::gold_table()).await? {
                if let Some(d) = paths::partition_file_date(&paths::gold_table(), &meta.location)
                    && !silver.contains_key(&d)
                    && !remove.contains(&d)
                {
                    remove.push(d);
                }
            }
        }
        Ok(GoldPlan {
            rebuild: self.rebuild,
            build,
            remove,
            previous: previous_state,
            repair,
        })
    }

    pub async fn execute(
        &self,
        lake: &Lake,
        plan: GoldPlan,
        lease: Option<&Lease>,
    ) -> Result<GoldMetrics> {
        let swept = lake.sweep_staging()?;
        if swept > 0 {
            tracing::warn!(
                files = swept,
                "removed staged files left by an interrupted write"
            );
        }
        let mut metrics = GoldMetrics::default();
        let GoldState {
            mut built_from,
            mut written,
        } = if plan.rebuild {
            GoldState::default()
        } else {
            plan.previous
        };
        // Dates are independent: each is read, aggregated and written by its own task, a few
        // at a time, so both cores work.
        let tasks = plan.build.iter().map(|(date, silver_version)| {
            let (lake, date, version) = (lake.clone(), *date, silver_version.clone());
            crate::in_task(format!("gold build for {date}"), async move {
                let (rows, gold_version) = build_date(&lake, date).await?;
                Ok((date, version, rows, gold_version))
            })
        });
        let mut done =
            futures::stream::iter(tasks).buffered(crate::dates_in_flight(lake, DATES_IN_FLIGHT));
        while let Some(r) = done.next().await {
            let (date, version, rows, gold_version) = r?;
            metrics.partitions_written += 1;
            metrics.rows_written += rows;
            metrics.changed_dates.push(date);
            built_from.insert(date, version);
            written.insert(date, gold_version);
            info!(%date, rows, "gold partition written");
        }
        for date in &plan.remove {
            lake.delete(&paths::gold_partition_file(*date)).await?;
            built_from.remove(date);
            written.remove(date);
            metrics.partitions_deleted += 1;
            metrics.changed_dates.push(*date);
        }
        if let Some(lease) = lease {
            lease.check().await?;
        }
        if !plan.build.is_empty() || !plan.remove.is_empty() || plan.rebuild {
            state::write(
                lake,
                &paths::gold_state(),
                &GoldState {
                    built_from,
                    written,
                },
            )
            .await?;
        }
        Ok(metrics)
    }
}

/// At least how many gold dates are built at once.
const DATES_IN_FLIGHT: usize = 4;

/// Rebuilds one gold date from its silver partition; returns the rows written and the new
/// partition's version.
async fn build_date(lake: &Lake, date: NaiveDate) -> Result<(usize, String)> {
    let silver_key = paths::silver_partition_file(date);
    let hours = crate::parquet_io::decode_hours(&silver_key, lake.get(&silver_key).await?)?;
    // Silver partitions are sorted by exchange, symbol, open_time.
    let days: Vec<DailyCandle> = hours
        .chunk_by(crate::silver::same_rows_group)
        .filter_map(|group| aggregate::daily(date, group))
        .collect();
    let key = paths::gold_partition_file(date);
    let version = write_parquet(lake, &key, &daily_to_batch(&days)?, &SORTED_BY).await?;
    Ok((days.len(), version))
}
