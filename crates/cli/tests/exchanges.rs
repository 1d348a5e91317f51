//! Every exchange end to end through the binary and the simulated exchange over HTTP: backfill
//! with progress and resume, a 20% fault rate within the request budget, Kraken's 720-minute
//! limit, the gap report, 418 bans, and Binance archive import.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_sources::ExchangeClient;
use cryptolake_sources::limit::Budget;
use cryptolake_sources::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use sha2::Digest;
use support::run::*;

const SEED: u64 = 9;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lake_arg(d: &Path) -> String {
    d.join("lake").display().to_string()
}

/// Runs the binary on the test's lake.
fn on_lake(d: &Path, args: &[&str], envs: &[(String, String)]) -> Run {
    let lake = lake_arg(d);
    let mut all = vec!["--lake", lake.as_str()];
    all.extend_from_slice(args);
    cryptolake_with(d, &all, envs)
}

/// [`on_lake`] off the async test's threads, so the simulated exchange keeps serving.
fn on_lake_async(
    d: &Path,
    args: &[&str],
    envs: &[(String, String)],
) -> tokio::task::JoinHandle<Run> {
    let d = d.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs = envs.to_vec();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        on_lake(&d, &args, &envs)
    })
}

fn must(r: Run, what: &str) -> String {
    assert_eq!(r.code, 0, "{what} failed:\n{}\n{}", r.stdout, r.stderr);
    r.stdout
}

/// Silver rows per (exchange, symbol): (hours, minutes present, volume).
fn silver_totals(d: &Path) -> BTreeMap<(String, String), (i64, i64, f64)> {
    let out = must(
        on_lake(
            d,
            &[
                "sql",
                "--format",
                "csv",
                "SELECT exchange, symbol, count(*) AS hours, sum(minutes_present) AS minutes, sum(volume) AS volume \
                 FROM crypto_analytics.ohlcv_1h GROUP BY exchange, symbol ORDER BY exchange, symbol",
            ],
            &[],
        ),
        "sql",
    );
    csv_rows(&out)
        .into_iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone()),
                (
                    r[2].parse().unwrap(),
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// The market's own count of minutes with trades (what Coinbase serves) and total volume over
/// `[from, to)`.
fn market_totals(
    m: &SimMarket,
    ex: Exchange,
    s: &Symbol,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    with_zero: bool,
) -> (i64, f64) {
    let r8 = |x: f64| format!("{x:.8}").parse::<f64>().unwrap();
    let mut t = from;
    let (mut n, mut v) = (0, 0.0);
    while t < to {
        let c = m.candle_on(ex, s, t).unwrap();
        if with_zero || c.volume > 0.0 {
            n += 1;
            v += r8(c.volume);
        }
        t += Duration::minutes(1);
    }
    (n, v)
}

/// The pages of the gap refetch a backfill reports.
fn refetch_pages(out: &str) -> u64 {
    out.split("gap refetch: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_through_twenty_percent_faults_within_budget() {
    let d = tempfile::tempdir().unwrap();
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T12:00:30Z")));
    // Tight budgets, enforced by the exchange (429 past them) and given to the client.
    let binance = Budget {
        weight: 16,
        interval: StdDuration::from_secs(1),
    };
    let coinbase = Budget {
        weight: 6,
        interval: StdDuration::from_secs(1),
    };
    options.budgets.insert(Exchange::Binance, binance);
    options.budgets.insert(Exchange::Coinbase, coinbase);
    options.faults = FaultPlan {
        delay: StdDuration::from_millis(1500),
        ..FaultPlan::random(0.2, 7)
    };
    let market = SimMarket::default_market(SEED);
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    let envs = env(&[
        ("CRYPTOLAKE_BINANCE_WEIGHT_LIMIT", "16"),
        ("CRYPTOLAKE_BINANCE_WEIGHT_INTERVAL", "1s"),
        ("CRYPTOLAKE_COINBASE_WEIGHT_LIMIT", "6"),
        ("CRYPTOLAKE_COINBASE_WEIGHT_INTERVAL", "1s"),
        ("CRYPTOLAKE_INGEST_REQUEST_TIMEOUT", "1s"),
    ]);
    let (from, to) = (t("2024-03-01T00:00:00Z"), t("2024-03-04T00:00:00Z"));
    let backfill = |exchange: &str, symbols: &str| {
        on_lake_async(
            d.path(),
            &[
                "backfill",
                "--exchange",
                exchange,
                "--symbols",
                symbols,
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-03",
                "--base-url",
                &url,
            ],
            &envs,
        )
    };
    let out = must(
        backfill("binance", "BTC-USDT,ETH-USDT,SOL-USDT")
            .await
            .unwrap(),
        "binance backfill",
    );
    assert!(out.contains("18 pages to fetch"), "{out}");
    assert!(out.contains("backfill complete"), "{out}");
    assert!(out.contains("0 records quarantined in 0 objects"), "{out}");
    let out = must(
        backfill("coinbase", "BTC-USD,ETH-USD").await.unwrap(),
        "coinbase backfill",
    );
    assert!(out.contains("backfill complete"), "{out}");

    // Every fault kind happened, and the exchange never saw more than the budget.
    let (b, c) = (sim.stats(Exchange::Binance), sim.stats(Exchange::Coinbase));
    let mut seen: Vec<&str> = b.faults.keys().chain(c.faults.keys()).copied().collect();
    seen.sort();
    seen.dedup();
    // A short page is a fault of the venues that page newest first only.
    let mut all: Vec<&str> = Fault::RANDOM
        .iter()
        .filter(|f| f.applies_to(Exchange::Binance))
        .map(|f| f.as_str())
        .collect();
    all.sort();
    assert_eq!(seen, all, "binance {b:?} coinbase {c:?}");
    assert!(b.max_window_weight <= binance.weight, "{b:?}");
    assert!(c.max_window_weight <= coinbase.weight, "{c:?}");
    assert_eq!((b.over_budget, c.over_budget), (0, 0), "{b:?} {c:?}");

    // Every candle exactly once: minutes and volume equal the market's own.
    let silver = silver_totals(d.path());
    for s in ["BTC-USDT", "ETH-USDT", "SOL-USDT"] {
        let sym = Symbol::parse(s).unwrap();
        let (n, v) = market_totals(&market, Exchange::Binance, &sym, from, to, true);
        let got = silver[&("binance".to_string(), s.to_string())];
        assert_eq!((got.0, got.1), (72, n), "{s}");
        assert!(close(got.2, v), "{s}: {} vs {v}", got.2);
    }
    for s in ["BTC-USD", "ETH-USD"] {
        let sym = Symbol::parse(s).unwrap();
        let (n, v) = market_totals(&market, Exchange::Coinbase, &sym, from, to, false);
        let got = silver[&("coinbase".to_string(), s.to_string())];
        assert_eq!(
            got.1, n,
            "{s}: Coinbase serves exactly the minutes with trades"
        );
        assert!(close(got.2, v), "{s}: {} vs {v}", got.2);
    }
    sim.stop().await;
}

/// The four newest-first markets, the symbols each test backfills there.
const NEWEST_FIRST: [(Exchange, &str); 4] = [
    (Exchange::Okx, "BTC-USDT,ETH-USDT"),
    (Exchange::OkxSwap, "BTC-USDT"),
    (Exchange::Bybit, "BTC-USDT,ETH-USDT"),
    (Exchange::BybitLinear, "SOL-USDT"),
];

#[tokio::test(flavor = "multi_thread")]
async fn okx_and_bybit_backfill_through_twenty_percent_faults_within_budget() {
    let d = tempfile::tempdir().unwrap();
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T12:00:30Z")));
    let budget = Budget {
        weight: 8,
        interval: StdDuration::from_secs(1),
    };
    let mut vars = vec![(
        "CRYPTOLAKE_INGEST_REQUEST_TIMEOUT".to_string(),
        "1s".to_string(),
    )];
    for (ex, _) in NEWEST_FIRST {
        options.budgets.insert(ex, budget);
        let var = ex.as_str().replace('-', "_").to_uppercase();
        vars.push((format!("CRYPTOLAKE_{var}_WEIGHT_LIMIT"), "8".into()));
        vars.push((format!("CRYPTOLAKE_{var}_WEIGHT_INTERVAL"), "1s".into()));
    }
    // Every kind of fault, the short page among them, on one request in five.
    options.faults = FaultPlan {
        delay: StdDuration::from_millis(1500),
        ..FaultPlan::random(0.2, 5)
    };
    let market = SimMarket::default_market(SEED);
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    for (ex, symbols) in NEWEST_FIRST {
        let out = must(
            on_lake_async(
                d.path(),
                &[
                    "backfill",
                    "--exchange",
                    ex.as_str(),
                    "--symbols",
                    symbols,
                    "--from",
                    "2024-03-01",
                    "--to",
                    "2024-03-02",
                    "--base-url",
                    &url,
                ],
                &vars,
            )
            .await
            .unwrap(),
            ex.as_str(),
        );
        assert!(out.contains("backfill complete"), "{ex}: {out}");
        assert!(
            out.contains("0 records quarantined in 0 objects"),
            "{ex}: {out}"
        );
        // Complete from the fetch itself: no minute was left for the gap refetch to repair
        // (a short page taken as the end of its window would leave some).
        assert!(!out.contains("gap refetch"), "{ex}: {out}");
    }
    let mut seen: Vec<&str> = Vec::new();
    for (ex, _) in NEWEST_FIRST {
        let s = sim.stats(ex);
        assert!(s.max_window_weight <= budget.weight, "{ex}: {s:?}");
        assert_eq!(s.over_budget, 0, "{ex}: {s:?}");
        seen.extend(s.faults.keys().copied());
    }
    seen.sort();
    seen.dedup();
    let mut all: Vec<&str> = Fault::RANDOM.iter().map(|f| f.as_str()).collect();
    all.sort();
    assert_eq!(seen, all);

    // Every minute exactly once, with the market's own volume.
    let (from, to) = (t("2024-03-01T00:00:00Z"), t("2024-03-03T00:00:00Z"));
    let silver = silver_totals(d.path());
    for (ex, symbols) in NEWEST_FIRST {
        for s in symbols.split(',') {
            let sym = Symbol::parse(s).unwrap();
            let (n, v) = market_totals(&market, ex, &sym, from, to, true);
            let got = silver[&(ex.to_string(), s.to_string())];
            assert_eq!((got.0, got.1), (48, n), "{ex} {s}");
            assert!(close(got.2, v), "{ex} {s}: {} vs {v}", got.2);
        }
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_finds_where_history_starts_in_a_bounded_search() {
    let d = tempfile::tempdir().unwrap();
    let sym = Symbol::parse("ETH-USDT").unwrap();
    let listed = t("2024-02-20T13:37:00Z");
    let mut market = SimMarket::default_market(SEED);
    for (ex, _) in NEWEST_FIRST {
        market = market.with_listing(ex, &sym, listed);
    }
    let sim = SimServer::start(
        market.clone(),
        SimClock::Fixed(t("2024-03-04T12:00:30Z")),
        0,
    )
    .await
    .unwrap();
    let url = sim.base_url();
    for ex in [Exchange::Okx, Exchange::BybitLinear] {
        let sent = sim.stats(ex).requests;
        // A year asked for, history from 20 February: found by search, not walked.
        let run = on_lake_async(
            d.path(),
            &[
                "backfill",
                "--exchange",
                ex.as_str(),
                "--symbols",
                "ETH-USDT",
                "--from",
                "2023-03-01",
                "--to",
                "2024-02-21",
                "--base-url",
                &url,
            ],
            &env(&[("CRYPTOLAKE_LOG", "warn,cryptolake=info")]),
        )
        .await
        .unwrap();
        // Not a terminal: progress comes as log lines, part by part; a perpetual market's
        // mark prices and funding have theirs.
        let parts: Vec<&str> = match ex.is_perpetual() {
            true => vec!["candles", "mark prices", "funding"],
            false => vec!["candles"],
        };
        for part in &parts {
            let line = format!("backfill progress exchange={ex} part=\"{part}\" symbol=ETH-USDT");
            assert!(
                run.stderr.contains(&line),
                "{ex}: no progress of {part}:\n{}",
                run.stderr
            );
        }
        assert_eq!(
            run.stderr.contains("part=\"mark prices\""),
            ex.is_perpetual(),
            "{}",
            run.stderr
        );
        let out = must(run, ex.as_str());
        assert!(
            out.contains(&format!(
                "ETH-USDT: {ex} history starts at 2024-02-20T13:37:00+00:00, later than --from"
            )),
            "{out}"
        );
        // 2023-03-01 up to the end of 2024-02-21: 358 days of windows. The first and last
        // window, the halvings, and the older part of the window the listing falls in.
        let windows = 358 * 1440 / ExchangeClient::max_window_minutes(ex) + 1;
        let bound = 3 + (windows as f64).log2().ceil() as u64;
        let searched: u64 = out
            .split("(found in ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            searched <= bound,
            "{ex}: {searched} requests, bound {bound}"
        );
        // The pages then start at the listing: the day and a half of history, nothing more.
        let pages = (24 * 60 - (13 * 60 + 37)) / ExchangeClient::max_window_minutes(ex)
            + 1
            + 1440 / ExchangeClient::max_window_minutes(ex)
            + 1;
        // A perpetual market's backfill asks the same windows for its mark prices, and its
        // funding in a request or two (nothing before the listing).
        let pages = match ex.is_perpetual() {
            true => 2 * pages + 2,
            false => pages,
        };
        let asked = sim.stats(ex).requests - sent;
        assert!(
            asked <= searched + pages as u64 + 4,
            "{ex}: {asked} requests for {pages} pages and {searched} searching"
        );
        let silver = silver_totals(d.path());
        let got = silver[&(ex.to_string(), "ETH-USDT".to_string())];
        let (n, v) = market_totals(&market, ex, &sym, listed, t("2024-02-22T00:00:00Z"), true);
        assert_eq!(got.1, n, "{ex}: every minute from the listing");
        assert!(close(got.2, v), "{ex}");
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_market_through_binance_okx_and_bybit_gives_the_same_silver_and_gold() {
    let d = tempfile::tempdir().unwrap();
    let market = SimMarket::default_market(SEED).with_shared_prices();
    let sim = SimServer::start(market, SimClock::Fixed(t("2024-03-04T12:00:30Z")), 0)
        .await
        .unwrap();
    let url = sim.base_url();
    for ex in ["binance", "okx", "bybit", "okx-swap", "bybit-linear"] {
        must(
            on_lake_async(
                d.path(),
                &[
                    "backfill",
                    "--exchange",
                    ex,
                    "--symbols",
                    "ETH-USDT",
                    "--from",
                    "2024-03-01",
                    "--to",
                    "2024-03-01",
                    "--base-url",
                    &url,
                ],
                &[],
            )
            .await
            .unwrap(),
            ex,
        );
    }
    must(on_lake(d.path(), &["gold"], &[]), "gold");
    let query = |sql: &str| {
        let out = must(
            on_lake(d.path(), &["sql", "--format", "csv", sql], &[]),
            sql,
        );
        let mut by: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for row in csv_rows(&out) {
            by.entry(row[0].clone())
                .or_default()
                .push(row[1..].to_vec());
        }
        by
    };
    // Everything but the trade count, which OKX and Bybit do not give.
    let silver = query(
        "SELECT exchange, open_time, open, high, low, close, volume, round(quote_volume, 4), minutes_present, trade_count IS NULL \
         FROM crypto_analytics.ohlcv_1h ORDER BY exchange, open_time",
    );
    let gold = query(
        "SELECT exchange, date, open, high, low, close, volume, round(quote_volume, 4), is_complete \
         FROM crypto_gold.ohlcv_1d ORDER BY exchange, date",
    );
    assert_eq!(silver.len(), 5, "{silver:?}");
    let without_count = |rows: &Vec<Vec<String>>| -> Vec<Vec<String>> {
        rows.iter().map(|r| r[..r.len() - 1].to_vec()).collect()
    };
    let binance = &silver["binance"];
    assert_eq!(binance.len(), 24);
    assert!(
        binance.iter().all(|r| r.last().unwrap() == "false"),
        "Binance counts trades"
    );
    for ex in ["okx", "bybit", "okx-swap", "bybit-linear"] {
        assert_eq!(without_count(&silver[ex]), without_count(binance), "{ex}");
        assert!(
            silver[ex].iter().all(|r| r.last().unwrap() == "true"),
            "{ex}"
        );
        assert_eq!(gold[ex], gold["binance"], "{ex}");
    }
    assert_eq!(gold["binance"].len(), 1);
    assert_eq!(gold["binance"][0].last().unwrap(), "true", "a complete day");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_resumes_and_coinbase_gaps_are_confirmed_once() {
    let d = tempfile::tempdir().unwrap();
    let market = SimMarket::default_market(SEED);
    let sim = SimServer::start(
        market.clone(),
        SimClock::Fixed(t("2024-03-04T12:00:30Z")),
        0,
    )
    .await
    .unwrap();
    let url = sim.base_url();
    let args = |to: &'static str| {
        let url = url.clone();
        let d = d.path().to_path_buf();
        move || {
            on_lake(
                &d,
                &[
                    "backfill",
                    "--exchange",
                    "coinbase",
                    "--symbols",
                    "SOL-USD",
                    "--from",
                    "2024-03-01",
                    "--to",
                    to,
                    "--base-url",
                    &url,
                    "--no-progress",
                ],
                &[],
            )
        }
    };
    let out = must(
        tokio::task::spawn_blocking(args("2024-03-01"))
            .await
            .unwrap(),
        "first",
    );
    // One day in 300-minute pages, then one refetch of the omitted minutes to confirm them.
    assert!(out.contains("5 pages to fetch"), "{out}");
    assert!((1..=5).contains(&refetch_pages(&out)), "{out}");
    // Requests that were answered (not refused for being over budget: the previous process
    // spent part of this second's budget, and the exchange's 429 is retried).
    let answered = || sim.requests() - sim.stats(Exchange::Coinbase).over_budget;
    let requests = answered();

    // A longer range fetches only what is new; confirmed gaps are not fetched again.
    let second = tokio::task::spawn_blocking(args("2024-03-02"))
        .await
        .unwrap();
    let out = must(second, "second");
    assert!(out.contains("1440 minutes already in bronze"), "{out}");
    assert!(out.contains("5 pages to fetch"), "{out}");
    let refetched = refetch_pages(&out);
    assert!((1..=5).contains(&refetched), "{out}");
    assert_eq!(
        answered() - requests,
        5 + refetched,
        "only the new day and its one confirmation:\n{out}"
    );
    let requests = answered();
    let out = must(
        tokio::task::spawn_blocking(args("2024-03-02"))
            .await
            .unwrap(),
        "third",
    );
    assert!(out.contains("0 pages to fetch"), "{out}");
    assert!(!out.contains("gap refetch"), "{out}");
    assert_eq!(answered(), requests, "nothing left to fetch or confirm");

    // The gap report: exactly the minutes the market has without trades, confirmed.
    let report = must(
        on_lake(
            d.path(),
            &["gaps", "--exchange", "coinbase", "--format", "csv"],
            &[],
        ),
        "gaps",
    );
    let rows = csv_rows(&report);
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r[5] == "confirmed" && r[6] == "2"),
        "{report}"
    );
    let reported: i64 = rows.iter().map(|r| r[4].parse::<i64>().unwrap()).sum();
    let sym = Symbol::parse("SOL-USD").unwrap();
    let (with_trades, _) = market_totals(
        &market,
        Exchange::Coinbase,
        &sym,
        t("2024-03-01T00:00:00Z"),
        t("2024-03-03T00:00:00Z"),
        false,
    );
    assert_eq!(reported, 2 * 1440 - with_trades);
    // The same through SQL.
    let sql = must(
        on_lake(
            d.path(),
            &[
                "sql",
                "--format",
                "csv",
                "SELECT sum(minutes) AS m FROM crypto_ops.gaps WHERE status = 'confirmed'",
            ],
            &[],
        ),
        "sql",
    );
    assert_eq!(csv_rows(&sql), vec![vec![reported.to_string()]]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_ingestion_is_reported_and_refetched_by_run() {
    let d = tempfile::tempdir().unwrap();
    let sim = SimServer::start(SimMarket::default_market(SEED), SimClock::Real, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    let envs = env(&[
        ("CRYPTOLAKE_BINANCE_BASE_URL", url.as_str()),
        ("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT"),
    ]);
    // Two ingests that leave hour 2..3 of the last six hours out, as a failed run would.
    let base = cryptolake_model::hour_start(Utc::now()) - Duration::hours(6);
    let at = move |h: i64| (base + Duration::hours(h)).to_rfc3339();
    let missing = (
        (base + Duration::hours(2))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string(),
        (base + Duration::hours(3))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string(),
    );
    let d2 = d.path().to_path_buf();
    let (before, run, after) = tokio::task::spawn_blocking(move || {
        for (since, until) in [(at(0), at(2)), (at(3), at(5))] {
            must(
                on_lake(
                    &d2,
                    &["ingest", "--since", &since, "--until", &until],
                    &envs,
                ),
                "ingest",
            );
        }
        must(on_lake(&d2, &["silver"], &envs), "silver");
        let before = must(on_lake(&d2, &["gaps", "--format", "csv"], &envs), "gaps");
        let run = must(on_lake(&d2, &["run"], &envs), "run");
        let after = must(on_lake(&d2, &["gaps"], &envs), "gaps");
        (before, run, after)
    })
    .await
    .unwrap();
    assert_eq!(
        csv_rows(&before),
        vec![vec![
            "binance".to_string(),
            "BTC-USDT".into(),
            missing.0,
            missing.1,
            "60".into(),
            "missing".into(),
            "0".into()
        ]],
        "{before}"
    );
    assert!(run.contains("gap refetch: 1 pages, 60 candles"), "{run}");
    assert!(after.contains("0 gaps, 0 minutes"), "{after}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kraken_says_plainly_what_it_cannot_serve() {
    let d = tempfile::tempdir().unwrap();
    let sim = SimServer::start(SimMarket::default_market(SEED), SimClock::Real, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    let now = Utc::now();
    let from = (now - Duration::hours(30))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let total = (t(&now.format("%Y-%m-%dT%H:%M:00Z").to_string()) - t(&from)).num_minutes();
    let to = now.format("%Y-%m-%dT%H:%M:00Z").to_string();
    let d2 = d.path().to_path_buf();
    let (out, gaps) = tokio::task::spawn_blocking(move || {
        let out = on_lake(
            &d2,
            &[
                "backfill",
                "--exchange",
                "kraken",
                "--symbols",
                "BTC-USD",
                "--from",
                &from,
                "--to",
                &to,
                "--base-url",
                &url,
            ],
            &[],
        );
        let gaps = must(on_lake(&d2, &["gaps", "--format", "csv"], &[]), "gaps");
        (out, gaps)
    })
    .await
    .unwrap();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("serves only its latest 720"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("NOT SERVED by kraken: BTC-USD"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("no longer serves part of the range"),
        "{}",
        out.stderr
    );
    // What Kraken does serve arrived: about 12 hours, all final, none of it the open candle.
    let rows = csv_rows(&gaps);
    let unservable: i64 = rows
        .iter()
        .filter(|r| r[5] == "unservable")
        .map(|r| r[4].parse::<i64>().unwrap())
        .sum();
    assert!(
        (total - 717..=total - 713).contains(&unservable),
        "{total} minutes asked for, about 715 served: {gaps}"
    );
    assert!(rows.iter().all(|r| r[5] == "unservable"), "{gaps}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_418_ban_stops_the_exchange_until_it_expires() {
    let d = tempfile::tempdir().unwrap();
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T12:00:30Z")));
    options.faults = FaultPlan {
        rate: 1.0,
        kinds: vec![Fault::Banned],
        ..FaultPlan::none()
    };
    let sim = SimServer::start_with(SimMarket::default_market(SEED), options, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    let run = |d: std::path::PathBuf, url: String| {
        tokio::task::spawn_blocking(move || {
            on_lake(
                &d,
                &[
                    "ingest",
                    "--symbols",
                    "BTC-USDT,ETH-USDT",
                    "--since",
                    "2024-03-01",
                    "--until",
                    "2024-03-02",
                    "--base-url",
                    &url,
                ],
                &[],
            )
        })
    };
    let first = run(d.path().to_path_buf(), url.clone()).await.unwrap();
    assert_eq!(first.code, 1);
    assert!(
        first.stdout.contains("banned this client (HTTP 418)"),
        "{}",
        first.stdout
    );
    // The ban stopped both symbols at their first request (both may have been in flight).
    let sent = sim.requests();
    assert!((1..=2).contains(&sent), "{sent}");
    let second = run(d.path().to_path_buf(), url).await.unwrap();
    assert_eq!(second.code, 1);
    assert!(
        second
            .stderr
            .contains("banned this client (HTTP 418) until"),
        "{}",
        second.stderr
    );
    assert_eq!(sim.requests(), sent, "nothing is sent while the ban lasts");
    sim.stop().await;
}

/// A data.binance.vision zip holding one CSV, and its `.CHECKSUM`.
fn write_archive(dir: &Path, rel: &str, csv: &str, checksum: bool) -> std::path::PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let inner = path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".zip", ".csv");
    zip.start_file(
        inner,
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated),
    )
    .unwrap();
    zip.write_all(csv.as_bytes()).unwrap();
    zip.finish().unwrap();
    if checksum {
        let digest = sha2::Sha256::digest(std::fs::read(&path).unwrap());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        std::fs::write(
            format!("{}.CHECKSUM", path.display()),
            format!("{hex}  {name}\n"),
        )
        .unwrap();
    }
    path
}

/// Klines as Binance's archive writes them, from the simulated market, in `unit` (1000 for
/// milliseconds, 1_000_000 for microseconds).
fn archive_csv(
    m: &SimMarket,
    ex: Exchange,
    s: &str,
    from: DateTime<Utc>,
    minutes: i64,
    unit: i64,
    header: bool,
) -> String {
    let sym = Symbol::parse(s).unwrap();
    let mut out = String::new();
    if header {
        out.push_str("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n");
    }
    for i in 0..minutes {
        let t0 = from + Duration::minutes(i);
        let c = m.candle_on(ex, &sym, t0).unwrap();
        let open = t0.timestamp() * unit;
        out.push_str(&format!(
            "{open},{:.8},{:.8},{:.8},{:.8},{:.8},{},{:.8},{},0,0,0\n",
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            open + 60 * unit - 1,
            c.quote_volume,
            c.trades
        ));
    }
    out
}

#[test]
fn binance_archives_import_through_bronze() {
    let d = tempfile::tempdir().unwrap();
    let m = SimMarket::default_market(SEED);
    let day = t("2024-03-01T00:00:00Z");
    let spot = write_archive(
        d.path(),
        "dl/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip",
        &archive_csv(&m, Exchange::Binance, "BTC-USDT", day, 1440, 1000, false),
        true,
    );
    // A monthly file in microseconds (as from 2025), cut to two days for the test.
    let micros = write_archive(
        d.path(),
        "dl/ETHUSDT-1m-2025-01.zip",
        &archive_csv(
            &m,
            Exchange::Binance,
            "ETH-USDT",
            t("2025-01-01T00:00:00Z"),
            2880,
            1_000_000,
            false,
        ),
        false,
    );
    let futures = write_archive(
        d.path(),
        "dl/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip",
        &archive_csv(
            &m,
            Exchange::BinanceFutures,
            "BTC-USDT",
            day,
            1440,
            1000,
            true,
        ),
        true,
    );
    let out = must(
        on_lake(
            d.path(),
            &[
                "import",
                "binance-archive",
                &d.path().join("dl").display().to_string(),
            ],
            &[],
        ),
        "import",
    );
    assert!(out.contains("binance BTC-USDT 1440 lines (millisecond timestamps), checksum verified; 1 days written"), "{out}");
    assert!(out.contains("binance ETH-USDT 2880 lines (microsecond timestamps), checksum not present (unverified); 2 days written"), "{out}");
    assert!(out.contains("binance-futures BTC-USDT 1440 lines"), "{out}");
    let silver = silver_totals(d.path());
    assert_eq!(silver[&("binance".into(), "BTC-USDT".into())].1, 1440);
    assert_eq!(silver[&("binance".into(), "ETH-USDT".into())].1, 2880);
    let fut = silver[&("binance-futures".into(), "BTC-USDT".into())];
    let (_, v) = market_totals(
        &m,
        Exchange::BinanceFutures,
        &Symbol::parse("BTC-USDT").unwrap(),
        day,
        day + Duration::days(1),
        true,
    );
    assert_eq!(fut.1, 1440);
    assert!(close(fut.2, v), "{} vs {v}", fut.2);

    // Again: nothing new is written.
    let out = must(
        on_lake(
            d.path(),
            &[
                "import",
                "binance-archive",
                &spot.display().to_string(),
                &micros.display().to_string(),
            ],
            &[],
        ),
        "again",
    );
    assert!(out.contains("0 days written, 3 already present"), "{out}");

    // A damaged file is refused whole, naming the file and the checksums.
    let mut bytes = std::fs::read(&futures).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let bad = d
        .path()
        .join("bad/data/futures/um/BTCUSDT-1m-2024-03-02.zip");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(
        format!("{}.CHECKSUM", futures.display()),
        format!("{}.CHECKSUM", bad.display()),
    )
    .unwrap();
    let r = on_lake(
        d.path(),
        &["import", "binance-archive", &bad.display().to_string()],
        &[],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("BTCUSDT-1m-2024-03-02.zip: FAILED") && r.stdout.contains("SHA-256 is"),
        "{}",
        r.stdout
    );
    assert_eq!(silver_totals(d.path()), silver, "nothing changed");

    // Hourly intervals are refused with the reason.
    let hourly = d.path().join("BTCUSDT-1h-2024-03-01.csv");
    std::fs::write(&hourly, "1709251200000,1,1,1,1,1,1709254799999,1,1,0,0,0\n").unwrap();
    let r = on_lake(
        d.path(),
        &["import", "binance-archive", &hourly.display().to_string()],
        &[],
    );
    assert!(r.stdout.contains("only 1m klines"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backfill_continues_where_it_stopped() {
    let d = tempfile::tempdir().unwrap();
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T12:00:30Z")));
    // A slow exchange (3 requests a second), so the kill lands mid-way.
    let slow = Budget {
        weight: 3,
        interval: StdDuration::from_secs(1),
    };
    options.budgets.insert(Exchange::Coinbase, slow);
    let market = SimMarket::default_market(SEED);
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let url = sim.base_url();
    let envs = env(&[
        ("CRYPTOLAKE_COINBASE_WEIGHT_LIMIT", "3"),
        ("CRYPTOLAKE_COINBASE_WEIGHT_INTERVAL", "1s"),
    ]);
    let lake = lake_arg(d.path());
    let args = [
        "--lake",
        lake.as_str(),
        "backfill",
        "--exchange",
        "coinbase",
        "--symbols",
        "BTC-USD,ETH-USD",
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-02",
        "--base-url",
        url.as_str(),
    ];
    let mut child = command(d.path(), &args, &envs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(2500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let before = sim.requests();
    assert!(
        (2..20).contains(&before),
        "killed mid-way: {before} requests"
    );

    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let d2 = d.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cryptolake_with(&d2, &args, &envs)
    })
    .await
    .unwrap();
    let out = must(out, "second backfill");
    assert!(
        out.contains("minutes already in bronze, not fetched again"),
        "{out}"
    );
    assert!(out.contains("backfill complete"), "{out}");
    let silver = silver_totals(d.path());
    for s in ["BTC-USD", "ETH-USD"] {
        let sym = Symbol::parse(s).unwrap();
        let (n, v) = market_totals(
            &market,
            Exchange::Coinbase,
            &sym,
            t("2024-03-01T00:00:00Z"),
            t("2024-03-03T00:00:00Z"),
            false,
        );
        let got = silver[&("coinbase".to_string(), s.to_string())];
        assert_eq!((got.0, got.1), (48, n), "{s}");
        assert!(close(got.2, v), "{s}: {} vs {v}", got.2);
    }
    sim.stop().await;
}

#[test]
fn bad_backfill_and_import_input_is_named_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "backfill",
                "--exchange",
                "bitfinex",
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-02",
            ],
            "unknown exchange \"bitfinex\"",
        ),
        (
            &[
                "backfill",
                "--exchange",
                "coinbase",
                "--symbols",
                "../x",
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-02",
            ],
            "invalid symbol \"../x\"",
        ),
        (
            &[
                "backfill",
                "--exchange",
                "coinbase",
                "--from",
                "2024-03-02",
                "--to",
                "2024-03-01",
            ],
            "is not before",
        ),
        (
            &[
                "backfill",
                "--exchange",
                "coinbase",
                "--from",
                "yesterday",
                "--to",
                "2024-03-01",
            ],
            "--from",
        ),
        (
            &[
                "backfill",
                "--exchange",
                "kraken",
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-02",
                "--base-url",
                "ftp://x",
            ],
            "must start with http:// or https://",
        ),
        (
            &["import", "binance-archive", "does-not-exist.zip"],
            "does-not-exist.zip",
        ),
        (
            &["gaps", "--exchange", "binanse"],
            "unknown exchange \"binanse\"",
        ),
    ];
    for (args, expected) in cases {
        let r = on_lake(d.path(), args, &[]);
        // A flag's value of the wrong kind is a usage error (2), refused before anything runs.
        let code = if expected.starts_with("unknown exchange") {
            2
        } else {
            1
        };
        assert_eq!(r.code, code, "{args:?}: {}", r.stdout);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains(expected), "{args:?}: {all}");
    }
    // Nothing reached bronze.
    assert!(!d.path().join("lake/bronze").exists());
}
