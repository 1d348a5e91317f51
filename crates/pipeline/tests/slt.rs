//! The SQL surface pinned with sqllogictest: every file in `tests/slt/` runs against one small,
//! deterministic lake (the simulated market, seed 7, three exchanges, one hourly run), once
//! through each engine a front end uses:
//! - `files`: [`Pipeline::query_engine`], as `cryptolake sql` reads the lake;
//! - `memory`: [`Pipeline::served_query_engine`], from the read model, as `serve`'s HTTP API;
//! - `pg`: the same with the PostgreSQL catalog installed, as the wire protocol.
//!
//! A record meant for one engine says so with `onlyif pg` (or `skipif pg`). Every other record
//! must answer the same through all three.
//!
//! After an intended change, rewrite the expected results (then read the diff):
//! `CRYPTOLAKE_SLT_UPDATE=1 cargo nextest run -p cryptolake-pipeline --test slt`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use cryptolake_model::Exchange;
use cryptolake_pipeline::Pipeline;
use cryptolake_query::QueryEngine;
use sqllogictest::harness::{Arguments, Failed, Trial};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

const ENGINES: [&str; 3] = ["files", "memory", "pg"];

/// The lake every file reads, built once for all of them.
struct Fixture {
    _dir: tempfile::TempDir,
    _sim: cryptolake_sources::sim::SimServer,
    pipeline: Pipeline,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

async fn fixture() -> &'static Fixture {
    static LAKE: tokio::sync::OnceCell<Fixture> = tokio::sync::OnceCell::const_new();
    LAKE.get_or_init(|| async {
        let (dir, sim, pipeline) = support::on_sim(
            7,
            &[Exchange::Binance, Exchange::Coinbase, Exchange::Kraken],
            "2024-03-04T14:05:00Z",
        )
        .await;
        let summary = pipeline.run_once().await;
        assert!(summary.problems().is_empty(), "{:?}", summary.problems());
        Fixture {
            _dir: dir,
            _sim: sim,
            pipeline,
        }
    })
    .await
}

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

/// One engine over the fixture's lake.
struct Lake {
    name: &'static str,
    engine: QueryEngine,
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

/// A cell as the files write it: `NULL`, `(empty)` for an empty string, else arrow's display.
fn cell(formatter: &ArrayFormatter, array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    let text = formatter.value(row).to_string();
    if text.is_empty() {
        "(empty)".into()
    } else {
        text
    }
}

#[async_trait::async_trait]
impl AsyncDB for Lake {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let batches = self
            .engine
            .query(sql)
            .await
            .map_err(|e| SqlError(e.to_string()))?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::Rows {
                types: vec![],
                rows: vec![],
            });
        };
        let schema = first.schema();
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, c)| cell(f, c.as_ref(), row))
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    fn engine_name(&self) -> &str {
        self.name
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

async fn engine(name: &'static str) -> Lake {
    let p = &fixture().await.pipeline;
    let engine = match name {
        "files" => p.query_engine().await.unwrap(),
        _ => p.served_query_engine().await.unwrap(),
    };
    if name == "pg" {
        cryptolake_query::postgres::install(engine.context()).unwrap();
    }
    Lake { name, engine }
}

/// Rewrites the expected results in `path` that `runner`'s engine answers otherwise.
async fn update<M>(runner: &mut Runner<Lake, M>, path: &Path) -> Result<(), Failed>
where
    M: sqllogictest::MakeConnection<Conn = Lake>,
{
    runner
        .update_test_file(
            path,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::default_column_validator,
        )
        .await
        .map_err(|e| Failed::from(e.to_string()))
}

fn run_file(path: &Path, name: &'static str) -> Result<(), Failed> {
    runtime().block_on(async {
        let mut runner = Runner::new(move || async move { Ok::<_, SqlError>(engine(name).await) });
        runner.add_label(name);
        let updating = std::env::var_os("CRYPTOLAKE_SLT_UPDATE").is_some();
        if updating && name != "files" {
            // One engine writes the file; the others check it on the next run.
            return Ok(());
        }
        let outcome = if updating {
            // Then once more through the wire protocol's engine, for its own records.
            let mut pg = Runner::new(|| async { Ok::<_, SqlError>(engine("pg").await) });
            pg.add_label("pg");
            let first = update(&mut runner, path).await;
            let second = update(&mut pg, path).await;
            pg.shutdown_async().await;
            first.and(second)
        } else {
            runner
                .run_file_async(path)
                .await
                .map_err(|e| Failed::from(e.display(false).to_string()))
        };
        runner.shutdown_async().await;
        outcome
    })
}

fn main() {
    let args = Arguments::from_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let mut trials = Vec::new();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        for name in ENGINES {
            let file = file.clone();
            trials.push(Trial::test(format!("{stem}::{name}"), move || {
                run_file(&file, name)
            }));
        }
    }
    sqllogictest::harness::run(&args, trials).exit();
}
