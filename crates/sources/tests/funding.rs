//! Funding rates of the three perpetual markets against the simulated exchange over HTTP:
//! slot for slot the simulator's, across an interval change, through newest-first paging and
//! short pages, with Binance's millisecond jitter taken off the slot.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use cryptolake_model::{Exchange, FundingRate, Symbol, parse_time};
use cryptolake_sources::http::RetryPolicy;
use cryptolake_sources::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use cryptolake_sources::{ExchangeClient, FundingRecord, parse_funding_page};

const PERPETUALS: [Exchange; 3] = [
    Exchange::BinanceFutures,
    Exchange::OkxSwap,
    Exchange::BybitLinear,
];

fn t(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        base_delay: StdDuration::from_millis(5),
        max_delay: StdDuration::from_millis(50),
        ..RetryPolicy::default()
    }
}

/// Every funding event of `[start, end)`, following each page's continuation.
async fn all_funding(
    client: &ExchangeClient,
    sym: &Symbol,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Vec<FundingRate>, usize) {
    let (mut from, mut to, mut out, mut requests) = (start, end, Vec::new(), 0);
    loop {
        let page = client.fetch_funding(sym, from, to).await.unwrap();
        requests += 1;
        for r in parse_funding_page(client.exchange(), &page.body, sym).unwrap() {
            match r {
                FundingRecord::Rate(f) => out.push(f),
                FundingRecord::Rejected { reason, raw, .. } => panic!("{reason}: {raw}"),
            }
        }
        match (page.resume_before, page.resume_after) {
            (Some(t), _) => to = t,
            (_, Some(t)) => from = t + chrono::Duration::milliseconds(1),
            (None, None) => break,
        }
        assert!(requests < 1000, "paging does not end");
    }
    out.sort_by_key(|f| f.slot);
    out.dedup_by_key(|f| f.slot);
    (out, requests)
}

fn market(sym: &Symbol) -> SimMarket {
    let mut m = SimMarket::default_market(21);
    for ex in PERPETUALS {
        // Every 8 hours, then every 4 from 2 March, then every hour from 3 March noon.
        m = m
            .with_funding_interval(ex, sym, t("2024-03-02T00:00:00Z"), 4)
            .with_funding_interval(ex, sym, t("2024-03-03T12:00:00Z"), 1);
    }
    m
}

#[tokio::test]
async fn funding_equals_the_simulator_slot_for_slot_across_an_interval_change() {
    let sym = Symbol::parse("BTC-USDT").unwrap();
    let market = market(&sym);
    let sim = SimServer::start(
        market.clone(),
        SimClock::Fixed(t("2024-03-20T00:00:30Z")),
        0,
    )
    .await
    .unwrap();
    let (start, end) = (t("2024-03-01T00:00:00Z"), t("2024-03-04T00:00:00Z"));
    // 3 on the first day, 6 on the second, 3 + 12 on the third.
    let expected = 3 + 6 + 3 + 12;
    for ex in PERPETUALS {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        let (got, _) = all_funding(&client, &sym, start, end).await;
        let want = market.funding(
            ex,
            &sym,
            start.timestamp_millis(),
            end.timestamp_millis() - 1,
            1000,
            false,
        );
        assert_eq!(got.len(), expected, "{ex}");
        assert_eq!(want.len(), expected, "{ex}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                g.slot.timestamp_millis(),
                w.slot_ms,
                "{ex}: the slot is the whole hour"
            );
            assert_eq!(
                g.funding_time.timestamp_millis(),
                w.time_ms,
                "{ex}: the time as given"
            );
            assert_eq!(g.rate, w.rate, "{ex} {}", g.slot);
            match ex {
                Exchange::BinanceFutures => assert_eq!(g.mark_price, Some(w.mark_price)),
                _ => assert_eq!(g.mark_price, None, "{ex} gives no mark price here"),
            }
            assert_eq!(g.exchange, ex);
        }
        if ex == Exchange::BinanceFutures {
            assert!(
                got.iter().any(|f| f.funding_time != f.slot),
                "Binance's funding times carry milliseconds past the slot"
            );
        }
    }
    // Spot has no funding: said, not sent.
    let spot = ExchangeClient::new(Exchange::Okx, Some(&sim.base_url()), quick(), None).unwrap();
    let err = spot.fetch_funding(&sym, start, end).await.unwrap_err();
    assert!(err.to_string().contains("not a perpetual"), "{err}");
    sim.stop().await;
}

#[tokio::test]
async fn a_year_of_funding_pages_back_through_short_pages_in_few_requests() {
    let sym = Symbol::parse("ETH-USDT").unwrap();
    let market = market(&sym);
    let mut options = SimOptions::new(SimClock::Fixed(t("2024-03-04T00:00:30Z")));
    options.faults = FaultPlan {
        rate: 0.3,
        kinds: vec![Fault::ShortPage],
        ..FaultPlan::none()
    };
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let (start, end) = (t("2023-03-04T00:00:00Z"), t("2024-03-04T00:00:00Z"));
    for ex in PERPETUALS {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        let (got, requests) = all_funding(&client, &sym, start, end).await;
        // OKX serves about three months back; the others the whole year.
        let from = match ex {
            Exchange::OkxSwap => t("2024-03-04T00:00:30Z") - chrono::Duration::days(92),
            _ => start,
        };
        let want = market.funding(
            ex,
            &sym,
            from.timestamp_millis(),
            end.timestamp_millis() - 1,
            10_000,
            false,
        );
        let slots: Vec<i64> = got.iter().map(|f| f.slot.timestamp_millis()).collect();
        let want_slots: Vec<i64> = want.iter().map(|f| f.slot_ms).collect();
        assert_eq!(slots, want_slots, "{ex}: every slot once");
        println!("{ex}: {} funding events in {requests} requests", got.len());
    }
    assert!(sim.stats(Exchange::BybitLinear).faults["short-page"] > 0);
    sim.stop().await;
}
