//! `catalog register --glue`: the Glue databases and tables through the AWS SDK, with the same
//! columns and partition projection as `catalog ddl --engine athena`.

use anyhow::{Context, Result};
use aws_config::BehaviorVersion;
use aws_sdk_glue::Client;
use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, TableInput};
use cryptolake_model::schema::PARTITION_COLUMN;
use cryptolake_pipeline::query::ddl::{Engine, catalog_tables, column_type};

fn describe(db: &str) -> &'static str {
    match db {
        "crypto_analytics" => "cryptolake silver (hourly OHLCV per exchange and symbol)",
        _ => "cryptolake gold (daily OHLCV per exchange and symbol)",
    }
}

/// The Glue table for one silver or gold table under `root` (`s3://bucket/prefix`).
fn table_input(
    table: &str,
    location: &str,
    schema: &arrow::datatypes::SchemaRef,
    first_day: &str,
) -> Result<TableInput> {
    let p = PARTITION_COLUMN;
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let t = column_type(Engine::Athena, f.data_type())
                .with_context(|| format!("no Athena type for {f}"))?;
            Ok(Column::builder().name(f.name()).r#type(t).build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let storage = StorageDescriptor::builder()
        .location(format!("{location}/"))
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .build(),
        )
        .set_columns(Some(columns))
        .build();
    let mut input = TableInput::builder()
        .name(table)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage)
        .partition_keys(Column::builder().name(p).r#type("date").build()?);
    for (k, v) in [
        ("classification", "parquet".to_string()),
        ("parquet.compression", "ZSTD".to_string()),
        ("projection.enabled", "true".to_string()),
        (&format!("projection.{p}.type"), "date".to_string()),
        (&format!("projection.{p}.format"), "yyyy-MM-dd".to_string()),
        (&format!("projection.{p}.range"), format!("{first_day},NOW")),
        (&format!("projection.{p}.interval"), "1".to_string()),
        (&format!("projection.{p}.interval.unit"), "DAYS".to_string()),
        (
            "storage.location.template",
            format!("{location}/{p}=${{{p}}}/"),
        ),
    ] {
        input = input.parameters(k, v);
    }
    Ok(input.build()?)
}

/// Creates the databases and tables that are missing and updates the ones that exist.
/// Credentials and region come from the standard AWS chain; `endpoint` replaces AWS's.
pub async fn register(root: &str, first_day: &str, endpoint: Option<&str>) -> Result<String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let client = Client::new(&loader.load().await);
    let root = root.trim_end_matches('/');
    let mut report = String::new();
    let mut databases: Vec<&str> = Vec::new();
    for (db, ..) in catalog_tables() {
        if !databases.contains(&db) {
            databases.push(db);
        }
    }
    for db in databases {
        let exists = match client.get_database().name(db).send().await {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("Glue GetDatabase {db}"))),
        };
        if exists {
            report.push_str(&format!("database {db}: exists\n"));
        } else {
            client
                .create_database()
                .database_input(
                    DatabaseInput::builder()
                        .name(db)
                        .description(describe(db))
                        .build()?,
                )
                .send()
                .await
                .with_context(|| format!("Glue CreateDatabase {db}"))?;
            report.push_str(&format!("database {db}: created\n"));
        }
    }
    for (db, table, path, schema) in catalog_tables() {
        let input = table_input(table, &format!("{root}/{path}"), &schema, first_day)?;
        let exists = match client
            .get_table()
            .database_name(db)
            .name(table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                false
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("Glue GetTable {db}.{table}")));
            }
        };
        if exists {
            client
                .update_table()
                .database_name(db)
                .table_input(input)
                .send()
                .await
                .with_context(|| format!("Glue UpdateTable {db}.{table}"))?;
            report.push_str(&format!("table {db}.{table}: updated\n"));
        } else {
            client
                .create_table()
                .database_name(db)
                .table_input(input)
                .send()
                .await
                .with_context(|| format!("Glue CreateTable {db}.{table}"))?;
            report.push_str(&format!("table {db}.{table}: created\n"));
        }
    }
    Ok(report)
}
