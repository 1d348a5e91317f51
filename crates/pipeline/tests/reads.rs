//! The read model against the same questions asked with SQL, on a generated lake, with a cache
//! far smaller than the lake; and no answer mixing two versions of the lake.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use chrono::{DateTime, Utc};
use cryptolake_lake::{
    Lake, hourly_from_batch, hourly_to_batch, paths, read_parquet, write_parquet,
};
use cryptolake_model::{Exchange, ManualClock, Symbol, parse_time};
use cryptolake_pipeline::bench::{GenerateRequest, WrittenAt};
use cryptolake_pipeline::reads::{Encoding, GapFilter, Interval, encode};
use cryptolake_pipeline::{Options, Pipeline, Settings};

fn t(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

/// Three symbols over three days, built into silver and gold, read through a cache of
/// `cache` bytes; the clock stands an hour and ten minutes after the last day.
async fn generated(cache: u64) -> (tempfile::TempDir, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        lake: cryptolake_lake::LakeLocation::Local(dir.path().join("lake")),
        ..Settings::default()
    };
    settings.server.read_cache = cache;
    let p = Pipeline::open(
        settings,
        Options {
            clock: Arc::new(ManualClock::new(t("2024-01-04T01:10:00Z"))),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    p.bench_generate(GenerateRequest {
        symbols: 3,
        range: (t("2024-01-01T00:00:00Z"), t("2024-01-04T00:00:00Z")),
        seed: 7,
        window_minutes: 1000,
        written_at: WrittenAt::Fetched,
    })
    .await
    .unwrap();
    let run = p.new_run_id();
    p.silver(false, &run).await.unwrap();
    p.gold(false, &run).await.unwrap();
    (dir, p)
}

/// The hour after the generated lake, written now and built into silver by this process;
/// the run's id.
async fn next_hour(p: &Pipeline) -> String {
    p.bench_generate(GenerateRequest {
        symbols: 3,
        range: (t("2024-01-04T00:00:00Z"), t("2024-01-04T01:00:00Z")),
        seed: 7,
        window_minutes: 1000,
        written_at: WrittenAt::Now,
    })
    .await
    .unwrap();
    let run = p.new_run_id();
    p.silver(false, &run).await.unwrap();
    run
}

/// Rows of a SQL answer as text.
async fn sql(p: &Pipeline, query: &str) -> Vec<Vec<String>> {
    rows_of(&p.query_engine().await.unwrap(), query).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_model_answers_as_sql_does_with_a_cache_smaller_than_the_lake() {
    let (_dir, p) = generated(24 << 10).await;
    let reads = p.reads();

    let symbols = reads.symbols().await.unwrap();
    let want = sql(
        &p,
        "SELECT exchange, symbol, count(*) FROM crypto_analytics.ohlcv_1h GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await;
    let got: Vec<Vec<String>> = symbols
        .iter()
        .map(|s| {
            vec![
                s.exchange.to_string(),
                s.symbol.to_string(),
                s.hours.to_string(),
            ]
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(symbols.len(), 3);

    for s in &symbols {
        for (interval, table, time) in [
            (Interval::H1, "crypto_analytics.ohlcv_1h", "open_time"),
            (Interval::D1, "crypto_gold.ohlcv_1d", "date"),
        ] {
            let candles = reads
                .candles(
                    s.exchange,
                    &s.symbol,
                    interval,
                    t("2024-01-01T00:00:00Z"),
                    t("2024-01-05T00:00:00Z"),
                    100_000,
                )
                .await
                .unwrap();
            let want = sql(
                &p,
                &format!(
                    "SELECT count(*), round(sum(volume), 6), min(close), max(high) FROM {table} \
                     WHERE exchange = '{}' AND symbol = '{}' AND {time} IS NOT NULL",
                    s.exchange, s.symbol
                ),
            )
            .await;
            let rows = &candles.rows;
            let volume: f64 = rows.iter().map(|r| r.volume).sum();
            let min_close = rows.iter().map(|r| r.close).fold(f64::INFINITY, f64::min);
            let max_high = rows
                .iter()
                .map(|r| r.high)
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(rows.len().to_string(), want[0][0], "{interval:?} {s:?}");
            assert!(
                (volume - want[0][1].parse::<f64>().unwrap()).abs() < 1e-6 * volume.max(1.0),
                "{interval:?}"
            );
            assert_eq!(min_close, want[0][2].parse::<f64>().unwrap());
            assert_eq!(max_high, want[0][3].parse::<f64>().unwrap());
            assert!(
                rows.windows(2).all(|w| w[0].time < w[1].time),
                "oldest first"
            );
            // A window and a limit: the first `limit` candles starting at or after `from` (as
            // Binance's `startTime`), before `to`.
            let some = reads
                .candles(
                    s.exchange,
                    &s.symbol,
                    interval,
                    t("2024-01-02T05:00:00Z"),
                    t("2024-01-03T00:00:00Z"),
                    7,
                )
                .await
                .unwrap();
            let expect: Vec<_> = rows
                .iter()
                .filter(|r| {
                    r.time >= t("2024-01-02T05:00:00Z") && r.time < t("2024-01-03T00:00:00Z")
                })
                .take(7)
                .cloned()
                .collect();
            assert_eq!(some.rows, expect, "{interval:?}");
        }
    }

    let gaps = reads.gaps(&GapFilter::default()).await.unwrap();
    let want = sql(
        &p,
        "SELECT count(*), coalesce(sum(minutes), 0) FROM crypto_ops.gaps",
    )
    .await;
    assert_eq!(gaps.len().to_string(), want[0][0]);
    assert_eq!(
        gaps.iter().map(|g| g.minutes()).sum::<i64>().to_string(),
        want[0][1]
    );
    let runs = reads.runs(1000).await.unwrap();
    let want = sql(&p, "SELECT count(*) FROM crypto_ops.runs").await;
    assert_eq!(runs.len().to_string(), want[0][0]);
    assert!(
        runs.windows(2).all(|w| w[0].started_at >= w[1].started_at),
        "newest first"
    );

    let stats = reads.cache_stats();
    assert!(stats.bytes <= stats.capacity, "{stats:?}");
    assert!(
        stats.entries < 9,
        "the cache never held the whole lake: {stats:?}"
    );
}

/// Rewrites a silver partition behind the read model's back (no step, no change marker), with
/// every close multiplied by `factor`.
async fn rewrite(lake: &Lake, day: &str, factor: f64) {
    let key = paths::silver_partition_file(t(day).date_naive());
    let mut hours = Vec::new();
    for b in read_parquet(lake, &key).await.unwrap() {
        hours.extend(hourly_from_batch(&b, key.as_ref()).unwrap());
    }
    for h in &mut hours {
        h.close *= factor;
        h.high = h.high.max(h.close);
        h.low = h.low.min(h.close);
    }
    write_parquet(lake, &key, &hourly_to_batch(&hours).unwrap(), &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_mixes_two_versions_of_the_lake() {
    let (_dir, p) = generated(512 << 20).await;
    let lake = Lake::open(&p.settings().lake.to_string()).unwrap();
    let reads = p.reads();
    let symbol = Symbol::parse("S0001-USDT").unwrap();
    let closes = |from: &str, to: &str| {
        let (from, to) = (t(from), t(to));
        let symbol = symbol.clone();
        async move {
            reads
                .candles(Exchange::Binance, &symbol, Interval::H1, from, to, 10_000)
                .await
                .unwrap()
                .rows
                .iter()
                .map(|r| r.close)
                .collect::<Vec<f64>>()
        }
    };
    // The first day is read, so the read model holds it; the second is not.
    let day1 = closes("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z").await;
    assert_eq!(day1.len(), 24);
    // Both days as the files hold them now.
    let mut old = Vec::new();
    for day in ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"] {
        let key = paths::silver_partition_file(t(day).date_naive());
        for b in read_parquet(&lake, &key).await.unwrap() {
            old.extend(
                hourly_from_batch(&b, key.as_ref())
                    .unwrap()
                    .into_iter()
                    .filter(|h| h.exchange == Exchange::Binance && h.symbol == symbol)
                    .map(|h| h.close),
            );
        }
    }
    assert_eq!(old.len(), 48);
    assert_eq!(old[..24], day1[..]);
    // Another writer rewrites both days; the read model has not been told.
    rewrite(&lake, "2024-01-01T00:00:00Z", 2.0).await;
    rewrite(&lake, "2024-01-02T00:00:00Z", 2.0).await;
    let new: Vec<f64> = old.iter().map(|c| c * 2.0).collect();
    // An answer over both days: the first day is held in its old version, the second must be
    // read and is found in a version the snapshot does not name. Half old and half new is the
    // failure this guards against; the read model starts the answer again from a new
    // snapshot, and all of it is new.
    let after = closes("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z").await;
    assert_eq!(after, new, "an answer mixed two versions of the lake");
    // A writer elsewhere rewrites a partition and, as every step does, the change marker: the
    // next check (within a second) renews the snapshot, though every partition asked for is
    // held.
    rewrite(&lake, "2024-01-01T00:00:00Z", 2.0).await;
    lake.put(
        &paths::change_marker(),
        bytes::Bytes::from_static(b"elsewhere"),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = closes("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z").await;
    let want: Vec<f64> = old[..24].iter().map(|c| c * 4.0).collect();
    assert_eq!(later, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_of_the_same_process_shows_in_the_next_answer() {
    let (_dir, p) = generated(512 << 20).await;
    let reads = p.reads();
    let symbol = Symbol::parse("S0002-USDT").unwrap();
    let new_hour = || async {
        reads
            .candles(
                Exchange::Binance,
                &symbol,
                Interval::H1,
                t("2024-01-04T00:00:00Z"),
                t("2024-01-04T01:00:00Z"),
                10,
            )
            .await
            .unwrap()
            .rows
    };
    assert!(new_hour().await.is_empty());
    let before = reads.symbols().await.unwrap();
    // The next hour, written and built by this process: no waiting, no check interval.
    let run = next_hour(&p).await;
    p.gold(false, &run).await.unwrap();
    assert_eq!(new_hour().await.len(), 1);
    let after = reads.symbols().await.unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.hours, b.hours + 1, "{a:?}");
        assert_eq!(a.last_hour, Some(t("2024-01-04T00:00:00Z")));
    }
    let runs = reads.runs(1000).await.unwrap();
    assert!(
        runs.iter().any(|r| r.run_id == run),
        "the new run's records"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encoded_answer_is_computed_once_per_snapshot_and_renewed_when_the_lake_changes() {
    let (_dir, p) = generated(512 << 20).await;
    let reads = p.reads();
    let symbol = &Symbol::parse("S0001-USDT").unwrap();
    let (from, to) = (t("2024-01-03T00:00:00Z"), t("2024-01-04T02:00:00Z"));
    let ask = |encoding| async move {
        reads
            .candles_encoded(
                Exchange::Binance,
                symbol,
                Interval::M5,
                from,
                to,
                10_000,
                encoding,
            )
            .await
            .unwrap()
    };
    // What the typed answer encodes to, computed afresh.
    let fresh = |encoding| async move {
        let c = reads
            .candles(Exchange::Binance, symbol, Interval::M5, from, to, 10_000)
            .await
            .unwrap();
        let b = c.to_batch().unwrap();
        (c.rows.len(), encode(&b.schema(), &[b], encoding).unwrap())
    };
    let first = ask(Encoding::Json).await;
    let (bars, want) = fresh(Encoding::Json).await;
    assert_eq!(bars, 24 * 12, "a day of five-minute bars");
    assert_eq!(*first, want);
    assert_eq!(
        first.tag,
        cryptolake_pipeline::reads::entity_tag(&first.body)
    );
    // The same question on the same snapshot is the same answer, not a new computation.
    assert!(Arc::ptr_eq(&first, &ask(Encoding::Json).await));
    let held = reads.answer_cache_stats();
    assert_eq!(held.entries, 1);
    assert!(held.bytes >= first.body.len(), "{held:?}");
    // Another encoding is another answer.
    let csv = ask(Encoding::Csv).await;
    assert_eq!(*csv, fresh(Encoding::Csv).await.1);
    assert!(csv.body.starts_with(b"time,open,high,low,close,volume"));
    // The next hour lands: the answer is computed again and has its bars; the old ones go.
    next_hour(&p).await;
    let after = ask(Encoding::Json).await;
    let (bars, want) = fresh(Encoding::Json).await;
    assert_eq!(bars, 25 * 12);
    assert_eq!(*after, want);
    assert_ne!(after.tag, first.tag);
    assert_eq!(reads.answer_cache_stats().entries, 1);
}

/// Rows of `query` through `engine`, as text.
async fn rows_of(engine: &cryptolake_query::QueryEngine, query: &str) -> Vec<Vec<String>> {
    let batches: Vec<RecordBatch> = engine.query(query).await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |i| {
                (0..b.num_columns())
                    .map(|c| array_value_to_string(b.column(c), i).unwrap())
                    .collect()
            })
        })
        .collect()
}

/// The physical plan of `query`, as `EXPLAIN` prints it.
async fn plan_of(engine: &cryptolake_query::QueryEngine, query: &str) -> String {
    rows_of(engine, &format!("EXPLAIN {query}"))
        .await
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_from_the_read_model_answers_as_the_files_do() {
    let statements = [
        "SELECT exchange, symbol, open_time, open, high, low, close, volume, trade_count, minute_mask, ingested_at, date FROM crypto_analytics.ohlcv_1h \
         WHERE symbol = 'S0002-USDT' AND date BETWEEN DATE '2024-01-02' AND DATE '2024-01-03' ORDER BY open_time",
        "SELECT date, symbol, quote_volume FROM (SELECT date, symbol, quote_volume, row_number() OVER \
         (PARTITION BY date ORDER BY quote_volume DESC) AS r FROM crypto_gold.ohlcv_1d) WHERE r = 1 ORDER BY date",
        "SELECT count(*), min(open_time), max(open_time) FROM crypto_analytics.ohlcv_1h WHERE date > DATE '2024-01-01'",
        "SELECT count(*) FROM crypto_analytics.ohlcv_1h WHERE date = DATE '2024-01-01' AND date = DATE '2024-01-02'",
        "SELECT h.symbol, count(*) FROM crypto_analytics.ohlcv_1h h JOIN crypto_gold.ohlcv_1d d \
         ON h.symbol = d.symbol AND h.date = d.date AND h.exchange = d.exchange GROUP BY 1 ORDER BY 1",
        "SELECT count(*), count(DISTINCT symbol) FROM crypto_ops.gaps",
        "SELECT * FROM crypto_analytics.ohlcv_1h WHERE date IN (DATE '2024-01-03') ORDER BY exchange, symbol, open_time LIMIT 5",
    ];
    // A cache that holds the lake, and one that holds almost nothing (the files are read).
    for (cache, from_memory) in [(512u64 << 20, true), (8 << 10, false)] {
        let (_dir, p) = generated(cache).await;
        let files = p.query_engine().await.unwrap();
        let served = p.served_query_engine().await.unwrap();
        for q in statements {
            let want = rows_of(&files, q).await;
            assert!(!want.is_empty(), "{q}");
            assert_eq!(rows_of(&served, q).await, want, "cache {cache}: {q}");
        }
        let plan = plan_of(&served, statements[0]).await;
        assert_eq!(
            !plan.contains("file_groups"),
            from_memory,
            "cache {cache}: {plan}"
        );
        assert_eq!(plan.contains("partition_sizes"), from_memory, "{plan}");
        // Only the two dates asked for are scanned.
        if from_memory {
            assert!(plan.contains("partitions=2"), "{plan}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_from_the_read_model_shows_a_new_hour_at_once() {
    let (_dir, p) = generated(512 << 20).await;
    let served = p.served_query_engine().await.unwrap();
    let q = "SELECT count(*) FROM crypto_analytics.ohlcv_1h WHERE date = DATE '2024-01-04'";
    assert_eq!(rows_of(&served, q).await, vec![vec!["0".to_string()]]);
    next_hour(&p).await;
    // The same engine, no waiting: three symbols on each exchange the generator writes.
    let got = rows_of(&served, q).await;
    let want = rows_of(&p.query_engine().await.unwrap(), q).await;
    assert_eq!(got, want);
    assert_ne!(got, vec![vec!["0".to_string()]]);
}
