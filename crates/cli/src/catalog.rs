//! `cryptolake catalog`: the tables in other engines' catalogs.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use cryptolake_pipeline::Settings;
use cryptolake_pipeline::catalog::CatalogLake;
use cryptolake_pipeline::query::ddl::{Engine, ddl_with};

use crate::flags::CatalogCmd;

/// The lake's first day with silver, else today: where partition projection starts.
fn first_day(t: &CatalogLake, given: Option<&str>) -> Result<String> {
    if let Some(d) = given {
        let day = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| anyhow!("--first-day {d:?}: expected YYYY-MM-DD"))?;
        return Ok(day.to_string());
    }
    Ok(t.first_silver_day
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
        .to_string())
}

/// Where the engine finds the lake: `--location`, else this lake's URL (a local path for
/// DuckDB, which does not take `file://` URLs).
fn location(t: &CatalogLake, engine: Engine, given: Option<&str>) -> String {
    let root = given.map_or_else(|| t.root_url.clone(), str::to_string);
    match (engine, root.strip_prefix("file://")) {
        (Engine::DuckDb, Some(path)) => path.to_string(),
        _ => root,
    }
}

pub async fn run(settings: &Settings, cmd: &CatalogCmd) -> Result<ExitCode> {
    let t = &cryptolake_pipeline::catalog::describe(settings).await?;
    match cmd {
        CatalogCmd::Ddl {
            engine,
            location: loc,
            first_day: first,
        } => {
            let engine = *engine;
            let first = first_day(t, first.as_deref())?;
            print!(
                "{}",
                ddl_with(
                    engine,
                    &location(t, engine, loc.as_deref()),
                    &first,
                    &t.empty_tables
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        CatalogCmd::Register {
            glue,
            location: loc,
            first_day: first,
            endpoint,
        } => {
            if !glue {
                bail!("say which catalog: --glue");
            }
            let first = first_day(t, first.as_deref())?;
            let root = location(t, Engine::Athena, loc.as_deref());
            if !root.starts_with("s3://") {
                bail!(
                    "Glue tables must point at S3: pass --location s3://bucket/prefix (the lake is {root})"
                );
            }
            register_glue(&root, &first, endpoint.as_deref()).await
        }
    }
}

#[cfg(not(feature = "glue"))]
async fn register_glue(_root: &str, _first: &str, _endpoint: Option<&str>) -> Result<ExitCode> {
    bail!(
        "this cryptolake was built without Glue support; build it with `cargo build --release --features glue`"
    )
}

#[cfg(feature = "glue")]
async fn register_glue(root: &str, first: &str, endpoint: Option<&str>) -> Result<ExitCode> {
    let report = crate::glue::register(root, first, endpoint).await?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
