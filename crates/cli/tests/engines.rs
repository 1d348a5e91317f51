//! Other engines read what cryptolake writes: DuckDB and Spark run the golden queries over a
//! lake built by the binary and must answer as `cryptolake sql` does; the types the Athena DDL
//! declares must be the Parquet files' own.

mod support;

use std::path::Path;
use std::process::Command;

use cryptolake_pipeline::query::ddl::athena_columns;
use parquet::basic::{LogicalType, TimeUnit, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use support::run::*;

/// The demo's lake: three exchanges, silver, gold, gaps.
fn demo_lake(d: &Path) -> String {
    let lake = d.join("lake").display().to_string();
    ok(d, &["--lake", &lake, "demo", "--days", "2"]);
    lake
}

/// What a column declared with an Athena type must be in Parquet.
fn parquet_type_for(athena: &str) -> Option<(Physical, Option<LogicalType>)> {
    Some(match athena {
        "string" => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
        "double" => (Physical::DOUBLE, None),
        "bigint" => (Physical::INT64, None),
        "int" => (Physical::INT32, None),
        "boolean" => (Physical::BOOLEAN, None),
        "timestamp" => (
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
        ),
        _ => return None,
    })
}

#[test]
fn athena_ddl_types_are_the_parquet_files_types() {
    let d = tempfile::tempdir().unwrap();
    let lake = demo_lake(d.path());
    let ddl = ok(
        d.path(),
        &["--lake", &lake, "catalog", "ddl", "--engine", "athena"],
    );
    for (table, dir) in [
        ("ohlcv_1h", "silver/ohlcv_1h"),
        ("ohlcv_1d", "gold/ohlcv_1d"),
    ] {
        let declared = athena_columns(&ddl, table);
        assert!(!declared.is_empty(), "{ddl}");
        let (partition, columns) = declared.split_last().unwrap();
        assert_eq!(partition, &("date".to_string(), "date".to_string()));
        let table_dir = Path::new(&lake).join(dir);
        let mut files = 0;
        for part in std::fs::read_dir(&table_dir).unwrap() {
            let part = part.unwrap().path();
            // The partition column lives in the path, as a date.
            let name = part.file_name().unwrap().to_string_lossy().to_string();
            let day = name.strip_prefix("date=").expect("date= directory");
            chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a date");
            let file = std::fs::File::open(part.join("part-00000.parquet")).unwrap();
            let reader = SerializedFileReader::new(file).unwrap();
            let schema = reader.metadata().file_metadata().schema_descr();
            assert_eq!(schema.num_columns(), columns.len(), "{table}");
            for (i, (name, athena)) in columns.iter().enumerate() {
                let col = schema.column(i);
                assert_eq!(col.name(), name, "{table} column {i}");
                let (physical, logical) = parquet_type_for(athena)
                    .unwrap_or_else(|| panic!("{table}.{name}: Athena type {athena} unmapped"));
                assert_eq!(col.physical_type(), physical, "{table}.{name}");
                match (&logical, col.logical_type_ref()) {
                    (None, None) => {}
                    (None, Some(LogicalType::Integer { .. })) => {}
                    (want, have) => assert_eq!(want.as_ref(), have, "{table}.{name}"),
                }
            }
            files += 1;
        }
        assert!(files > 0, "{table} has partitions");
    }
}

#[test]
fn duckdb_and_spark_answer_the_golden_queries_as_cryptolake_does() {
    // Spark runs on Java 17.
    support::tool("java", "openjdk-17-jre-headless");
    let python = support::venv_with(&["duckdb==2.0.0", "pyspark==4.3.0"], &|| {
        support::venv_imports("duckdb, pyspark")
    });
    let d = tempfile::tempdir().unwrap();
    let lake = demo_lake(d.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engines/golden.py");
    let out = Command::new(python)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_cryptolake"))
        .arg(&lake)
        .env("PYSPARK_PYTHON", support::venv_python())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Four golden queries, two engines, all the same.
    assert_eq!(stdout.matches(" same").count(), 8, "{stdout}");
}
