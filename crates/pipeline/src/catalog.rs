//! What `catalog ddl` and `catalog register` need to know of a lake: where it is, and its
//! first day with silver.

use chrono::NaiveDate;
use cryptolake_lake::{Lake, LakeLocation, paths};

use crate::{Error, Result, Settings};

/// A lake as a catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogLake {
    /// The lake's URL (`file:///…` for a local directory, absolute).
    pub root_url: String,
    /// The first date silver holds, if the lake exists and holds any.
    pub first_silver_day: Option<NaiveDate>,
    /// The catalog's tables (by lake prefix) without a partition yet, in a lake that exists.
    pub empty_tables: Vec<String>,
}

/// The lake the settings name, without creating it: statements can be printed for a lake
/// that does not exist yet (a local directory the pipeline will create).
pub async fn describe(settings: &Settings) -> Result<CatalogLake> {
    if let LakeLocation::Local(path) = &settings.lake
        && !path.is_dir()
    {
        let abs = std::path::absolute(path)
            .map_err(|e| Error::Invalid(format!("lake {}: {e}", settings.lake)))?;
        return Ok(CatalogLake {
            root_url: format!("file://{}", abs.display()),
            first_silver_day: None,
            empty_tables: Vec::new(),
        });
    }
    let lake = Lake::open_existing(&settings.lake, &settings.lake_options())?;
    lake.probe().await?;
    let table = paths::silver_table();
    let first_silver_day = lake
        .list_keys(&table)
        .await?
        .iter()
        .filter_map(|k| paths::partition_file_date(&table, k))
        .min();
    let mut empty_tables = Vec::new();
    for (_, _, prefix, _) in cryptolake_query::ddl::catalog_tables() {
        let (_, partitions) = lake.list_level(&prefix.as_str().into()).await?;
        if partitions.is_empty() {
            empty_tables.push(prefix);
        }
    }
    Ok(CatalogLake {
        root_url: lake.root_url().to_string(),
        first_silver_day,
        empty_tables,
    })
}
