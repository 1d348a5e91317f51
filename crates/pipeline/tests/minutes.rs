//! Silver `ohlcv_1m` over the simulated exchanges with faults (repeated and shuffled candles,
//! truncated pages, server errors), Coinbase's left-out minutes and Kraken's short memory:
//! the minutes are the market's, value for value; every minute of the covered hours is in the
//! minute table or in the gap report, never both; `ohlcv_1h` is `ohlcv_1m` aggregated; and
//! the read model's bars at every interval are an independent aggregation of those minutes,
//! with the right completeness.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use cryptolake_lake::gaps::{Gap, gaps_from_batch};
use cryptolake_lake::quality::{self, Rule};
use cryptolake_lake::{Lake, hourly_from_batch, minutes_from_batch, paths, read_parquet};
use cryptolake_model::{Exchange, HourlyCandle, MinuteCandle, Symbol, hour_start};
use cryptolake_pipeline::IngestRequest;
use cryptolake_pipeline::reads::Interval;
use cryptolake_sources::sim::{Fault, FaultPlan, SimMarket};
use support::t;

async fn table<T>(
    lake: &Lake,
    table: object_store::path::Path,
    decode: impl Fn(&arrow::array::RecordBatch, &str) -> Vec<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for meta in lake.list(&table).await.unwrap() {
        for b in read_parquet(lake, &meta.location).await.unwrap() {
            out.extend(decode(&b, meta.location.as_ref()));
        }
    }
    out
}

type Pair = (Exchange, Symbol);

struct Lakeview {
    minutes: BTreeMap<Pair, Vec<MinuteCandle>>,
    hours: BTreeMap<Pair, Vec<HourlyCandle>>,
    gaps: Vec<Gap>,
}

async fn read_lake(lake: &Lake) -> Lakeview {
    let mut minutes: BTreeMap<Pair, Vec<MinuteCandle>> = BTreeMap::new();
    for m in table(lake, paths::minute_table(), |b, w| {
        minutes_from_batch(b, w).unwrap()
    })
    .await
    {
        minutes
            .entry((m.candle.exchange, m.candle.symbol.clone()))
            .or_default()
            .push(m);
    }
    let mut hours: BTreeMap<Pair, Vec<HourlyCandle>> = BTreeMap::new();
    for h in table(lake, paths::silver_table(), |b, w| {
        hourly_from_batch(b, w).unwrap()
    })
    .await
    {
        hours
            .entry((h.exchange, h.symbol.clone()))
            .or_default()
            .push(h);
    }
    for v in minutes.values_mut() {
        v.sort_by_key(|m| m.candle.open_time);
    }
    for v in hours.values_mut() {
        v.sort_by_key(|h| h.open_time);
    }
    let gaps = table(lake, paths::gaps_table(), |b, w| {
        gaps_from_batch(b, w).unwrap()
    })
    .await;
    Lakeview {
        minutes,
        hours,
        gaps,
    }
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-8 * b.abs().max(1.0)
}

/// A lake filled from the three simulated exchanges over two days and a bit, with faults,
/// a second overlapping ingest (duplicates), and an hourly run that refetches the gaps.
async fn filled() -> (tempfile::TempDir, cryptolake_pipeline::Pipeline, SimMarket) {
    let exchanges = [Exchange::Binance, Exchange::Coinbase, Exchange::Kraken];
    let (dir, sim, p) = support::on_sim(5, &exchanges, "2024-03-04T14:10:00Z").await;
    sim.set_faults(FaultPlan {
        kinds: vec![
            Fault::Duplicates,
            Fault::OutOfOrder,
            Fault::Truncated,
            Fault::ServerError,
        ],
        ..FaultPlan::random(0.2, 3)
    });
    for (since, until) in [
        ("2024-03-02T20:00:00Z", "2024-03-04T14:10:00Z"),
        ("2024-03-04T09:30:00Z", "2024-03-04T13:45:00Z"),
    ] {
        for exchange in exchanges {
            let run_id = p.new_run_id();
            let req = IngestRequest {
                since: Some(t(since)),
                until: Some(t(until)),
                ..IngestRequest::hourly(exchange, &run_id, p.now())
            };
            // Kraken no longer serves most of the range: what it leaves out is recorded.
            let _ = p.ingest_strict(&req, &|_, _| {}).await;
        }
    }
    let summary = p.run_once().await;
    assert!(summary.transform.is_ok(), "{:?}", summary.problems());
    (dir, p, SimMarket::default_market(5))
}

#[tokio::test(flavor = "multi_thread")]
async fn minutes_are_the_markets_and_every_minute_is_in_the_table_or_a_gap() {
    let (_dir, p, market) = filled().await;
    let lake = Lake::open(&p.settings().lake.to_string()).unwrap();
    let view = read_lake(&lake).await;
    assert_eq!(view.minutes.len(), 3, "{:?}", view.minutes.keys());
    for ((exchange, symbol), minutes) in &view.minutes {
        let hours = &view.hours[&(*exchange, symbol.clone())];
        // The market's own candle, value for value.
        for m in minutes {
            let c = &m.candle;
            let want = market.candle_on(*exchange, symbol, c.open_time).unwrap();
            let got = [c.open, c.high, c.low, c.close, c.volume];
            let expected = [want.open, want.high, want.low, want.close, want.volume];
            for (g, w) in got.iter().zip(expected) {
                assert!(
                    near(*g, w),
                    "{exchange} {} {got:?} {expected:?}",
                    c.open_time
                );
            }
            match exchange {
                Exchange::Binance => {
                    assert!(near(c.quote_volume.unwrap(), want.quote_volume));
                    assert_eq!(c.trade_count, Some(want.trades));
                    assert!(near(c.taker_buy_volume.unwrap(), want.taker_buy_volume));
                    assert!(near(
                        c.taker_buy_quote_volume.unwrap(),
                        want.taker_buy_quote_volume
                    ));
                }
                _ => assert_eq!(c.taker_buy_volume, None),
            }
            assert!(m.fetched_at >= c.open_time + Duration::minutes(1));
        }
        // No minute twice.
        let times: Vec<DateTime<Utc>> = minutes.iter().map(|m| m.candle.open_time).collect();
        let unique: BTreeSet<DateTime<Utc>> = times.iter().copied().collect();
        assert_eq!(unique.len(), times.len(), "{exchange}");

        // ohlcv_1h is ohlcv_1m aggregated, every value.
        let mut by_hour: BTreeMap<DateTime<Utc>, Vec<&MinuteCandle>> = BTreeMap::new();
        for m in minutes {
            by_hour
                .entry(hour_start(m.candle.open_time))
                .or_default()
                .push(m);
        }
        assert_eq!(
            by_hour.keys().copied().collect::<Vec<_>>(),
            hours.iter().map(|h| h.open_time).collect::<Vec<_>>(),
            "{exchange}"
        );
        for h in hours {
            let ms = &by_hour[&h.open_time];
            assert_eq!(h.open, ms[0].candle.open);
            assert_eq!(h.close, ms[ms.len() - 1].candle.close);
            assert_eq!(
                h.high,
                ms.iter().map(|m| m.candle.high).fold(f64::MIN, f64::max)
            );
            assert_eq!(
                h.low,
                ms.iter().map(|m| m.candle.low).fold(f64::MAX, f64::min)
            );
            assert!(near(h.volume, ms.iter().map(|m| m.candle.volume).sum()));
            assert_eq!(h.minutes_present as usize, ms.len());
            let mask = ms.iter().fold(0i64, |acc, m| {
                acc | 1 << (m.candle.open_time - h.open_time).num_minutes()
            });
            assert_eq!(h.minute_mask, mask);
        }

        // Every minute of the covered hours: in the minute table or a gap, never both, apart
        // from the minutes confirmed empty.
        let gap_minutes: BTreeSet<DateTime<Utc>> = view
            .gaps
            .iter()
            .filter(|g| g.exchange == *exchange && &g.symbol == symbol)
            .flat_map(|g| (0..g.minutes()).map(move |i| g.start + Duration::minutes(i)))
            .collect();
        let confirmed_empty: BTreeSet<DateTime<Utc>> = hours
            .iter()
            .flat_map(|h| {
                (0..60)
                    .filter(move |i| (h.empty_mask & !h.minute_mask) & (1 << i) != 0)
                    .map(move |i| h.open_time + Duration::minutes(i))
            })
            .collect();
        let first = hours[0].open_time;
        let end = hours[hours.len() - 1].open_time + Duration::hours(1);
        let mut t = first;
        let (mut in_table, mut in_gaps) = (0, 0);
        while t < end {
            let (a, b) = (unique.contains(&t), gap_minutes.contains(&t));
            assert!(
                !(a && b),
                "{exchange} {t} is in both the minute table and a gap"
            );
            assert!(
                a || b || confirmed_empty.contains(&t),
                "{exchange} {t} is in neither the minute table nor a gap"
            );
            in_table += usize::from(a);
            in_gaps += usize::from(b);
            t += Duration::minutes(1);
        }
        assert_eq!(in_table, minutes.len());
        // The market has each minute the lake left out only where it served none (Coinbase's
        // minutes without trades) or no longer served it (Kraken's past).
        match exchange {
            Exchange::Binance => assert_eq!(in_gaps, 0, "binance {gap_minutes:?}"),
            Exchange::Kraken => assert!(in_gaps > 0, "kraken forgets: its past is a gap"),
            _ => {}
        }
    }

    // `check`: every symbol-date's hours agree with their minutes.
    let consistency = |results: Vec<cryptolake_lake::quality::QualityResult>| {
        results
            .into_iter()
            .filter(|r| r.rule == Rule::Consistency)
            .collect::<Vec<_>>()
    };
    let before = consistency(p.check(None, None, &p.new_run_id()).await.unwrap());
    assert!(before.iter().all(|r| !r.is_violation()), "{before:?}");
    assert!(before.iter().filter(|r| r.exchange.is_some()).count() >= 6);
    // One minute's volume changed under the lake: `check` names the pair and the date, with
    // the rule's default action (fail); the next silver build repairs the partition.
    let day = chrono::NaiveDate::from_ymd_opt(2024, 3, 3).unwrap();
    let key = paths::minute_partition_file(day);
    let mut rows = Vec::new();
    for b in read_parquet(&lake, &key).await.unwrap() {
        rows.extend(minutes_from_batch(&b, key.as_ref()).unwrap());
    }
    rows[100].candle.volume += 1.0;
    let batch = cryptolake_lake::minutes_to_batch(&rows).unwrap();
    cryptolake_lake::write_parquet(&lake, &key, &batch, &[0, 1, 4])
        .await
        .unwrap();
    let found = consistency(p.check(None, None, &p.new_run_id()).await.unwrap());
    let broken: Vec<_> = found.iter().filter(|r| r.is_violation()).collect();
    assert_eq!(broken.len(), 1, "{found:?}");
    let (b, damaged) = (broken[0], &rows[100].candle);
    assert!(b.fails());
    assert_eq!(b.exchange, Some(damaged.exchange));
    assert_eq!(b.symbol.as_ref(), Some(&damaged.symbol));
    assert_eq!(b.subject.as_deref(), Some(quality::hours_of(day).as_str()));
    assert!(b.message.contains("volume differs"), "{}", b.message);
    p.silver(false, &p.new_run_id()).await.unwrap();
    let after = consistency(p.check(None, None, &p.new_run_id()).await.unwrap());
    assert!(after.iter().all(|r| !r.is_violation()), "{after:?}");
    assert_eq!(read_lake(&lake).await.minutes, view.minutes);

    // One date's minutes in SQL, in an order the file's rows are not in (an hour a row group,
    // each by open time first): the engine sorts them rather than trusting the footer.
    let engine = p.query_engine().await.unwrap();
    let batches = engine
        .query(&format!(
            "SELECT exchange, symbol, open_time FROM crypto_analytics.ohlcv_1m \
             WHERE date = DATE '{day}' ORDER BY exchange, symbol, open_time"
        ))
        .await
        .unwrap();
    let mut got = Vec::new();
    for b in &batches {
        let times = b
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            let text = |c: usize| arrow::util::display::array_value_to_string(b.column(c), i);
            got.push((text(0).unwrap(), text(1).unwrap(), times.value(i)));
        }
    }
    let want: Vec<(String, String, i64)> = view
        .minutes
        .iter()
        .flat_map(|((e, s), ms)| {
            ms.iter()
                .filter(|m| m.candle.open_time.date_naive() == day)
                .map(|m| {
                    (
                        e.to_string(),
                        s.to_string(),
                        m.candle.open_time.timestamp_micros(),
                    )
                })
        })
        .collect();
    assert!(want.windows(2).all(|w| w[0] < w[1]));
    assert!(want.len() > 2 * 1000, "{}", want.len());
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the minutes in SQL's order are not the table's, sorted"
    );
}

/// The bucket of `t` computed another way than the read model does: by calendar fields.
fn bucket(interval: Interval, t: DateTime<Utc>) -> DateTime<Utc> {
    let day = Utc
        .with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .unwrap();
    let minutes_of_day = i64::from(t.hour()) * 60 + i64::from(t.minute());
    let within = |len: i64| day + Duration::minutes(minutes_of_day / len * len);
    match interval.as_str() {
        "1m" => within(1),
        "3m" => within(3),
        "5m" => within(5),
        "15m" => within(15),
        "30m" => within(30),
        "1h" => within(60),
        "2h" => within(120),
        "4h" => within(240),
        "6h" => within(360),
        "8h" => within(480),
        "12h" => within(720),
        "1d" => day,
        // Days since the epoch, in threes.
        "3d" => {
            let n = (day - Utc.timestamp_opt(0, 0).unwrap()).num_days();
            day - Duration::days(n % 3)
        }
        "1w" => day - Duration::days(i64::from(t.weekday().num_days_from_monday())),
        "1M" => Utc
            .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
            .unwrap(),
        other => panic!("{other}"),
    }
}

use chrono::Timelike;

#[tokio::test(flavor = "multi_thread")]
async fn every_interval_is_the_minutes_aggregated_with_its_completeness() {
    let (_dir, p, _) = filled().await;
    let lake = Lake::open(&p.settings().lake.to_string()).unwrap();
    let view = read_lake(&lake).await;
    let (from, to) = (t("2024-02-01T00:00:00Z"), t("2024-04-01T00:00:00Z"));
    for ((exchange, symbol), minutes) in &view.minutes {
        let hours = &view.hours[&(*exchange, symbol.clone())];
        let covered: BTreeSet<DateTime<Utc>> = hours
            .iter()
            .flat_map(|h| {
                (0..60)
                    .filter(move |i| (h.empty_mask | h.minute_mask) & (1 << i) != 0)
                    .map(move |i| h.open_time + Duration::minutes(i))
            })
            .collect();
        for interval in Interval::ALL {
            let bars = p
                .reads()
                .candles(*exchange, symbol, interval, from, to, 100_000)
                .await
                .unwrap()
                .rows;
            let mut want: BTreeMap<DateTime<Utc>, Vec<&MinuteCandle>> = BTreeMap::new();
            for m in minutes {
                want.entry(bucket(interval, m.candle.open_time))
                    .or_default()
                    .push(m);
            }
            assert_eq!(
                bars.iter().map(|b| b.time).collect::<Vec<_>>(),
                want.keys().copied().collect::<Vec<_>>(),
                "{exchange} {interval}"
            );
            for (bar, (start, ms)) in bars.iter().zip(&want) {
                let what = format!("{exchange} {interval} {start}");
                assert_eq!(bar.open, ms[0].candle.open, "{what}");
                assert_eq!(bar.close, ms[ms.len() - 1].candle.close, "{what}");
                assert_eq!(
                    bar.high,
                    ms.iter().map(|m| m.candle.high).fold(f64::MIN, f64::max),
                    "{what}"
                );
                assert_eq!(
                    bar.low,
                    ms.iter().map(|m| m.candle.low).fold(f64::MAX, f64::min),
                    "{what}"
                );
                assert!(
                    near(bar.volume, ms.iter().map(|m| m.candle.volume).sum()),
                    "{what}"
                );
                assert_eq!(bar.minutes_present as usize, ms.len(), "{what}");
                // Its length, and complete when every minute of it is present or confirmed
                // empty.
                let mut end = *start + Duration::minutes(1);
                while bucket(interval, end) == *start {
                    end += Duration::minutes(1);
                }
                assert_eq!(bar.minutes, (end - *start).num_minutes(), "{what}");
                let mut all = true;
                let mut m = *start;
                while m < end {
                    all &= covered.contains(&m);
                    m += Duration::minutes(1);
                }
                assert_eq!(bar.complete, all, "{what}");
            }
            // Coinbase's minutes without trades, once confirmed, make bars complete with fewer
            // minutes present; a day the ingest began in the middle of is not complete.
            if interval == Interval::M15 && *exchange == Exchange::Coinbase {
                assert!(
                    bars.iter()
                        .any(|b| b.complete && i64::from(b.minutes_present) < b.minutes)
                );
            }
            if interval == Interval::D1 && *exchange == Exchange::Binance {
                let complete: Vec<bool> = bars.iter().map(|b| b.complete).collect();
                assert_eq!(complete, [false, true, false], "{bars:?}");
            }
        }
    }
}
