//! Freshness: how long ago the newest complete silver hour of each exchange and symbol ended.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cryptolake_lake::{Lake, hourly_from_batch, paths, read_parquet, silver};
use cryptolake_model::{Exchange, Symbol};

use crate::Result;
use crate::events::Freshness;

/// How many of the newest silver dates are read looking for each pair's newest complete hour.
const DATES_LOOKED_AT: usize = 7;

/// The freshness of `pairs` at `now`, from the newest silver partitions (at most a week of
/// them: a pair with no complete hour in that week has no lag, and is reported as such).
pub async fn measure(
    lake: &Lake,
    pairs: &[(Exchange, Symbol)],
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>> {
    let dates: BTreeSet<_> = match silver::partition_versions(lake).await? {
        Some(v) => v.into_keys().collect(),
        None => silver::list_partition_versions(lake)
            .await?
            .into_keys()
            .collect(),
    };
    let mut newest: BTreeMap<(Exchange, Symbol), DateTime<Utc>> = BTreeMap::new();
    let wanted: BTreeSet<(Exchange, Symbol)> = pairs.iter().cloned().collect();
    for date in dates.iter().rev().take(DATES_LOOKED_AT) {
        let key = paths::silver_partition_file(*date);
        for batch in read_parquet(lake, &key).await? {
            for h in hourly_from_batch(&batch, key.as_ref())? {
                if !h.is_complete() {
                    continue;
                }
                let pair = (h.exchange, h.symbol.clone());
                if !wanted.contains(&pair) {
                    continue;
                }
                let t = newest.entry(pair).or_insert(h.open_time);
                *t = (*t).max(h.open_time);
            }
        }
        if newest.len() == wanted.len() {
            break;
        }
    }
    Ok(pairs
        .iter()
        .map(|(exchange, symbol)| {
            let hour = newest.get(&(*exchange, symbol.clone())).copied();
            Freshness {
                exchange: *exchange,
                symbol: symbol.clone(),
                newest_complete_hour: hour,
                lag: hour.map(|h| {
                    (now - (h + chrono::Duration::hours(1)))
                        .to_std()
                        .unwrap_or_default()
                }),
            }
        })
        .collect())
}
