//! Completeness that means what it says: Coinbase leaves out minutes without trades. Once two
//! fetches after the close found such a minute empty, it is complete data: silver records it
//! as confirmed empty, gold's `is_complete` and the completeness rule count it. A minute seen
//! missing by one fetch only is not.

mod support;

use cryptolake_lake::gaps::{self, GapStatus};
use cryptolake_lake::{daily_from_batch, hourly_from_batch, paths, quality, read_parquet};
use cryptolake_model::Exchange;
use cryptolake_pipeline::{GapRefetch, IngestRequest};
use support::t;

#[tokio::test(flavor = "multi_thread")]
async fn a_coinbase_day_with_only_confirmed_empty_minutes_is_complete() {
    let (_dir, sim, p) = support::on_sim(3, &[Exchange::Coinbase], "2024-03-04T14:10:00Z").await;
    let lake = cryptolake_lake::Lake::open(&p.settings().lake.to_string()).unwrap();
    let day = t("2024-03-03T00:00:00Z").date_naive();
    let run_id = p.new_run_id();
    let req = IngestRequest {
        since: Some(t("2024-03-03T00:00:00Z")),
        until: Some(t("2024-03-04T00:00:00Z")),
        ..IngestRequest::hourly(Exchange::Coinbase, &run_id, p.now())
    };
    p.ingest_strict(&req, &|_, _| {}).await.unwrap();

    let gold_day = || async {
        let key = paths::gold_partition_file(day);
        let rows: Vec<_> = read_parquet(&lake, &key)
            .await
            .unwrap()
            .iter()
            .flat_map(|b| daily_from_batch(b, day, key.as_ref()).unwrap())
            .collect();
        assert_eq!(rows.len(), 1);
        rows[0].clone()
    };
    let silver_minutes = || async {
        let key = paths::silver_partition_file(day);
        let hours: Vec<_> = read_parquet(&lake, &key)
            .await
            .unwrap()
            .iter()
            .flat_map(|b| hourly_from_batch(b, key.as_ref()).unwrap())
            .collect();
        (
            hours.iter().map(|h| h.minutes_present).sum::<i32>(),
            hours.iter().map(|h| h.minutes_covered()).sum::<i32>(),
        )
    };
    let completeness = || async {
        let rules = p.settings().quality.clone();
        quality::evaluate_silver(&lake, &rules, Some(day), Some(day), p.now())
            .await
            .unwrap()
            .iter()
            .filter(|r| r.rule == quality::Rule::Completeness && r.is_violation())
            .count()
    };

    // One fetch: the minutes Coinbase left out are unconfirmed, and the day is not complete.
    p.transform(&[], &run_id).await.unwrap();
    let (present, covered) = silver_minutes().await;
    assert!(present < 1440, "the market has minutes without trades");
    // The read model's current state: the hours with unconfirmed minutes are open violations.
    let open_results = || async {
        p.reads()
            .quality(&cryptolake_pipeline::reads::QualityFilter {
                open_only: true,
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let open_for_coinbase = || async {
        let overview = p.reads().overview().await.unwrap();
        let rows: Vec<_> = overview
            .rows
            .iter()
            .filter(|r| r.exchange == Exchange::Coinbase)
            .collect();
        assert_eq!(rows.len(), 1, "{overview:?}");
        let open = open_results().await;
        let coinbase = || {
            open.iter()
                .filter(|r| r.result.exchange == Some(Exchange::Coinbase))
        };
        assert_eq!(rows[0].open_violations, coinbase().count() as i64);
        // Completeness only: the data is a day old on the pipeline's clock, so freshness is
        // rightly open throughout.
        coinbase()
            .filter(|r| r.result.rule == quality::Rule::Completeness)
            .count() as i64
    };
    let open_before = open_for_coinbase().await;
    assert!(
        open_before > 0,
        "incomplete hours are open violations after the first silver run"
    );
    assert_eq!(covered, present, "nothing is confirmed after one fetch");
    let g = gold_day().await;
    assert_eq!(g.hours_present, 24);
    assert!(!g.is_complete);
    assert!(completeness().await > 0);
    let statuses: Vec<GapStatus> = gaps::read(&lake, Some(day), Some(day))
        .await
        .unwrap()
        .iter()
        .map(|g| g.status)
        .collect();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == GapStatus::Unconfirmed));

    // The refetch asks again: every missing minute is confirmed empty, and the day complete.
    let scope = GapRefetch {
        from: Some(day),
        to: Some(day),
        ..GapRefetch::all(Exchange::Coinbase, None)
    };
    let report = p.transform(&[scope], &run_id).await.unwrap();
    assert!(report.refetch.is_some());
    let (present_after, covered_after) = silver_minutes().await;
    assert_eq!(
        present_after, present,
        "a refetch finds no candle Coinbase did not have"
    );
    assert_eq!(covered_after, 1440);
    assert!(gold_day().await.is_complete);
    assert_eq!(completeness().await, 0);
    let still_open = open_results().await;
    assert_eq!(
        open_for_coinbase().await,
        0,
        "the refetch's silver run resolved every violation of the confirmed hours: {still_open:#?}"
    );
    // The history keeps the violations the first run found.
    let history = p
        .reads()
        .quality(&cryptolake_pipeline::reads::QualityFilter {
            status: Some(quality::Status::Violation),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(history.len() as i64 >= open_before, "{}", history.len());
    let gaps_after = gaps::read(&lake, Some(day), Some(day)).await.unwrap();
    assert!(gaps_after.iter().all(|g| g.status == GapStatus::Confirmed));
    assert_eq!(
        gaps_after.iter().map(|g| g.minutes()).sum::<i64>(),
        i64::from(1440 - present),
        "silver's confirmed-empty minutes are the gap report's confirmed ones"
    );
    sim.stop().await;
}
