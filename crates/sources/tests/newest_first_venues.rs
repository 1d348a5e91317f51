//! OKX and Bybit against the simulated exchange over HTTP: each quirk of theirs, checked so
//! that handling it naively fails.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cryptolake_model::{Candle, Exchange, Symbol, parse_time};
use cryptolake_sources::http::RetryPolicy;
use cryptolake_sources::sim::{Fault, FaultPlan, SimClock, SimMarket, SimOptions, SimServer};
use cryptolake_sources::{Error, ExchangeClient, Record, parse_page};

const NEWEST_FIRST: [Exchange; 4] = [
    Exchange::Okx,
    Exchange::OkxSwap,
    Exchange::Bybit,
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

fn candles(records: &[Record]) -> Vec<(Candle, DateTime<Utc>)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Candle { candle, close_time } => Some((candle.clone(), *close_time)),
            Record::Rejected { .. } => None,
        })
        .collect()
}

/// Every minute of `[start, end)` exactly once, with the market's own values.
fn assert_exact(
    market: &SimMarket,
    ex: Exchange,
    sym: &Symbol,
    got: &mut [(Candle, DateTime<Utc>)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    got.sort_by_key(|(c, _)| c.open_time);
    let want: Vec<DateTime<Utc>> = (0..(end - start).num_minutes())
        .map(|i| start + Duration::minutes(i))
        .collect();
    let times: Vec<DateTime<Utc>> = got.iter().map(|(c, _)| c.open_time).collect();
    assert_eq!(times, want, "{ex}: every minute of the window, once");
    let r8 = |x: f64| format!("{x:.8}").parse::<f64>().unwrap();
    for (c, _) in got.iter() {
        let m = market.candle_on(ex, sym, c.open_time).unwrap();
        assert_eq!(
            (c.open, c.high, c.low, c.close),
            (r8(m.open), r8(m.high), r8(m.low), r8(m.close)),
            "{ex} {}",
            c.open_time
        );
        assert!(
            (c.volume - r8(m.volume)).abs() < 1e-9,
            "{ex}: base volume {c:?}"
        );
        assert!(
            (c.quote_volume.unwrap() - r8(m.quote_volume)).abs() < 1e-6,
            "{ex}: quote volume {c:?}"
        );
        assert_eq!(c.trade_count, None, "{ex} gives no trade count");
        assert_eq!(c.exchange, ex);
    }
}

#[tokio::test]
async fn full_windows_come_whole_with_exclusive_and_inclusive_bounds() {
    let now = t("2024-03-04T12:00:30Z");
    let market = SimMarket::default_market(11);
    let sim = SimServer::start(market.clone(), SimClock::Fixed(now), 0)
        .await
        .unwrap();
    let sym = Symbol::parse("BTC-USDT").unwrap();
    for ex in NEWEST_FIRST {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        let minutes = ExchangeClient::max_window_minutes(ex);
        let start = t("2024-03-03T00:00:00Z");
        let end = start + Duration::minutes(minutes);
        let page = client.fetch_1m(&sym, start, end).await.unwrap();
        // A whole page: nothing more to ask for. Off-by-one cursors would lose the first
        // or the last minute, and the check below would name it.
        assert_eq!(page.resume_before, None, "{ex}");
        assert_eq!(page.rows as i64, minutes, "{ex}");
        let mut got = candles(&parse_page(ex, &page.body, &sym).unwrap());
        // Newest first on the wire.
        assert!(got[0].0.open_time > got[1].0.open_time, "{ex}");
        assert_exact(&market, ex, &sym, &mut got, start, end);
    }
    sim.stop().await;
}

#[tokio::test]
async fn a_short_page_is_not_the_end_of_the_window() {
    let now = t("2024-03-04T12:00:30Z");
    let market = SimMarket::default_market(12);
    let mut options = SimOptions::new(SimClock::Fixed(now));
    options.faults = FaultPlan {
        rate: 1.0,
        kinds: vec![Fault::ShortPage],
        ..FaultPlan::none()
    };
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let sym = Symbol::parse("ETH-USDT").unwrap();
    for ex in NEWEST_FIRST {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        let start = t("2024-03-02T00:00:00Z");
        let end = start + Duration::minutes(ExchangeClient::max_window_minutes(ex));
        // Each answer holds the newest third of what was asked; the part before it is asked
        // for again until the window is whole.
        let (mut part_end, mut got, mut requests) = (end, Vec::new(), 0);
        loop {
            let page = client.fetch_1m(&sym, start, part_end).await.unwrap();
            requests += 1;
            got.extend(candles(&parse_page(ex, &page.body, &sym).unwrap()));
            match page.resume_before {
                Some(from) => {
                    assert!(from > start && from < part_end, "{ex}: {from}");
                    part_end = from;
                }
                None => break,
            }
        }
        assert!(requests > 3, "{ex}: {requests} requests");
        assert_exact(&market, ex, &sym, &mut got, start, end);
    }
    assert!(sim.stats(Exchange::Okx).faults["short-page"] > 0);
    sim.stop().await;
}

#[tokio::test]
async fn an_unconfirmed_okx_candle_is_never_final_and_bybit_s_open_minute_neither() {
    // Two seconds after 11:59 closed: OKX has not confirmed it yet, and serves it without its
    // last trades. Its minute has closed, so a rule on time alone would take it as final.
    let now = t("2024-03-04T12:00:02Z");
    let market = SimMarket::default_market(13);
    let sim = SimServer::start(market.clone(), SimClock::Fixed(now), 0)
        .await
        .unwrap();
    let sym = Symbol::parse("BTC-USDT").unwrap();
    let start = t("2024-03-04T11:00:00Z");
    let end = t("2024-03-04T12:00:00Z");
    let last = t("2024-03-04T11:59:00Z");
    for ex in [Exchange::Okx, Exchange::OkxSwap] {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        let page = client.fetch_1m(&sym, start, end).await.unwrap();
        let got = candles(&parse_page(ex, &page.body, &sym).unwrap());
        let (c, close) = got.iter().find(|(c, _)| c.open_time == last).unwrap();
        let full = market.candle_on(ex, &sym, last).unwrap();
        assert!(
            c.volume < full.volume,
            "{ex}: the unconfirmed candle is partial"
        );
        // Final means closed before the fetch: never, for an unconfirmed candle.
        assert!(*close > page.fetched_at, "{ex}: {close}");
        let confirmed = got.iter().filter(|(_, close)| *close < page.fetched_at);
        assert_eq!(confirmed.count(), 59, "{ex}");
    }
    // Bybit has no flag: asked up to and including the open minute, it serves it partial, and
    // only its close time after the fetch keeps it from being final.
    let real = SimServer::start(market.clone(), SimClock::Real, 0)
        .await
        .unwrap();
    for ex in [Exchange::Bybit, Exchange::BybitLinear] {
        let client = ExchangeClient::new(ex, Some(&real.base_url()), quick(), None).unwrap();
        let now = Utc::now();
        let minute = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0).unwrap();
        let page = client
            .fetch_1m(
                &sym,
                minute - Duration::minutes(10),
                minute + Duration::minutes(1),
            )
            .await
            .unwrap();
        let got = candles(&parse_page(ex, &page.body, &sym).unwrap());
        let open: Vec<_> = got
            .iter()
            .filter(|(_, close)| *close > page.fetched_at)
            .collect();
        assert_eq!(open.len(), 1, "{ex}: the open minute only");
        assert_eq!(open[0].0.open_time, minute, "{ex}");
    }
    real.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn errors_on_http_200_are_retried_or_named_never_stored() {
    let now = t("2024-03-04T12:00:30Z");
    let market = SimMarket::default_market(14);
    let mut options = SimOptions::new(SimClock::Fixed(now));
    // Every other answer is "too many requests" as OKX (code 50011) and Bybit (retCode 10006)
    // say it: HTTP 200, a well-formed body, no rows.
    options.faults = FaultPlan {
        rate: 0.5,
        kinds: vec![Fault::TooManyRequests],
        ..FaultPlan::none()
    };
    let sim = SimServer::start_with(market.clone(), options, 0)
        .await
        .unwrap();
    let sym = Symbol::parse("SOL-USDT").unwrap();
    let start = t("2024-03-01T00:00:00Z");
    for ex in NEWEST_FIRST {
        let client = ExchangeClient::new(ex, Some(&sim.base_url()), quick(), None).unwrap();
        for i in 0..6 {
            let s = start + Duration::minutes(100 * i);
            let page = client
                .fetch_1m(&sym, s, s + Duration::minutes(100))
                .await
                .unwrap();
            assert_eq!(page.rows, 100, "{ex}: an error body is never a page");
        }
        assert!(sim.stats(ex).faults["429"] > 0, "{ex}");
        // A symbol the venue does not list is refused by name, before any candle request.
        let before = sim.stats(ex).requests;
        let err = client
            .fetch_1m(
                &Symbol::parse("BTC-EUR").unwrap(),
                start,
                start + Duration::minutes(10),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotListed(_)), "{ex}: {err}");
        assert!(err.to_string().contains("BTC-EUR"), "{err}");
        assert_eq!(sim.stats(ex).requests, before, "{ex}: the listing is kept");
    }
    sim.stop().await;
}
