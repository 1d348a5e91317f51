//! `cryptolake serve`: flags and signals into a call of the server, its address and runs into
//! output.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use cryptolake_pipeline::Pipeline;
use cryptolake_server::metrics::Metrics;
use cryptolake_server::{ServeOptions, serve, with_metrics};

/// Serves `p` on `http` (else the configured address), running the hourly job on `cron` (else
/// the configured one) unless `schedule` is false, until SIGINT or SIGTERM.
pub async fn run(
    p: Pipeline,
    http: Option<&str>,
    schedule: bool,
    cron: Option<&str>,
) -> Result<ExitCode> {
    let addr: SocketAddr = match http {
        Some(h) => h
            .parse()
            .with_context(|| format!("--http {h:?}: expected an address like 127.0.0.1:8080"))?,
        None => p.settings().server.http,
    };
    let cron = schedule.then(|| {
        cron.map(str::to_string)
            .unwrap_or_else(|| p.settings().schedule.cron.clone())
    });
    let metrics = Arc::new(Metrics::default());
    let log: cryptolake_pipeline::EventSink = Arc::new(|e| tracing::info!("step {}", e.line()));
    let p = with_metrics(p, metrics.clone(), Some(log));
    let signals = cryptolake_pipeline::schedule::shutdown_signals()?;
    let options = ServeOptions {
        addr,
        schedule: cron.clone(),
    };
    let announce = |a: SocketAddr| {
        let mode = match &cron {
            Some(c) => format!("running the hourly job on {c:?} (UTC)"),
            None => "read-only, no scheduled runs".to_string(),
        };
        println!("serving the dashboard on http://{a}/ ({mode}); Ctrl-C stops");
    };
    serve(p, metrics, options, signals, &announce, &|s| {
        print!("{}", crate::run_summary(s))
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
