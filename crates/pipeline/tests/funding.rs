//! Funding of the three perpetual markets through the pipeline, against the simulated venues
//! over HTTP: `funding_rates` equal to the simulator's slot for slot across interval changes,
//! an incremental build equal to a rebuild, a slot the venue never published recorded as a
//! gap, fetched again and confirmed, and `funding_1d` from silver.

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cryptolake_lake::funding::{FundingRow, funding_days_from_batch, funding_from_batch};
use cryptolake_lake::{Lake, paths, read_parquet};
use cryptolake_model::{Exchange, Symbol};
use cryptolake_pipeline::{FundingRequest, Pipeline};
use cryptolake_sources::sim::SimMarket;
use support::t;

const PERPETUALS: [Exchange; 3] = [
    Exchange::BinanceFutures,
    Exchange::OkxSwap,
    Exchange::BybitLinear,
];

fn btc() -> Symbol {
    Symbol::parse("BTC-USDT").unwrap()
}

/// Every row of `funding_rates`, by exchange and slot.
async fn silver(lake: &Lake) -> BTreeMap<(Exchange, DateTime<Utc>), FundingRow> {
    let table = paths::silver_funding_table();
    let mut out = BTreeMap::new();
    for key in lake.list_keys(&table).await.unwrap() {
        for b in read_parquet(lake, &key).await.unwrap() {
            for r in funding_from_batch(&b, key.as_ref()).unwrap() {
                assert!(
                    out.insert((r.exchange, r.slot), r.clone()).is_none(),
                    "slot {} twice",
                    r.slot
                );
            }
        }
    }
    out
}

fn lake_of(p: &Pipeline) -> Lake {
    Lake::open(&p.settings().lake.to_string()).unwrap()
}

async fn fetch(p: &Pipeline, exchange: Exchange, from: &str, to: &str) {
    let req = FundingRequest {
        symbols: Some(vec![btc()]),
        since: Some(t(from)),
        until: Some(t(to)),
        ..FundingRequest::hourly(exchange, &p.new_run_id(), p.now())
    };
    let out = p.ingest_funding(&req, &|_, _| {}).await.unwrap();
    assert!(out.iter().all(|o| o.error.is_none()), "{out:?}");
}

/// 8-hourly funding, then 4-hourly from 2024-02-10, then hourly from 2024-02-25 on every venue.
fn market() -> SimMarket {
    let mut m = SimMarket::default_market(7);
    for e in PERPETUALS {
        m = m
            .with_funding_interval(e, &btc(), t("2024-02-10T00:00:00Z"), 4)
            .with_funding_interval(e, &btc(), t("2024-02-25T00:00:00Z"), 1);
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn funding_rates_equal_the_simulators_across_interval_changes_and_build_incrementally() {
    let sim_market = market();
    let (_dir, _sim, p) = support::on_market(
        sim_market.clone(),
        "2024-03-04T14:10:00Z",
        &[],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    // In three parts, a build after each: what an hourly job does over weeks.
    for (from, to) in [
        ("2024-01-05T00:00:00Z", "2024-02-12T05:00:00Z"),
        ("2024-02-12T05:00:00Z", "2024-02-25T00:30:00Z"),
        ("2024-02-25T00:30:00Z", "2024-03-04T00:00:00Z"),
    ] {
        for e in PERPETUALS {
            fetch(&p, e, from, to).await;
        }
        p.funding(false, &p.new_run_id()).await.unwrap();
    }
    let rows = silver(&lake).await;
    for e in PERPETUALS {
        let want = sim_market.funding(
            e,
            &btc(),
            t("2024-01-05T00:00:00Z").timestamp_millis(),
            t("2024-03-04T00:00:00Z").timestamp_millis() - 1,
            usize::MAX,
            false,
        );
        let got: Vec<&FundingRow> = rows.values().filter(|r| r.exchange == e).collect();
        assert_eq!(got.len(), want.len(), "{e}: events");
        assert!(want.len() > 350, "{e}: {} events", want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.slot.timestamp_millis(), w.slot_ms, "{e} event {i}");
            assert_eq!(
                g.funding_time.timestamp_millis(),
                w.time_ms,
                "{e} event {i}"
            );
            assert!((g.rate - w.rate).abs() < 1e-12, "{e} event {i}: rate");
            match e {
                Exchange::BinanceFutures => {
                    assert!(
                        (g.mark_price.unwrap() - w.mark_price).abs() < 1e-6,
                        "{e} mark"
                    )
                }
                _ => assert_eq!(g.mark_price, None, "{e} gives no mark price"),
            }
            // The interval is the time since the slot before, whatever the venue changed.
            let since_before = match i {
                0 => (want[1].slot_ms - w.slot_ms) as f64 / 3.6e6,
                _ => (w.slot_ms - want[i - 1].slot_ms) as f64 / 3.6e6,
            };
            assert_eq!(g.interval_hours, Some(since_before), "{e} event {i}");
        }
        // No jitter survives in the slot, though Binance's times carry it.
        assert!(got.iter().all(|r| r.slot.timestamp() % 3600 == 0));
    }
    assert!(
        rows.values()
            .any(|r| r.funding_time != r.slot && r.exchange == Exchange::BinanceFutures),
        "the simulator jitters Binance's funding times"
    );
    // Across the changes no stretch is a gap.
    let gaps = cryptolake_lake::funding::recorded_gaps(&lake)
        .await
        .unwrap();
    assert!(gaps.is_empty(), "{gaps:?}");

    // A rebuild from all of bronze gives the same table.
    let gold_before = gold(&lake).await;
    p.funding(true, &p.new_run_id()).await.unwrap();
    assert_eq!(silver(&lake).await, rows, "incremental equals rebuild");
    assert_eq!(gold(&lake).await, gold_before, "gold after a rebuild");

    // Gold: a day is the sum of its events; 2024-02-26 has 24 hourly events, complete.
    let day = t("2024-02-26T00:00:00Z").date_naive();
    for e in PERPETUALS {
        let g = &gold_before[&(e, day)];
        let events: Vec<&FundingRow> = rows
            .values()
            .filter(|r| r.exchange == e && r.slot.date_naive() == day)
            .collect();
        assert_eq!(g.0, 24, "{e}");
        let sum: f64 = events.iter().map(|r| r.rate).sum();
        assert!((g.1 - sum).abs() < 1e-12, "{e}: {} vs {sum}", g.1);
        assert!(g.2, "{e}: a whole day of hourly funding is complete");
        // The first day is complete (its first slot at midnight), the last not yet: the
        // next day's first slot was not asked for.
        assert!(gold_before[&(e, t("2024-01-05T00:00:00Z").date_naive())].2);
        assert!(!gold_before[&(e, t("2024-03-03T00:00:00Z").date_naive())].2);
    }
}

/// `funding_1d` as (events, rate_sum, is_complete) by exchange and day.
async fn gold(lake: &Lake) -> BTreeMap<(Exchange, chrono::NaiveDate), (i32, f64, bool)> {
    let table = paths::gold_funding_table();
    let mut out = BTreeMap::new();
    for key in lake.list_keys(&table).await.unwrap() {
        let date = paths::partition_file_date(&table, &key).unwrap();
        for b in read_parquet(lake, &key).await.unwrap() {
            for d in funding_days_from_batch(&b, date, key.as_ref()).unwrap() {
                out.insert((d.exchange, date), (d.events, d.rate_sum, d.is_complete));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_the_venue_never_published_is_a_gap_the_refetch_confirms() {
    let missing = t("2024-03-02T08:00:00Z");
    let m = SimMarket::default_market(5).without_funding(Exchange::BinanceFutures, &btc(), missing);
    let (_dir, _sim, p) = support::on_market(
        m,
        "2024-03-04T14:10:00Z",
        &[Exchange::BinanceFutures],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    fetch(
        &p,
        Exchange::BinanceFutures,
        "2024-03-01T00:00:00Z",
        "2024-03-04T14:10:00Z",
    )
    .await;
    p.funding(false, &p.new_run_id()).await.unwrap();
    let gaps = cryptolake_lake::funding::recorded_gaps(&lake)
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let g = &gaps[0];
    assert_eq!(
        (g.2, g.3),
        (t("2024-03-02T00:00:00Z"), t("2024-03-02T16:00:00Z"))
    );
    assert_eq!(g.4.as_str(), "unconfirmed", "one fetch has seen it: {g:?}");
    let day = missing.date_naive();
    assert!(!gold(&lake).await[&(Exchange::BinanceFutures, day)].2);

    // The hourly job fetches it again; the venue still has nothing there: confirmed.
    let run = p.hourly_ingest(&p.new_run_id(), p.now(), false).await;
    let funding = run[0].funding.as_ref().unwrap().as_ref().unwrap();
    assert!(
        funding.len() >= 2,
        "the hourly fetch and the refetch: {funding:?}"
    );
    p.funding(false, &p.new_run_id()).await.unwrap();
    let gaps = cryptolake_lake::funding::recorded_gaps(&lake)
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].4.as_str(), "confirmed", "{gaps:?}");
    assert_eq!(gaps[0].5, 2);
    // Confirmed gaps are not fetched again.
    let again = p.hourly_ingest(&p.new_run_id(), p.now(), false).await;
    assert_eq!(
        again[0].funding.as_ref().unwrap().as_ref().unwrap().len(),
        1
    );
    // The gap report is a table too.
    let engine = p.query_engine().await.unwrap();
    let batches = engine
        .query("SELECT exchange, symbol, after_slot, before_slot, status, fetches FROM crypto_ops.funding_gaps")
        .await
        .unwrap();
    let out =
        cryptolake_pipeline::query::render(&batches, cryptolake_pipeline::query::OutputFormat::Csv)
            .unwrap();
    assert!(
        out.contains(
            "binance-futures,BTC-USDT,2024-03-02T00:00:00Z,2024-03-02T16:00:00Z,confirmed,2"
        ),
        "{out}"
    );
    // The day with the gap is not complete; the day before is.
    let g = gold(&lake).await;
    assert!(!g[&(Exchange::BinanceFutures, day)].2);
    assert!(g[&(Exchange::BinanceFutures, day.pred_opt().unwrap())].2);
    assert_eq!(g[&(Exchange::BinanceFutures, day)].0, 2);

    // The quality rules: the incomplete day is a violation of funding_completeness, and only it.
    let found = sql(
        &p,
        "SELECT DISTINCT rule, exchange, symbol, subject FROM crypto_ops.quality_results \
         WHERE step = 'funding' AND status = 'violation' ORDER BY rule, subject",
    )
    .await;
    assert_eq!(
        found.lines().skip(1).collect::<Vec<_>>(),
        ["funding_completeness,binance-futures,BTC-USDT,2024-03-02"],
        "{found}"
    );
    // The same rules in `check`, whose current state names the open violation.
    let checked = p.check(None, None, &p.new_run_id()).await.unwrap();
    let open: Vec<_> = checked
        .iter()
        .filter(|r| r.is_violation() && r.rule.as_str().starts_with("funding"))
        .map(|r| r.subject.clone().unwrap_or_default())
        .collect();
    assert_eq!(open, ["2024-03-02"]);

    // A rule with action `fail` fails the step and names the rule; the data stays.
    let mut strict = p.settings().clone();
    strict.quality.max_funding_rate = 1e-12;
    strict.quality.funding_rate = cryptolake_lake::quality::Action::Fail;
    let strict = Pipeline::open(strict, cryptolake_pipeline::Options::default())
        .await
        .unwrap();
    let before = silver(&lake).await;
    let err = strict
        .funding(true, &strict.new_run_id())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("funding_rate"), "{err}");
    assert_eq!(silver(&lake).await, before);
}

/// A query's answer as CSV.
async fn sql(p: &Pipeline, q: &str) -> String {
    let engine = p.query_engine().await.unwrap();
    let b = engine.query(q).await.unwrap();
    cryptolake_pipeline::query::render(&b, cryptolake_pipeline::query::OutputFormat::Csv).unwrap()
}

/// Every row of `mark_ohlcv_1m`.
async fn marks(lake: &Lake) -> Vec<cryptolake_lake::mark::MarkRow> {
    let table = paths::mark_table();
    let mut out = Vec::new();
    for key in lake.list_keys(&table).await.unwrap() {
        for b in read_parquet(lake, &key).await.unwrap() {
            out.extend(cryptolake_lake::mark::marks_from_batch(&b, key.as_ref()).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_candles_equal_the_simulators_and_a_minute_without_one_is_a_confirmed_gap() {
    // OKX lists the swap only at 00:30: the range's first 150 minutes have no mark price.
    let listed = t("2024-03-04T00:30:00Z");
    let sim_market = SimMarket::default_market(11).with_listing(Exchange::OkxSwap, &btc(), listed);
    let (_dir, _sim, p) = support::on_market(
        sim_market.clone(),
        "2024-03-04T14:10:00Z",
        &[Exchange::OkxSwap],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    let (from, to) = (t("2024-03-03T22:00:00Z"), t("2024-03-04T02:00:00Z"));
    for e in PERPETUALS {
        let req = cryptolake_pipeline::IngestRequest {
            symbols: Some(vec![btc()]),
            since: Some(from),
            until: Some(to),
            prices: cryptolake_pipeline::Prices::Mark,
            ..cryptolake_pipeline::IngestRequest::hourly(e, &p.new_run_id(), p.now())
        };
        p.ingest_strict(&req, &|_, _| {}).await.unwrap();
    }
    p.funding(false, &p.new_run_id()).await.unwrap();
    let rows = marks(&lake).await;
    for e in PERPETUALS {
        let got: Vec<_> = rows.iter().filter(|r| r.exchange == e).collect();
        let mut want = Vec::new();
        let mut m = from;
        while m < to {
            if let Some(c) = sim_market.mark_candle(e, &btc(), m) {
                want.push(c);
            }
            m += chrono::Duration::minutes(1);
        }
        let expected = if e == Exchange::OkxSwap { 90 } else { 240 };
        assert_eq!(want.len(), expected, "{e}");
        assert_eq!(got.len(), want.len(), "{e}: minutes");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.open_time.timestamp_millis(), w.open_ms, "{e}");
            for (a, b) in [
                (g.open, w.open),
                (g.high, w.high),
                (g.low, w.low),
                (g.close, w.close),
            ] {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs(),
                    "{e} {}: {a} vs {b}",
                    g.open_time
                );
            }
        }
        // The mark is its own series, not the trade candle's prices.
        let trade = sim_market.candle_on(e, &btc(), got[0].open_time).unwrap();
        assert_ne!(got[0].open, trade.open, "{e}");
    }
    let gaps = |q: &'static str| {
        let p = &p;
        async move {
            let engine = p.query_engine().await.unwrap();
            let b = engine.query(q).await.unwrap();
            cryptolake_pipeline::query::render(&b, cryptolake_pipeline::query::OutputFormat::Csv)
                .unwrap()
        }
    };
    let q = "SELECT exchange, gap_start, gap_end, minutes, status, fetches FROM crypto_ops.mark_gaps ORDER BY exchange, gap_start";
    let first = gaps(q).await;
    // OKX's 150 minutes before its listing, a row per day: nothing else.
    assert!(
        first.contains("okx-swap,2024-03-03T22:00:00Z,2024-03-04T00:00:00Z,120,unconfirmed,1")
            && first
                .contains("okx-swap,2024-03-04T00:00:00Z,2024-03-04T00:30:00Z,30,unconfirmed,1"),
        "{first}"
    );
    assert_eq!(
        first.lines().count(),
        3,
        "only OKX's minutes are missing: {first}"
    );
    // OKX's first listed hour has 30 of 60 minutes: a mark_completeness violation while
    // the missing half is not confirmed empty.
    let incomplete = "SELECT exchange, subject, observed FROM crypto_ops.quality_results \
                      WHERE rule = 'mark_completeness' AND status = 'violation' ORDER BY checked_at";
    let found = gaps(incomplete).await;
    assert_eq!(
        found.lines().skip(1).collect::<Vec<_>>(),
        ["okx-swap,2024-03-04T00:00:00+00:00,30.0"],
        "{found}"
    );
    // The hourly job fetches it again, OKX still has nothing there: confirmed, not fetched again.
    let run = p.hourly_ingest(&p.new_run_id(), p.now(), false).await;
    let mark = run[0].mark.as_ref().unwrap().as_ref().unwrap();
    assert!(mark.pages >= 2, "{mark:?}");
    p.funding(false, &p.new_run_id()).await.unwrap();
    let second = gaps(q).await;
    assert!(
        second.contains("okx-swap,2024-03-03T22:00:00Z,2024-03-04T00:00:00Z,120,confirmed,2")
            && second.contains("okx-swap,2024-03-04T00:00:00Z,2024-03-04T00:30:00Z,30,confirmed,2"),
        "{second}"
    );
    // Confirmed empty, the minutes count as covered: the hour passes now.
    let state = p.check(None, None, &p.new_run_id()).await.unwrap();
    let mark_violations: Vec<_> = state
        .iter()
        .filter(|r| r.is_violation() && r.rule == cryptolake_lake::quality::Rule::MarkCompleteness)
        .collect();
    assert!(mark_violations.is_empty(), "{mark_violations:#?}");
    // A rebuild from bronze gives the same minutes and the same gap report.
    let before = marks(&lake).await;
    p.funding(true, &p.new_run_id()).await.unwrap();
    assert_eq!(marks(&lake).await, before);
    assert_eq!(gaps(q).await, second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_year_of_funding_for_ten_symbols_takes_at_most_ten_requests_per_symbol_per_venue() {
    let names = [
        "BTC", "ETH", "SOL", "DOGE", "XRP", "ADA", "AVAX", "LINK", "DOT", "LTC",
    ];
    let symbols: Vec<Symbol> = names
        .iter()
        .map(|b| Symbol::parse(&format!("{b}-USDT")).unwrap())
        .collect();
    let market = SimMarket::new(
        3,
        symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), 10.0 + i as f64))
            .collect(),
    );
    let (_dir, _sim, p) = support::on_market(
        market.clone(),
        "2024-03-04T14:10:00Z",
        &[],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    let (from, to) = (t("2023-03-04T00:00:00Z"), t("2024-03-04T00:00:00Z"));
    for e in PERPETUALS {
        let sent = |p: &Pipeline| -> u64 {
            p.exchange_requests()
                .requests
                .iter()
                .filter(|((x, _), _)| x == e.as_str())
                .map(|(_, n)| n)
                .sum()
        };
        let before = sent(&p);
        let req = FundingRequest {
            symbols: Some(symbols.clone()),
            since: Some(from),
            until: Some(to),
            ..FundingRequest::hourly(e, &p.new_run_id(), p.now())
        };
        let out = p.ingest_funding(&req, &|_, _| {}).await.unwrap();
        let requests = sent(&p) - before;
        // The instruments list once, then the pages.
        assert!(
            requests <= 10 * symbols.len() as u64,
            "{e}: {requests} requests for {} symbols",
            symbols.len()
        );
        for o in &out {
            assert!(o.error.is_none() && o.pages <= 10, "{e}: {o:?}");
        }
        println!("{e}: {requests} requests for a year of funding of 10 symbols");
    }
    p.funding(false, &p.new_run_id()).await.unwrap();
    let table = paths::silver_funding_table();
    let mut rows: Vec<FundingRow> = Vec::new();
    for key in lake.list_keys(&table).await.unwrap() {
        for b in read_parquet(&lake, &key).await.unwrap() {
            rows.extend(funding_from_batch(&b, key.as_ref()).unwrap());
        }
    }
    // Every event the venues serve of the year: 8-hourly, and OKX only its last three months.
    for e in PERPETUALS {
        let served_from = match e {
            Exchange::OkxSwap => {
                t("2024-03-04T14:10:00Z")
                    - chrono::Duration::days(cryptolake_sources::sim::OKX_FUNDING_DAYS)
            }
            _ => from,
        };
        let want = 10
            * market
                .funding(
                    e,
                    &symbols[0],
                    served_from.max(from).timestamp_millis(),
                    to.timestamp_millis() - 1,
                    usize::MAX,
                    false,
                )
                .len();
        let got = rows.iter().filter(|r| r.exchange == e).count();
        assert_eq!(got, want, "{e}");
        assert!(got > 2_000, "{e}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_stopped_before_its_mark_prices_fetches_them_when_run_again() {
    let (_dir, _sim, p) = support::on_market(
        SimMarket::default_market(13),
        "2024-03-04T14:10:00Z",
        &[],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    let range = (t("2024-03-02T00:00:00Z"), t("2024-03-03T00:00:00Z"));
    let e = Exchange::BinanceFutures;
    let backfill = || async {
        let plan = p
            .plan_backfill(e, Some(vec![btc()]), range, None)
            .await
            .unwrap();
        p.backfill(&plan, &()).await.unwrap()
    };
    let first = backfill().await;
    assert_eq!(first.mark.as_ref().unwrap().rows, 1440);
    assert_eq!(marks(&lake).await.len(), 1440);
    // As if the first run had stopped after its candles: no mark price object in bronze.
    let prefix = format!("bronze/source={e}/dataset=mark_klines_1m");
    lake.delete_prefix(&prefix).await.unwrap();
    p.funding(true, &p.new_run_id()).await.unwrap();
    assert!(marks(&lake).await.is_empty());
    let second = backfill().await;
    assert_eq!(second.ingest.pages, 0, "the candles are in bronze already");
    assert_eq!(
        second.mark.as_ref().unwrap().rows,
        1440,
        "the mark prices are fetched again"
    );
    assert_eq!(marks(&lake).await.len(), 1440);
    // A third run has nothing left to fetch.
    let third = backfill().await;
    assert!(third.mark.is_none(), "{:?}", third.mark);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_funding_partition_is_reported_and_the_next_build_over_it_rebuilds_from_bronze() {
    let (_dir, _sim, p) = support::on_market(
        SimMarket::default_market(17),
        "2024-03-04T14:10:00Z",
        &[],
        "2024-03-04T14:10:00Z",
    )
    .await;
    let lake = lake_of(&p);
    fetch(
        &p,
        Exchange::BybitLinear,
        "2024-03-01T00:00:00Z",
        "2024-03-04T00:00:00Z",
    )
    .await;
    p.funding(false, &p.new_run_id()).await.unwrap();
    let before = silver(&lake).await;
    assert_eq!(before.len(), 9);
    assert!(p.verify_files(true).await.unwrap().is_empty());
    let key = paths::partition_file(
        &paths::silver_funding_table(),
        t("2024-03-02T00:00:00Z").date_naive(),
    );
    lake.put(&key, bytes::Bytes::from_static(b"not parquet"))
        .await
        .unwrap();
    let problems = p.verify_files(true).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].table, "crypto_analytics.funding_rates");
    assert!(
        problems[0].action.contains("silver --rebuild"),
        "{problems:?}"
    );
    // New funding of that date: the incremental build meets the damaged partition and
    // rebuilds the table from bronze instead of failing.
    fetch(
        &p,
        Exchange::BybitLinear,
        "2024-03-02T00:00:00Z",
        "2024-03-03T00:00:00Z",
    )
    .await;
    let report = p.funding(false, &p.new_run_id()).await.unwrap();
    assert!(
        report.silver.objects > 1,
        "a rebuild reads every object: {report:?}"
    );
    assert!(p.verify_files(true).await.unwrap().is_empty());
    let rates = |rows: &BTreeMap<(Exchange, DateTime<Utc>), FundingRow>| {
        rows.iter()
            .map(|(k, r)| (*k, r.rate, r.interval_hours))
            .collect::<Vec<_>>()
    };
    assert_eq!(rates(&silver(&lake).await), rates(&before));
    // And `silver --rebuild` restores it at once.
    lake.put(&key, bytes::Bytes::from_static(b"not parquet"))
        .await
        .unwrap();
    p.funding(true, &p.new_run_id()).await.unwrap();
    assert!(p.verify_files(true).await.unwrap().is_empty());
    assert_eq!(rates(&silver(&lake).await), rates(&before));
}
