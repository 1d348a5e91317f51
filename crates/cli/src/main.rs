//! The `cryptolake` command line: a front end over the pipeline library. It turns flags into
//! calls on [`cryptolake_pipeline::Pipeline`] and results into output; the only place with
//! `anyhow`, exit codes and argument parsing. Flags are in [`flags`], dispatch in
//! [`dispatch`], printing in [`output`].

mod backfill;
mod catalog;
mod demo;
mod dispatch;
mod flags;
#[cfg(feature = "glue")]
mod glue;
mod output;
mod progress;
mod serve;
mod shell;

use std::process::ExitCode;

use clap::Parser;

fn init_logging(quiet: bool) {
    use std::io::IsTerminal;
    let filter = std::env::var("CRYPTOLAKE_LOG").unwrap_or_else(|_| {
        if quiet {
            "warn".to_string()
        } else {
            "warn,cryptolake=info,cryptolake_pipeline=info,cryptolake_lake=info,cryptolake_sources=warn"
                .to_string()
        }
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = flags::Cli::parse();
    init_logging(dispatch::quiet(&cli.command));
    let runtime = match cryptolake_pipeline::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cryptolake_model::redact(&output::one_line(&e)));
            ExitCode::FAILURE
        }
    }
}
