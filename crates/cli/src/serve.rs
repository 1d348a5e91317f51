//! `cryptolake serve`: flags and signals into a call of the server, its address and runs into
//! output.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use cryptolake_pipeline::{CronSchedule, Pipeline};
use cryptolake_server::metrics::Metrics;
use cryptolake_server::pg::PgOptions;
use cryptolake_server::{ServeOptions, serve, with_metrics};

/// Serves `p` on `http` (else the configured address), running the hourly job on `cron` (else
/// the configured one) unless `schedule` is false, until SIGINT or SIGTERM; with the
/// PostgreSQL protocol on `pg` (else the configured address, if any).
pub async fn run(
    p: Pipeline,
    http: Option<SocketAddr>,
    schedule: bool,
    cron: Option<&CronSchedule>,
    pg: Option<SocketAddr>,
) -> Result<ExitCode> {
    let server = &p.settings().server;
    let pg_addr = pg.or(server.pg);
    let pg = pg_addr.map(|addr| PgOptions {
        addr,
        max_connections: server.pg_max_connections,
        users: server.pg_users.clone(),
        tls: server.pg_tls.clone(),
    });
    let addr = http.unwrap_or(server.http);
    let cron = schedule.then(|| cron.unwrap_or(&p.settings().schedule.cron).clone());
    let metrics = Arc::new(Metrics::default());
    let log: cryptolake_pipeline::EventSink = Arc::new(|e| tracing::info!("step {}", e.line()));
    let p = with_metrics(p, metrics.clone(), Some(log));
    let signals = cryptolake_pipeline::schedule::shutdown_signals()?;
    let tls = pg.as_ref().is_some_and(|o| o.tls.is_some());
    let signed = pg.as_ref().is_some_and(|o| !o.users.is_empty());
    let options = ServeOptions {
        addr,
        schedule: cron.clone(),
        pg,
    };
    let announce = |a: SocketAddr, pg: Option<SocketAddr>| {
        let mode = match &cron {
            Some(c) => format!("running the hourly job on \"{c}\" (UTC)"),
            None => "read-only, no scheduled runs".to_string(),
        };
        println!("serving the dashboard on http://{a}/ ({mode}); Ctrl-C stops");
        if let Some(pg) = pg {
            println!(
                "serving the PostgreSQL protocol on {pg} ({}, {}): psql \"host={} port={} dbname=cryptolake{}\"",
                if tls { "TLS" } else { "no TLS" },
                if signed {
                    "SCRAM-SHA-256 sign-in"
                } else {
                    "loopback, no sign-in"
                },
                pg.ip(),
                pg.port(),
                if signed { " user=NAME" } else { "" }
            );
        }
    };
    serve(p, metrics, options, signals, &announce, &|s| {
        print!("{}", crate::output::run_summary(s))
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a password (one line) from stdin and prints its hash for `password_hash`.
pub fn pg_password() -> Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!(
            "no password on stdin: pipe one line, e.g. `read -s pw; echo \"$pw\" | cryptolake pg-password`"
        );
    }
    println!("{}", cryptolake_server::pg::hash_password(password));
    Ok(ExitCode::SUCCESS)
}
