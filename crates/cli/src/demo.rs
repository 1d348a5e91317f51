//! `cryptolake demo`: the whole pipeline offline, against the simulated exchange over HTTP.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::Duration;
use cryptolake_model::{Exchange, Symbol};
use cryptolake_model::{date_of, day_start, hour_start};
use cryptolake_pipeline::query::{OutputFormat, render};
use cryptolake_pipeline::sim::{Budget, SimClock, SimMarket, SimOptions, SimServer};
use cryptolake_pipeline::{
    FundingRequest, GapRefetch, IngestRequest, Options, Pipeline, Prices, Settings,
};

use crate::flags::{Cli, Command};
use crate::output::{ingest_summary, transform_summary};

/// Example queries shown at the end: (what it shows, SQL).
pub const EXAMPLES: [(&str, &str); 6] = [
    (
        "Daily candles (gold)",
        "SELECT exchange, symbol, date, open, high, low, close, round(volume, 2) AS volume, hours_present, is_complete \
         FROM crypto_gold.ohlcv_1d ORDER BY exchange, symbol, date",
    ),
    (
        "Hourly coverage per exchange and symbol (silver)",
        "SELECT exchange, symbol, count(*) AS hours, min(open_time) AS first_hour, max(open_time) AS last_hour, \
         sum(minutes_present) AS minutes FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
    ),
    (
        "Fifteen-minute candles from the minutes (silver ohlcv_1m): Binance BTC-USDT's newest hour",
        "SELECT date_bin(INTERVAL '15 minutes', open_time, TIMESTAMP '1970-01-01T00:00:00Z') AS bucket, \
         first_value(open ORDER BY open_time) AS open, max(high) AS high, min(low) AS low, \
         last_value(close ORDER BY open_time) AS close, round(sum(volume), 2) AS volume, count(*) AS minutes \
         FROM crypto_analytics.ohlcv_1m WHERE exchange = 'binance' AND symbol = 'BTC-USDT' AND open_time >= \
         (SELECT date_trunc('hour', max(open_time)) FROM crypto_analytics.ohlcv_1m WHERE exchange = 'binance' AND symbol = 'BTC-USDT') \
         GROUP BY bucket ORDER BY bucket",
    ),
    (
        "Gaps by status (crypto_ops.gaps): Coinbase omits minutes without trades",
        "SELECT exchange, symbol, status, count(*) AS gaps, sum(minutes) AS minutes \
         FROM crypto_ops.gaps GROUP BY exchange, symbol, status ORDER BY exchange, symbol, status",
    ),
    (
        "Funding of one perpetual per venue, per day (gold funding_1d, from silver funding_rates)",
        "SELECT exchange, symbol, date, events, round(rate_sum * 100, 4) AS paid_pct, \
         round(rate_min * 100, 4) AS min_pct, round(rate_max * 100, 4) AS max_pct, is_complete \
         FROM crypto_gold.funding_1d ORDER BY exchange, symbol, date",
    ),
    (
        "Top traded symbol by quote volume per day",
        "SELECT date, symbol, round(quote_volume, 0) AS quote_volume FROM ( \
           SELECT date, symbol, quote_volume, row_number() OVER (PARTITION BY date ORDER BY quote_volume DESC) AS rank \
           FROM crypto_gold.ohlcv_1d WHERE exchange = 'binance') WHERE rank = 1 ORDER BY date",
    ),
];

/// The demo: a simulated exchange on loopback, the exchanges pointed at it, then the
/// pipeline's own steps over HTTP.
pub async fn run(cli: &Cli, mut settings: Settings) -> Result<ExitCode> {
    let Command::Demo {
        days,
        seed,
        serve,
        http,
    } = &cli.command
    else {
        unreachable!("demo::run is called for the demo command")
    };
    let (days, seed) = (*days, *seed);
    if days == 0 || days > 60 {
        bail!("--days must be between 1 and 60");
    }
    let market = SimMarket::default_market(seed);
    // The simulator is local: it and the clients talking to it get a generous budget, so the
    // demo is not paced by the real exchanges' published limits.
    let demo_budget = Budget {
        weight: 10_000,
        interval: std::time::Duration::from_secs(1),
    };
    let mut options = SimOptions::new(SimClock::Real);
    for budget in options.budgets.values_mut() {
        *budget = demo_budget;
    }
    let sim = SimServer::start_with(market.clone(), options, 0).await?;
    for (exchange, s) in settings.exchanges.iter_mut() {
        s.base_url = sim.base_url();
        s.budget = demo_budget;
        s.symbols = market.listed(*exchange);
    }
    let options = Options {
        lock_wait: std::time::Duration::from_secs(cli.wait_lock),
        ..Options::default()
    };
    let p = Pipeline::open(settings, options).await?;
    let continuing = p.claim_demo(seed).await?;
    println!(
        "simulated exchange (Binance, Coinbase, Kraken, OKX and Bybit formats) listening on {}",
        sim.base_url()
    );

    let now = p.now();
    let run_id = p.new_run_id();
    let started = std::time::Instant::now();
    let exchanges = [
        Exchange::Binance,
        Exchange::Coinbase,
        Exchange::Kraken,
        Exchange::Okx,
        Exchange::Bybit,
    ];
    for exchange in exchanges {
        let since = match exchange {
            // Kraken serves only its latest 720 minutes (the client counts on 715): from the
            // start of the hour ten hours ago is at most 659 minutes back, whatever the minute.
            Exchange::Kraken => hour_start(now - Duration::hours(10)),
            _ => day_start(date_of(now) - Duration::days(i64::from(days))),
        };
        let req = IngestRequest {
            // A second demo continues where the first stopped.
            since: (!continuing).then_some(since),
            ..IngestRequest::hourly(exchange, &run_id, now)
        };
        let m = p.ingest_strict(&req, &|_, _| {}).await?;
        print!("{}", ingest_summary(exchange, &m));
    }
    // Funding and mark prices of one perpetual per venue, over the same days.
    for exchange in [
        Exchange::BinanceFutures,
        Exchange::OkxSwap,
        Exchange::BybitLinear,
    ] {
        let symbol = Symbol::parse("BTC-USDT")?;
        let req = FundingRequest {
            symbols: Some(vec![symbol.clone()]),
            since: Some(day_start(date_of(now) - Duration::days(i64::from(days)))),
            until: Some(now),
            ..FundingRequest::hourly(exchange, &run_id, now)
        };
        let marks = IngestRequest {
            symbols: Some(vec![symbol.clone()]),
            since: Some(day_start(date_of(now) - Duration::days(i64::from(days)))),
            prices: Prices::Mark,
            ..IngestRequest::hourly(exchange, &run_id, now)
        };
        let m = p.ingest_strict(&marks, &|_, _| {}).await?;
        println!(
            "{exchange}: mark price of {symbol}: {} minute(s) in {} request(s)",
            m.rows, m.pages
        );
        let outcomes = p.ingest_funding(&req, &|_, _| {}).await?;
        for o in &outcomes {
            if let Some(e) = &o.error {
                bail!("{exchange} funding of {}: {e}", o.symbol);
            }
            println!(
                "{exchange}: funding of {}: {} event(s) in {} request(s)",
                o.symbol, o.rows, o.pages
            );
        }
    }
    // Coinbase leaves out minutes without trades: the gap report lists them as unconfirmed,
    // and one refetch confirms them, as the hourly job would.
    let refetch: Vec<GapRefetch> = exchanges
        .iter()
        .map(|e| GapRefetch::all(*e, None))
        .collect();
    let t = p.transform(&refetch, &run_id).await?;
    print!("{}", transform_summary(&t));
    sim.stop().await;
    println!(
        "pipeline done in {:.1}s; lake at {}\n",
        started.elapsed().as_secs_f64(),
        p.lake_url()
    );

    let engine = p.query_engine().await?;
    for (title, sql) in EXAMPLES {
        println!("-- {title}\n{sql}");
        let batches = engine.query(sql).await?;
        println!("{}\n", render(&batches, OutputFormat::Table)?);
    }
    let lake_flag = if p.lake_url().ends_with("/lake") && std::path::Path::new("lake").exists() {
        String::new()
    } else {
        format!(" --lake {}", p.lake_url())
    };
    println!(
        "Keep exploring (in the source tree, `cargo run --release --bin cryptolake --` stands for `cryptolake`):\n  \
         cryptolake{lake_flag} sql \"SELECT * FROM crypto_gold.ohlcv_1d LIMIT 10\"\n  \
         cryptolake{lake_flag} sql   # interactive shell\n  \
         cryptolake{lake_flag} serve --no-schedule   # the dashboard"
    );
    if *serve {
        return crate::serve::run(p, *http, false, None, None).await;
    }
    Ok(ExitCode::SUCCESS)
}
