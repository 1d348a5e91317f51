//! Faults a review of the orchestration found, each with the test that failed before its fix:
//! a quality evaluation that errors, a lease left held after an error, one exchange stopping
//! the whole hourly job, and an ingest over a range the exchange no longer serves.

use std::sync::Arc;

use bytes::Bytes;
use cryptolake_lake::lease::{Lease, LeaseOptions};
use cryptolake_lake::paths;
use cryptolake_model::Exchange;
use cryptolake_pipeline::{ErrorKind, IngestRequest, Outcome, Pipeline, Step, StepEvent};
use cryptolake_sources::sim::SimServer;

mod support;

use support::t;

struct Setup {
    _dir: tempfile::TempDir,
    sim: SimServer,
    pipeline: Pipeline,
    events: Arc<std::sync::Mutex<Vec<StepEvent>>>,
}

/// Binance and `more` exchanges enabled, the pipeline's clock at `now`, every step event kept.
async fn setup(more: &[Exchange], now: &str) -> Setup {
    let enabled: Vec<Exchange> = std::iter::once(Exchange::Binance)
        .chain(more.iter().copied())
        .collect();
    let (dir, sim, pipeline) = support::on_sim(7, &enabled, now).await;
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let pipeline = pipeline.with_events(Arc::new(move |e| sink.lock().unwrap().push(e.clone())));
    Setup {
        _dir: dir,
        sim,
        pipeline,
        events,
    }
}

impl Setup {
    fn last_event(&self, step: Step) -> StepEvent {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e.step == step)
            .cloned()
            .expect("an event of the step")
    }

    async fn ingest_binance(&self) {
        let p = &self.pipeline;
        let req = IngestRequest::hourly(Exchange::Binance, &p.new_run_id(), p.now());
        p.ingest_strict(&req, &|_, _| {}).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quality_check_that_cannot_run_fails_the_step() {
    let s = setup(&[], "2024-03-04T12:05:00Z").await;
    s.ingest_binance().await;
    // A damaged partition the day before: the checks read it for the first hour's previous
    // close, and cannot.
    let lake = &cryptolake_lake::Lake::open(&s.pipeline.settings().lake.to_string()).unwrap();
    lake.put(
        &paths::silver_partition_file(t("2024-03-03T00:00:00Z").date_naive()),
        Bytes::from_static(b"not parquet"),
    )
    .await
    .unwrap();
    let err = s.pipeline.silver(false, "r1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Quality, "{err}");
    assert!(err.to_string().contains("could not run"), "{err}");
    let e = s.last_event(Step::Silver);
    assert_eq!(
        (e.outcome, e.error_kind),
        (Outcome::Failed, Some(ErrorKind::Quality))
    );
    s.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_releases_its_lease() {
    let s = setup(&[], "2024-03-04T12:05:00Z").await;
    s.ingest_binance().await;
    let lake = &cryptolake_lake::Lake::open(&s.pipeline.settings().lake.to_string()).unwrap();
    lake.put(&paths::silver_state(), Bytes::from_static(b"{ torn"))
        .await
        .unwrap();
    let err = s.pipeline.silver(false, "r1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    // With no wait at all, the next taker of the same lease gets it at once.
    let again = Lease::acquire(lake, "transform", "test", &LeaseOptions::default()).await;
    assert!(again.is_ok(), "the lease was left held: {:?}", again.err());
    again.unwrap().release().await.unwrap();
    // And a leased step after it is not refused as busy.
    let scan = s.pipeline.scan_gaps(None, None).await;
    assert!(scan.is_ok(), "{:?}", scan.err());
    s.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_busy_exchange_does_not_stop_the_others() {
    let s = setup(&[Exchange::Coinbase], "2024-03-04T12:05:00Z").await;
    let lake = &cryptolake_lake::Lake::open(&s.pipeline.settings().lake.to_string()).unwrap();
    // Another run is ingesting Binance.
    let held = Lease::acquire(
        lake,
        "ingest-binance",
        "another run",
        &LeaseOptions::default(),
    )
    .await
    .unwrap();
    let summary = s.pipeline.run_once().await;
    let by = |e: Exchange| summary.exchanges.iter().find(|r| r.exchange == e).unwrap();
    let busy = by(Exchange::Binance).ingest.as_ref().unwrap_err();
    assert_eq!(busy.outcome(), Outcome::Busy, "{busy}");
    let coinbase = by(Exchange::Coinbase).ingest.as_ref().unwrap();
    assert!(coinbase.rows > 0);
    let t = summary.transform.as_ref().unwrap();
    assert!(t.silver[0].hours_written > 0, "silver still ran");
    let problems = summary.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("binance") && problems[0].contains("busy"),
        "{problems:?}"
    );
    let outcomes: Vec<(Option<Exchange>, Outcome)> = s
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.step == Step::Ingest)
        .map(|e| (e.exchange, e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some(Exchange::Binance), Outcome::Busy),
            (Some(Exchange::Coinbase), Outcome::Ok)
        ]
    );
    held.release().await.unwrap();
    s.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_over_a_range_no_longer_served_is_an_error_naming_it() {
    let s = setup(&[Exchange::Kraken], "2024-03-04T14:10:00Z").await;
    let p = &s.pipeline;
    let req = IngestRequest {
        since: Some(t("2024-03-03T08:00:00Z")),
        ..IngestRequest::hourly(Exchange::Kraken, &p.new_run_id(), p.now())
    };
    let err = p.ingest_strict(&req, &|_, _| {}).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unservable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("2024-03-03T08:00:00+00:00") && msg.contains("no longer served"),
        "{msg}"
    );
    let e = s.last_event(Step::Ingest);
    assert_eq!(
        (e.outcome, e.error_kind),
        (Outcome::Partial, Some(ErrorKind::Unservable))
    );
    // What the exchange does serve arrived all the same.
    assert!(e.counts.rows > 0);
    s.sim.stop().await;
}
