//! The Lambda handlers invoked as Lambda would, with real-format EventBridge events, against the
//! simulated exchange and a real S3-compatible server (SeaweedFS).

#[path = "../../cli/tests/support/seaweed.rs"]
mod seaweed;

use cryptolake_lake::paths::{self, BronzeKey};
use cryptolake_lake::{Lake, LakeOptions};
use cryptolake_lambda::{handle_ingest, handle_transform, settings_from_vars};
use cryptolake_model::parse_time;
use cryptolake_sources::sim::{SimClock, SimMarket, SimServer};
use serde_json::json;

async fn bronze_keys(lake: &Lake) -> Vec<BronzeKey> {
    let mut keys: Vec<BronzeKey> = lake
        .list(&paths::bronze_root())
        .await
        .unwrap()
        .iter()
        .filter_map(|m| BronzeKey::parse(&m.location))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_ingest_is_idempotent_per_scheduled_time_and_transform_builds_tables() {
    let s3 = seaweed::SeaweedFs::start("lake-bucket");
    let mut vars = s3.env();
    for (k, v) in &vars {
        if k.starts_with("AWS_") {
            // Only this test runs in this process (nextest runs each test alone), and the AWS
            // credential chain reads the process environment, as it does in Lambda.
            unsafe { std::env::set_var(k, v) };
        }
    }
    let sim = SimServer::start(
        SimMarket::default_market(4),
        SimClock::Fixed(parse_time("2024-03-04T14:10:00Z").unwrap()),
        0,
    )
    .await
    .unwrap();
    let url = sim.base_url();
    vars.extend(
        [
            ("CRYPTOLAKE_LAKE", "s3://lake-bucket/prod"),
            ("CRYPTOLAKE_COINBASE_ENABLED", "true"),
            ("CRYPTOLAKE_BINANCE_SYMBOLS", "BTC-USDT,ETH-USDT"),
            ("CRYPTOLAKE_BINANCE_BASE_URL", url.as_str()),
            ("CRYPTOLAKE_COINBASE_SYMBOLS", "BTC-USD"),
            ("CRYPTOLAKE_COINBASE_BASE_URL", url.as_str()),
            // A perpetual market: candles, mark prices and funding.
            ("CRYPTOLAKE_BINANCE_FUTURES_ENABLED", "true"),
            ("CRYPTOLAKE_BINANCE_FUTURES_SYMBOLS", "BTC-USDT"),
            ("CRYPTOLAKE_BINANCE_FUTURES_BASE_URL", url.as_str()),
            ("CRYPTOLAKE_INGEST_LOOKBACK", "245m"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = settings_from_vars(&vars).unwrap();
    let lake = Lake::open_at(
        &"s3://lake-bucket/prod".parse().unwrap(),
        &LakeOptions {
            s3_endpoint: Some(s3.endpoint.clone()),
            ..LakeOptions::default()
        },
    )
    .unwrap();

    // EventBridge Scheduler's input, as the template configures it.
    let scheduler = json!({ "scheduled_time": "2024-03-04T12:05:00Z" });
    let report = handle_ingest(scheduler.clone(), &settings).await.unwrap();
    assert_eq!(report.run_id, "sched-20240304T120500Z");
    assert_eq!(report.exchanges.len(), 3);
    // 08:00..12:05 for each symbol: 245 minutes.
    assert_eq!(report.exchanges[0].candles, 2 * 245);
    let futures = report
        .exchanges
        .iter()
        .find(|e| e.exchange.as_str() == "binance-futures")
        .unwrap();
    assert_eq!(futures.candles, 245);
    assert_eq!(futures.mark_minutes, 245);
    // Funding over the same lookback: the 08:00 slot.
    assert_eq!(futures.funding_events, 1, "{futures:?}");
    let first = bronze_keys(&lake).await;
    assert!(!first.is_empty());
    assert!(first.iter().all(|k| k.run_id == report.run_id
        && k.window_end <= parse_time("2024-03-04T12:05:00Z").unwrap()));

    // A retry of the same invocation writes nothing: the cursors are past it.
    handle_ingest(scheduler.clone(), &settings).await.unwrap();
    assert_eq!(bronze_keys(&lake).await, first);
    // Even when the first attempt died after writing bronze and before moving a cursor.
    for key in lake
        .list(&object_store::path::Path::from("_state/ingest"))
        .await
        .unwrap()
    {
        lake.delete(&key.location).await.unwrap();
    }
    handle_ingest(scheduler, &settings).await.unwrap();
    assert_eq!(bronze_keys(&lake).await, first, "no duplicate bronze");

    // The next hour, as a classic EventBridge scheduled event: only the new hour is fetched.
    let classic = json!({
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2024-03-04T13:05:00Z",
        "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/cryptolake-hourly"],
        "detail": {}
    });
    let report = handle_ingest(classic, &settings).await.unwrap();
    assert_eq!(report.run_id, "sched-20240304T130500Z");
    assert_eq!(report.exchanges[0].candles, 2 * 60);
    let all = bronze_keys(&lake).await;
    assert!(all.len() > first.len());

    // The batch: silver and gold from what arrived.
    let t = handle_transform(
        json!({ "scheduled_time": "2024-03-04T13:20:00Z" }),
        &settings,
    )
    .await
    .unwrap();
    // Binance 2 symbols, Coinbase 1 and Binance's future 1, 08:00..13:00 whole hours.
    assert_eq!(t.silver[0].hours_written, 4 * 5);
    // The perpetual's tables: mark minutes 08:00..13:05 and the 08:00 funding slot.
    assert_eq!(t.perpetual.mark_minutes, 305, "{:?}", t.perpetual);
    assert_eq!(t.perpetual.funding_events, 1, "{:?}", t.perpetual);
    for table in [paths::silver_funding_table(), paths::mark_table()] {
        let files = lake.list_keys(&table).await.unwrap();
        assert!(!files.is_empty(), "{table} has no partition");
    }
    assert_eq!(t.gold.partitions_written, 1);
    assert!(
        lake.head(&paths::gold_partition_file(
            parse_time("2024-03-04T00:00:00Z").unwrap().date_naive()
        ))
        .await
        .unwrap()
        .is_some()
    );

    // A bad event is named, and writes nothing.
    let err = handle_ingest(json!({ "detail-type": "Object Created" }), &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unrecognised event"), "{err}");
    assert_eq!(bronze_keys(&lake).await, all);
    sim.stop().await;
}
