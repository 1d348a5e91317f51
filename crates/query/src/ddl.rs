//! CREATE statements for the silver and gold tables in other engines' dialects, generated from
//! the same Arrow schemas the writers use, so a catalog can never drift from the files.

use std::fmt::Write;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use cryptolake_model::schema::PARTITION_COLUMN;

use crate::tables;

/// An engine whose DDL we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Athena,
    Trino,
    Spark,
    DuckDb,
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "athena" => Ok(Engine::Athena),
            "trino" => Ok(Engine::Trino),
            "spark" => Ok(Engine::Spark),
            "duckdb" => Ok(Engine::DuckDb),
            other => Err(format!(
                "unknown engine {other:?} (athena, trino, spark, duckdb)"
            )),
        }
    }
}

/// The silver and gold tables: (database, table, path under the lake root, file schema).
pub fn catalog_tables() -> Vec<(&'static str, &'static str, String, SchemaRef)> {
    tables()
        .into_iter()
        .filter(|(db, ..)| *db != "crypto_ops")
        .collect()
}

/// The engine's name for a column type, `None` for a type the tables do not use.
pub fn column_type(engine: Engine, t: &DataType) -> Option<&'static str> {
    Some(match (engine, t) {
        (Engine::DuckDb, DataType::Utf8) => "VARCHAR",
        (Engine::Trino, DataType::Utf8) => "varchar",
        (_, DataType::Utf8) => "string",
        (Engine::Trino, DataType::Float64) => "double",
        (_, DataType::Float64) => "double",
        (Engine::Trino, DataType::Int64) => "bigint",
        (_, DataType::Int64) => "bigint",
        (Engine::Trino | Engine::DuckDb, DataType::Int32) => "integer",
        (_, DataType::Int32) => "int",
        (_, DataType::Boolean) => "boolean",
        // Microseconds since the epoch in UTC (Parquet isAdjustedToUTC).
        (Engine::DuckDb, DataType::Timestamp(TimeUnit::Microsecond, Some(_))) => "TIMESTAMPTZ",
        (Engine::Trino, DataType::Timestamp(TimeUnit::Microsecond, Some(_))) => "timestamp(6)",
        (_, DataType::Timestamp(TimeUnit::Microsecond, Some(_))) => "timestamp",
        (_, DataType::Date32) => "date",
        _ => return None,
    })
}

fn columns(engine: Engine, schema: &SchemaRef, quote: char) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let t = column_type(engine, f.data_type())
                .unwrap_or_else(|| panic!("no {engine:?} type for {}", f.data_type()));
            format!("  {quote}{}{quote} {t}", f.name())
        })
        .collect::<Vec<_>>()
        .join(",\n")
}

/// `text` as the inside of a string literal of `engine`: Hive-based dialects (Athena DDL,
/// Spark) escape with a backslash, Trino and DuckDB double the quote.
pub fn escape(engine: Engine, text: &str) -> String {
    match engine {
        Engine::Athena | Engine::Spark => text.replace('\\', "\\\\").replace('\'', "\\'"),
        Engine::Trino | Engine::DuckDb => text.replace('\'', "''"),
    }
}

/// The statements for every silver and gold table, `root` being the lake's URL
/// (`s3://bucket/prefix`, `file:///...` or a path). `first_day` starts Athena's partition
/// projection.
pub fn ddl(engine: Engine, root: &str, first_day: &str) -> String {
    ddl_with(engine, root, first_day, &[])
}

/// [`ddl`] for a lake in which the tables kept under the prefixes `empty` have no file yet:
/// DuckDB cannot make a view over files that do not exist, so those are left as a comment.
/// The other engines declare them all (their tables are read when queried).
pub fn ddl_with(engine: Engine, root: &str, first_day: &str, empty: &[String]) -> String {
    let root = root.trim_end_matches('/');
    let mut out = String::new();
    let mut databases: Vec<&str> = Vec::new();
    for (db, ..) in catalog_tables() {
        if !databases.contains(&db) {
            databases.push(db);
        }
    }
    for db in &databases {
        let _ = match engine {
            Engine::Athena | Engine::Spark => writeln!(out, "CREATE DATABASE IF NOT EXISTS {db};"),
            Engine::Trino => writeln!(out, "CREATE SCHEMA IF NOT EXISTS hive.{db};"),
            Engine::DuckDb => writeln!(out, "CREATE SCHEMA IF NOT EXISTS {db};"),
        };
    }
    out.push('\n');
    let first_day = escape(engine, first_day);
    for (db, table, path, schema) in catalog_tables() {
        let location = escape(engine, &format!("{root}/{path}"));
        let p = PARTITION_COLUMN;
        let _ = match engine {
            Engine::Athena => writeln!(
                out,
                "CREATE EXTERNAL TABLE IF NOT EXISTS {db}.{table} (\n{}\n)\n\
                 PARTITIONED BY (`{p}` date)\n\
                 STORED AS PARQUET\n\
                 LOCATION '{location}/'\n\
                 TBLPROPERTIES (\n  'parquet.compression'='ZSTD',\n  'projection.enabled'='true',\n  \
                 'projection.{p}.type'='date',\n  'projection.{p}.format'='yyyy-MM-dd',\n  \
                 'projection.{p}.range'='{first_day},NOW',\n  'projection.{p}.interval'='1',\n  \
                 'projection.{p}.interval.unit'='DAYS',\n  \
                 'storage.location.template'='{location}/{p}=${{{p}}}/'\n);\n",
                columns(engine, &schema, '`')
            ),
            Engine::Trino => writeln!(
                out,
                "CREATE TABLE IF NOT EXISTS hive.{db}.{table} (\n{},\n  \"{p}\" date\n)\n\
                 WITH (\n  format = 'PARQUET',\n  partitioned_by = ARRAY['{p}'],\n  \
                 external_location = '{location}'\n);\n\
                 CALL hive.system.sync_partition_metadata('{db}', '{table}', 'FULL');\n",
                columns(engine, &schema, '"')
            ),
            Engine::Spark => writeln!(
                out,
                "CREATE TABLE IF NOT EXISTS {db}.{table} (\n{},\n  `{p}` date\n)\n\
                 USING PARQUET\n\
                 PARTITIONED BY (`{p}`)\n\
                 LOCATION '{location}';\n\
                 MSCK REPAIR TABLE {db}.{table};\n",
                columns(engine, &schema, '`')
            ),
            Engine::DuckDb if empty.contains(&path) => writeln!(
                out,
                "-- {db}.{table}: no files yet under {location}/ (run `cryptolake catalog ddl --engine duckdb` again once it has some)\n"
            ),
            Engine::DuckDb => writeln!(
                out,
                "CREATE OR REPLACE VIEW {db}.{table} AS\n  SELECT * FROM read_parquet('{location}/*/part-00000.parquet', \
                 hive_partitioning = true, hive_types = {{'{p}': DATE}});\n"
            ),
        };
    }
    out
}

/// The (name, type) pairs an Athena CREATE TABLE declares, partition column included: what a
/// test compares with the Parquet files.
pub fn athena_columns(ddl_text: &str, table: &str) -> Vec<(String, String)> {
    let Some(start) = ddl_text.find(&format!(".{table} (")) else {
        return Vec::new();
    };
    let body = &ddl_text[start..];
    let mut out = Vec::new();
    let mut in_columns = false;
    for line in body.lines() {
        let line = line.trim().trim_end_matches(',');
        if line.ends_with('(') && !in_columns {
            in_columns = true;
            continue;
        }
        if in_columns && line.starts_with(')') {
            in_columns = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix("PARTITIONED BY (") {
            let rest = rest.trim_end_matches(')');
            if let Some((name, t)) = rest.split_once(' ') {
                out.push((name.trim_matches('`').to_string(), t.to_string()));
            }
            break;
        }
        if in_columns && let Some((name, t)) = line.split_once(' ') {
            out.push((name.trim_matches('`').to_string(), t.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_every_table_has_a_type_in_every_engine() {
        for engine in [Engine::Athena, Engine::Trino, Engine::Spark, Engine::DuckDb] {
            for (_, _, _, schema) in catalog_tables() {
                for f in schema.fields() {
                    assert!(
                        column_type(engine, f.data_type()).is_some(),
                        "{engine:?} {f}"
                    );
                }
            }
        }
    }

    #[test]
    fn athena_ddl_projects_the_date_partition_from_the_schemas() {
        let text = ddl(Engine::Athena, "s3://b/lake/", "2024-01-01");
        assert!(text.contains("CREATE DATABASE IF NOT EXISTS crypto_analytics;"));
        assert!(text.contains("LOCATION 's3://b/lake/silver/ohlcv_1h/'"));
        assert!(text.contains("'projection.date.range'='2024-01-01,NOW'"));
        assert!(
            text.contains("'storage.location.template'='s3://b/lake/gold/ohlcv_1d/date=${date}/'")
        );
        let cols = athena_columns(&text, "ohlcv_1h");
        let schema = cryptolake_model::schema::ohlcv_1h();
        assert_eq!(cols.len(), schema.fields().len() + 1);
        for (f, (name, t)) in schema.fields().iter().zip(&cols) {
            assert_eq!(f.name(), name);
            assert_eq!(column_type(Engine::Athena, f.data_type()).unwrap(), t);
        }
        assert_eq!(
            cols.last().unwrap(),
            &("date".to_string(), "date".to_string())
        );
        assert_eq!(
            athena_columns(&text, "ohlcv_1d").len(),
            cryptolake_model::schema::ohlcv_1d().fields().len() + 1
        );
    }

    #[test]
    fn other_dialects() {
        let t = ddl(Engine::Trino, "s3://b/x", "2024-01-01");
        assert!(
            t.contains("partitioned_by = ARRAY['date']")
                && t.contains("\"open_time\" timestamp(6)")
        );
        let s = ddl(Engine::Spark, "/data/lake", "2024-01-01");
        assert!(
            s.contains("USING PARQUET") && s.contains("MSCK REPAIR TABLE crypto_gold.ohlcv_1d;")
        );
        let d = ddl(Engine::DuckDb, "/data/lake", "2024-01-01");
        assert!(d.contains(
            "read_parquet('/data/lake/silver/ohlcv_1h/*/part-00000.parquet', hive_partitioning = true"
        ));
        assert!("oracle".parse::<Engine>().is_err());
    }
}
