//! Which files of the lake's tables are not what the lake wrote: stray files (anything but a
//! partition's own file, folders that are not `date=YYYY-MM-DD`), damaged files (unreadable, or
//! not the table's columns) and missing ones (recorded by a build's state but gone). Each comes
//! with what the next build does about it. `cryptolake check --files` prints this.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use cryptolake_model::schema;
use futures::StreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::{Lake, Result, paths, read_parquet, state};

/// What is wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    Stray,
    Damaged,
    Missing,
}

impl Problem {
    pub fn as_str(&self) -> &'static str {
        match self {
            Problem::Stray => "stray",
            Problem::Damaged => "damaged",
            Problem::Missing => "missing",
        }
    }
}

/// One file that is not as the lake wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    pub table: &'static str,
    pub key: String,
    pub problem: Problem,
    /// Why, for a damaged file: the reader's error.
    pub detail: String,
    /// What the next build does about it.
    pub action: String,
}

/// A table: its SQL name, prefix and columns.
struct Table {
    name: &'static str,
    prefix: &'static str,
    schema: SchemaRef,
}

fn tables() -> [Table; 11] {
    [
        Table {
            name: "crypto_analytics.ohlcv_1h",
            prefix: paths::SILVER_OHLCV_1H,
            schema: schema::ohlcv_1h(),
        },
        Table {
            name: "crypto_analytics.ohlcv_1m",
            prefix: paths::SILVER_OHLCV_1M,
            schema: schema::ohlcv_1m(),
        },
        Table {
            name: "crypto_gold.ohlcv_1d",
            prefix: paths::GOLD_OHLCV_1D,
            schema: schema::ohlcv_1d(),
        },
        Table {
            name: "crypto_ops.gaps",
            prefix: paths::OPS_GAPS,
            schema: schema::gaps(),
        },
        Table {
            name: "crypto_analytics.funding_rates",
            prefix: paths::SILVER_FUNDING_RATES,
            schema: schema::funding_rates(),
        },
        Table {
            name: "crypto_analytics.mark_ohlcv_1m",
            prefix: paths::SILVER_MARK_OHLCV_1M,
            schema: schema::mark_ohlcv_1m(),
        },
        Table {
            name: "crypto_gold.funding_1d",
            prefix: paths::GOLD_FUNDING_1D,
            schema: schema::funding_1d(),
        },
        Table {
            name: "crypto_ops.funding_gaps",
            prefix: paths::OPS_FUNDING_GAPS,
            schema: schema::funding_gaps(),
        },
        Table {
            name: "crypto_ops.mark_gaps",
            prefix: paths::OPS_MARK_GAPS,
            schema: schema::gaps(),
        },
        Table {
            name: "crypto_ops.runs",
            prefix: paths::OPS_RUNS,
            schema: schema::runs(),
        },
        Table {
            name: "crypto_ops.quality_results",
            prefix: paths::OPS_QUALITY_RESULTS,
            schema: schema::quality_results(),
        },
    ]
}

/// What the next build does about a damaged or missing file of `table` for `date`.
fn repair(table: &str, date: Option<NaiveDate>) -> String {
    let date = date.map_or_else(|| "its date".to_string(), |d| d.to_string());
    match table {
        "crypto_analytics.ohlcv_1h" | "crypto_analytics.ohlcv_1m" => {
            format!("the next silver build rebuilds {date} from bronze")
        }
        "crypto_gold.ohlcv_1d" => format!("the next gold build rebuilds {date} from silver"),
        // The perpetual tables merge new rows into their partitions: the build that meets a
        // damaged one rebuilds the table whole from bronze (its gold and funding gaps are
        // not read back, so only a rebuild replaces them).
        "crypto_analytics.funding_rates"
        | "crypto_analytics.mark_ohlcv_1m"
        | "crypto_ops.mark_gaps" => format!(
            "the next build that brings new rows to {date} meets it and rebuilds the table from bronze; `cryptolake silver --rebuild` rebuilds the perpetual tables at once"
        ),
        "crypto_gold.funding_1d" | "crypto_ops.funding_gaps" => format!(
            "not rebuilt by itself: `cryptolake silver --rebuild` rebuilds the perpetual tables ({date} included) from bronze"
        ),
        "crypto_ops.gaps" => format!(
            "rewritten by the next gap scan of {date}: `cryptolake gaps --from {date} --to {date}`, or a silver build that touches it"
        ),
        _ => "a run record, not rebuilt: move it away, and queries of the table work again"
            .to_string(),
    }
}

/// The date of a partition file key.
fn key_date(key: &str) -> Option<NaiveDate> {
    key.split('/')
        .find_map(|p| p.strip_prefix("date="))
        .and_then(|d| d.parse().ok())
}

const STRAY: &str = "ignored by queries and builds; remove it once you have looked at it";

/// Whether `batch_schema` has every column of `want` with its type.
fn same_columns(want: &SchemaRef, got: &SchemaRef) -> bool {
    want.fields().iter().all(|f| {
        got.field_with_name(f.name())
            .is_ok_and(|g| g.data_type() == f.data_type())
    })
}

/// Reads a partition file whole; `Some(reason)` when it cannot be used.
pub async fn damage(lake: &Lake, key: &Path, want: &SchemaRef) -> Option<String> {
    match read_parquet(lake, key).await {
        Err(e) => Some(e.to_string()),
        Ok(batches) => batches
            .first()
            .filter(|b| !same_columns(want, &b.schema()))
            .map(|_| "its columns are not the table's".to_string()),
    }
}

#[derive(Deserialize)]
struct Recorded {
    #[serde(default)]
    partitions: Option<BTreeMap<NaiveDate, String>>,
    #[serde(default)]
    built_from: Option<BTreeMap<NaiveDate, String>>,
    #[serde(default)]
    minute_partitions: Option<BTreeMap<NaiveDate, String>>,
}

/// Every stray and missing file of the lake's tables, and with `read` every damaged one (each
/// partition file is read whole for that).
pub async fn verify(lake: &Lake, read: bool) -> Result<Vec<FileProblem>> {
    let mut out = Vec::new();
    let mut to_read: Vec<(usize, Path, SchemaRef)> = Vec::new();
    let mut read_names: Vec<&'static str> = Vec::new();
    let mut present: BTreeMap<&'static str, Vec<NaiveDate>> = BTreeMap::new();
    for t in tables() {
        let table = Path::from(t.prefix);
        for meta in lake.list(&table).await? {
            let key = meta.location;
            let rest: Vec<String> = key
                .prefix_match(&table)
                .map(|p| p.map(|x| x.as_ref().to_string()).collect())
                .unwrap_or_default();
            let date = match rest.as_slice() {
                [d, f] if paths::in_layout(&key) && d.starts_with("date=") => {
                    let ok = match paths::one_file_per_partition(t.prefix) {
                        true => f == paths::part_file_name(),
                        false => f.ends_with(".parquet"),
                    };
                    ok.then(|| d["date=".len()..].parse::<NaiveDate>().ok())
                        .flatten()
                }
                _ => None,
            };
            match date {
                None => out.push(FileProblem {
                    table: t.name,
                    key: key.to_string(),
                    problem: Problem::Stray,
                    detail: String::new(),
                    action: STRAY.into(),
                }),
                Some(d) => {
                    present.entry(t.name).or_default().push(d);
                    if read {
                        to_read.push((to_read.len(), key, t.schema.clone()));
                        read_names.push(t.name);
                    }
                }
            }
        }
    }
    let checked: Vec<_> = futures::stream::iter(to_read)
        .map(|(i, key, schema)| async move {
            let d = damage(lake, &key, &schema).await;
            (i, key, d)
        })
        .buffered(8)
        .collect()
        .await;
    for (i, key, d) in checked {
        let name = read_names[i];
        if let Some(detail) = d {
            out.push(FileProblem {
                table: name,
                problem: Problem::Damaged,
                action: repair(name, key_date(key.as_ref())),
                key: key.to_string(),
                detail,
            });
        }
    }
    // What the builds' states record but is gone.
    type Dates = fn(Recorded) -> Option<BTreeMap<NaiveDate, String>>;
    let recorded: [(_, _, _, Dates); 3] = [
        (
            "crypto_analytics.ohlcv_1h",
            paths::silver_state(),
            paths::SILVER_OHLCV_1H,
            |r| r.partitions,
        ),
        (
            "crypto_analytics.ohlcv_1m",
            paths::silver_state(),
            paths::SILVER_OHLCV_1M,
            |r| r.minute_partitions,
        ),
        (
            "crypto_gold.ohlcv_1d",
            paths::gold_state(),
            paths::GOLD_OHLCV_1D,
            |r| r.partitions.or(r.built_from),
        ),
    ];
    for (name, state_key, prefix, dates) in recorded {
        let Some(r) = state::read::<Recorded>(lake, &state_key)
            .await
            .ok()
            .flatten()
        else {
            continue;
        };
        let dates = dates(r).unwrap_or_default();
        let have = present.get(name).cloned().unwrap_or_default();
        for d in dates.keys().filter(|d| !have.contains(d)) {
            out.push(FileProblem {
                table: name,
                key: format!("{prefix}/date={d}/{}", paths::part_file_name()),
                problem: Problem::Missing,
                detail: String::new(),
                action: repair(name, Some(*d)),
            });
        }
    }
    Ok(out)
}
