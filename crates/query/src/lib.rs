//! SQL over the lake, the way Athena queries it on AWS: `crypto_analytics` holds silver,
//! `crypto_gold` holds gold, `crypto_ops` holds run history. The session is read-only: DDL, DML (including `COPY`) and
//! session statements are refused before planning reaches any table.

pub mod ddl;
mod output;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use cryptolake_lake::{Lake, paths};
use cryptolake_model::schema;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::object_store::ObjectStoreUrl;

pub use output::{OutputFormat, render};

/// The SQL databases and their tables: (database, table, lake prefix, file schema).
pub fn tables() -> Vec<(&'static str, &'static str, String, SchemaRef)> {
    vec![
        (
            "crypto_analytics",
            "ohlcv_1h",
            paths::SILVER_OHLCV_1H.to_string(),
            schema::ohlcv_1h(),
        ),
        (
            "crypto_gold",
            "ohlcv_1d",
            paths::GOLD_OHLCV_1D.to_string(),
            schema::ohlcv_1d(),
        ),
        (
            "crypto_ops",
            "runs",
            paths::OPS_RUNS.to_string(),
            schema::runs(),
        ),
        (
            "crypto_ops",
            "quality_results",
            paths::OPS_QUALITY_RESULTS.to_string(),
            schema::quality_results(),
        ),
        (
            "crypto_ops",
            "gaps",
            paths::OPS_GAPS.to_string(),
            schema::gaps(),
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Query(String),
    #[error(
        "read-only: {0}. cryptolake sql only reads the lake; tables change through ingest, silver and gold"
    )]
    ReadOnly(String),
    #[error("output: {0}")]
    Output(#[from] arrow::error::ArrowError),
    #[error("cannot open table {table}: {reason}")]
    Table { table: String, reason: String },
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        let msg = e.strip_backtrace();
        if msg.contains("DDL not supported")
            || msg.contains("DML not supported")
            || msg.contains("Statement not supported")
        {
            Error::ReadOnly(
                msg.trim_start_matches("Error during planning: ")
                    .to_string(),
            )
        } else {
            Error::Query(msg)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A read-only SQL session over one lake.
pub struct QueryEngine {
    ctx: SessionContext,
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl QueryEngine {
    pub async fn open(lake: &Lake) -> Result<QueryEngine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "crypto_analytics");
        let ctx = SessionContext::new_with_config(config);
        if let Some((bucket_url, store)) = lake.bucket_store() {
            let url = ObjectStoreUrl::parse(bucket_url)?;
            ctx.runtime_env()
                .register_object_store(url.as_ref(), store.clone());
        }
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| Error::Query("default catalog missing".into()))?;
        for (db, _, _, _) in tables() {
            if catalog.schema(db).is_none() {
                catalog.register_schema(db, Arc::new(MemorySchemaProvider::new()))?;
            }
        }
        for (db, table, prefix, file_schema) in tables() {
            let table_err = |reason: String| Error::Table {
                table: format!("{db}.{table}"),
                reason,
            };
            let url = ListingTableUrl::parse(format!("{}/", lake.url_of(&prefix.as_str().into())))
                .map_err(|e| table_err(e.strip_backtrace()))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![(
                    schema::PARTITION_COLUMN.to_string(),
                    DataType::Date32,
                )]);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(file_schema);
            let provider =
                ListingTable::try_new(config).map_err(|e| table_err(e.strip_backtrace()))?;
            ctx.register_table(TableReference::partial(db, table), Arc::new(provider))?;
        }
        Ok(QueryEngine { ctx })
    }

    /// Runs one read-only statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let df = self.ctx.sql_with_options(sql, read_only()).await?;
        Ok(df.collect().await?)
    }
}
