//! Silver and gold builds over bronze objects written the way ingest writes them.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cryptolake_lake::bronze::{self, Envelope, FORMAT_VERSION, KLINES_1M, RequestInfo};
use cryptolake_lake::gold::GoldBuild;
use cryptolake_lake::paths::{self, BronzeKey};
use cryptolake_lake::silver::{Batch, MINUTES_SORTED_BY, SilverBuild};
use cryptolake_lake::{
    Lake, daily_from_batch, hourly_from_batch, minutes_from_batch, read_parquet,
};
use cryptolake_model::{
    DailyCandle, Exchange, HourlyCandle, MinuteCandle, Symbol, date_of, hour_start, parse_time,
};
use cryptolake_sources::sim::SimMarket;
use object_store::path::Path;
use proptest::prelude::*;

fn t(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn new_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    (dir, lake)
}

/// Writes one bronze object holding `body` for the window, as ingest would.
async fn put_bronze(
    lake: &Lake,
    symbol: &Symbol,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    fetched_at: DateTime<Utc>,
    body: &[u8],
) -> BronzeKey {
    let run_id = format!("test-{}", fetched_at.timestamp_millis());
    let envelope = Envelope {
        format: FORMAT_VERSION,
        source: Exchange::Binance,
        dataset: KLINES_1M.into(),
        symbol: symbol.clone(),
        request: RequestInfo {
            method: "GET".into(),
            url: "http://127.0.0.1:9/api/v3/klines".into(),
            params: BTreeMap::new(),
        },
        window_start: start,
        window_end: end,
        fetched_at,
        http_status: 200,
        run_id: run_id.clone(),
        payload_bytes: body.len() as u64,
        rows: 0,
    };
    let key = BronzeKey {
        source: Exchange::Binance,
        dataset: KLINES_1M.into(),
        symbol: symbol.clone(),
        date: date_of(start),
        fetched_at,
        window_start: start,
        window_end: end,
        run_id,
    };
    assert!(
        bronze::write_object(lake, &key, bronze::encode(&envelope, body))
            .await
            .unwrap()
    );
    key
}

async fn put_sim(
    lake: &Lake,
    m: &SimMarket,
    s: &Symbol,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    fetched_at: DateTime<Utc>,
) {
    let body = m.binance_klines(
        s,
        start.timestamp_millis(),
        end.timestamp_millis() - 1,
        100_000,
        fetched_at,
    );
    put_bronze(lake, s, start, end, fetched_at, body.as_bytes()).await;
}

async fn build(lake: &Lake) -> (usize, usize) {
    let s = SilverBuild::new();
    let sm = s
        .execute(lake, s.plan(lake).await.unwrap(), None)
        .await
        .unwrap();
    let g = GoldBuild::new();
    let gm = g
        .execute(lake, g.plan(lake).await.unwrap(), None)
        .await
        .unwrap();
    (sm.partitions_written, gm.partitions_written)
}

async fn rebuild(lake: &Lake) {
    let s = SilverBuild::new().with_rebuild(true);
    s.execute(lake, s.plan(lake).await.unwrap(), None)
        .await
        .unwrap();
    let g = GoldBuild::new().with_rebuild(true);
    g.execute(lake, g.plan(lake).await.unwrap(), None)
        .await
        .unwrap();
}

async fn silver_rows(lake: &Lake) -> Vec<HourlyCandle> {
    let mut out = Vec::new();
    for meta in lake.list(&paths::silver_table()).await.unwrap() {
        for b in read_parquet(lake, &meta.location).await.unwrap() {
            out.extend(hourly_from_batch(&b, meta.location.as_ref()).unwrap());
        }
    }
    out
}

async fn minute_rows(lake: &Lake) -> Vec<MinuteCandle> {
    let mut out = Vec::new();
    for meta in lake.list(&paths::minute_table()).await.unwrap() {
        for b in read_parquet(lake, &meta.location).await.unwrap() {
            out.extend(minutes_from_batch(&b, meta.location.as_ref()).unwrap());
        }
    }
    // A file holds an hour a row group: the table's order is the rows', not the file's.
    out.sort_by(MinuteCandle::row_order);
    out
}

async fn gold_rows(lake: &Lake) -> Vec<DailyCandle> {
    let mut out = Vec::new();
    for meta in lake.list(&paths::gold_table()).await.unwrap() {
        let d = paths::partition_file_date(&paths::gold_table(), &meta.location).unwrap();
        for b in read_parquet(lake, &meta.location).await.unwrap() {
            out.extend(daily_from_batch(&b, d, meta.location.as_ref()).unwrap());
        }
    }
    out
}

/// The hour computed straight from the simulated market, independently of the pipeline.
fn expected_hour(m: &SimMarket, s: &Symbol, hour: DateTime<Utc>) -> (f64, f64, f64, f64, f64) {
    let mins: Vec<_> = (0..60)
        .map(|i| m.candle(s, hour + Duration::minutes(i)).unwrap())
        .collect();
    let r = |x: f64| format!("{x:.8}").parse::<f64>().unwrap();
    (
        r(mins[0].open),
        mins.iter().map(|c| r(c.high)).fold(f64::MIN, f64::max),
        mins.iter().map(|c| r(c.low)).fold(f64::MAX, f64::min),
        r(mins[59].close),
        mins.iter().map(|c| r(c.volume)).sum(),
    )
}

#[tokio::test]
async fn silver_matches_the_market_and_gold_matches_silver() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(3);
    let s = sym("ETH-USDT");
    let fetched = t("2024-03-05T00:00:00Z");
    // Two days in day-sized windows, as ingest writes them.
    for day in ["2024-03-01", "2024-03-02"] {
        let start = t(day);
        put_sim(
            &lake,
            &m,
            &s,
            start,
            start + Duration::minutes(1000),
            fetched,
        )
        .await;
        put_sim(
            &lake,
            &m,
            &s,
            start + Duration::minutes(1000),
            start + Duration::days(1),
            fetched,
        )
        .await;
    }
    build(&lake).await;
    let hours = silver_rows(&lake).await;
    assert_eq!(hours.len(), 48);
    for h in &hours {
        let (o, hi, lo, c, v) = expected_hour(&m, &s, h.open_time);
        assert_eq!(
            (h.open, h.high, h.low, h.close),
            (o, hi, lo, c),
            "{}",
            h.open_time
        );
        assert!(
            (h.volume - v).abs() < 1e-6,
            "{} {} {}",
            h.open_time,
            h.volume,
            v
        );
        assert_eq!(h.minutes_present, 60);
        assert_eq!(h.ingested_at, fetched);
    }
    // The minutes are the market's, with the fetch they came from.
    let minutes = minute_rows(&lake).await;
    assert_eq!(minutes.len(), 48 * 60);
    let r = |x: f64| format!("{x:.8}").parse::<f64>().unwrap();
    for row in &minutes {
        let c = &row.candle;
        let want = m.candle(&s, c.open_time).unwrap();
        assert_eq!(
            (
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.quote_volume,
                c.trade_count
            ),
            (
                r(want.open),
                r(want.high),
                r(want.low),
                r(want.close),
                r(want.volume),
                Some(r(want.quote_volume)),
                Some(want.trades)
            ),
            "{}",
            c.open_time
        );
        assert_eq!(c.taker_buy_volume, Some(r(want.taker_buy_volume)));
        assert_eq!(
            c.taker_buy_quote_volume,
            Some(r(want.taker_buy_quote_volume))
        );
        assert_eq!(row.fetched_at, fetched);
    }
    let days = gold_rows(&lake).await;
    assert_eq!(days.len(), 2);
    for d in &days {
        let of_day: Vec<_> = hours
            .iter()
            .filter(|h| date_of(h.open_time) == d.date)
            .collect();
        assert_eq!(d.open, of_day[0].open);
        assert_eq!(d.close, of_day[23].close);
        let v: f64 = of_day.iter().map(|h| h.volume).sum();
        assert!((d.volume - v).abs() < 1e-9 * v);
        assert_eq!(d.hours_present, 24);
        assert!(d.is_complete);
    }
}

#[tokio::test]
async fn hour_is_emitted_only_once_fully_requested() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(3);
    let s = sym("BTC-USDT");
    put_sim(
        &lake,
        &m,
        &s,
        t("2024-03-01T09:00:00Z"),
        t("2024-03-01T10:35:00Z"),
        t("2024-03-01T10:35:02Z"),
    )
    .await;
    build(&lake).await;
    let hours = silver_rows(&lake).await;
    assert_eq!(
        hours.iter().map(|h| h.open_time).collect::<Vec<_>>(),
        vec![t("2024-03-01T09:00:00Z")]
    );
    put_sim(
        &lake,
        &m,
        &s,
        t("2024-03-01T10:35:00Z"),
        t("2024-03-01T11:05:00Z"),
        t("2024-03-01T11:05:02Z"),
    )
    .await;
    build(&lake).await;
    let hours = silver_rows(&lake).await;
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[1].minutes_present, 60);
    assert_eq!(hours[1].ingested_at, t("2024-03-01T11:05:02Z"));
}

#[tokio::test]
async fn bad_records_are_quarantined_and_open_candles_skipped() {
    let (_d, lake) = new_lake();
    let s = sym("BTC-USDT");
    // Row 1 breaks high >= low; row 2 is the still-open candle (fetched at 00:02:30).
    let body = br#"[
      [1709251200000,"100.0","101.0","99.0","100.5","1.0",1709251259999,"100.0",5,"0","0","0"],
      [1709251260000,"100.5","99.0","100.0","100.2","1.0",1709251319999,"100.0",5,"0","0","0"],
      [1709251320000,"100.2","100.9","100.1","100.3","0.4",1709251379999,"40.0",2,"0","0","0"]
    ]"#;
    let key = put_bronze(
        &lake,
        &s,
        t("2024-03-01T00:00:00Z"),
        t("2024-03-01T00:03:00Z"),
        t("2024-03-01T00:02:30Z"),
        body,
    )
    .await;
    let garbage = BronzeKey {
        fetched_at: t("2024-03-01T00:02:31Z"),
        run_id: "garbage".into(),
        ..key.clone()
    };
    lake.put(&garbage.path(), Bytes::from_static(b"not a bronze object"))
        .await
        .unwrap();

    let sb = SilverBuild::new();
    let metrics = sb
        .execute(&lake, sb.plan(&lake).await.unwrap(), None)
        .await
        .unwrap();
    assert_eq!(metrics.rejected_records, 1);
    assert_eq!(metrics.open_candles_skipped, 1);
    assert_eq!(metrics.quarantined_objects, 2);
    assert_eq!(metrics.candles_read, 1);
    let doc: serde_json::Value =
        serde_json::from_slice(&lake.get(&paths::quarantine_for(&key.path())).await.unwrap())
            .unwrap();
    assert_eq!(doc["records"][0]["index"], 1);
    assert!(
        doc["records"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("high"),
        "{doc}"
    );
    assert_eq!(doc["bronze_key"], key.path().to_string());
    let doc: serde_json::Value = serde_json::from_slice(
        &lake
            .get(&paths::quarantine_for(&garbage.path()))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        doc["object_error"].as_str().unwrap().contains("envelope"),
        "{doc}"
    );
    // Nothing is final in the 00:00 hour: it was never requested in full.
    assert!(silver_rows(&lake).await.is_empty());
    // Bronze is untouched.
    assert!(lake.head(&key.path()).await.unwrap().is_some());
}

fn arb_cuts() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<bool>)> {
    // Cut points (minutes) over two days and a bit, the arrival order, and which windows get
    // fetched twice.
    (
        proptest::collection::btree_set(1i64..3000, 1..12).prop_map(|s| s.into_iter().collect()),
        proptest::collection::vec(0usize..100, 13),
        proptest::collection::vec(any::<bool>(), 13),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever order and batching bronze arrives in, with refetched duplicates and windows
    /// crossing midnight, the incremental result equals a rebuild after every build (a shadow
    /// lake with the same bronze is rebuilt each time), and a re-run writes nothing.
    #[test]
    fn incremental_equals_rebuild((cuts, order, dup) in arb_cuts()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_d, lake) = new_lake();
            let (_s, shadow) = new_lake();
            let m = SimMarket::default_market(11);
            let syms = [sym("BTC-USDT"), sym("SOL-USDT")];
            let origin = t("2024-03-01T00:00:00Z");
            // Windows of at most a day, as every writer makes them (some crossing midnight).
            let mut bounds = vec![0i64, 1000, 2000, 3000];
            bounds.extend(cuts.iter().copied());
            bounds.sort();
            bounds.dedup();
            let windows: Vec<(i64, i64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
            let mut arrival: Vec<usize> = (0..windows.len()).collect();
            arrival.sort_by_key(|i| order[*i % order.len()]);
            let mut fetch = 0i64;
            for (n, wi) in arrival.iter().enumerate() {
                let (a, b) = windows[*wi];
                for s in &syms {
                    let times = if dup[*wi % dup.len()] { 2 } else { 1 };
                    for _ in 0..times {
                        fetch += 1;
                        let fetched_at = origin + Duration::days(10) + Duration::seconds(fetch);
                        for l in [&lake, &shadow] {
                            put_sim(l, &m, s, origin + Duration::minutes(a), origin + Duration::minutes(b), fetched_at).await;
                        }
                    }
                }
                if n % 3 == 0 {
                    build(&lake).await;
                    rebuild(&shadow).await;
                    prop_assert_eq!(silver_rows(&lake).await, silver_rows(&shadow).await, "after arrival {}", n);
                    prop_assert_eq!(gold_rows(&lake).await, gold_rows(&shadow).await, "after arrival {}", n);
                    prop_assert_eq!(minute_rows(&lake).await, minute_rows(&shadow).await, "after arrival {}", n);
                }
            }
            build(&lake).await;
            let silver = silver_rows(&lake).await;
            let gold = gold_rows(&lake).await;
            let minutes = minute_rows(&lake).await;
            // 3000 minutes = 50 hours per symbol, all requested in full.
            prop_assert_eq!(silver.len(), 100);
            prop_assert_eq!(minutes.len(), 6000);
            prop_assert!(silver.iter().all(|h| h.minutes_present == 60));
            prop_assert_eq!(build(&lake).await, (0, 0));
            rebuild(&lake).await;
            prop_assert_eq!(silver_rows(&lake).await, silver);
            prop_assert_eq!(gold_rows(&lake).await, gold);
            prop_assert_eq!(minute_rows(&lake).await, minutes);
            let dates: Vec<NaiveDate> = gold_rows(&lake).await.iter().map(|d| d.date).collect();
            prop_assert_eq!(dates.len(), 6);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn record_rules_drop_quarantine_or_fail() {
    use cryptolake_lake::quality::{Action, QualityRules};
    let s = sym("BTC-USDT");
    // Row 1 breaks ohlc (high below low); row 2 has a negative volume (amounts).
    let body = br#"[
      [1709251200000,"100.0","101.0","99.0","100.5","1.0",1709251259999,"100.0",5,"0","0","0"],
      [1709251260000,"100.5","99.0","100.0","100.2","1.0",1709251319999,"100.0",5,"0","0","0"],
      [1709251320000,"100.2","100.9","100.1","100.3","-0.4",1709251379999,"40.0",2,"0","0","0"]
    ]"#;
    let window = (t("2024-03-01T00:00:00Z"), t("2024-03-01T01:00:00Z"));

    // drop ohlc, quarantine amounts.
    let (_d, lake) = new_lake();
    let key = put_bronze(
        &lake,
        &s,
        window.0,
        window.1,
        t("2024-03-01T02:00:00Z"),
        body,
    )
    .await;
    let rules = QualityRules {
        ohlc: Action::Drop,
        ..QualityRules::default()
    };
    let b = SilverBuild::new().with_rules(rules);
    let m = b
        .execute(&lake, b.plan(&lake).await.unwrap(), None)
        .await
        .unwrap();
    assert_eq!((m.dropped_records, m.rejected_records), (1, 1));
    let doc: serde_json::Value =
        serde_json::from_slice(&lake.get(&paths::quarantine_for(&key.path())).await.unwrap())
            .unwrap();
    assert_eq!(doc["records"].as_array().unwrap().len(), 1);
    assert!(
        doc["records"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("volume"),
        "{doc}"
    );
    assert_eq!(silver_rows(&lake).await[0].minutes_present, 1);

    // fail: the build stops, names the rule and record, and commits nothing.
    let (_d, lake) = new_lake();
    put_bronze(
        &lake,
        &s,
        window.0,
        window.1,
        t("2024-03-01T02:00:00Z"),
        body,
    )
    .await;
    let rules = QualityRules {
        amounts: Action::Fail,
        ..QualityRules::default()
    };
    let b = SilverBuild::new().with_rules(rules);
    let err = b
        .execute(&lake, b.plan(&lake).await.unwrap(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("amounts") && err.contains("record 2") && err.contains("volume"),
        "{err}"
    );
    // The state did not move: the next build is still a first build, and finds the object.
    let again = b.plan(&lake).await.unwrap();
    assert!(again.full_listing, "state must not move");
    assert!(b.execute(&lake, again, None).await.is_err());
    assert!(silver_rows(&lake).await.is_empty());
}

/// After the first build, silver finds new bronze through the manifest and lists only the
/// partitions it touches: an object written without a manifest entry is not seen until a
/// rebuild lists everything, and an entry whose object never arrived is ignored.
#[tokio::test]
async fn incremental_builds_read_the_manifest_not_all_of_bronze() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(2);
    let s = sym("ETH-USDT");
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-05T00:00:00Z");
    put_sim(&lake, &m, &s, day, day + Duration::hours(2), fetched).await;
    let first = SilverBuild::new();
    let plan = first.plan(&lake).await.unwrap();
    assert!(plan.full_listing, "the first build lists all of bronze");
    first.execute(&lake, plan, None).await.unwrap();

    // Written with its entry, as every writer does: found without a full listing.
    put_sim(
        &lake,
        &m,
        &s,
        day + Duration::hours(2),
        day + Duration::hours(3),
        fetched,
    )
    .await;
    // Written behind silver's back, without an entry, in a partition nothing new touches: not
    // found incrementally.
    let other = day + Duration::days(2);
    let b = m.binance_klines(
        &s,
        (other + Duration::hours(5)).timestamp_millis(),
        (other + Duration::hours(6)).timestamp_millis() - 1,
        1000,
        fetched,
    );
    let hidden = BronzeKey {
        source: Exchange::Binance,
        dataset: KLINES_1M.into(),
        symbol: s.clone(),
        date: date_of(other),
        fetched_at: fetched,
        window_start: other + Duration::hours(5),
        window_end: other + Duration::hours(6),
        run_id: "hidden".into(),
    };
    let envelope = Envelope {
        format: FORMAT_VERSION,
        source: Exchange::Binance,
        dataset: KLINES_1M.into(),
        symbol: s.clone(),
        request: RequestInfo {
            method: "GET".into(),
            url: "http://127.0.0.1:9/api/v3/klines".into(),
            params: BTreeMap::new(),
        },
        window_start: hidden.window_start,
        window_end: hidden.window_end,
        fetched_at: fetched,
        http_status: 200,
        run_id: "hidden".into(),
        payload_bytes: b.len() as u64,
        rows: 60,
    };
    lake.put(&hidden.path(), bronze::encode(&envelope, b.as_bytes()))
        .await
        .unwrap();
    // An entry whose object never came (its writer died in between).
    let ghost = BronzeKey {
        run_id: "ghost".into(),
        ..hidden.clone()
    };
    lake.put(
        &paths::manifest_entry(Utc::now() - Duration::hours(1), &ghost.path()),
        Bytes::new(),
    )
    .await
    .unwrap();

    let next = SilverBuild::new();
    let plan = next.plan(&lake).await.unwrap();
    assert!(!plan.full_listing);
    assert_eq!(plan.new_objects.len(), 1, "{:?}", plan.new_objects);
    next.execute(&lake, plan, None).await.unwrap();
    let hours: Vec<_> = silver_rows(&lake)
        .await
        .iter()
        .map(|h| h.open_time)
        .collect();
    assert_eq!(hours.len(), 3, "the hidden hour is not in silver yet");

    let all = SilverBuild::new().with_rebuild(true);
    let plan = all.plan(&lake).await.unwrap();
    assert!(plan.full_listing);
    all.execute(&lake, plan, None).await.unwrap();
    assert_eq!(silver_rows(&lake).await.len(), 4);
    // And the next incremental build has nothing to do.
    let again = SilverBuild::new();
    let plan = again.plan(&lake).await.unwrap();
    assert!(plan.new_objects.is_empty() && !plan.full_listing);
}

/// Lakes written before hour folders keep their manifest entries directly in the day folder:
/// an incremental build still finds them.
#[tokio::test]
async fn manifest_entries_in_day_folders_are_found() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(3);
    let s = sym("ETH-USDT");
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-05T00:00:00Z");
    put_sim(&lake, &m, &s, day, day + Duration::hours(1), fetched).await;
    build(&lake).await;
    let body = m.binance_klines(
        &s,
        (day + Duration::hours(1)).timestamp_millis(),
        (day + Duration::hours(2)).timestamp_millis() - 1,
        1000,
        fetched,
    );
    let key = put_bronze(
        &lake,
        &s,
        day + Duration::hours(1),
        day + Duration::hours(2),
        fetched + Duration::seconds(1),
        body.as_bytes(),
    )
    .await;
    // Move its entry from its hour folder to the day folder, as older builds wrote it.
    let entries = lake
        .list(&Path::from(paths::MANIFEST_BRONZE))
        .await
        .unwrap();
    let entry = entries
        .iter()
        .find(|e| {
            e.location
                .as_ref()
                .ends_with(&key.path().as_ref().replace('/', "+"))
        })
        .expect("the entry");
    let name = entry.location.filename().unwrap().to_string();
    let now = Utc::now();
    lake.put(
        &Path::from(format!(
            "{}/{}/{name}",
            paths::MANIFEST_BRONZE,
            now.date_naive()
        )),
        Bytes::new(),
    )
    .await
    .unwrap();
    lake.delete(&entry.location).await.unwrap();
    let next = SilverBuild::new();
    let plan = next.plan(&lake).await.unwrap();
    assert!(!plan.full_listing);
    assert_eq!(plan.new_objects.len(), 1, "{:?}", plan.new_objects);
    next.execute(&lake, plan, None).await.unwrap();
    assert_eq!(silver_rows(&lake).await.len(), 2);
}

/// A lake whose silver state comes from an older build (no record of spilling partitions or of
/// partition versions): the next builds still find a window crossing midnight, and gold still
/// sees every silver change, equal to a rebuild.
#[tokio::test]
async fn silver_state_from_an_older_build_is_still_followed() {
    let (_d, lake) = new_lake();
    let (_s, shadow) = new_lake();
    let m = SimMarket::default_market(5);
    let s = sym("BTC-USDT");
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-05T00:00:00Z");
    for l in [&lake, &shadow] {
        put_sim(l, &m, &s, day, day + Duration::hours(22), fetched).await;
    }
    build(&lake).await;
    let strip = |lake: Lake| async move {
        let state_key = paths::silver_state();
        let mut doc: serde_json::Value =
            serde_json::from_slice(&lake.get(&state_key).await.unwrap()).unwrap();
        let fields = doc.as_object_mut().unwrap();
        assert!(fields.remove("spilling").is_some() && fields.remove("partitions").is_some());
        lake.put(&state_key, Bytes::from(serde_json::to_vec(&doc).unwrap()))
            .await
            .unwrap();
    };
    strip(lake.clone()).await;
    // A window from 22:00 to 02:00 the next day sits in the first day's partition.
    for l in [&lake, &shadow] {
        put_sim(
            l,
            &m,
            &s,
            day + Duration::hours(22),
            day + Duration::hours(26),
            fetched + Duration::seconds(1),
        )
        .await;
    }
    build(&lake).await;
    strip(lake.clone()).await;
    // A refetch of the next day's first half hour: recomputing that hour needs the rest of it
    // from the object in the day before.
    for l in [&lake, &shadow] {
        put_sim(
            l,
            &m,
            &s,
            day + Duration::hours(24),
            day + Duration::minutes(24 * 60 + 30),
            fetched + Duration::seconds(2),
        )
        .await;
    }
    build(&lake).await;
    rebuild(&shadow).await;
    assert_eq!(silver_rows(&lake).await, silver_rows(&shadow).await);
    assert_eq!(silver_rows(&lake).await.len(), 26);
    assert_eq!(gold_rows(&lake).await, gold_rows(&shadow).await);
    assert_eq!(gold_rows(&lake).await.len(), 2);
}

/// The gap report kept up to date after each build from what silver listed equals a full scan
/// of the lake.
#[tokio::test]
async fn gap_updates_after_builds_equal_a_full_scan() {
    use cryptolake_lake::gaps;
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(4);
    let (btc, eth) = (sym("BTC-USDT"), sym("ETH-USDT"));
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-05T00:00:00Z");
    let build_and_update = |lake: Lake| async move {
        let s = SilverBuild::new();
        let plan = s.plan(&lake).await.unwrap();
        s.execute_with(&lake, plan, None, async |b: Batch<'_>| {
            gaps::update(&lake, b.touched, &b.listed, fetched, b.complete_listing)
                .await
                .unwrap();
        })
        .await
        .unwrap();
    };
    put_sim(&lake, &m, &btc, day, day + Duration::hours(1), fetched).await;
    put_sim(
        &lake,
        &m,
        &btc,
        day + Duration::hours(2),
        day + Duration::hours(3),
        fetched,
    )
    .await;
    build_and_update(lake.clone()).await;
    let first = gaps::read(&lake, None, None).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].minutes(), 60);

    // Part of the hole filled, another pair and another day arrive.
    put_sim(
        &lake,
        &m,
        &btc,
        day + Duration::hours(1),
        day + Duration::minutes(90),
        fetched,
    )
    .await;
    put_sim(
        &lake,
        &m,
        &eth,
        day + Duration::days(1),
        day + Duration::days(1) + Duration::hours(2),
        fetched,
    )
    .await;
    build_and_update(lake.clone()).await;
    let strip = |g: Vec<gaps::Gap>| -> Vec<_> {
        g.into_iter()
            .map(|g| (g.exchange, g.symbol, g.start, g.end, g.status, g.fetches))
            .collect()
    };
    let updated = strip(gaps::read(&lake, None, None).await.unwrap());
    gaps::scan(&lake, None, None, fetched).await.unwrap();
    let scanned = strip(gaps::read(&lake, None, None).await.unwrap());
    assert_eq!(updated, scanned);
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!((updated[0].3 - updated[0].2).num_minutes(), 30);
}

/// A first build made a date or a few at a time (memory holds one batch's objects) gives the
/// silver of a build made in as few batches as it can, and its gap report, updated batch by batch, equals a
/// full scan: across batch boundaries, a day without any bronze between two batches, a day
/// whose bronze stops before midnight, and a window that spills over midnight into the next
/// batch.
#[tokio::test]
async fn a_first_build_in_small_batches_equals_one_in_large_ones() {
    use cryptolake_lake::gaps;
    let m = SimMarket::default_market(4);
    let (btc, eth) = (sym("BTC-USDT"), sym("ETH-USDT"));
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-20T00:00:00Z");
    let h = Duration::hours;
    let fill = |lake: Lake| {
        let m = m.clone();
        let (btc, eth) = (btc.clone(), eth.clone());
        async move {
            // BTC: days 0-1 whole, day 2 until 20:00, nothing on days 3-4, day 5 again.
            for (a, b) in [(0, 24), (24, 48), (48, 68), (120, 126)] {
                put_sim(&lake, &m, &btc, day + h(a), day + h(b), fetched).await;
            }
            // ETH: a window from 22:00 on day 1 to 02:00 on day 2, and day 6 with a hole.
            put_sim(&lake, &m, &eth, day + h(46), day + h(50), fetched).await;
            put_sim(&lake, &m, &eth, day + h(144), day + h(146), fetched).await;
            put_sim(&lake, &m, &eth, day + h(147), day + h(150), fetched).await;
        }
    };
    let build = |lake: Lake, per_batch: usize| async move {
        let s = SilverBuild::new().with_dates_per_batch(per_batch);
        let plan = s.plan(&lake).await.unwrap();
        assert!(plan.full_listing);
        let mut batches = 0;
        let metrics = s
            .execute_with(&lake, plan, None, async |b: Batch<'_>| {
                batches += 1;
                gaps::update(&lake, b.touched, &b.listed, fetched, b.complete_listing)
                    .await
                    .unwrap();
            })
            .await
            .unwrap();
        (metrics, batches)
    };
    let strip = |g: Vec<gaps::Gap>| -> Vec<_> {
        g.into_iter()
            .map(|g| (g.exchange, g.symbol, g.start, g.end, g.status, g.fetches))
            .collect()
    };
    let (_d1, whole) = new_lake();
    fill(whole.clone()).await;
    // A first batch of one date, then the rest at once (few objects per date).
    let (one, batches) = build(whole.clone(), 1000).await;
    assert_eq!(batches, 2);
    let whole_gaps = strip(gaps::read(&whole, None, None).await.unwrap());
    gaps::scan(&whole, None, None, fetched).await.unwrap();
    assert_eq!(
        whole_gaps,
        strip(gaps::read(&whole, None, None).await.unwrap())
    );
    for per_batch in [1, 2, 3] {
        let (_d, lake) = new_lake();
        fill(lake.clone()).await;
        let (m, batches) = build(lake.clone(), per_batch).await;
        assert!(batches >= 7 / per_batch, "{per_batch}: {batches} batches");
        assert_eq!(m.new_objects, one.new_objects, "{per_batch}");
        assert_eq!(m.partitions_written, one.partitions_written, "{per_batch}");
        assert_eq!(m.touched, one.touched, "{per_batch}");
        assert_eq!(
            silver_rows(&lake).await,
            silver_rows(&whole).await,
            "{per_batch}"
        );
        let got = strip(gaps::read(&lake, None, None).await.unwrap());
        assert_eq!(got, whole_gaps, "{per_batch} dates per batch");
    }
    // The report holds what the lake says (one row per pair and date): BTC's empty days 3
    // and 4 and the rest of day 2, ETH's hour on day 6 (and its days before).
    let minutes = |s: &Symbol, from: DateTime<Utc>, to: DateTime<Utc>| -> i64 {
        whole_gaps
            .iter()
            .filter(|g| &g.1 == s && g.2 >= from && g.3 <= to)
            .map(|g| (g.3 - g.2).num_minutes())
            .sum()
    };
    assert_eq!(
        minutes(&btc, day + h(68), day + h(120)),
        52 * 60,
        "{whole_gaps:?}"
    );
    assert_eq!(
        minutes(&eth, day + h(146), day + h(147)),
        60,
        "{whole_gaps:?}"
    );
    assert_eq!(whole_gaps.len(), 8, "{whole_gaps:?}");
}

/// The batches of a first build overlap: a batch's `after_batch` (the gap report) runs while
/// the next batch is built. Here each batch's `after_batch` waits for the next date's
/// partition to appear; a build that finished the report before building on would wait
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_built_while_a_batch_is_reported() {
    let m = SimMarket::default_market(3);
    let btc = sym("BTC-USDT");
    let day = t("2024-03-01T00:00:00Z");
    let fetched = t("2024-03-10T00:00:00Z");
    let (_d, lake) = new_lake();
    for i in 0..4 {
        let from = day + Duration::days(i);
        put_sim(&lake, &m, &btc, from, from + Duration::days(1), fetched).await;
    }
    let last = date_of(day + Duration::days(3));
    let s = SilverBuild::new().with_dates_per_batch(1);
    let plan = s.plan(&lake).await.unwrap();
    let mut reported = Vec::new();
    let metrics = s
        .execute_with(&lake, plan, None, async |b: Batch<'_>| {
            let newest = *b.touched.keys().next_back().unwrap();
            reported.push(newest);
            if newest < last {
                let next = paths::silver_partition_file(newest.succ_opt().unwrap());
                let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
                    while lake.head(&next).await.unwrap().is_none() {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                })
                .await;
                assert!(
                    waited.is_ok(),
                    "{next} was not built while {newest} was reported"
                );
            }
        })
        .await
        .unwrap();
    assert_eq!(metrics.partitions_written, 4);
    let dates: Vec<NaiveDate> = (0..4).map(|i| date_of(day + Duration::days(i))).collect();
    assert_eq!(reported, dates, "each batch reported once, in date order");
}

#[tokio::test]
async fn a_damaged_missing_or_never_written_minute_partition_is_rebuilt_from_bronze() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(4);
    let s = sym("BTC-USDT");
    let fetched = t("2024-03-05T00:00:00Z");
    for day in ["2024-03-01", "2024-03-02"] {
        put_sim(&lake, &m, &s, t(day), t(day) + Duration::days(1), fetched).await;
    }
    build(&lake).await;
    let whole = minute_rows(&lake).await;
    assert_eq!(whole.len(), 2 * 1440);
    let first = paths::minute_partition_file(t("2024-03-01").date_naive());
    let second = paths::minute_partition_file(t("2024-03-02").date_naive());

    // Truncated: the next incremental build notices the version changed and rebuilds it.
    let bytes = lake.get_opt(&first).await.unwrap().unwrap();
    lake.put(&first, bytes.slice(..bytes.len() / 2))
        .await
        .unwrap();
    let (silver_written, _) = build(&lake).await;
    assert_eq!(silver_written, 0, "the hours did not change");
    assert_eq!(minute_rows(&lake).await, whole);

    // Gone.
    lake.delete(&second).await.unwrap();
    build(&lake).await;
    assert_eq!(minute_rows(&lake).await, whole);

    // A lake from before the minute table: hours, no minutes, no versions recorded for them.
    for f in [&first, &second] {
        lake.delete(f).await.unwrap();
    }
    let state_key = paths::silver_state();
    let mut state: serde_json::Value =
        serde_json::from_slice(&lake.get_opt(&state_key).await.unwrap().unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("minute_partitions");
    lake.put(&state_key, Bytes::from(serde_json::to_vec(&state).unwrap()))
        .await
        .unwrap();
    build(&lake).await;
    assert_eq!(minute_rows(&lake).await, whole);
    assert_eq!(build(&lake).await, (0, 0));
}

/// The codec of each row group's first column in the minute file of `day`, and its hours.
async fn minute_file_groups(lake: &Lake, day: &str) -> Vec<(String, DateTime<Utc>)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let key = paths::minute_partition_file(t(day).date_naive());
    let reader = SerializedFileReader::new(lake.get(&key).await.unwrap()).unwrap();
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| {
            let open_time = rg
                .columns()
                .iter()
                .find(|c| c.column_descr().name() == "open_time")
                .unwrap();
            let min = match open_time.statistics().unwrap() {
                parquet::file::statistics::Statistics::Int64(v) => *v.min_opt().unwrap(),
                other => panic!("{other:?}"),
            };
            (
                // A column the build compresses (prices and volumes it stores as they are).
                format!("{:?}", open_time.compression()),
                DateTime::from_timestamp_micros(min).unwrap(),
            )
        })
        .collect()
}

/// Writes `rows` as the minute file of `day`, an hour a row group like the build's but
/// uncompressed; each row group claims the build's order (open time, exchange, symbol) when
/// `claimed`, none otherwise.
async fn write_uncompressed_hours(lake: &Lake, day: &str, rows: &[MinuteCandle], claimed: bool) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .set_sorting_columns(claimed.then(|| sorting(&MINUTES_SORTED_BY)))
        .build();
    let schema = cryptolake_model::schema::ohlcv_1m();
    write_hours(lake, day, rows, schema, props, |hour| {
        cryptolake_lake::minutes_to_batch(hour).unwrap()
    })
    .await;
}

fn sorting(columns: &[usize]) -> Vec<parquet::file::metadata::SortingColumn> {
    let order = |&i: &usize| parquet::file::metadata::SortingColumn {
        column_idx: i as i32,
        descending: false,
        nulls_first: false,
    };
    columns.iter().map(order).collect()
}

/// Writes `rows` as the minute file of `day`, an hour a row group in the build's order, each
/// the batch `batch` makes of them, and records it as the build's version.
async fn write_hours(
    lake: &Lake,
    day: &str,
    rows: &[MinuteCandle],
    schema: arrow::datatypes::SchemaRef,
    props: parquet::file::properties::WriterProperties,
    batch: impl Fn(&[MinuteCandle]) -> arrow::array::RecordBatch,
) {
    let mut hours: BTreeMap<DateTime<Utc>, Vec<MinuteCandle>> = BTreeMap::new();
    for r in rows {
        hours
            .entry(hour_start(r.candle.open_time))
            .or_default()
            .push(r.clone());
    }
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
    for mut hour in hours.into_values() {
        hour.sort_by(MinuteCandle::row_order);
        hour.sort_by_key(|m| m.candle.open_time);
        w.write(&batch(&hour)).unwrap();
        w.flush().unwrap();
    }
    w.close().unwrap();
    put_minute_file(lake, day, buf).await;
}

/// Puts `file` as the minute file of `day`, recorded as the build's version.
async fn put_minute_file(lake: &Lake, day: &str, file: Vec<u8>) {
    let key = paths::minute_partition_file(t(day).date_naive());
    lake.put(&key, Bytes::from(file)).await.unwrap();
    record_minute_version(lake, day).await;
}

/// Records the minute file of `day` as it is now as the version the build left, so the next
/// build takes it as its own rather than as damaged.
async fn record_minute_version(lake: &Lake, day: &str) {
    let key = paths::minute_partition_file(t(day).date_naive());
    let version = cryptolake_lake::state::version(&lake.head(&key).await.unwrap().unwrap());
    let state_key = paths::silver_state();
    let mut state: serde_json::Value =
        serde_json::from_slice(&lake.get_opt(&state_key).await.unwrap().unwrap()).unwrap();
    state["minute_partitions"][day] = serde_json::Value::String(version);
    lake.put(&state_key, Bytes::from(serde_json::to_vec(&state).unwrap()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_hour_copies_the_minute_files_other_hours_and_encodes_only_its_own() {
    let (_d, lake) = new_lake();
    let m = SimMarket::default_market(4);
    let (a, b) = (sym("BTC-USDT"), sym("ETH-USDT"));
    let day = "2024-03-01";
    for s in [&a, &b] {
        put_sim(
            &lake,
            &m,
            s,
            t(day),
            t("2024-03-01T03:00:00Z"),
            t("2024-03-01T03:05:00Z"),
        )
        .await;
    }
    build(&lake).await;
    let groups = minute_file_groups(&lake, day).await;
    let hours: Vec<DateTime<Utc>> = (0..3).map(|h| t(day) + Duration::hours(h)).collect();
    assert_eq!(
        groups.iter().map(|g| g.1).collect::<Vec<_>>(),
        hours,
        "an hour a row group"
    );

    // The same rows laid out as the build lays them out, but uncompressed, and recorded as the
    // partition's version: a row group the next build copies keeps that codec.
    let key = paths::minute_partition_file(t(day).date_naive());
    let rows = minute_rows(&lake).await;
    write_uncompressed_hours(&lake, day, &rows, true).await;
    record_minute_version(&lake, day).await;
    assert_eq!(minute_rows(&lake).await, rows);

    // The next hour of one symbol: the three hours before it are copied, not decoded and
    // encoded again; its own hour is new.
    let next_hour = async |s: &Symbol| {
        let (start, end) = (t("2024-03-01T03:00:00Z"), t("2024-03-01T04:00:00Z"));
        put_sim(&lake, &m, s, start, end, end + Duration::minutes(5)).await
    };
    next_hour(&a).await;
    build(&lake).await;
    let groups = minute_file_groups(&lake, day).await;
    let codecs: Vec<&str> = groups.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(codecs[..3], ["UNCOMPRESSED"; 3], "{groups:?}");
    assert_eq!(codecs[3], "SNAPPY", "{groups:?}");
    assert_eq!(groups[3].1, t("2024-03-01T03:00:00Z"));
    let incremental = minute_rows(&lake).await;
    assert_eq!(incremental.len(), 2 * 180 + 60);

    // The same as a rebuild from bronze (which finds nothing to change).
    rebuild(&lake).await;
    assert_eq!(minute_rows(&lake).await, incremental);

    // A file of one row group for the whole date (as the build wrote it before) is laid out an
    // hour a row group when its date is next built.
    let batch = cryptolake_lake::minutes_to_batch(&incremental).unwrap();
    cryptolake_lake::write_parquet(&lake, &key, &batch, &[0, 1, 2])
        .await
        .unwrap();
    record_minute_version(&lake, day).await;
    assert_eq!(minute_file_groups(&lake, day).await.len(), 1);
    next_hour(&b).await;
    build(&lake).await;
    let groups = minute_file_groups(&lake, day).await;
    assert_eq!(groups.len(), 4, "{groups:?}");
    let all = minute_rows(&lake).await;
    assert_eq!(all.len(), 2 * 240);

    // Row groups that do not claim the file's order are not copied as they are: the file is
    // laid out again, every hour encoded.
    write_uncompressed_hours(&lake, day, &all, false).await;
    let (start, end) = (t("2024-03-01T04:00:00Z"), t("2024-03-01T05:00:00Z"));
    put_sim(&lake, &m, &a, start, end, end + Duration::minutes(5)).await;
    build(&lake).await;
    let codecs: Vec<String> = minute_file_groups(&lake, day)
        .await
        .into_iter()
        .map(|g| g.0)
        .collect();
    assert_eq!(codecs, vec!["SNAPPY"; 5]);
    assert_eq!(minute_rows(&lake).await.len(), 2 * 240 + 60);

    // A file with the columns the table had before (`base` and `quote` after `symbol`), an
    // hour a row group in that layout's order: its chunks do not fit today's columns, so the
    // file is laid out again in them, and no row is lost.
    let before = minute_rows(&lake).await;
    write_with_base_and_quote(&lake, day, &before).await;
    assert!(
        minute_file_columns(&lake, day)
            .await
            .contains(&"base".to_string())
    );
    assert_eq!(minute_rows(&lake).await, before);
    let (start, end) = (t("2024-03-01T05:00:00Z"), t("2024-03-01T06:00:00Z"));
    put_sim(&lake, &m, &b, start, end, end + Duration::minutes(5)).await;
    build(&lake).await;
    let columns = minute_file_columns(&lake, day).await;
    let today: Vec<String> = cryptolake_model::schema::ohlcv_1m()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(columns, today);
    let after = minute_rows(&lake).await;
    assert_eq!(after.len(), before.len() + 60);
    assert!(before.iter().all(|r| after.contains(r)));
    rebuild(&lake).await;
    assert_eq!(minute_rows(&lake).await, after);
}

/// The column names of the minute file of `day`, from its footer.
async fn minute_file_columns(lake: &Lake, day: &str) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let key = paths::minute_partition_file(t(day).date_naive());
    let reader = SerializedFileReader::new(lake.get(&key).await.unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

/// Writes `rows` as the minute file of `day` with the columns `ohlcv_1m` had before `base` and
/// `quote` were left out, an hour a row group, each claiming that layout's order (open time,
/// exchange, symbol: columns 4, 0 and 1), and records it as the build's version.
async fn write_with_base_and_quote(lake: &Lake, day: &str, rows: &[MinuteCandle]) {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let props = parquet::file::properties::WriterProperties::builder()
        .set_sorting_columns(Some(sorting(&[4, 0, 1])))
        .build();
    let mut fields: Vec<Field> = cryptolake_model::schema::ohlcv_1m()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.insert(2, Field::new("base", DataType::Utf8, false));
    fields.insert(3, Field::new("quote", DataType::Utf8, false));
    let schema = std::sync::Arc::new(Schema::new(fields));
    let with_parts = |hour: &[MinuteCandle]| {
        let batch = cryptolake_lake::minutes_to_batch(hour).unwrap();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let part = |f: fn(&Symbol) -> &str| -> ArrayRef {
            std::sync::Arc::new(StringArray::from_iter_values(
                hour.iter().map(|m| f(&m.candle.symbol)),
            ))
        };
        columns.insert(2, part(Symbol::base));
        columns.insert(3, part(Symbol::quote));
        arrow::array::RecordBatch::try_new(schema.clone(), columns).unwrap()
    };
    write_hours(lake, day, rows, schema.clone(), props, with_parts).await;
}
